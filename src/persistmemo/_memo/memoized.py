"""The state behind one memoized function, its keys and its controls.

``MemoizedFunction`` settles at decoration what does not depend on the arguments (the
signature binder, the identity, the stamp of its source) and at the first call the rest
(the version, the key prefix, the captured variables to key, ``PERSISTMEMO_DISABLE``), so
that importing a module costs no parsing. The call paths are ``CallPaths``' (call_paths.py).

Sent to another process, a memoized function goes by reference when pickle can import it
there (a function of a module), and by value when it cannot (one of a script's ``__main__``
or a notebook cell, which cloudpickle sends by value: joblib's loky, Dask). By value, the
call path that cloudpickle copies holds this state, which pickles as what rebuilds it
(``__reduce__``): the function (by value, as cloudpickle sends any), the options, the store
as its settings, the identity and the version derived here, never locks or connections.
The worker makes one ``MemoizedFunction`` per function sent, however many times it arrives,
so its hits, memory tier and store are those of one function, as in the sender.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import os
import sys
import threading
import types
import weakref
from collections.abc import Callable, Iterable

from persistmemo import _environment as environment
from persistmemo._codec.decoding import decode_value
from persistmemo._keys.canonical import encode, encode_arguments, encode_each
from persistmemo._keys.classes import HOOK_NAME
from persistmemo._keys.layout import KeyBuilder
from persistmemo._memo.binding import CallBinder
from persistmemo._memo.call_paths import CallPaths
from persistmemo._memo.call_paths import is_async as _inspect_is_async
from persistmemo._memo.memory import MemoryTier
from persistmemo._memo.options import MemoOptions
from persistmemo._naming import MAIN_NAMES, module_name, qualified_name, received_main
from persistmemo._versioning.closures import MEMOIZED_MARK, CapturedInputs, is_partial
from persistmemo._versioning.code_watch import never_changed
from persistmemo._versioning.source_stamps import definition_stamp
from persistmemo.errors import (
    MissingInput,
    PersistmemoWarning,
    UnsupportedArgument,
    UnsupportedCapture,
    UnsupportedType,
)
from persistmemo.stores.base import MISSING, VERSION_PREFIX, secret_scoped

# No typing at run time (the cold-start budget, docs/architecture.md): for type checkers
# (P and R are quoted where evaluated, as in call_paths.py).
TYPE_CHECKING = False
if not TYPE_CHECKING:
    from persistmemo._typing_stand_ins import cast


if TYPE_CHECKING:
    from collections.abc import Awaitable
    from concurrent.futures import Executor
    from typing import Any, NamedTuple, ParamSpec, TypeVar, cast

    from persistmemo.stores.base import EntryInfo

    P = ParamSpec("P")
    R = TypeVar("R")


_CO_COROUTINE = 0x80


def is_async(func: Callable[..., Any]) -> bool:
    """Whether ``func`` is an ``async def`` function (or wraps one): read from a plain
    function's code flags, so that decorating it does not import inspect (~9 ms with ast,
    dis and tokenize); anything else is inspect's to judge (call_paths.is_async)."""
    if type(func) is types.FunctionType:
        attributes = func.__dict__
        if "__wrapped__" not in attributes and "_is_coroutine_marker" not in attributes:
            return bool(func.__code__.co_flags & _CO_COROUTINE)
    return _inspect_is_async(func)


def _defined_interactively(func: Callable[..., Any]) -> bool:
    """A function of a notebook or REPL: in ``__main__``, from code with no file on disk (a
    cell ipykernel keeps in linecache, ``<stdin>``, ``exec``)."""
    code = getattr(func, "__code__", None)
    if code is None or getattr(func, "__module__", None) != "__main__":
        return False
    return code.co_filename.startswith("<") or not os.path.exists(code.co_filename)


# Versions in the keys of a function that touches no store: never a version of its code.
_PLACEHOLDER_VERSIONS = frozenset(("disabled", "underived"))
_HEX_DIGITS = frozenset("0123456789abcdef")


if TYPE_CHECKING:

    class CacheInfo(NamedTuple):
        """Hits and misses of one memoized function in this process."""

        hits: int
        misses: int

else:  # the same tuple made as functools makes its own, without typing
    CacheInfo = collections.namedtuple("CacheInfo", ["hits", "misses"])
    CacheInfo.__doc__ = "Hits and misses of one memoized function in this process."


