"""A function's version derived from its code, so that editing it stops old results being served.

The version digests what the function runs:

- every layer of the function, from the object ``memo`` received down its ``__wrapped__``
  chain (a decorator below ``@memo`` and the user's function): the normalized syntax tree of
  each (see sources.py: a reformat, a comment, a docstring or a decorator edit changes
  nothing; changing the code changes the version, changing it back finds the old entries);
- the functions and classes captured in their closures (their captured *values* are keyed
  at each call by the decorator, see closures.py);
- with ``include_globals`` (the default): the functions, classes (methods included) and
  constants they refer to by global name, followed transitively into every module of the
  user's own code (``from .features import clean``, ``features.clean(...)``), never into the
  standard library or installed packages;
- with ``packages``: the versions of the named distributions (or, with ``True``, of every
  installed distribution the code refers to), so that an upgrade is a miss.

Values are taken as the process holds them at the first call: constants, and also lists,
dicts and sets bound as defaults (``def helper(x, opts={...})``) or class attributes
(``weights = [1]``), so that one filled at import (from the environment, a file) is in the
version. Those the code itself mutates (``_CACHE[k] = v``, ``def f(x, _seen={})``,
``self.cache[k] = v``) are state: left out, as a closure's state is. A value mutated in
place after the first call is not seen by this process.

The version follows the code that runs. A definition's source is used only when its
module's file, as it is now, compiles to the running code object (sources.compiles_to):
a stale ``.pyc``, an edit under a running process, a reload from an edited file and text
exec'd under a file's name are versioned by their code objects instead (bytecode, names,
constants), a form that changes with the Python version: that can only cost misses, never
serve a stale result. Every name the walk read and every function it versioned is watched at
each call (code_watch.py): a reload, ``%autoreload`` or any rebinding derives the version
again before the call is keyed. ``python -O`` (any level)
is a version of its own: asserts and ``if __debug__:`` blocks are not in its code.
"""

from __future__ import annotations

import functools
import itertools
import marshal
import os
import sys
import threading
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from persistmemo._hashing import blake2b, hashing_threads
from persistmemo._keys.canonical import encode
from persistmemo._versioning.code_watch import ABSENT, CodeWatch
from persistmemo._versioning.origins import LIBRARY as _LIBRARY
from persistmemo._versioning.origins import OWN as _OWN
from persistmemo._versioning.origins import USER as _USER
from persistmemo._versioning.origins import origin_of_path as _origin_of_path
from persistmemo._versioning.source_stamps import (
    DefinitionStamp,
    FileStat,
    Stamp,
    definition_stamp,
    file_identity,
    file_stat,
    holds_running_code,
    stamp_of,
)
from persistmemo.errors import UnsupportedType

if TYPE_CHECKING:
    from persistmemo._versioning.sources import Definition, SourceIndex

__all__ = [
    "code_version",
    "definition_stamp",
    "explain_version",
    "version_fingerprint",
    "watched_fingerprint",
    "watched_version",
]

VERSION_DIGEST_SIZE = 8
_MAX_LAYERS = 100
_REPR_LIMIT = 80
_STORE_GLOBAL_OPCODES: tuple[frozenset[int], int] | None = None

_lock = threading.RLock()


def code_version(
    func: Callable[..., Any],
    *,
    include_globals: bool = True,
    packages: Iterable[str] | bool = (),
    stamp: object = None,
) -> str:
    """Return the hex version of ``func``'s code (16 hex digits).

    ``func`` may be a wrapper: every layer of its ``__wrapped__`` chain is versioned.
    ``stamp`` is what ``definition_stamp(func)`` returned at decoration.
    """
    return _VersionBasis(func, include_globals, packages, stamp).version()


def watched_version(
    func: Callable[..., Any],
    *,
    include_globals: bool = True,
    packages: Iterable[str] | bool = (),
    stamp: object = None,
) -> tuple[str, CodeWatch]:
    """``code_version``, and the watch of the code and names it was derived from."""
    basis = _VersionBasis(func, include_globals, packages, stamp)
    return basis.version(), basis.watch()


def watched_fingerprint(
    func: Callable[..., Any],
    *,
    include_globals: bool = True,
    packages: Iterable[str] | bool = (),
    stamp: object = None,
) -> tuple[str, CodeWatch] | None:
    """``version_fingerprint``, and the watch of the code and names it was taken from."""
    try:
        basis = _VersionBasis(func, include_globals, packages, stamp, light=True)
        return basis.fingerprint(), basis.watch()
    except _NotByStat:
        return None


def version_fingerprint(
    func: Callable[..., Any],
    *,
    include_globals: bool = True,
    packages: Iterable[str] | bool = (),
    stamp: object = None,
) -> str | None:
    """A digest of everything ``code_version(func, ...)`` is derived from, read without
    parsing any source: the same walk through the code, with each source file taken by its
    stat (path, size, mtime_ns, ctime_ns, inode, device) instead of its syntax tree, and the
    runtime values (constants, defaults, closures, class attributes) as the walk meets them.

    Equal fingerprints mean equal versions, so a version remembered under its fingerprint
    (memoized.py) can be served without deriving it again. None when that cannot be told
    from stats and values alone: a file edited since this process imported it, code without
    a source file, ``packages=`` (installed versions change outside the code), a value known
    only by the source of its assignment. Then the version is derived.
    """
    found = watched_fingerprint(
        func, include_globals=include_globals, packages=packages, stamp=stamp
    )
    return None if found is None else found[0]


