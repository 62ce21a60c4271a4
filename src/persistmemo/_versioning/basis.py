"""What a function's version is made of, gathered by following the code it runs.

``VersionBasis`` walks every layer of the function, the functions and classes it captures,
with ``include_globals`` the user's functions, classes and constants it reaches, and with
``packages`` the installed versions; every name it read and function it versioned is then
watched (code_watch.py). What it covers: docs/guarantees.md#what-the-version-covers.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import types

from persistmemo._hashing import blake2b
from persistmemo._keys.canonical import encode
from persistmemo._versioning.body_imports import (
    imported_top_names,
    imports_anything,
    unimported_source,
    user_modules_imported,
)
from persistmemo._versioning.closures import state_variables
from persistmemo._versioning.code_objects import (
    code_identity,
    is_code,
    layers,
    methods_of,
    names_of,
    owner_class,
    qualified,
    qualname_of,
)
from persistmemo._versioning.code_watch import ABSENT, CodeWatch
from persistmemo._versioning.constants import (
    CONTAINED_AT_MOST,
    DESCRIPTORS,
    MUTABLE,
    class_attributes,
    contained,
    defining_modules,
    encodable,
    enum_internal,
    large_content,
    running_state,
)
from persistmemo._versioning.kept_state import (
    mutated_class_attributes,
    mutated_globals,
    mutated_parameters,
    written_globals,
)
from persistmemo._versioning.origins import (
    LIBRARY,
    OWN,
    USER,
    module_file,
    origin_of_function,
    origin_of_module,
    origin_of_type,
)
from persistmemo._versioning.package_versions import package_versions
from persistmemo._versioning.running_source import (
    class_fingerprint,
    code_fingerprint,
    code_qualname,
    function_nodes,
    source_index,
    source_runs,
)
from persistmemo._versioning.source_stamps import (
    DefinitionStamp,
    FileStat,
    Stamp,
    file_stat,
    holds_running_code,
    stamp_of,
)
from persistmemo.errors import UnsupportedType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

VERSION_DIGEST_SIZE = 8
_REPR_LIMIT = 80

_lock = threading.RLock()
_held_at_fork: list[Any] = []


def _hold_derivations() -> None:
    """Before a fork: wait for a derivation under way in another thread, so that the child
    inherits neither a lock held by a thread it does not have (its first derivation would
    wait forever) nor a source tree that thread was normalizing. This lock, then the
    parser's: the order a derivation takes them in."""
    _lock.acquire()
    held = [_lock]
    sources = sys.modules.get("persistmemo._versioning.sources")
    if sources is not None:
        sources._lock.acquire()
        held.append(sources._lock)
    _held_at_fork[:] = held


def _release_derivations() -> None:
    for lock in reversed(_held_at_fork):
        lock.release()
    _held_at_fork.clear()


if hasattr(os, "register_at_fork"):  # no fork on Windows
    os.register_at_fork(
        before=_hold_derivations,
        after_in_parent=_release_derivations,
        after_in_child=_release_derivations,
    )


class NotByStat(Exception):
    """The version depends on more than stats and values: it must be derived."""