class MemoizedFunction(CallPaths["P", "R"]):
    """The state behind one memoized function; ``wrapper`` is what users call."""

    # Set on a function received from another process (``received_function``): the version
    # its sender derived from the code it sent, which this process may not have the source of.
    inherited_version: str | None = None
    # What this function is known by when it crosses processes (made when first pickled).
    sent_as: str | None = None

    def __init__(
        self, func: Callable[P, R], options: MemoOptions, identity: str | None = None
    ) -> None:
        self.func = func
        self.options = options
        self.store = options.store
        # A functools.partial is memoized as its function with the bound arguments keyed.
        self.code = cast("Callable[..., Any]", func.func if is_partial(func) else func)  # type: ignore[attr-defined]
        self.identity = identity or options.name or _identity_of(func)
        free = set(getattr(getattr(self.code, "__code__", None), "co_freevars", ()))
        if isinstance(self.code, types.MethodType):
            free.add("self")  # a bound method's object: keyed as if captured (closures.py)
        parameter_ignores = [n for n in options.ignore if n not in free and "." not in n]
        self.binder = None if options.key else CallBinder(func, parameter_ignores)
        self.file_positions = self._file_positions(options.files)
        self.hits = 0
        self.misses = 0
        self.disabled = False
        self.keys: KeyBuilder | None = None
        self.captured: CapturedInputs | None = None
        # The memory tier may look calls up by their raw arguments only when nothing else
        # goes into the key: no key= function, no captured variables, no partial.
        self.direct_memory = (
            self.binder is not None and not free and self.code is func and not options.files
        )
        self.stamp = definition_stamp(self.code)
        _check_name_collision(self)
        self.memory = None if options.memory is None else MemoryTier(options.memory, self)
        self.wrapper = self._async_wrapper() if is_async(func) else self._sync_wrapper()
        if is_partial(func):
            self.wrapper.__qualname__ = self.wrapper.__name__ = self.code.__qualname__
            self.wrapper.__module__ = self.code.__module__
            self.wrapper.__wrapped__ = func  # type: ignore[attr-defined]
        else:
            functools.update_wrapper(self.wrapper, func)
        controls = (
            self.map_async if is_async(func) else self.map,
            self.cache_info,
            self.cache_clear,
            self.invalidate,
            self.key,
            self.version,
            self.version_info,
            self.entries,
            self.info,
        )
        for control in controls:
            setattr(self.wrapper, control.__name__.removesuffix("_async"), control)
        setattr(self.wrapper, "store", self.store)  # noqa: B010  (not a declared attribute)
        setattr(self.wrapper, MEMOIZED_MARK, True)
        self.flushed_hits = 0
        _memoized_functions.add(self)

    def prepare(self) -> KeyBuilder:
        """Settle what the first call needs: the switch, the version, the key prefix."""
        self.disabled = environment.disabled()
        version = self.options.version
        changed: Callable[[], bool] = never_changed
        replaced = changed
        if version is None and self.disabled:
            version = "disabled"  # no store is touched: the version would serve nothing
        elif version is None and self.inherited_version is not None:
            version = self.inherited_version  # the code it was derived from is the code sent
        elif version is None:
            version, changed, replaced = self._derived_version()
        self.captured = CapturedInputs.of(self.func, self.options.ignore, self.func_name)
        keys = KeyBuilder(self.identity, version)
        if self.keys is not None and self.memory is not None:
            self.memory.clear()  # derived again: what the old code computed is not served
        # Published together, once derived: meanwhile other threads see the old builder with
        # the old watch, which tells them it changed (they derive too, never key with it).
        self.code_changed = changed
        self.code_replaced = replaced
        self.keys = keys
        return keys

    def __reduce__(self) -> tuple[Any, ...]:
        """What rebuilds this function in another process (see the module docstring)."""
        sent_as = self.sent_as
        if sent_as is None:
            sent_as = self.sent_as = os.urandom(12).hex()
        # Where the code is a script's (or a notebook's), its classes arrive as __main__'s.
        main = getattr(self.code, "__module__", None) in MAIN_NAMES
        sent_from = module_name("__main__") if main else None
        version = self._version_to_send()
        known_as = version if version is not None else self.options.version
        if known_as is not None:
            _remember_received((sent_as, known_as), self)  # unpickled here: this very object
        return (
            received_function,
            (sent_as, self.func, self.options, self.identity, version, sent_from),
        )

    def _version_to_send(self) -> str | None:
        """The version derived here, for a receiver that may not have the source (a notebook
        cell's): derived now if no call has yet. None when pinned (it is in the options) or
        when it cannot be derived here (the receiver tries, and says why not)."""
        if self.options.version is not None:
            return None
        try:
            keys = self.keys_now()
        except Exception:
            return None
        version = keys.prefix.rsplit(":", 2)[1]
        return None if version in _PLACEHOLDER_VERSIONS else version

    def _store_directories(self) -> frozenset[str]:
        """The store's own directory (a disk store's, or a tiered store's local tier): a
        directory argument containing it is walked without it, since every write changes it."""
        found = self._store_directory_cache
        if found is None:
            directories = set()
            for store in (self.store, getattr(self.store, "local", None)):
                directory = getattr(store, "directory", None)
                if directory is not None:
                    directories.add(os.path.realpath(directory))
            found = self._store_directory_cache = frozenset(directories)
        return found

    _store_directory_cache: frozenset[str] | None = None

    def _file_positions(self, files: tuple[str, ...]) -> tuple[tuple[int, str], ...]:
        """(position among the key values, parameter) of each parameter named in files=."""
        if not files or self.binder is None:
            return ()
        kept = self.binder.kept_names()
        ignored = [name for name in files if name in self.options.ignore]
        if ignored:
            raise TypeError(
                f"memo(files=...) names {ignored}, which ignore= leaves out of the key: a "
                "parameter is keyed by its file's content or ignored, not both"
            )
        unknown = [name for name in files if name not in kept]
        if unknown:
            raise TypeError(
                f"memo(files=...) names {unknown}, which are not keyed parameters of "
                f"{self.func_name}(); its parameters are {list(kept)}"
            )
        return tuple((kept.index(name), name) for name in files)

    def keys_now(self) -> KeyBuilder:
        """The key builder, prepared, and derived again first if the code it was derived
        from changed since (the controls see what a call would)."""
        keys = self.keys
        if keys is None or self.code_changed():
            keys = self.prepare()
        return keys

    # --- keys ----------------------------------------------------------------------------

    def explain_first_miss(self) -> None:
        """ "Why did it recompute?": when this process's first call misses and the store
        holds entries of other versions of the function, say so on the ``persistmemo``
        logger at debug level, with what went into the version now. Costs nothing unless
        that logger is enabled for debug."""
        logging = sys.modules.get("logging")
        if logging is None or self.options.version is not None or self.keys is None:
            return
        logger = logging.getLogger("persistmemo")
        if not logger.isEnabledFor(logging.DEBUG):
            return
        current = self.keys.prefix.rsplit(":", 2)[1]
        try:
            others = sorted({e.version for e in self.store.entries(self.identity)} - {current})
        except Exception:  # looking is best effort: the call goes on
            return
        if not others:
            return
        described = self.version_info()
        parts = {
            "helpers": [f"{h['module']}.{h['qualname']}" for h in described.get("helpers", [])],
            "constants": [f"{c['module']}.{c['name']}" for c in described.get("constants", [])],
            "packages": described.get("packages", {}),
        }
        logger.debug(
            "%s: a miss under version %s while the store holds versions %s: the code (or a "
            "helper, constant or package it depends on) changed. Now in the version: %s",
            self.identity,
            current,
            ", ".join(others),
            parts,
        )

    def _code_version(self) -> tuple[str, Callable[[], bool], Callable[[], bool]]:
        versioning = _versioning()

        options = self.options
        fingerprinted = None
        if not _defined_interactively(self.code):  # a notebook re-derives on its own terms
            try:
                fingerprinted = versioning.watched_fingerprint(
                    self.code,
                    include_globals=options.include_globals,
                    packages=options.packages,
                    stamp=self.stamp,
                )
            except Exception:  # the fingerprint only saves time: derive as before
                fingerprinted = None
        if fingerprinted is not None:
            fingerprint, watch = fingerprinted
            remembered = self._remembered_version(fingerprint)
            if remembered is not None:
                return remembered, watch.changed, watch.replaced
        version, watch = versioning.watched_version(
            self.code,
            include_globals=options.include_globals,
            packages=options.packages,
            stamp=self.stamp,
        )
        if fingerprinted is not None:
            self._remember_version(fingerprinted[0], version)
        return version, watch.changed, watch.replaced

    def _remembered_version(self, fingerprint: str) -> str | None:
        """The version remembered in the store for ``fingerprint``, if any: a record sealed
        with the store's secret, like every entry, so that no one else can plant one."""
        try:
            data = self.store.read(secret_scoped(self.store, VERSION_PREFIX + fingerprint))
            if data is MISSING:
                return None
            version = decode_value(bytes(cast(bytes, data)), allow_pickle=False)
        except Exception:  # a store fault, a damaged record: derive it
            return None
        # Served only if it has the shape of a derived version (re is not imported for it).
        if isinstance(version, str) and len(version) == 16 and _HEX_DIGITS.issuperset(version):
            return version
        return None

    def _remember_version(self, fingerprint: str, version: str) -> None:
        """Remember ``version`` under ``fingerprint`` for the next processes (best effort)."""
        from persistmemo._codec.encoding import encode_value  # a miss's: see call_paths.py

        with contextlib.suppress(Exception):  # remembering only saves the next process time
            self.store.write(
                secret_scoped(self.store, VERSION_PREFIX + fingerprint),
                encode_value(version, allow_pickle=False),
                ttl=None,
                tag=VERSION_PREFIX.rstrip(":"),  # no function's entry: cache_clear counts none
            )

    def _derived_version(self) -> tuple[str, Callable[[], bool], Callable[[], bool]]:
        """The version from the code; if it cannot be derived, the function runs uncached.

        Deriving it must never break the call: a source too deeply nested to walk (a
        RecursionError), or a defect in the walk, turns caching off for this function with
        one warning, rather than guess a version that could serve a stale result.
        """
        try:
            return self._code_version()
        except TypeError:
            raise  # no source and no code object: the message says to pass version=
        except Exception as error:
            self.disabled = True
            import warnings

            warnings.warn(
                f"persistmemo: cannot derive a version for {self.func_name}() "
                f"({type(error).__name__}: {error}); it runs uncached in this process. "
                "Pass version= to memo() to cache it.",
                PersistmemoWarning,
                stacklevel=4,
            )
            return "underived", never_changed, never_changed

    def canonical_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        binder = self.binder
        keyed_on: tuple[Any, ...]
        if binder is None:
            keyed_on = (cast(Callable[..., object], self.options.key)(*args, **kwargs),)
        else:
            keyed_on = binder.bind(args, kwargs)
            if self.file_positions:
                from persistmemo._memo.files import file_key

                values = list(keyed_on)
                skipped = self._store_directories()
                for position, parameter in self.file_positions:
                    values[position] = file_key(
                        values[position], parameter, skipped, store=self.store
                    )
                keyed_on = tuple(values)
        captured = self.captured
        if captured is not None:
            # Read at every call: a nonlocal rebinding or a new factory value is a new key.
            keyed_on = (*keyed_on, captured.values())
        try:
            return encode_arguments(keyed_on)
        except UnsupportedType as error:
            raise self._unsupported_argument(keyed_on, error) from None

    def _unsupported_argument(self, values: tuple[Any, ...], error: UnsupportedType) -> TypeError:
        where = f"the value key= returned for {self.func_name}()"
        remedy = f"Return supported types from key=, or define {HOOK_NAME} on the type."
        inside = ""
        arguments = values[:-1] if self.captured is not None else values
        for position, value in enumerate(arguments):
            try:
                encode(value)
            except UnsupportedType as failure:
                error = failure
                if self.binder is not None:
                    parameter = self.binder.parameter_of(position)
                    where = f"argument {parameter!r} of {self.func_name}()"
                    remedy = (
                        f"Pass ignore=[{parameter!r}], a key= function, define {HOOK_NAME} on "
                        "the type, or persistmemo.register_key(type, function) for a type you "
                        "do not own (in every process that calls: a worker too)."
                    )
                inside = "" if type(value) is failure.unsupported else " (inside the argument)"
                break
        else:
            if self.captured is not None:
                for name, value in cast(dict[str, object], values[-1]).items():
                    try:
                        encode(value)
                    except UnsupportedType as failure:
                        return UnsupportedCapture(
                            f"cannot build a cache key for captured variable "
                            f"{name.split('.')[0]!r} of {self.func_name}() (read as {name!r}): "
                            f"{failure}. Pass ignore=[{name.split('.')[0]!r}] to leave it out of "
                            "the key, make it a parameter (and ignore it), or define "
                            f"{HOOK_NAME} on the type."
                        )
        return UnsupportedArgument(
            f"cannot build a cache key for {where}: {error}{inside}. {remedy}",
            error.unsupported,
        )

    @property
    def func_name(self) -> str:
        return str(getattr(self.code, "__qualname__", self.identity))

    # --- controls ------------------------------------------------------------------------

    def key(self, *args: Any, **kwargs: Any) -> str:
        """The store key of this call."""
        keys = self.keys_now()
        return keys.key(self.canonical_arguments(args, kwargs))

    def keys_of(self, calls: list[tuple[Any, ...]]) -> list[str]:
        """The store keys of many positional calls (``f.map``'s): in one loop where the key
        is the arguments alone; a call that cannot be cached (a files= path that is not
        there) gets a key of its own that no store holds, so it is computed, uncached."""
        keys = self.keys_now()
        binder = self.binder
        if binder is not None and not self.file_positions and self.captured is None:
            if binder.binds_as_given(calls):  # f(x) for each x: its values are its arguments
                return keys.keys(encode_each(calls))
            bind = binder.bind
            no_keywords: dict[str, Any] = {}
            return keys.keys(encode_each([bind(args, no_keywords) for args in calls]))
        found = []
        for index, args in enumerate(calls):
            try:
                found.append(keys.key(self.canonical_arguments(args, {})))
            except MissingInput:
                found.append(f"<uncached {index}>")
        return found

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Remove the entry of this call; True when there was one."""
        try:
            key = self.key(*args, **kwargs)
        except MissingInput:
            return False  # a files= path that is not there: such a call is never stored
        self._forget_in_memory(key, args, kwargs)
        return self.store.delete(key)

    def cache_info(self) -> CacheInfo:
        """Hits and misses counted in this process since decoration or cache_clear()."""
        return CacheInfo(self.hits, self.misses)

    def cache_clear(self) -> int:
        """Remove this function's entries (every version) from its store; returns how many."""
        self.hits = self.misses = self.flushed_hits = 0
        if self.memory is not None:
            self.memory.clear()
        self.store.forget_hits(self.identity)
        return self.store.delete_tagged(self.identity)

    def version(self) -> str:
        """The version in this function's keys (pinned, or derived from its code).

        Derived even when ``PERSISTMEMO_DISABLE`` keeps the function from the store (tools
        such as ``prune --keep-versions current`` ask for it); raises RuntimeError when it
        cannot be derived, rather than answer a placeholder.
        """
        keys = self.keys_now()
        version = keys.prefix.rsplit(":", 2)[1]
        if self.options.version is None and version in _PLACEHOLDER_VERSIONS:
            try:
                return self._code_version()[0]
            except Exception as error:
                raise RuntimeError(
                    f"the version of {self.func_name}() cannot be derived: {error}"
                ) from error
        return version

    def map(
        self,
        *iterables: Iterable[Any],
        workers: int | None = None,
        progress: bool | None = None,
        executor: Executor | None = None,
    ) -> list[Any]:
        """Call for each tuple of items, computing only the misses (see _memo/mapping.py)."""
        _check_map_options(workers, progress, executor)
        if self.keys_now() and self.disabled:
            return [self.wrapper(*args) for args in zip(*iterables, strict=False)]  # type: ignore[call-arg]
        results: list[Any] = _mapping().map_sync(
            self, self.wrapper, iterables, workers, progress, self.func_name, executor
        )
        return results

    async def map_async(
        self,
        *iterables: Iterable[Any],
        workers: int | None = None,
        progress: bool | None = None,
        executor: Executor | None = None,
    ) -> list[Any]:
        """``map`` for ``async def`` functions: misses run concurrently, ``workers`` at most."""
        _check_map_options(workers, progress, executor)
        if executor is not None:
            raise TypeError(
                f"{self.func_name}.map(executor=...) is for functions that are not async: "
                "await f.map(...) runs the misses on the event loop (workers= at a time)"
            )
        call = cast("Callable[..., Awaitable[Any]]", self.wrapper)
        if self.keys_now() and self.disabled:
            return [await call(*args) for args in zip(*iterables, strict=False)]
        results: list[Any] = await _mapping().map_async(
            self, call, iterables, workers, progress, self.func_name
        )
        return results

    def version_info(self) -> dict[str, Any]:
        """What went into the version: the code, helpers followed, constants, packages."""
        keys = self.keys_now()
        pinned = self.options.version
        if pinned is not None:
            return {"version": pinned, "pinned": True}
        if self.inherited_version is not None:  # the sender has the source; ask it there
            return {"version": self.inherited_version, "pinned": False, "received": True}
        described = _versioning().explain_version(
            self.code,
            include_globals=self.options.include_globals,
            packages=self.options.packages,
            stamp=self.stamp,
        )
        return {"version": keys.prefix.rsplit(":", 2)[1], "pinned": False, **described}

    def entries(self) -> list[EntryInfo]:
        """Metadata of this function's stored entries (every version), newest first."""
        found = self.store.entries(self.identity)
        return sorted(found, key=lambda entry: entry.stored_at, reverse=True)

    def info(self, *args: Any, **kwargs: Any) -> EntryInfo | None:
        """Metadata of this call's entry (when computed, how long it took...), or None."""
        return self.store.entry_info(self.key(*args, **kwargs))

    def flush_hits(self) -> None:
        """Add this process's new hits to the store's count (called at exit)."""
        new_hits = self.hits - self.flushed_hits
        if new_hits > 0 and not self.disabled:
            self.store.record_hits(self.identity, new_hits)
            self.flushed_hits = self.hits