class _NotByStat(Exception):
    """The version depends on more than stats and values: it must be derived."""


# Part of every fingerprint: a change to how versions are derived changes them all.
_FINGERPRINT_FORMAT = 1


@functools.cache
def _deriving_files() -> tuple[str, ...]:
    """The files of the code that derives versions and keys (this package, ``_keys``,
    ``_naming``): a new release of persistmemo derives versions afresh."""
    root = os.path.dirname(os.path.abspath(sys.modules["persistmemo"].__file__ or ""))
    found = [os.path.join(root, "_naming.py")]
    for package in ("_versioning", "_keys"):
        directory = os.path.join(root, package)
        found += sorted(
            os.path.join(directory, name) for name in os.listdir(directory) if name.endswith(".py")
        )
    return tuple(found)


def explain_version(
    func: Callable[..., Any],
    *,
    include_globals: bool = True,
    packages: Iterable[str] | bool = (),
    stamp: object = None,
) -> dict[str, Any]:
    """What went into ``code_version(func, ...)``, as JSON-serializable data.

    The function (module, qualname, whether its source or its bytecode was used), the wrapper
    layers, the helpers followed with a short digest each, the captured functions and
    classes, the constants with their repr, and the packages with their versions.
    """
    return _VersionBasis(func, include_globals, packages, stamp).explain()