class VersionBasis:
    """Everything one function's version is made of, gathered by following its code."""

    def __init__(
        self,
        func: Callable[..., Any],
        include_globals: bool,
        packages: Iterable[str] | bool,
        stamp: object,
        *,
        light: bool = False,
    ) -> None:
        self.include_globals = include_globals
        self.packages = packages if isinstance(packages, bool) else tuple(packages)
        # light: the fingerprint's walk, each source file taken by its stat (files), never
        # parsed; anything it cannot vouch for raises NotByStat.
        self.light = light
        self.files: dict[str, tuple[int, ...]] = {}
        if light and self.packages not in (False, ()):
            raise NotByStat("installed package versions are not in any source file")
        self.stamped: dict[str, FileStat] = (
            dict(stamp.files) if isinstance(stamp, DefinitionStamp) else {}
        )
        self.layers: list[dict[str, str]] = []
        self.helpers: dict[tuple[str, str], dict[str, str]] = {}
        self.captured: set[str] = set()
        self.constants: dict[str, dict[str, str]] = {}
        self.library_modules: set[str] = set()
        self.seen: set[int] = set()
        self.keep_alive: list[object] = []  # ids in `seen` must not be reused meanwhile
        self.trusted: dict[str, bool] = {}
        # What the walk read, for the per-call check that it still runs (code_watch.py).
        self.watched_names: list[tuple[Any, str, object]] = []
        self.watched_functions: list[types.FunctionType] = []
        self.watched_cells: list[tuple[Any, object]] = []
        with _lock:
            self._root(func)
            self.package_versions = package_versions(self.packages, self.library_modules)

    # --- the result ---------------------------------------------------------------------

    def version(self) -> str:
        # Module names stay out: the store key names the function, and moving a helper to
        # another module changes nothing it does.
        canonical: list[object] = [
            [[layer["basis"], layer["digest"]] for layer in self.layers],
            sorted([entry["qualname"], entry["digest"]] for entry in self.helpers.values()),
            sorted([entry["name"], entry["digest"]] for entry in self.constants.values()),
            sorted([name, version] for name, version in self.package_versions.items()),
        ]
        if sys.flags.optimize:
            # python -O compiles asserts and `if __debug__:` blocks away, which the source
            # does not show: any -O level is a version of its own (and -OO too, though it
            # only drops docstrings), for every function, since telling which code reads
            # __debug__ would mean reading every helper's bytecode.
            canonical.append(["optimize", sys.flags.optimize])
        return blake2b(encode(canonical), digest_size=VERSION_DIGEST_SIZE).hexdigest()

    def watch(self) -> CodeWatch:
        return CodeWatch(self.watched_names, self.watched_functions, self.watched_cells)

    # --- following the code -------------------------------------------------------------

    def _root(self, func: Any) -> None:
        chain = layers(func)
        # Every layer's own code first, outermost first: a wrapper captures the function it
        # wraps, which must still be listed as a layer, not as a captured helper.
        for layer in chain:
            if isinstance(layer, types.FunctionType):
                self._function(layer, root=True, keyed=True, follow=False)
        for layer in chain:
            if isinstance(layer, types.FunctionType):
                if origin_of_function(layer) == USER or (
                    origin_of_function(layer) == OWN and not hasattr(layer, "__wrapped__")
                ):
                    self._closure(layer, qualified(layer), keyed=True)
                    self._globals(layer)
                    module = str(getattr(layer, "__module__", None) or "")
                    qualname = layer.__qualname__
                    # A decorator's argument bound as a default (`def w(x, _k=k)`).
                    self._defaults(layer, qualified(layer), module, qualname, keyed=True)
                    owner = owner_class(layer)
                    if owner is not None:
                        # A method reads its class through self/cls, not by a global name:
                        # its siblings and class attributes are part of what it runs.
                        self._class(owner, keyed=True)
            elif isinstance(layer, type):
                self._class(layer, keyed=True, root=True)
            elif origin_of_type(type(layer)) == USER:
                self._class(
                    type(layer), keyed=True, root=True
                )  # a callable object: its class's code
        if not self.layers and not self.helpers:
            raise TypeError(
                f"cannot derive a version for {func!r}: no source and no code object. "
                "Pass version= to memo()."
            )

    def _function(
        self, func: types.FunctionType, *, root: bool, keyed: bool, follow: bool = True
    ) -> None:
        """Version ``func``'s code; ``keyed``: its captured values are keyed at each call."""
        if id(func) in self.seen:
            return
        self._see(func)
        module = str(getattr(func, "__module__", None) or "")
        qualname = code_qualname(func)
        origin = origin_of_function(func)
        if origin == OWN:
            if not root or hasattr(func, "__wrapped__"):
                return  # persistmemo's own wrappers (a memoized helper): not the user's code
            origin = USER  # a function persistmemo itself memoizes (the demo's)
        key = f"{module}:{qualname}"
        if origin == LIBRARY:
            self._library(module)
            if root:
                self.layers.append(_entry(key, module, qualname, "library", key, "function"))
            return
        self.watched_functions.append(func)
        basis, data = self._code_of(func, drop_decorators=root)
        entry = _entry(key, module, qualname, basis, _digest(data), "function")
        if root:
            self.layers.append(entry)
        else:
            self.helpers[(key, entry["digest"])] = entry
        if follow:
            self._closure(func, key, keyed=keyed)
            self._globals(func)
            self._defaults(func, key, module, qualname, keyed=keyed)

    def _defaults(
        self, func: types.FunctionType, key: str, module: str, qualname: str, *, keyed: bool
    ) -> None:
        """Default values, computed once at definition (``def helper(x, k=FACTOR)``)."""
        defaults = dict(enumerate(func.__defaults__ or ()))
        named = {**{str(i): v for i, v in defaults.items()}, **(func.__kwdefaults__ or {})}
        positional = func.__code__.co_varnames[: func.__code__.co_argcount]
        parameters = {str(i): positional[len(positional) - len(defaults) + i] for i in defaults}
        state: frozenset[str] | None = None
        for name, value in sorted(named.items()):
            if isinstance(value, DESCRIPTORS):
                continue
            if isinstance(value, MUTABLE) and not self.light:
                # The value at the first call (a default filled from the environment at
                # import), unless the function itself mutates it (`def f(x, _seen={})`):
                # that is state it keeps, whose content would give each process its own
                # version. The light walk keeps every value (never fewer than the version).
                if state is None:
                    state = mutated_parameters(func, self._trusted)
                if parameters.get(name, name) in state:
                    continue
            if is_code(value):
                self._follow(value, keyed=keyed)
            else:
                self._constant(
                    f"{key}.<default>.{name}", module, f"{qualname}.<default>.{name}", value
                )

    def _closure(self, func: types.FunctionType, key: str, *, keyed: bool) -> None:
        cells = func.__closure__ or ()
        state: frozenset[str] = frozenset()
        if cells and not keyed:
            state = state_variables(func)
        for name, cell in zip(func.__code__.co_freevars, cells, strict=False):
            try:
                value = cell.cell_contents
            except ValueError:
                continue  # not assigned yet
            if name == "__class__" or name in state:
                continue  # super()'s class, followed already; a counter the helper keeps
            if not keyed:
                # A helper reached through a global: nobody keys its captured values at the
                # call, so they are in the version, and rebinding one (`nonlocal k; k = 3`
                # elsewhere) derives it again.
                self.watched_cells.append((cell, value))
            if is_code(value):
                self.captured.add(qualified(value))
                self._follow(value, keyed=keyed)
            elif isinstance(value, types.ModuleType):
                if origin_of_module(value) == LIBRARY:
                    self._library(value.__name__)
                continue
            elif keyed:
                self._instance_classes(value, keyed=True)  # keyed by value; its methods here
            else:
                module, _, qualname = key.partition(":")
                self._constant(
                    f"{key}.<closure>.{name}", module, f"{qualname}.<closure>.{name}", value
                )

    def _follow(self, value: Any, *, keyed: bool) -> None:
        """Version a function or class met in the code (a helper or a captured one)."""
        if isinstance(value, functools.partial):
            self._follow(value.func, keyed=keyed)
            if not keyed:
                module, _, qualname = qualified(value.func).partition(":")
                arguments = [list(value.args), value.keywords]
                self._constant(
                    f"{module}:{qualname}.<partial>", module, f"{qualname}.<partial>", arguments
                )
            return
        for layer in layers(value):
            if isinstance(layer, types.FunctionType):
                self._function(layer, root=False, keyed=keyed)
            elif isinstance(layer, type):
                self._class(layer, keyed=keyed)

    def _class(self, cls: type, *, keyed: bool, root: bool = False) -> None:
        if id(cls) in self.seen:
            return
        self._see(cls)
        module = str(getattr(cls, "__module__", "") or "")
        origin = origin_of_type(cls)
        if origin != USER:
            if origin == LIBRARY:
                self._library(module)
            return
        key = f"{module}:{cls.__qualname__}"
        path = module_file(sys.modules.get(module))
        methods = [
            function
            for function in methods_of(cls)
            if path is None or os.path.normcase(function.__code__.co_filename) == path
        ]
        basis, data = "bytecode", b""
        if self.light:
            if path is None:
                raise NotByStat(f"class {cls.__qualname__}: no source file")
            self._by_stat(path)
            # A class the source does not define is versioned by its attributes too.
            codes = [code_identity(m.__code__) for m in sorted(methods, key=qualname_of)]
            identity = ["class", path, cls.__qualname__, class_attributes(cls), codes]
            basis, data = "file", encode(identity)
        index = source_index(path) if path is not None and not self.light else None
        definition = None
        # A method assigned from outside the class body (`Scaler.__call__ = f`) is not in
        # the class's source: the class is then versioned by its code objects.
        if index is not None and all(
            method.__qualname__.startswith(f"{cls.__qualname__}.") and source_runs(index, method)
            for method in methods
        ):
            name = cls.__qualname__.rsplit(".", 1)[-1]
            definition = index.find(cls.__qualname__, name, None)
            if definition is not None:
                basis, data = "source", index.normalized(definition, drop_decorators=False)
        if basis == "bytecode":
            data = encode(["class", cls.__qualname__, *class_fingerprint(cls, methods)])
        entry = _entry(key, module, cls.__qualname__, basis, _digest(data), "class")
        if root:
            self.layers.append(entry)  # memo received a class or a callable object
        else:
            self.helpers[(key, entry["digest"])] = entry
        for base in cls.__bases__:
            self._class(base, keyed=keyed)
        state: set[str] | None = None
        self.watched_functions.extend(methods)
        attributes = cls.__dict__  # a live view: what is rebound later shows in it
        for attribute, value in sorted(vars(cls).items()):
            # `k = SCALE`, a dataclass field's default: the value the class body computed.
            if enum_internal(cls, attribute):
                continue  # Enum's own bookkeeping (3.13 added _unhashable_values_map_)
            if attribute.startswith("__"):
                if isinstance(value, (types.FunctionType, *DESCRIPTORS)):
                    # `Scaler.__call__ = ...` later: the methods the instances run
                    self.watched_names.append((attributes, attribute, value))
                continue
            self.watched_names.append((attributes, attribute, value))
            if isinstance(value, DESCRIPTORS):
                continue
            if isinstance(value, MUTABLE) and not self.light:
                # A list/dict/set as it is at the first call (`weights = [1]` filled at
                # import), unless the class's methods mutate it (a class-level cache): state.
                if state is None:
                    state = mutated_class_attributes(definition, methods)
                if attribute in state:
                    continue
            if is_code(value):
                self._follow(value, keyed=keyed)
            else:
                self._constant(
                    f"{key}.{attribute}", module, f"{cls.__qualname__}.{attribute}", value
                )
        for method in methods:
            self._see(method)
            self._closure(method, f"{module}:{method.__qualname__}", keyed=keyed)
            self._globals(method)

    def _globals(self, func: types.FunctionType) -> None:
        """Follow what ``func`` refers to by global name (or notes the packages it uses)."""
        if not self.include_globals and self.packages is not True:
            return
        namespace = func.__globals__
        code = func.__code__
        names = names_of(code)
        if self.packages is True:
            for imported in imported_top_names(code):  # `import tiny` inside the function
                self._library(imported)
        # The light walk keeps the globals the function mutates (only the source tells
        # them): more values in the fingerprint, never fewer than in the version.
        written = written_globals(code)
        if not self.light:
            written |= mutated_globals(func, self._trusted)
        module = str(namespace.get("__name__", ""))
        for name in sorted(names):
            if name in namespace and name not in written:
                self.watched_names.append((namespace, name, namespace[name]))
                self._global(module, name, namespace[name], names)
        if self.include_globals and imports_anything(code):
            # `import helpers` / `from .helpers import scale` inside the body: the names the
            # code reads from those modules, as for a module bound globally; a module the
            # body has not imported yet by its source (and what that imports), watched so
            # that once imported, the version follows its names.
            loaded, pending = user_modules_imported(code, namespace)
            for imported in loaded:
                self._global(module, imported.__name__, imported, names)
            for name in pending:
                self._unimported(name)

    def _global(self, module: str, name: str, value: Any, names: frozenset[str]) -> None:
        if isinstance(value, types.ModuleType):
            origin = origin_of_module(value)
            if origin == LIBRARY:
                self._library(value.__name__)
            elif origin == USER and self.include_globals and id(value) not in self.seen:
                # `features.clean(...)`: the names the code reads that the module defines.
                self._see(value)
                attributes = vars(value)
                for attribute in sorted(names):
                    if attribute in attributes:
                        self.watched_names.append((attributes, attribute, attributes[attribute]))
                        self._global(value.__name__, attribute, attributes[attribute], names)
            return
        if not self.include_globals:
            if is_code(value):
                self._library(str(getattr(value, "__module__", "") or ""))
            return
        if is_code(value) or isinstance(value, functools.partial):
            self._follow(value, keyed=False)
        elif isinstance(value, type(print)):
            self._library(str(getattr(value, "__module__", "") or ""))
        elif origin_of_type(type(value)) == USER and not encodable(value):
            self._class(type(value), keyed=False)  # an instance: its class's code runs
            self._unencodable(f"{module}:{name}", module, name, value)  # and how it was built
        else:
            self._constant(f"{module}:{name}", module, name, value)

    def _unimported(self, name: str) -> None:
        """A user's module the body imports but this process has not imported yet."""
        self.watched_names.append((sys.modules, name, ABSENT))
        if self.light:
            raise NotByStat(f"{name}: imported by the body, known by its source")
        for path, digest in unimported_source(name, set()):
            self.constants[f"<import>:{path}"] = {
                "module": name,
                "name": f"<source of {os.path.basename(path)}>",
                "repr": "<not imported yet: its source, and what it imports>",
                "digest": _digest(digest),
            }

    def _instance_classes(self, value: Any, *, keyed: bool) -> None:
        """The classes of the user's instances in ``value`` (a config dataclass, an Enum
        member, a NamedTuple, a list of them): the methods the code may call on them run."""
        pending = [(value, 0)]
        seen: set[int] = set()
        while pending and len(seen) < CONTAINED_AT_MOST:
            item, depth = pending.pop()
            for inner in (item, *contained(item)):
                if id(inner) in seen or isinstance(inner, type):
                    continue
                seen.add(id(inner))
                if origin_of_type(type(inner)) != USER:
                    continue
                self._class(type(inner), keyed=keyed)
                # A config holding configs (a dataclass field, an attribute): theirs too.
                attributes = getattr(inner, "__dict__", None)
                if isinstance(attributes, dict) and depth < 4:
                    pending += [(field, depth + 1) for field in list(attributes.values())[:64]]

    def _constant(self, key: str, module: str, name: str, value: Any) -> None:
        self._instance_classes(value, keyed=False)
        data = large_content(value)
        if data is not None:
            text = f"<{type(value).__qualname__} of {len(value)} items>"
        else:
            try:
                data = encode(value)
            except (UnsupportedType, TypeError, ValueError, RecursionError):
                if origin_of_type(type(value)) == LIBRARY:
                    self._library(type(value).__module__)
                self._unencodable(key, module, name, value)
                return
            text = repr(value)
            if len(text) > _REPR_LIMIT:
                text = text[: _REPR_LIMIT - 3] + "..."
        self.constants[key] = {
            "module": module,
            "name": name,
            "repr": text,
            "digest": _digest(data),
        }

    def _unencodable(self, key: str, module: str, name: str, value: Any) -> None:
        """A value the key encoding cannot take (a compiled pattern, a range, an instance):
        the functions and classes inside it are followed, and the statement that assigned
        it is versioned by its source, with the names that statement reads, so that editing
        ``PAT = re.compile("a+")``, ``STEPS = (double,)`` or ``MODEL = build_model()`` is seen.
        Without such a statement, the defining file as a whole is (misses, never stale)."""
        for item in contained(value):
            if is_code(item):
                self._follow(item, keyed=False)
        data = running_state(value)  # what the process holds, when it can be read
        if data is None and self.light:
            raise NotByStat(f"{module}.{name}: known by the source of its assignment")
        if data is None and "." not in name:
            for origin in defining_modules(module, name, value):
                path = module_file(origin)
                index = source_index(path) if path is not None else None
                if index is None:
                    continue
                if not self._trusted(index.path, index.stat):
                    break  # edited since import: the source would not describe the value
                found = index.assignment(name)
                if found is None:
                    if data is None:
                        data = encode(["file", _digest(index.tree_digest())])
                    continue
                data, reads = found
                namespace = vars(origin)
                for read in sorted(reads - {name}):
                    if read in namespace:
                        self._global(origin.__name__, read, namespace[read], reads)
                break
        if data is None:
            data = encode(["unencodable", qualified(type(value))])  # misses only, never stale
        self.constants[key] = {
            "module": module,
            "name": name,
            "repr": f"<{type(value).__qualname__}: its assignment's source>",
            "digest": _digest(data),
        }

    def _code_of(self, func: types.FunctionType, *, drop_decorators: bool) -> tuple[str, bytes]:
        """("source", normalized tree) when the file holds the running code, else bytecode."""
        code = func.__code__
        if self.light:
            self._by_stat(code.co_filename)
            # Where, and which code: two lambdas on one line (chosen at run time) differ.
            where = [code.co_filename, code_qualname(func)]
            return "file", encode([*where, code_identity(code), drop_decorators])
        index = source_index(code.co_filename)
        if index is not None:
            qualname = code_qualname(func)
            definition = index.find(qualname, code.co_name, code.co_firstlineno)
            if (
                definition is not None
                and isinstance(definition.node, function_nodes())
                and source_runs(index, func)
            ):
                return "source", index.normalized(definition, drop_decorators=drop_decorators)
        return "bytecode", encode(["bytecode", *code_fingerprint(code)])

    def _by_stat(self, path: str) -> None:
        """Take ``path`` by its stat (light walk): it must hold the code this process runs."""
        stat = file_stat(path)
        if stat is None:
            raise NotByStat(f"{path}: no source file")
        if not self._trusted(path, stat):
            raise NotByStat(f"{path}: edited since this process imported it")
        self.files[path] = tuple(stat)

    def _trusted(self, path: str, stat: FileStat | None) -> bool:
        """Whether the file as indexed is the one this process compiled its code from."""
        if stat is None:
            return True  # linecache's lines of a notebook cell or exec'd text: never edited
        found = self.trusted.get(path)
        if found is None:
            own = self.stamped.get(path)  # taken at the function's import
            stamp = Stamp(own, at_import=True) if own is not None else stamp_of(path)
            found = self.trusted[path] = holds_running_code(stat, stamp)
        return found

    def _library(self, module: str) -> None:
        top = module.partition(".")[0]
        if top and top != "persistmemo" and top != "builtins":
            self.library_modules.add(top)

    def _see(self, obj: object) -> None:
        self.seen.add(id(obj))
        self.keep_alive.append(obj)


def _digest(data: bytes) -> str:
    return blake2b(data, digest_size=VERSION_DIGEST_SIZE).hexdigest()


def _entry(
    key: str, module: str, qualname: str, basis: str, digest: str, kind: str
) -> dict[str, str]:
    return {
        "key": key,
        "module": module,
        "qualname": qualname,
        "basis": basis,
        "digest": digest,
        "kind": kind,
    }