# Hits are counted in memory, so that a hit never writes; each process adds its counts to
# the store once, at exit.
_memoized_functions: weakref.WeakSet[MemoizedFunction[Any, Any]] = weakref.WeakSet()


@atexit.register
def _flush_hits_at_exit() -> None:
    for memoized in list(_memoized_functions):
        with contextlib.suppress(Exception):
            memoized.flush_hits()


def _hits_so_far_are_the_parents() -> None:
    # A forked child inherits the parent's unflushed counts, which the parent will write:
    # the child writes only the hits it makes itself (they were counted twice).
    for memoized in list(_memoized_functions):
        memoized.flushed_hits = memoized.hits


# Functions received from other processes (and this process's own, once pickled), by what
# they were sent as: a worker that receives a function with every task builds it once. The
# oldest go past RECEIVED_KEPT (a long-lived worker fed by notebook sessions), hits flushed.
RECEIVED_KEPT = 256
_received: dict[tuple[str, str], MemoizedFunction[Any, Any]] = {}
_received_lock = threading.Lock()


def received_function(
    sent_as: str,
    func: Callable[..., Any],
    options: MemoOptions,
    identity: str,
    version: str | None,
    sent_from: str | None = None,
) -> MemoizedFunction[Any, Any]:
    """The memoized function that was pickled as ``sent_as``, rebuilt here the first time:
    under the sender's identity and, unless None, the version the sender derived from the
    same code. ``sent_from``: the sender's name for ``__main__``, whose classes the function
    brings (see _naming.py)."""
    if sent_from is not None and sent_from != module_name("__main__"):
        received_main(sent_from)
    # By version as well: the same function sent again after its code, a helper or a global
    # it reads changed (a notebook cell run again) is a new function here, not the old one.
    # One sent without a version (none could be derived there) is built again every time.
    known_as = version if version is not None else options.version
    with _received_lock:
        memoized = _received.get((sent_as, known_as)) if known_as is not None else None
    if memoized is None:
        built = MemoizedFunction(func, options, identity)
        built.inherited_version = version
        built.sent_as = sent_as
        memoized = built if known_as is None else _remember_received((sent_as, known_as), built)
    return memoized