class _VersionBasis:
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
        # parsed; anything it cannot vouch for raises _NotByStat.
        self.light = light
        self.files: dict[str, tuple[int, ...]] = {}
        if light and self.packages not in (False, ()):
            raise _NotByStat("installed package versions are not in any source file")
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
            self.package_versions = self._package_versions()

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

    def fingerprint(self) -> str:
        deriving = [[os.path.basename(path), file_identity(path)] for path in _deriving_files()]
        canonical = [
            _FINGERPRINT_FORMAT,
            [sys.version, sys.implementation.cache_tag, sys.flags.optimize],
            self.include_globals,
            deriving,
            [[layer["key"], layer["basis"], layer["digest"]] for layer in self.layers],
            sorted([entry["key"], entry["digest"]] for entry in self.helpers.values()),
            sorted([key, entry["digest"]] for key, entry in self.constants.items()),
            sorted([path, list(stat)] for path, stat in self.files.items()),
        ]
        return blake2b(encode(canonical), digest_size=16).hexdigest()

    def _by_stat(self, path: str) -> None:
        """Take ``path`` by its stat (light walk): it must hold the code this process runs."""
        stat = file_stat(path)
        if stat is None:
            raise _NotByStat(f"{path}: no source file")
        if not self._trusted(path, stat):
            raise _NotByStat(f"{path}: edited since this process imported it")
        self.files[path] = tuple(stat)

    def explain(self) -> dict[str, Any]:
        innermost = next(
            (layer for layer in reversed(self.layers) if layer["basis"] != "library"),
            self.layers[-1],
        )
        return {
            "version": self.version(),
            "function": _public(innermost),
            "layers": [_public(layer) for layer in self.layers if layer is not innermost],
            "helpers": sorted(
                (_public(entry) for entry in self.helpers.values()),
                key=lambda entry: (entry["module"], entry["qualname"], entry["digest"]),
            ),
            "captured": sorted(self.captured),
            "constants": [self.constants[key] for key in sorted(self.constants)],
            "packages": dict(sorted(self.package_versions.items())),
            "include_globals": self.include_globals,
        }

    # --- following the code -------------------------------------------------------------

    def _root(self, func: Any) -> None:
        layers = _layers(func)
        # Every layer's own code first, outermost first: a wrapper captures the function it
        # wraps, which must still be listed as a layer, not as a captured helper.
        for layer in layers:
            if isinstance(layer, types.FunctionType):
                self._function(layer, root=True, keyed=True, follow=False)
        for layer in layers:
            if isinstance(layer, types.FunctionType):
                if _origin_of_function(layer) == _USER or (
                    _origin_of_function(layer) == _OWN and not hasattr(layer, "__wrapped__")
                ):
                    self._closure(layer, _qualified(layer), keyed=True)
                    self._globals(layer)
                    module = str(getattr(layer, "__module__", None) or "")
                    qualname = layer.__qualname__
                    # A decorator's argument bound as a default (`def w(x, _k=k)`).
                    self._defaults(layer, _qualified(layer), module, qualname, keyed=True)
                    owner = _owner_class(layer)
                    if owner is not None:
                        # A method reads its class through self/cls, not by a global name:
                        # its siblings and class attributes are part of what it runs.
                        self._class(owner, keyed=True)
            elif isinstance(layer, type):
                self._class(layer, keyed=True, root=True)
            elif _origin_of_type(type(layer)) == _USER:
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
        code = func.__code__
        module = str(getattr(func, "__module__", None) or "")
        qualname = getattr(code, "co_qualname", func.__qualname__)
        origin = _origin_of_function(func)
        if origin == _OWN:
            if not root or hasattr(func, "__wrapped__"):
                return  # persistmemo's own wrappers (a memoized helper): not the user's code
            origin = _USER  # a function persistmemo itself memoizes (the demo's)
        key = f"{module}:{qualname}"
        if origin == _LIBRARY:
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
            if isinstance(value, _DESCRIPTORS):
                continue
            if isinstance(value, _MUTABLE) and not self.light:
                # The value at the first call (a default filled from the environment at
                # import), unless the function itself mutates it (`def f(x, _seen={})`):
                # that is state it keeps, whose content would give each process its own
                # version. The light walk keeps every value (never fewer than the version).
                if state is None:
                    state = _mutated_parameters(func, self._trusted)
                if parameters.get(name, name) in state:
                    continue
            if _is_code(value):
                self._follow(value, keyed=keyed)
            else:
                self._constant(
                    f"{key}.<default>.{name}", module, f"{qualname}.<default>.{name}", value
                )

    def _closure(self, func: types.FunctionType, key: str, *, keyed: bool) -> None:
        cells = func.__closure__ or ()
        state: frozenset[str] = frozenset()
        if cells and not keyed:
            from persistmemo._versioning.closures import state_variables

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
            if _is_code(value):
                self.captured.add(_qualified(value))
                self._follow(value, keyed=keyed)
            elif isinstance(value, types.ModuleType):
                if _origin_of_module(value) == _LIBRARY:
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
                module, _, qualname = _qualified(value.func).partition(":")
                arguments = [list(value.args), value.keywords]
                self._constant(
                    f"{module}:{qualname}.<partial>", module, f"{qualname}.<partial>", arguments
                )
            return
        for layer in _layers(value):
            if isinstance(layer, types.FunctionType):
                self._function(layer, root=False, keyed=keyed)
            elif isinstance(layer, type):
                self._class(layer, keyed=keyed)

    def _class(self, cls: type, *, keyed: bool, root: bool = False) -> None:
        if id(cls) in self.seen:
            return
        self._see(cls)
        module = str(getattr(cls, "__module__", "") or "")
        origin = _origin_of_type(cls)
        if origin != _USER:
            if origin == _LIBRARY:
                self._library(module)
            return
        key = f"{module}:{cls.__qualname__}"
        path = _module_file(sys.modules.get(module))
        methods = [
            function
            for function in _methods(cls)
            if path is None or os.path.normcase(function.__code__.co_filename) == path
        ]
        basis, data = "bytecode", b""
        if self.light:
            if path is None:
                raise _NotByStat(f"class {cls.__qualname__}: no source file")
            self._by_stat(path)
            # A class the source does not define is versioned by its attributes too.
            codes = [_code_identity(m.__code__) for m in sorted(methods, key=_qualname)]
            identity = ["class", path, cls.__qualname__, _attributes(cls), codes]
            basis, data = "file", encode(identity)
        index = source_index(path) if path is not None and not self.light else None
        definition = None
        # A method assigned from outside the class body (`Scaler.__call__ = f`) is not in
        # the class's source: the class is then versioned by its code objects.
        if index is not None and all(
            method.__qualname__.startswith(f"{cls.__qualname__}.") and _source_runs(index, method)
            for method in methods
        ):
            name = cls.__qualname__.rsplit(".", 1)[-1]
            definition = index.find(cls.__qualname__, name, None)
            if definition is not None:
                basis, data = "source", index.normalized(definition, drop_decorators=False)
        if basis == "bytecode":
            data = encode(["class", cls.__qualname__, *_class_fingerprint(cls, methods)])
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
            if _enum_internal(cls, attribute):
                continue  # Enum's own bookkeeping (3.13 added _unhashable_values_map_)
            if attribute.startswith("__"):
                if isinstance(value, (types.FunctionType, *_DESCRIPTORS)):
                    # `Scaler.__call__ = ...` later: the methods the instances run
                    self.watched_names.append((attributes, attribute, value))
                continue
            self.watched_names.append((attributes, attribute, value))
            if isinstance(value, _DESCRIPTORS):
                continue
            if isinstance(value, _MUTABLE) and not self.light:
                # A list/dict/set as it is at the first call (`weights = [1]` filled at
                # import), unless the class's methods mutate it (a class-level cache): state.
                if state is None:
                    state = _mutated_attributes(definition, methods)
                if attribute in state:
                    continue
            if _is_code(value):
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
        names = _names(code)
        if self.packages is True:
            for imported in _imported_modules(code):  # `import tiny` inside the function
                self._library(imported)
        # The light walk keeps the globals the function mutates (only the source tells
        # them): more values in the fingerprint, never fewer than in the version.
        written = _written_globals(code)
        if not self.light:
            written |= _mutated_globals(func, self._trusted)
        module = str(namespace.get("__name__", ""))
        for name in sorted(names):
            if name in namespace and name not in written:
                self.watched_names.append((namespace, name, namespace[name]))
                self._global(module, name, namespace[name], names)
        if self.include_globals and _imports_anything(code):
            # `import helpers` / `from .helpers import scale` inside the body: the names the
            # code reads from those modules, as for a module bound globally; a module the
            # body has not imported yet by its source (and what that imports), watched so
            # that once imported, the version follows its names.
            loaded, pending = _body_imports(code, namespace)
            for imported in loaded:
                self._global(module, imported.__name__, imported, names)
            for name in pending:
                self._unimported(name)

    def _global(self, module: str, name: str, value: Any, names: frozenset[str]) -> None:
        if isinstance(value, types.ModuleType):
            origin = _origin_of_module(value)
            if origin == _LIBRARY:
                self._library(value.__name__)
            elif origin == _USER and self.include_globals and id(value) not in self.seen:
                # `features.clean(...)`: the names the code reads that the module defines.
                self._see(value)
                attributes = vars(value)
                for attribute in sorted(names):
                    if attribute in attributes:
                        self.watched_names.append((attributes, attribute, attributes[attribute]))
                        self._global(value.__name__, attribute, attributes[attribute], names)
            return
        if not self.include_globals:
            if _is_code(value):
                self._library(str(getattr(value, "__module__", "") or ""))
            return
        if _is_code(value) or isinstance(value, functools.partial):
            self._follow(value, keyed=False)
        elif isinstance(value, type(print)):
            self._library(str(getattr(value, "__module__", "") or ""))
        elif _origin_of_type(type(value)) == _USER and not _encodable(value):
            self._class(type(value), keyed=False)  # an instance: its class's code runs
            self._unencodable(f"{module}:{name}", module, name, value)  # and how it was built
        else:
            self._constant(f"{module}:{name}", module, name, value)

    def _unimported(self, name: str) -> None:
        """A user's module the body imports but this process has not imported yet."""
        self.watched_names.append((sys.modules, name, ABSENT))
        if self.light:
            raise _NotByStat(f"{name}: imported by the body, known by its source")
        for path, digest in _unimported_source(name, set()):
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
        while pending and len(seen) < _CONTAINED_AT_MOST:
            item, depth = pending.pop()
            for inner in (item, *_contained(item)):
                if id(inner) in seen or isinstance(inner, type):
                    continue
                seen.add(id(inner))
                if _origin_of_type(type(inner)) != _USER:
                    continue
                self._class(type(inner), keyed=keyed)
                # A config holding configs (a dataclass field, an attribute): theirs too.
                attributes = getattr(inner, "__dict__", None)
                if isinstance(attributes, dict) and depth < 4:
                    pending += [(field, depth + 1) for field in list(attributes.values())[:64]]

    def _constant(self, key: str, module: str, name: str, value: Any) -> None:
        self._instance_classes(value, keyed=False)
        data = _large_content(value)
        if data is not None:
            text = f"<{type(value).__qualname__} of {len(value)} items>"
        else:
            try:
                data = encode(value)
            except (UnsupportedType, TypeError, ValueError, RecursionError):
                if _origin_of_type(type(value)) == _LIBRARY:
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
        for item in _contained(value):
            if _is_code(item):
                self._follow(item, keyed=False)
        data = _running_state(value)  # what the process holds, when it can be read
        if data is None and self.light:
            raise _NotByStat(f"{module}.{name}: known by the source of its assignment")
        if data is None and "." not in name:
            for origin in _defining_modules(module, name, value):
                path = _module_file(origin)
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
            data = encode(["unencodable", _qualified(type(value))])  # misses only, never stale
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
            where = [code.co_filename, getattr(code, "co_qualname", func.__qualname__)]
            return "file", encode([*where, _code_identity(code), drop_decorators])
        index = source_index(code.co_filename)
        if index is not None:
            qualname = getattr(code, "co_qualname", func.__qualname__)
            definition = index.find(qualname, code.co_name, code.co_firstlineno)
            if (
                definition is not None
                and isinstance(definition.node, _function_nodes())
                and _source_runs(index, func)
            ):
                return "source", index.normalized(definition, drop_decorators=drop_decorators)
        return "bytecode", encode(["bytecode", *code_fingerprint(code)])

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

    def _package_versions(self) -> dict[str, str]:
        if self.packages is False or self.packages == ():
            return {}
        from importlib import metadata  # ~60 ms to import: only when packages= asks

        if self.packages is True:
            mapping = _packages_distributions()
            names = sorted({d for top in self.library_modules for d in mapping.get(top, ())})
        else:
            names = list(self.packages)
        versions: dict[str, str] = {}
        for name in names:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = "not installed"
        return versions

    def _see(self, obj: object) -> None:
        self.seen.add(id(obj))
        self.keep_alive.append(obj)


