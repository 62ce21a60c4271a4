"""memo(): the persistent memo decorator, its hit path and its controls.

Everything that does not depend on a call's arguments is settled once: the signature binder
and the function identity at decoration, the code version, the key prefix and the
``PERSISTMEMO_DISABLE`` switch at the first call (so that helpers defined below the function
are seen by ``include_globals``, and importing a module costs no parsing). A hit then builds
the key, reads once and decodes; it writes nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import functools
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    NamedTuple,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    overload,
)

from persistmemo.binding import CallBinder
from persistmemo.closures import MEMOIZED_MARK, CapturedInputs, UnsupportedCapture
from persistmemo.codec import (
    CorruptEntry,
    UndecodableValue,
    UnstorableValue,
    decode_value,
    encode_value,
)
from persistmemo.faults import PersistmemoWarning
from persistmemo.keys import HOOK_NAME, KeyBuilder, UnsupportedType, encode, encode_arguments
from persistmemo.locking import compute_once, compute_once_async, lease_for
from persistmemo.memory import DIRECT_TYPES, MemoryTier, direct_key
from persistmemo.naming import qualified_name
from persistmemo.options import MemoOptions
from persistmemo.source_stamps import definition_stamp
from persistmemo.stores.base import MISSING, Missing, StoreBackend

if TYPE_CHECKING:
    from persistmemo.stores.base import EntryInfo

P = ParamSpec("P")
Q = ParamSpec("Q")
R = TypeVar("R")
S = TypeVar("S")
T = TypeVar("T")

ENV_DISABLE = "PERSISTMEMO_DISABLE"

StoreOption = StoreBackend | str | os.PathLike[str] | None


class CacheInfo(NamedTuple):
    """Hits and misses of one memoized function in this process."""

    hits: int
    misses: int


class Memoized(Protocol[P, R]):
    """A memoized function: called like the original, plus its cache controls."""

    __wrapped__: Callable[P, R]
    store: StoreBackend

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def cache_info(self) -> CacheInfo:
        """Hits and misses counted in this process since decoration or cache_clear()."""
        ...

    def cache_clear(self) -> int:
        """Remove this function's entries (every version) from its store; returns how many."""
        ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Remove the entry of this call; True when there was one."""
        ...

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The store key of this call."""
        ...

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function for this call and overwrite its entry; returns the new result."""
        ...

    def version(self) -> str:
        """The version in this function's keys (pinned, or derived from its code)."""
        ...

    def version_info(self) -> dict[str, Any]:
        """What went into the version: the code, helpers followed, constants, packages."""
        ...

    def map(
        self, *iterables: Iterable[Any], workers: int | None = None, progress: bool | None = None
    ) -> Any:
        """Call for each tuple of items, computing only the misses; results in input order.

        A list (``await`` it for ``async def`` functions). See persistmemo.mapping.
        """
        ...

    # A memoized method binds like a function. Bound, it is typed as what it is at run time:
    # a callable without self; its controls stay on the class (``Model.predict.key(model, 1)``).
    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Memoized[P, R]: ...

    @overload
    def __get__(
        self: Memoized[Concatenate[S, Q], T], instance: S, owner: type[Any] | None = None
    ) -> Callable[Q, T]: ...

    def __get__(self, instance: Any, owner: type[Any] | None = None) -> Any: ...

    def entries(self) -> list[EntryInfo]:
        """Metadata of this function's stored entries (every version), newest first."""
        ...

    def info(self, *args: P.args, **kwargs: P.kwargs) -> EntryInfo | None:
        """Metadata of this call's entry (when computed, how long it took...), or None."""
        ...


class MemoDecorator(Protocol):
    """What ``memo(...)`` returns: applied to a function, it gives its memoized form."""

    def __call__(self, func: Callable[P, R], /) -> Memoized[P, R]: ...


@overload
def memo(func: Callable[P, R], /) -> Memoized[P, R]: ...


@overload
def memo(
    func: None = None,
    /,
    *,
    store: StoreOption = None,
    ttl: float | dt.timedelta | None = None,
    version: str | int | None = None,
    ignore: Iterable[str] = (),
    key: Callable[..., object] | None = None,
    name: str | None = None,
    include_globals: bool = True,
    packages: Iterable[str] | bool = (),
    lock: bool = True,
    memory: int | None = None,
) -> MemoDecorator: ...