def _remember_received(
    received: tuple[str, str], memoized: MemoizedFunction[Any, Any]
) -> MemoizedFunction[Any, Any]:
    """Keep ``memoized`` as the function sent as ``received`` (``sent_as`` and the version
    sent with it; the first one kept wins)."""
    with _received_lock:
        kept = _received.setdefault(received, memoized)
        dropped = []
        while len(_received) > RECEIVED_KEPT:
            dropped.append(_received.pop(next(iter(_received))))
    for old in dropped:
        with contextlib.suppress(Exception):
            old.flush_hits()
    return kept


def _new_received_lock() -> None:
    global _received_lock
    _received_lock = threading.Lock()  # a thread of the parent may have held it at the fork


if hasattr(os, "register_at_fork"):  # no fork on Windows
    os.register_at_fork(after_in_child=_hits_so_far_are_the_parents)
    os.register_at_fork(after_in_child=_new_received_lock)


def _check_map_options(workers: object, progress: object, executor: object) -> None:
    if executor is not None:
        from concurrent.futures import Executor  # not at import: it loads logging

        if workers is not None:
            raise TypeError(
                "map() takes workers= or executor=, not both: workers=N starts N processes "
                "of its own, executor= computes the misses in yours"
            )
        if not isinstance(executor, Executor):
            raise TypeError(
                "map(executor=...) takes a concurrent.futures.Executor (a ThreadPoolExecutor, "
                f"a ProcessPoolExecutor, Dask's client.get_executor()); got {executor!r}"
            )
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise TypeError(
            f"map(workers=...) takes a number of processes (1 or more); got {workers!r}"
        )
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"map(progress=...) takes True, False or None; got {progress!r}")