# --- what the code is made of ---------------------------------------------------------------


def _layers(obj: Any) -> list[Any]:
    """``obj`` and what it wraps, outermost first (methods and static/class methods opened)."""
    layers: list[Any] = []
    seen: set[int] = set()
    while obj is not None and id(obj) not in seen and len(layers) < _MAX_LAYERS:
        seen.add(id(obj))
        if isinstance(obj, (types.MethodType, staticmethod, classmethod)):
            obj = obj.__func__
        layers.append(obj)
        wrapped = getattr(obj, "__wrapped__", None) if not isinstance(obj, type) else None
        obj = (
            wrapped
            if callable(wrapped) or isinstance(wrapped, (staticmethod, classmethod))
            else None
        )
    return layers


def _source_runs(index: SourceIndex, func: types.FunctionType) -> bool:
    """Whether the source as indexed holds the code ``func`` runs: its module's text, as the
    file is now, compiles to the running code object.

    Always compiled, never vouched for by file stamps: a stale ``.pyc`` (an edit that kept
    the size and the mtime: ``cp -p``, ``rsync -t``, a same-second edit), an edit under a
    running process, a reload from another file and ``exec``'d text all run code the file
    does not hold, and are then versioned by their bytecode. A notebook cell's lines (no
    file) are the text it was compiled from.
    """
    return index.stat is None or index.compiles_to(func.__code__)