def memo(
    func: Callable[..., Any] | None = None,
    /,
    *,
    store: StoreOption = None,
    ttl: float | dt.timedelta | None = None,
    version: str | int | None = None,
    ignore: Iterable[str] = (),
    key: Callable[..., object] | None = None,
    name: str | None = None,
    include_globals: bool = True,
    packages: Iterable[str] | bool = (),
    lock: bool = True,
    memory: int | None = None,
) -> Any:
    """Memoize a function persistently: ``@memo`` or ``@memo(ttl=3600, ignore=["verbose"])``.

    - ``store``: a ``Store`` (or ``RedisStore``, ``TieredStore``), a directory path, or None
      for the default store
      (``$PERSISTMEMO_DIR``, else the user cache directory).
    - ``ttl``: seconds (or a ``timedelta``) a result stays fresh; None keeps it until evicted.
    - ``version``: pin the version by hand. When None it is derived from the function's code,
      so editing what the function does stops old results from being served (a reformat, a
      comment or a docstring edit does not).
    - ``include_globals``: the derived version covers the functions, classes and constants
      the function refers to by name, followed into the other modules of your own code
      (default). ``False`` versions the function's own code only.
    - ``packages``: distribution names (or True: every third-party distribution the code
      refers to) whose installed versions are part of the version: an upgrade is a miss.
    - ``ignore``: parameter names left out of the key (by position or keyword alike), and
      captured variables of a closure left out of the key.
    - ``key``: a callable taking the function's arguments and returning the value to key on.
    - ``name``: the function's identity in the store; default ``module.qualname``, with a
      script's ``__main__`` named after its file, so running and importing it agree.
    - ``lock``: when callers in several threads or processes miss the same key at once, one
      computes and the others wait for its result (default). ``lock=False`` lets each
      compute, for cheap functions where waiting costs more than computing.
    - ``memory``: also keep the N most recent results in this process's memory, for hot
      loops (see persistmemo.memory: TTL holds, this process's invalidations are seen,
      other processes' are not until the entry expires).

    Arguments must be of a supported type (see ``docs/keys.md``), ignored, or keyed through
    ``key=`` or a ``__persistmemo_key__`` method; otherwise the call raises TypeError. The
    variables a closure captures are keyed like arguments (see persistmemo.closures).
    """
    options = MemoOptions.checked(
        store=store,
        ttl=ttl,
        version=version,
        ignore=ignore,
        key=key,
        name=name,
        include_globals=include_globals,
        packages=packages,
        lock=lock,
        memory=memory,
    )

    def decorate(target: Callable[..., Any]) -> Any:
        if isinstance(target, classmethod):
            return _MemoizedClassMethod(decorate(target.__func__))
        if isinstance(target, staticmethod):
            return staticmethod(decorate(target.__func__))
        if not callable(target):
            raise TypeError(f"memo() decorates functions; got {type(target).__name__}")
        if options.memory is not None and _is_async(target):
            raise TypeError(
                f"memo(memory=...) is for plain functions; {target.__qualname__}() is async. "
                "Leave memory= out: its results are still kept in the store."
            )
        return _MemoizedFunction(target, options).wrapper

    return decorate if func is None else decorate(func)


class _MemoizedClassMethod(classmethod):  # type: ignore[type-arg]
    """``@memo`` over ``@classmethod``: ``Model.build(1)`` and ``Model.build.key(1)`` alike.

    A plain classmethod hands out a bound method whose attributes are the function's, so the
    controls would need the class passed by hand; here they are bound to the class too.
    """

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        cls = owner if owner is not None else type(instance)
        return _BoundControls(self.__func__, cls)


class _BoundControls:
    """A memoized function bound to its first argument, controls included."""

    __slots__ = ("__self__", "__wrapped__", "_memoized")

    def __init__(self, memoized: Any, bound_to: object) -> None:
        self._memoized = memoized
        self.__self__ = bound_to
        self.__wrapped__ = memoized

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._memoized(self.__self__, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._memoized, name)
        if name in _BOUND_CONTROLS:
            return functools.partial(attribute, self.__self__)
        return attribute

    def __repr__(self) -> str:
        return f"<memoized bound method {self._memoized.__qualname__} of {self.__self__!r}>"


# Controls that take the call's arguments, so a bound form passes the class or instance.
_BOUND_CONTROLS = frozenset(("key", "invalidate", "refresh", "info"))