def _identity_of(func: Callable[..., Any]) -> str:
    """``module.qualname`` of what is memoized; a partial is named after its function."""
    target = func.func if isinstance(func, functools.partial) else func
    try:
        return qualified_name(target)
    except TypeError:
        raise TypeError(
            f"memo() cannot name {func!r} (a {type(func).__name__} without __qualname__): "
            "memoize a function, or pass name='module.thing' and version='1' "
            "(and bump the version when its behaviour changes)"
        ) from None


# Functions memoized in this process under a pinned version, by (store, identity, version):
# two different functions there would share entries.
_pinned: dict[tuple[int, str, str], tuple[weakref.ref[Any], str, bytes]] = {}


def _check_name_collision(memoized: MemoizedFunction[Any, Any]) -> None:
    """Refuse a second function under the same name and pinned version on the same store.

    A derived version separates different code by itself; a pinned one does not. The same
    function decorated again with other code (a notebook cell re-run after an edit) gets a
    warning: its pinned version is now stale. Another function gets an error.
    """
    version = memoized.options.version
    if version is None:
        return
    code = _code_fingerprint(memoized.code)
    slot = (id(memoized.store), memoized.identity, version)
    where = _where_defined(memoized.code)
    previous = _pinned.get(slot)
    _pinned[slot] = (weakref.ref(memoized.store), where, code)
    if previous is None or previous[0]() is not memoized.store or previous[2] == code:
        return
    if previous[1] == where:
        import warnings

        warnings.warn(
            f"{where}() was redefined with different code but the same pinned "
            f"version={version!r}: its stored results were computed by the old code and "
            "will be served. Bump version= (or leave it out: the version then follows "
            "the code).",
            PersistmemoWarning,
            stacklevel=4,
        )
        return
    raise ValueError(
        f"memo(): {where}() and {previous[1]}() are both stored as {memoized.identity!r} "
        f"with version={version!r} on the same store, so they would return each other's "
        "results. Give each its own name= (or leave name= out), or different versions."
    )


def _where_defined(func: Callable[..., Any]) -> str:
    try:
        return qualified_name(func)
    except TypeError:
        return repr(func)


def _code_fingerprint(func: Callable[..., Any]) -> bytes:
    code = getattr(func, "__code__", None)
    if code is None:
        return repr(type(func)).encode()
    return _fingerprint_of_code(code)


def _fingerprint_of_code(code: Any) -> bytes:
    # Nested code objects by their content: their repr holds an address.
    constants = [
        _fingerprint_of_code(c) if hasattr(c, "co_code") else repr(c).encode()
        for c in code.co_consts
    ]
    return b"\0".join([code.co_code, repr(code.co_names).encode(), *constants])


def _versioning() -> types.ModuleType:
    """The derivation of versions, imported when a version is first derived: a script run
    again and again serves its version from the store and never imports the parsing (a seam
    of the cold-start budget, docs/architecture.md)."""
    from persistmemo._versioning import versions

    return versions


def _mapping() -> types.ModuleType:
    """``f.map``'s machinery (workers, progress), imported at the first ``map`` call."""
    from persistmemo._memo import mapping

    return mapping