def _is_code(value: object) -> bool:
    return isinstance(
        value, (types.FunctionType, type, types.MethodType, staticmethod, classmethod)
    ) or (callable(value) and hasattr(value, "__wrapped__") and not isinstance(value, type))


def _function_nodes() -> tuple[type, ...]:
    import ast

    return (ast.FunctionDef, ast.AsyncFunctionDef)


def _methods(cls: type) -> list[types.FunctionType]:
    found: list[types.FunctionType] = []
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            found.extend(f for f in (value.fget, value.fset, value.fdel) if f is not None)  # type: ignore[misc]
        elif isinstance(value, types.FunctionType):
            found.append(value)
    return [f for f in found if isinstance(f, types.FunctionType)]


def _class_fingerprint(cls: type, methods: list[types.FunctionType]) -> list[object]:
    """A class without trustworthy source: its bases, methods' code and plain attributes."""
    return [
        [_qualified(base) for base in cls.__bases__],
        [[m.__qualname__, code_fingerprint(m.__code__)] for m in sorted(methods, key=_qualname)],
        _attributes(cls),
    ]


def _attributes(cls: type) -> list[object]:
    attributes: list[object] = []
    for name, value in sorted(vars(cls).items()):
        if name.startswith("__") and name.endswith("__"):
            continue
        if _encodable(value) and not isinstance(value, type):
            attributes.append([name, value])
    return attributes


def _code_identity(code: types.CodeType) -> list[object]:
    """A code object as the light walk tells it apart: its position, bytecode, names and
    constants (nested code included); the Python version is in the fingerprint."""
    constants: list[object] = []
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            constants.append(_code_identity(constant))
        else:
            constants.append([type(constant).__qualname__, repr(constant)])
    return [
        code.co_name,
        code.co_firstlineno,
        code.co_code,
        list(code.co_names),
        list(code.co_varnames),
        list(code.co_freevars),
        [code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags],
        constants,
    ]


# Parsing imports ast, dataclasses and inspect (~8 ms): only a derivation needs it, never the
# fingerprint of a version remembered in the store.
def source_index(path: str) -> SourceIndex | None:
    from persistmemo._versioning.sources import source_index as index_of

    return index_of(path)


def code_fingerprint(code: types.CodeType) -> list[object]:
    from persistmemo._versioning.sources import code_fingerprint as fingerprint_of

    return fingerprint_of(code)


def _names(code: types.CodeType) -> frozenset[str]:
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _names(constant)
    return frozenset(names)


def _running_state(value: object) -> bytes | None:
    """Bytes that describe ``value`` as this process holds it, without its source: an
    instance's attributes when they have a key encoding; a container of such values and
    functions or classes (``{"a": handle_a}``), the code by its name (followed as a helper
    by the caller); else a repr that names no address (``re.compile('a+')``,
    ``range(0, 2)``). None when none does."""
    if isinstance(value, _CONTAINERS):
        try:
            seen = [0]
            structure = _structure(value, 0, seen)
            if seen[0] <= 900:  # every function in it followed (_contained's limit)
                return encode(["structure", structure])
        except (_Opaque, UnsupportedType, TypeError, ValueError, RecursionError):
            pass
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict) and state and not isinstance(value, (type, types.ModuleType)):
        try:
            return encode(["state", type(value).__qualname__, state])
        except (UnsupportedType, TypeError, ValueError, RecursionError):
            pass
    try:
        text = repr(value)
    except Exception:
        return None
    if " at 0x" in text or len(text) > 100_000:
        return None
    return encode(["repr", type(value).__qualname__, text])


_CONTAINERS = (list, tuple, dict, set, frozenset)


class _Opaque(Exception):
    """A value inside a container that neither the key encoding nor a name describes."""


def _structure(value: object, depth: int, seen: list[int]) -> object:
    # Encodable values as themselves, code by its qualified name, containers item by item
    # (a set's items sorted by their encoding: its order varies between processes). Code
    # only where the caller follows it (_contained: two levels, a thousand items at most),
    # so that a function named here is also versioned by what it does.
    if depth > 8:
        raise _Opaque
    if 0 < depth <= 2:
        seen[0] += 1
    if _is_code(value):
        if depth > 2:
            raise _Opaque
        return ["code", _qualified(value).partition(":")[2]]  # no module, as in version()
    if isinstance(value, dict):
        pairs = [
            [_structure(k, depth + 1, seen), _structure(v, depth + 1, seen)]
            for k, v in value.items()
        ]
        return ["dict", pairs]
    if isinstance(value, (set, frozenset)):
        items = sorted(encode(_structure(item, depth + 1, seen)) for item in value)
        return [type(value).__name__, items]
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, [_structure(item, depth + 1, seen) for item in value]]
    if not _encodable(value):
        raise _Opaque  # a partial, an instance: described otherwise, or not at all
    return value


def _defining_modules(module: str, name: str, value: object) -> list[types.ModuleType]:
    """The user modules that hold ``value`` as ``name``: the referencing one first, then
    those it may have been imported from (``from config import PAT``)."""
    found: list[types.ModuleType] = []
    first = sys.modules.get(module)
    if isinstance(first, types.ModuleType):
        found.append(first)
    for candidate in list(sys.modules.values()):
        if (
            isinstance(candidate, types.ModuleType)
            and candidate is not first
            and vars(candidate).get(name) is value
            and _origin_of_module(candidate) == _USER
        ):
            found.append(candidate)
    return found