class _MemoizedFunction(Generic[P, R]):
    """The state behind one memoized function; ``wrapper`` is what users call."""

    def __init__(self, func: Callable[P, R], options: MemoOptions) -> None:
        self.func = func
        self.options = options
        self.store = options.store
        # A functools.partial is memoized as its function with the bound arguments keyed.
        self.code = cast(Callable[..., Any], func.func if _is_partial(func) else func)  # type: ignore[attr-defined]
        self.identity = options.name or _identity_of(func)
        free = set(getattr(getattr(self.code, "__code__", None), "co_freevars", ()))
        parameter_ignores = [n for n in options.ignore if n not in free and "." not in n]
        self.binder = None if options.key else CallBinder(func, parameter_ignores)
        self.hits = 0
        self.misses = 0
        self.disabled = False
        self.keys: KeyBuilder | None = None
        self.captured: CapturedInputs | None = None
        # The memory tier may look calls up by their raw arguments only when nothing else
        # goes into the key: no key= function, no captured variables, no partial.
        self.direct_memory = self.binder is not None and not free and self.code is func
        self.stamp = definition_stamp(self.code)
        _check_name_collision(self)
        self.memory = None if options.memory is None else MemoryTier(options.memory)
        self.wrapper = self._async_wrapper() if _is_async(func) else self._sync_wrapper()
        if _is_partial(func):
            self.wrapper.__qualname__ = self.wrapper.__name__ = self.code.__qualname__
            self.wrapper.__module__ = self.code.__module__
            self.wrapper.__wrapped__ = func  # type: ignore[attr-defined]
        else:
            functools.update_wrapper(self.wrapper, func)
        controls = (
            self.map_async if _is_async(func) else self.map,
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

    # --- the call ------------------------------------------------------------------------

    def _sync_wrapper(self) -> Callable[P, R]:
        func, store = self.func, self.store

        memory = self.memory
        if memory is not None:
            memoized = self._memory_wrapper(memory)
        else:

            def memoized(*args: P.args, **kwargs: P.kwargs) -> R:
                # The hit path: key, one read, one decode. Kept flat: every call pays.
                keys = self.keys
                if keys is None:
                    keys = self.prepare()
                if self.disabled:
                    return func(*args, **kwargs)
                key = keys.key(self.canonical_arguments(args, kwargs))
                found = store.read_with_expiry(key, False)
                if found is not MISSING:
                    try:
                        value = decode_value(found[0], allow_pickle=store.pickle_allowed)  # type: ignore[index]
                    except CorruptEntry as error:
                        store.report_fault(_decode_fault(error), error)
                    else:
                        self.hits += 1
                        return cast(R, value)
                return self._miss(key, args, kwargs)

        def refresh(*args: P.args, **kwargs: P.kwargs) -> R:
            key = self.key(*args, **kwargs)
            self._forget_in_memory(key, args, kwargs)
            started = time.perf_counter()
            value = func(*args, **kwargs)
            if not self.disabled:
                self.save(key, value, time.perf_counter() - started)
            return value

        memoized.refresh = refresh  # type: ignore[attr-defined]
        return memoized

    def _async_wrapper(self) -> Callable[P, R]:
        func = cast(Callable[P, Awaitable[Any]], self.func)
        store = self.store

        async def memoized(*args: P.args, **kwargs: P.kwargs) -> Any:
            keys = self.keys
            if keys is None:
                keys = self.prepare()
            if self.disabled:
                return await func(*args, **kwargs)
            key = keys.key(self.canonical_arguments(args, kwargs))
            found = self.lookup(store.read(key))
            if found is not MISSING:
                self.hits += 1
                return found

            async def compute() -> Any:
                self.misses += 1
                started = time.perf_counter()
                value = await func(*args, **kwargs)
                self.save(key, value, time.perf_counter() - started)
                return value

            if not self.options.lock:
                return await compute()
            value, computed = await compute_once_async(
                store, key, lambda: self.lookup(store.read(key)), compute
            )
            if not computed:
                self.hits += 1
            return value

        async def refresh(*args: P.args, **kwargs: P.kwargs) -> Any:
            key = self.key(*args, **kwargs)
            self._forget_in_memory(key, args, kwargs)
            started = time.perf_counter()
            value = await func(*args, **kwargs)
            if not self.disabled:
                self.save(key, value, time.perf_counter() - started)
            return value

        memoized.refresh = refresh  # type: ignore[attr-defined]
        return cast(Callable[P, R], memoized)

    def _memory_wrapper(self, memory: MemoryTier) -> Callable[P, R]:
        entries, now = memory.entries, time.time
        direct_allowed = self.direct_memory

        def memoized(*args: P.args, **kwargs: P.kwargs) -> R:
            # The memory tier's hit path: a dict lookup by the argument tuple when it can
            # key directly (see memory.py), before any store key is built. The one-argument
            # test is direct_key's, inlined: it is most calls.
            direct: tuple[Any, ...] | None
            if kwargs or not direct_allowed:
                direct = None
            elif len(args) == 1 and type(args[0]) in DIRECT_TYPES:
                direct = args
            else:
                direct = direct_key(args)
            if direct is not None:
                entry = entries.get(direct)
                if entry is not None and (entry[1] is None or entry[1] > now()):
                    self.hits += 1
                    return cast(R, entry[0])
            keys = self.keys
            if keys is None:
                keys = self.prepare()
            if self.disabled:
                return self.func(*args, **kwargs)
            key = keys.key(self.canonical_arguments(args, kwargs))
            if direct is None:
                entry = entries.get(key)
                if entry is not None and (entry[1] is None or entry[1] > now()):
                    self.hits += 1
                    return cast(R, entry[0])
            return self._through_memory(memory, direct or key, key, args, kwargs)

        return memoized

    def _through_memory(
        self,
        memory: MemoryTier,
        memory_key: Hashable,
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> R:
        """A memory miss: the store (or the function), then remember the result."""
        found = self.store.read_with_expiry(key)
        if found is not MISSING:
            data, expires_at = cast(tuple[bytes, "float | None"], found)
            value = self.lookup(data)
            if value is not MISSING:
                self.hits += 1
                memory.put(memory_key, value, expires_at)
                return cast(R, value)
        started = time.time()
        value = self._miss(key, args, kwargs)
        ttl = self.options.ttl
        memory.put(memory_key, value, None if ttl is None else started + ttl)
        return value

    def _miss(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        func, store = self.func, self.store

        def compute() -> R:
            self.misses += 1
            started = time.perf_counter()
            value = func(*args, **kwargs)
            self.save(key, value, time.perf_counter() - started)
            return value

        if not self.options.lock:
            return compute()
        value, computed = compute_once(store, key, lambda: self.lookup(store.read(key)), compute)
        if not computed:
            self.hits += 1
        return cast(R, value)

    def prepare(self) -> KeyBuilder:
        """Settle what the first call needs: the switch, the version, the key prefix."""
        self.disabled = os.environ.get(ENV_DISABLE, "").strip().lower() not in ("", "0", "false")
        version = self.options.version
        if version is None:
            from persistmemo.versioning import code_version  # parses source: first call only

            version = code_version(
                self.code,
                include_globals=self.options.include_globals,
                packages=self.options.packages,
                stamp=self.stamp,
            )
        self.captured = CapturedInputs.of(self.func, self.options.ignore, self.func_name)
        self.keys = KeyBuilder(self.identity, version)
        return self.keys

    def lookup(self, data: bytes | memoryview | Missing) -> object:
        """The decoded value of a read, or MISSING; an undecodable entry counts as a miss."""
        if data is MISSING:
            return MISSING
        try:
            return decode_value(cast(bytes, data), allow_pickle=self.store.pickle_allowed)
        except CorruptEntry as error:
            self.store.report_fault(_decode_fault(error), error)
            return MISSING

    def save(self, key: str, value: object, seconds: float) -> None:
        store = self.store
        store.open()  # settles pickle_allowed, even when no read opened the store first
        try:
            data = encode_value(value, allow_pickle=store.pickle_allowed)
        except UnstorableValue as error:
            if store.strict:
                raise UnstorableValue(
                    f"{self.func.__qualname__}(): {error}: the store is strict "
                    "(Store(strict=True)). Return supported types, or use a store without "
                    "strict=True."
                ) from None
            store.report_fault("result not stored", error)
            return
        lease = lease_for(key)
        store.write(
            key, data, ttl=self.options.ttl, tag=self.identity, seconds=seconds, lease=lease
        )

    # --- keys ----------------------------------------------------------------------------

    def canonical_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        binder = self.binder
        keyed_on: tuple[Any, ...]
        if binder is None:
            keyed_on = (cast(Callable[..., object], self.options.key)(*args, **kwargs),)
        else:
            keyed_on = binder.bind(args, kwargs)
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
                        f"Pass ignore=[{parameter!r}], a key= function, or define {HOOK_NAME} "
                        "on the type."
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
                            f"cannot build a cache key for captured variable {name!r} of "
                            f"{self.func_name}(): {failure}. Pass ignore=[{name!r}] to leave it "
                            "out of the key, make it a parameter (and ignore it), or define "
                            f"{HOOK_NAME} on the type."
                        )
        return TypeError(f"cannot build a cache key for {where}: {error}{inside}. {remedy}")

    @property
    def func_name(self) -> str:
        return str(getattr(self.code, "__qualname__", self.identity))

    # --- controls ------------------------------------------------------------------------

    def key(self, *args: Any, **kwargs: Any) -> str:
        """The store key of this call."""
        keys = self.keys or self.prepare()
        return keys.key(self.canonical_arguments(args, kwargs))

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Remove the entry of this call; True when there was one."""
        key = self.key(*args, **kwargs)
        self._forget_in_memory(key, args, kwargs)
        return self.store.delete(key)

    def _forget_in_memory(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.memory is not None:
            self.memory.discard(key)
            direct = None if kwargs or not self.direct_memory else direct_key(args)
            if direct is not None:
                self.memory.discard(direct)

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
        """The version in this function's keys (pinned, or derived from its code)."""
        keys = self.keys or self.prepare()
        return keys.prefix.rsplit(":", 2)[1]

    def map(
        self, *iterables: Iterable[Any], workers: int | None = None, progress: bool | None = None
    ) -> list[Any]:
        """Call for each tuple of items, computing only the misses (see persistmemo.mapping)."""
        from persistmemo.mapping import map_sync

        _check_map_options(workers, progress)
        if (self.keys or self.prepare()) and self.disabled:
            return [self.wrapper(*args) for args in zip(*iterables, strict=False)]  # type: ignore[call-arg]
        return map_sync(self, self.wrapper, iterables, workers, progress, self.func_name)

    async def map_async(
        self, *iterables: Iterable[Any], workers: int | None = None, progress: bool | None = None
    ) -> list[Any]:
        """``map`` for ``async def`` functions: misses run concurrently, ``workers`` at most."""
        from persistmemo.mapping import map_async

        _check_map_options(workers, progress)
        call = cast(Callable[..., Awaitable[Any]], self.wrapper)
        if (self.keys or self.prepare()) and self.disabled:
            return [await call(*args) for args in zip(*iterables, strict=False)]
        return await map_async(self, call, iterables, workers, progress, self.func_name)

    def version_info(self) -> dict[str, Any]:
        """What went into the version: the code, helpers followed, constants, packages."""
        keys = self.keys or self.prepare()
        pinned = self.options.version
        if pinned is not None:
            return {"version": pinned, "pinned": True}
        from persistmemo.versioning import explain_version

        described = explain_version(
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
_memoized_functions: weakref.WeakSet[_MemoizedFunction[Any, Any]] = weakref.WeakSet()


@atexit.register
def _flush_hits_at_exit() -> None:
    for memoized in list(_memoized_functions):
        with contextlib.suppress(Exception):
            memoized.flush_hits()


def _is_async(func: Callable[..., Any]) -> bool:
    import inspect  # at decoration, not at `import persistmemo`

    return inspect.iscoroutinefunction(inspect.unwrap(func)) or inspect.iscoroutinefunction(func)


def _check_map_options(workers: object, progress: object) -> None:
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise TypeError(
            f"map(workers=...) takes a number of processes (1 or more); got {workers!r}"
        )
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"map(progress=...) takes True, False or None; got {progress!r}")


def _decode_fault(error: CorruptEntry) -> str:
    """The kind of fault of an entry whose seal verified but whose value did not decode.

    The seal proves the bytes are the ones written, so this is never corruption: either
    the value needs what this process lacks (a class gone, a pickle refused here), or the
    codec wrote what it cannot read (a defect to report).
    """
    if isinstance(error, UndecodableValue):
        return "entry not decodable here"
    return "codec defect (an entry persistmemo wrote but cannot read; please report it)"


def _is_partial(func: object) -> bool:
    partial = getattr(functools, "partial")  # noqa: B009  (a class: isinstance needs it)
    return isinstance(func, partial)


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


def _check_name_collision(memoized: _MemoizedFunction[Any, Any]) -> None:
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