def _owner_class(func: types.FunctionType) -> type | None:
    """The class a method is defined in, found by its qualified name (not for local ones)."""
    qualname = func.__qualname__
    if "." not in qualname or "<locals>" in qualname:
        return None
    target: object = sys.modules.get(str(func.__module__ or ""))
    for part in qualname.split(".")[:-1]:
        namespace = getattr(target, "__dict__", None)
        if namespace is None or part not in namespace:  # no getattr: no lazy imports run
            return None
        target = namespace[part]
    return target if isinstance(target, type) else None


def _body_imports(code: types.CodeType, namespace: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """The modules ``code`` imports inside itself (nested code included): the user's that
    are imported already, and the names of those not imported yet (never imported here: a
    module may print, parse the command line or exit when imported)."""
    import importlib.util

    loaded: list[Any] = []
    pending: list[str] = []
    for name, level, fromlist in _import_statements(code):
        try:
            target = importlib.util.resolve_name("." * level + name, namespace.get("__package__"))
        except (ImportError, ValueError, TypeError):
            continue
        # `import a.b.c` binds `a` and reads `a.b.c` through it: each package on the way;
        # `from . import sub` may name a submodule.
        parts = target.split(".")
        candidates = [".".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
        candidates += [f"{target}.{item}" for item in fromlist if item != "*"]
        for dotted in candidates:
            module = sys.modules.get(dotted)
            if module is None:
                pending.append(dotted)
            elif _origin_of_module(module) == _USER:
                loaded.append(module)
    return loaded, pending


def _unimported_source(name: str, seen: set[str], depth: int = 0) -> list[tuple[str, bytes]]:
    """(path, digest of the normalized source) of the user's module ``name``, found without
    importing it, and of the user's modules its source imports, transitively; nothing for a
    module that is not the user's (or not found)."""
    path = _source_path_without_import(name)
    if path is None or path in seen or depth > 20 or _origin_of_path(path) != _USER:
        return []
    seen.add(path)
    index = source_index(path)
    if index is None:
        return [(path, b"unreadable")]
    found = [(path, _what_import_would_run(path, index))]
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    for imported in index.imported_names(package):
        found += _unimported_source(imported, seen, depth + 1)
    return found


def _what_import_would_run(path: str, index: SourceIndex) -> bytes:
    """The digest of what importing ``path`` would run: its normalized source, unless the
    import system would load a ``.pyc`` that does not hold that source (a stale one, after
    an edit that kept size and mtime), whose code objects are then digested instead."""
    import importlib.util

    try:
        cached = importlib.util.cache_from_source(path)
        with open(cached, "rb") as file:
            data = file.read()
        info = os.stat(path)
    except (OSError, NotImplementedError, ValueError):
        return index.tree_digest()  # no bytecode: the source is what would be compiled
    if len(data) < 16 or data[:4] != importlib.util.MAGIC_NUMBER:
        return index.tree_digest()  # not this Python's: recompiled from the source
    flags = int.from_bytes(data[4:8], "little")
    if flags == 0:  # checked by the source's mtime and size only
        mtime = int.from_bytes(data[8:12], "little")
        size = int.from_bytes(data[12:16], "little")
        if mtime != int(info.st_mtime) & 0xFFFFFFFF or size != info.st_size & 0xFFFFFFFF:
            return index.tree_digest()  # out of date by its stamp: recompiled
    elif flags & 0b10:  # a hash-based .pyc checked against the source: it holds the source
        return index.tree_digest()
    try:
        loaded = marshal.loads(data[16:])
        compiled = compile(index.tree, path, "exec", dont_inherit=True)
    except Exception:
        return index.tree_digest()
    from persistmemo._versioning.sources import same_code

    if same_code(loaded, compiled):
        return index.tree_digest()
    return blake2b(encode(["bytecode", *code_fingerprint(loaded)]), digest_size=16).digest()


def _source_path_without_import(name: str) -> str | None:
    """The source file of module ``name`` as the path finder would find it, without running
    any package's ``__init__`` (find_spec of ``a.b`` imports ``a``)."""
    from importlib.machinery import PathFinder

    search: list[str] | None = None
    spec = None
    parts = name.split(".")
    for depth in range(len(parts)):
        prefix = ".".join(parts[: depth + 1])
        loaded = sys.modules.get(prefix)
        if loaded is not None and depth < len(parts) - 1:
            search = list(getattr(loaded, "__path__", None) or [])
            continue
        try:
            spec = PathFinder.find_spec(prefix, search)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        search = list(spec.submodule_search_locations or [])
    origin = getattr(spec, "origin", None)
    return origin if isinstance(origin, str) and origin.endswith(".py") else None


def _imports_anything(code: types.CodeType) -> bool:
    """A quick filter: whether ``code`` (or code nested in it) has an IMPORT_NAME at all."""
    from opcode import opmap  # what dis itself reads: loaded with the parsing anyway

    if opmap["IMPORT_NAME"] in code.co_code[::2]:
        return True
    return any(
        isinstance(constant, types.CodeType) and _imports_anything(constant)
        for constant in code.co_consts
    )


def _import_statements(code: types.CodeType) -> list[tuple[str, int, tuple[str, ...]]]:
    """(module name, relative level, names imported from it) of each IMPORT_NAME in
    ``code`` and its nested code."""
    import dis

    found: list[tuple[str, int, tuple[str, ...]]] = []
    constants: list[object] = []
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_CONST", "LOAD_SMALL_INT"):  # 3.14: small ints
            constants.append(instruction.argval)
        elif instruction.opname == "IMPORT_NAME" and isinstance(instruction.argval, str):
            level = constants[-2] if len(constants) >= 2 else 0
            fromlist = constants[-1] if constants else None
            names = (
                tuple(n for n in fromlist if isinstance(n, str)) if type(fromlist) is tuple else ()
            )
            found.append((instruction.argval, level if type(level) is int else 0, names))
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            found += _import_statements(constant)
    return found


def _imported_modules(code: types.CodeType) -> list[str]:
    """Top-level names of the modules ``code`` imports inside itself (IMPORT_NAME)."""
    import dis

    found: list[str] = []
    for instruction in dis.get_instructions(code):
        if instruction.opname == "IMPORT_NAME" and isinstance(instruction.argval, str):
            found.append(instruction.argval.partition(".")[0])
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            found += _imported_modules(constant)
    return found


def _mutated_globals(
    func: types.FunctionType, trusted: Callable[[str, FileStat | None], bool]
) -> frozenset[str]:
    """Globals ``func`` mutates (``_CACHE[k] = v``, ``REGISTRY.append(f)``): state it keeps.

    Their content changes as the program runs, so as part of the version they would give
    each process its own version (misses everywhere); like a closure's state, they are left
    out. The rules are the closures' (see closures.mutated_names).
    """
    from persistmemo._versioning.closures import mutated_names, mutated_names_in_code

    code = func.__code__
    definition = _running_definition(func, trusted)
    if definition is not None:
        return frozenset(mutated_names(definition.node))
    return frozenset(mutated_names_in_code(code, ("LOAD_GLOBAL", "LOAD_NAME")))


def _running_definition(
    func: types.FunctionType, trusted: Callable[[str, FileStat | None], bool]
) -> Definition | None:
    """The definition of ``func`` in its source, only if the source holds the running code
    (an edit since import could add a mutation the running code does not make, and take a
    value out of the version); the same test as the version's (``_code_of``), cached."""
    code = func.__code__
    index = source_index(code.co_filename)
    if index is None:
        return None
    qualname = getattr(code, "co_qualname", func.__qualname__)
    definition = index.find(qualname, code.co_name, code.co_firstlineno)
    if definition is None:
        return None
    if _source_runs(index, func):
        return definition
    return None


def _written_globals(code: types.CodeType) -> frozenset[str]:
    """Names the code assigns with ``global``: state it keeps, not constants it reads."""
    writes, extended_arg = _global_write_opcodes()
    written: set[str] = set()
    raw = code.co_code
    if not any(bytes([op]) in raw for op in writes):
        raw = b""  # a quick filter: most functions write no global
    extended = 0
    for offset in range(0, len(raw) - 1, 2):
        op, arg = raw[offset], raw[offset + 1] | extended
        if op == extended_arg:
            extended = arg << 8
            continue
        extended = 0
        if op in writes and arg < len(code.co_names):
            written.add(code.co_names[arg])
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            written |= _written_globals(constant)
    return frozenset(written)


# (STORE_GLOBAL, DELETE_GLOBAL, EXTENDED_ARG) of the Pythons persistmemo supports, so that a
# warm start's fingerprint does not import opcode; another Python asks opcode. EXTENDED_ARG
# is 144 up to 3.12 and 71 from 3.13 (tests/test_versions_cold_start.py checks the table).
_GLOBAL_WRITE_OPCODES = {
    (3, 10): (97, 98, 144),
    (3, 11): (97, 98, 144),
    (3, 12): (97, 98, 144),
    (3, 13): (113, 66, 71),
}


def _global_write_opcodes() -> tuple[frozenset[int], int]:
    global _STORE_GLOBAL_OPCODES
    if _STORE_GLOBAL_OPCODES is None:
        known = _GLOBAL_WRITE_OPCODES.get(sys.version_info[:2])
        if known is None:
            import opcode

            store, delete, extended = (
                opcode.opmap.get(name, -1)
                for name in ("STORE_GLOBAL", "DELETE_GLOBAL", "EXTENDED_ARG")
            )
            known = (store, delete, extended)
        _STORE_GLOBAL_OPCODES = (frozenset(known[:2]) - {-1}, known[2])
    return _STORE_GLOBAL_OPCODES


# Class attributes and defaults that are not constants: descriptors (code, followed through
# the class's methods).
_DESCRIPTORS = (
    staticmethod,
    classmethod,
    property,
    types.MemberDescriptorType,
    types.GetSetDescriptorType,
)
# Mutable defaults and class attributes: versioned by their value at the first call, unless
# the code mutates them (a class-level cache would give each process its own version).
_MUTABLE = (list, dict, set, bytearray)


def _mutated_parameters(
    func: types.FunctionType, trusted: Callable[[str, FileStat | None], bool]
) -> frozenset[str]:
    """Parameters ``func`` mutates (``def f(x, _seen={}): _seen[x] = 1``): the source tells
    (closures.mutated_names), else the bytecode."""
    from persistmemo._versioning.closures import mutated_names, mutated_names_in_code

    code = func.__code__
    definition = _running_definition(func, trusted)
    if definition is not None:
        return frozenset(mutated_names(definition.node))
    return frozenset(mutated_names_in_code(code, ("LOAD_FAST",)))


def _mutated_attributes(definition: Any, methods: list[types.FunctionType]) -> set[str]:
    """Attribute names a class's code mutates through (``self.cache[k] = v``): from the
    class's source when it is trusted, else from its methods' bytecode."""
    from persistmemo._versioning.closures import mutated_attributes, mutated_attributes_in_code

    if definition is not None:
        return mutated_attributes(definition.node)
    found: set[str] = set()
    for method in methods:
        found |= mutated_attributes_in_code(method.__code__)
    return found


_LARGE = 1024
_large_digests: dict[int, tuple[object, bytes]] = {}


def _large_content(value: object) -> bytes | None:
    """The content of a large container of plain values (a lookup table of 300,000 rows),
    digested through ``marshal`` rather than the canonical key encoding (~4 µs an item):
    the same content in the same order gives the same bytes in every process and Python 3
    version; another order, or sets of strings nested inside (ordered by their hashes), only
    cost misses. None for anything else, or what marshal does not take. Remembered per
    object in this process (a table mutated in place later is not seen, as documented)."""
    kind = type(value)
    if kind not in (list, tuple, dict, set, frozenset) or len(value) < _LARGE:  # type: ignore[arg-type]
        return None
    known = _large_digests.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    plain: Any = value
    if kind in (set, frozenset):
        try:
            plain = sorted(value)  # type: ignore[call-overload]
        except TypeError:
            return None
    try:
        # Version 4 writes an object seen twice (a shared key string) as a back-reference:
        # twice as fast as version 2, and the same for the same program; a table whose items
        # are shared differently costs a miss, never a stale result.
        data = marshal.dumps(plain, 4)
    except ValueError:
        return None
    import blake3  # a core dependency; imported only when a large table is met

    digest = b"marshal4:" + blake3.blake3(data, max_threads=hashing_threads(len(data))).digest()
    if len(_large_digests) >= 64:
        _large_digests.clear()
    _large_digests[id(value)] = (value, digest)  # holds it: the id stays its own
    return digest


def _enum_internal(cls: type, attribute: str) -> bool:
    """Whether ``attribute`` of ``cls`` is the enum machinery's (``_member_map_``...): its
    members are versioned as attributes of their own, and Python versions add these."""
    return (
        len(attribute) > 2
        and attribute[0] == "_" != attribute[1]
        and attribute.endswith("_")
        and "_member_map_" in vars(cls)
    )


_CONTAINED_AT_MOST = 1000


def _contained(value: Any) -> list[Any]:
    """The items of a container constant, two levels deep (a dispatch table's functions)."""
    found: list[Any] = []
    layer = [value]
    for _ in range(2):
        following: list[Any] = []
        for item in layer:
            if len(following) >= _CONTAINED_AT_MOST:
                break  # a 300,000-row table: the first rows tell what kind of items it holds
            if isinstance(item, dict):
                following += itertools.islice(
                    itertools.chain(item.keys(), item.values()), _CONTAINED_AT_MOST
                )
            elif isinstance(item, (list, tuple, set, frozenset)):
                following += itertools.islice(item, _CONTAINED_AT_MOST)
        found += following
        layer = following
    return found[:_CONTAINED_AT_MOST]


def _encodable(value: object) -> bool:
    try:
        encode(value)
    except (UnsupportedType, TypeError, ValueError, RecursionError):
        return False
    return True


def _qualified(value: object) -> str:
    module = getattr(value, "__module__", None) or ""
    qualname = getattr(value, "__qualname__", None) or type(value).__qualname__
    return f"{module}:{qualname}"


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


def _public(entry: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in entry.items() if name != "key"}


# --- whose code: the user's, a library's, or persistmemo's --------------------------------


@functools.cache
def _module_file(module: object) -> str | None:
    path = getattr(module, "__file__", None)
    if path is None:
        # A namespace package has no file: its directories say whose it is.
        locations = list(getattr(module, "__path__", None) or ())
        path = str(locations[0]) + os.sep if locations else None
    return os.path.normcase(os.path.abspath(path)) if isinstance(path, str) else None


def _origin_of_function(func: types.FunctionType) -> str:
    path = func.__code__.co_filename
    if path.startswith("<"):
        # "<frozen posixpath>" is the standard library's; "<string>" is exec'd text, whose
        # module says whose it is (a dataclass's generated __init__ is its module's).
        if path.startswith("<frozen"):
            return _LIBRARY
        module = sys.modules.get(getattr(func, "__module__", None) or "")
        return _USER if module is None else _origin_of_type_module(module)
    return _origin_of_path(path)


def _origin_of_type_module(module: types.ModuleType) -> str:
    if getattr(module, "__file__", None) is None and not hasattr(module, "__path__"):
        # builtins and frozen modules are the interpreter's; __main__ in a REPL is the user's
        return _USER if module.__name__ == "__main__" else _LIBRARY
    return _origin_of_module(module)


def _origin_of_module(module: types.ModuleType) -> str:
    path = _module_file(module)
    return _LIBRARY if path is None else _origin_of_path(path)


def _origin_of_type(cls: type) -> str:
    module = sys.modules.get(getattr(cls, "__module__", "") or "")
    if module is None:
        return _LIBRARY if cls.__module__ == "builtins" else _USER
    return _origin_of_type_module(module)


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    from importlib import metadata

    return dict(metadata.packages_distributions())


def _qualname(func: types.FunctionType) -> str:
    return func.__qualname__
