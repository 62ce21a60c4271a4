"""The call paths of a memoized function: sync, async and through the memory tier.

Every decorated call goes through here, so it is kept flat: a hit builds the key, reads once
and decodes, writing nothing; a miss computes, under the key's lease when the claim is worth
it (locking.py), and stores the result. ``MemoizedFunction`` (memoized.py) adds the state's
setup, the key building and the controls.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Hashable

from persistmemo._codec.decoding import decode_many, decode_value, is_pickled
from persistmemo._codec.out_of_band import OUT_OF_BAND_FROM, OutOfBand
from persistmemo._deferred import load_before_fork
from persistmemo._memo.memory import DIRECT_TYPES, MemoryTier, direct_key
from persistmemo._versioning.code_watch import never_changed
from persistmemo.errors import CorruptEntry, MissingInput, UndecodableValue, UnstorableValue
from persistmemo.stores.base import MISSING, Missing

# No typing at run time (the cold-start budget, docs/architecture.md): for type checkers.
# At run time P and R do not exist (a type expression that is evaluated quotes them), ``cast``
# is the value itself and ``Generic`` a base that subscripts.
TYPE_CHECKING = False
if not TYPE_CHECKING:
    from persistmemo._typing_stand_ins import Generic, cast


if TYPE_CHECKING:
    from collections.abc import Awaitable
    from typing import Any, Generic, ParamSpec, TypeVar, cast

    from persistmemo._codec.decoding import Encoded
    from persistmemo._codec.encoding import encode_result
    from persistmemo._keys.layout import KeyBuilder
    from persistmemo._memo.locking import compute_once, compute_once_async, lease_for
    from persistmemo._memo.options import MemoOptions
    from persistmemo._memo.responses import response_refusal
    from persistmemo.stores.base import StoreBackend

    P = ParamSpec("P")
    R = TypeVar("R")


def _load_miss_machinery() -> None:
    """Put the miss's machinery (one computation per key, encoding a result) in place of its
    stand-ins below: imported at the first miss, so that a re-run that only hits never reads
    locking.py, encoding.py or responses.py (a seam of the cold-start budget,
    docs/architecture.md)."""
    from persistmemo._codec.encoding import encode_result
    from persistmemo._memo.locking import compute_once, compute_once_async, lease_for
    from persistmemo._memo.responses import response_refusal

    globals().update(
        encode_result=encode_result,
        compute_once=compute_once,
        compute_once_async=compute_once_async,
        lease_for=lease_for,
        response_refusal=response_refusal,
    )


load_before_fork(_load_miss_machinery)


if not TYPE_CHECKING:

    def _stand_in(name: str) -> Callable[..., Any]:
        """Calls ``name`` of the miss's machinery, loading it first."""

        def stand_in(*args: Any, **kwargs: Any) -> Any:
            _load_miss_machinery()
            return globals()[name](*args, **kwargs)

        return stand_in

    encode_result = _stand_in("encode_result")
    compute_once = _stand_in("compute_once")
    compute_once_async = _stand_in("compute_once_async")
    lease_for = _stand_in("lease_for")
    response_refusal = _stand_in("response_refusal")


class CallPaths(Generic["P", "R"]):
    """The hit and miss paths; the state they read is set up by ``MemoizedFunction``."""

    func: Callable[P, R]
    options: MemoOptions
    store: StoreBackend
    identity: str
    hits: int
    misses: int
    disabled: bool
    keys: KeyBuilder | None
    memory: MemoryTier | None
    direct_memory: bool
    # Whether the code the version was derived from changed since (code_watch.py); set by
    # prepare() with each derivation.
    code_changed: Callable[[], bool] = staticmethod(never_changed)
    # Whether the code that runs is no longer the version's (code_watch.CodeWatch.replaced):
    # a result computed then is not stored.
    code_replaced: Callable[[], bool] = staticmethod(never_changed)

    def prepare(self) -> KeyBuilder:
        """Settle what the first call needs (memoized.py)."""
        raise NotImplementedError

    def canonical_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """The canonical bytes of a call's keyed values (memoized.py)."""
        raise NotImplementedError

    def key(self, *args: Any, **kwargs: Any) -> str:
        """The store key of a call (memoized.py)."""
        raise NotImplementedError

    file_positions: tuple[tuple[int, str], ...]

    def inputs_unchanged(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether the code and the files a call was keyed on are still what they were: a
        result computed while the code was reloaded or rebound, or one of its files= was
        edited, is returned but not stored under the old key (it could be either's)."""
        keys = self.keys
        # Re-derived meanwhile (another thread, a reload): this key's version may not be the
        # code that computed the result, whichever watch is in force now.
        if keys is None or not key.startswith(keys.prefix) or self.code_replaced():
            return False
        if not self.file_positions:
            return True
        try:
            return self.key(*args, **kwargs) == key
        except MissingInput:
            return False

    def explain_first_miss(self) -> None:
        """Say at debug level why a first call missed, if the version changed (memoized.py)."""

    def _sync_wrapper(self) -> Callable[P, R]:
        func, store = self.func, self.store
        # memo(mmap=True) reads large areas as maps of their files, and returns read-only
        # arrays whatever the store; settled here, not per hit.
        read, decode = store.read_with_expiry, decode_value
        if self.options.mmap:
            read = functools.partial(read, mapped=True)
            decode = functools.partial(decode, read_only=True)

        memory = self.memory
        if memory is not None:
            memoized = self._memory_wrapper(memory)
        else:

            def memoized(*args: P.args, **kwargs: P.kwargs) -> R:
                # The hit path: key, one read, one decode. Kept flat: every call pays.
                keys = self.keys
                if keys is None or self.code_changed():
                    keys = self.prepare()
                if self.disabled:
                    return func(*args, **kwargs)
                try:
                    key = keys.key(self.canonical_arguments(args, kwargs))
                except MissingInput:  # a files= path that does not exist: run, keep nothing
                    return func(*args, **kwargs)
                found = read(key, False)
                if found is not MISSING:
                    try:
                        value = decode(found[0], allow_pickle=store.pickle_allowed)  # type: ignore[index]
                    except CorruptEntry as error:
                        store.report_fault(_decode_fault(error), error)
                    else:
                        self.hits += 1
                        return cast("R", value)
                return self._miss(key, args, kwargs)

        def refresh(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                key = self.key(*args, **kwargs)
            except MissingInput:
                return func(*args, **kwargs)
            self._forget_in_memory(key, args, kwargs)
            started = time.perf_counter()
            value = func(*args, **kwargs)
            if not self.disabled and self.inputs_unchanged(key, args, kwargs):
                value = self.save(key, value, time.perf_counter() - started)
            return value

        memoized.refresh = refresh  # type: ignore[attr-defined]
        return memoized

    def _async_wrapper(self) -> Callable[P, R]:
        func = cast("Callable[P, Awaitable[Any]]", self.func)
        store = self.store

        async def memoized(*args: P.args, **kwargs: P.kwargs) -> Any:
            keys = self.keys
            if keys is None or self.code_changed():
                keys = self.prepare()
            if self.disabled:
                return await func(*args, **kwargs)
            try:
                key = keys.key(self.canonical_arguments(args, kwargs))
            except MissingInput:
                return await func(*args, **kwargs)
            found = self.lookup(self.read_entry(key))
            if found is not MISSING:
                self.hits += 1
                return found

            async def compute() -> Any:
                self.misses += 1
                started = time.perf_counter()
                try:
                    value = await func(*args, **kwargs)
                finally:
                    seconds = self.computed_in(started)
                if self.inputs_unchanged(key, args, kwargs):
                    value = self.save(key, value, seconds)
                return value

            if not self.options.lock:
                return await compute()
            value, computed = await compute_once_async(
                store, key, lambda: self.lookup(self.read_entry(key)), compute
            )
            if not computed:
                self.hits += 1
            return value

        async def refresh(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                key = self.key(*args, **kwargs)
            except MissingInput:
                return await func(*args, **kwargs)
            self._forget_in_memory(key, args, kwargs)
            started = time.perf_counter()
            value = await func(*args, **kwargs)
            if not self.disabled and self.inputs_unchanged(key, args, kwargs):
                value = self.save(key, value, time.perf_counter() - started)
            return value

        memoized.refresh = refresh  # type: ignore[attr-defined]
        return cast("Callable[P, R]", memoized)

    def _memory_wrapper(self, memory: MemoryTier) -> Callable[P, R]:
        now = time.time
        direct_allowed = self.direct_memory

        def memoized(*args: P.args, **kwargs: P.kwargs) -> R:
            # The memory tier's hit path: a dict lookup by the argument tuple when it can
            # key directly (see memory.py), before any store key is built. The one-argument
            # test is direct_key's, inlined: it is most calls. The dict is read through the
            # tier, not held apart: a copy of this function sent by value (cloudpickle) then
            # has its owner's tier, not a copy of its entries.
            if self.code_changed():  # reloaded or rebound: these entries may be stale
                self.prepare()
            direct: tuple[Any, ...] | None
            if kwargs or not direct_allowed:
                direct = None
            elif len(args) == 1 and type(args[0]) in DIRECT_TYPES:
                direct = args
            else:
                direct = direct_key(args)
            if direct is not None:
                entry = memory.entries.get(direct)
                if entry is not None and (entry[1] is None or entry[1] > now()):
                    self.hits += 1
                    return cast("R", entry[0])
            keys = self.keys  # checked against the code at the top of this call
            if keys is None:
                keys = self.prepare()
            if self.disabled:
                return self.func(*args, **kwargs)
            try:
                key = keys.key(self.canonical_arguments(args, kwargs))
            except MissingInput:
                return self.func(*args, **kwargs)
            if direct is None:
                entry = memory.entries.get(key)
                if entry is not None and (entry[1] is None or entry[1] > now()):
                    self.hits += 1
                    return cast("R", entry[0])
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
        found = self.store.read_with_expiry(key, mapped=self.options.mmap)
        if found is not MISSING:
            data, expires_at = cast("tuple[bytes, float | None]", found)
            value = self.lookup(data)
            if value is not MISSING:
                self.hits += 1
                memory.put(memory_key, value, expires_at)
                return cast("R", value)
        started = time.time()
        value = self._miss(key, args, kwargs)
        ttl = self.options.ttl
        memory.put(memory_key, value, None if ttl is None else started + ttl)
        return value

    def _miss(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        func, store = self.func, self.store
        if not self.misses and not self.hits:
            self.explain_first_miss()

        def compute() -> R:
            self.misses += 1
            started = time.perf_counter()
            try:
                value = func(*args, **kwargs)
            finally:
                seconds = self.computed_in(started)
            if self.inputs_unchanged(key, args, kwargs):
                value = self.save(key, value, seconds)
            return value

        if not self.options.lock:
            return compute()
        value, computed = compute_once(
            store, key, lambda: self.lookup(self.read_entry(key)), compute
        )
        if not computed:
            self.hits += 1
        return cast("R", value)

    def read_entry(self, key: str) -> Encoded | Missing:
        """The verified encoded value under ``key``, or MISSING; large areas as read-only
        maps of their files with ``memo(mmap=True)``."""
        found = self.store.read_with_expiry(key, False, mapped=self.options.mmap)
        return MISSING if found is MISSING else found[0]  # type: ignore[index]

    def read_entries(self, keys: list[str]) -> dict[str, Encoded]:
        """``read_entry`` for many keys, in batches where the store can (``f.map``'s hits);
        the keys not stored are left out."""
        read_many = getattr(self.store, "read_many", None)
        if read_many is not None:
            return read_many(keys, mapped=self.options.mmap)  # type: ignore[no-any-return]
        found = {key: self.read_entry(key) for key in keys}
        return {key: data for key, data in found.items() if data is not MISSING}  # type: ignore[misc]

    def computed_in(self, started: float) -> float:
        """Seconds since ``started`` (a miss's computation), stored in the entry's header."""
        return time.perf_counter() - started

    def lookup(self, data: Encoded | Missing) -> object:
        """The decoded value of a read, or MISSING; an undecodable entry counts as a miss.
        With ``memo(mmap=True)`` its arrays are read-only, mapped or not (decoding.py)."""
        if data is MISSING:
            return MISSING
        try:
            return decode_value(
                cast("Encoded", data),
                allow_pickle=self.store.pickle_allowed,
                read_only=self.options.mmap,
            )
        except CorruptEntry as error:
            self.store.report_fault(_decode_fault(error), error)
            return MISSING

    def lookup_many(self, found: dict[str, Encoded]) -> dict[str, object]:
        """``lookup`` of many reads (``read_entries``'): the decoded values by key, an
        undecodable entry left out (a miss, reported as ``lookup`` reports it)."""
        values, failed = decode_many(
            found, allow_pickle=self.store.pickle_allowed, read_only=self.options.mmap
        )
        for error in failed:
            self.store.report_fault(_decode_fault(error), error)
        return values

    def save(self, key: str, value: Any, seconds: float) -> Any:
        """Store ``value`` under ``key``; returns what the caller gets: ``value``, or with
        ``memo(mmap=True)`` the stored entry as a hit reads it (read-only maps), so that a
        miss and a hit return the same kind of arrays (joblib's ``mmap_mode`` does too)."""
        store = self.store
        store.open()  # settles pickle_allowed, even when no read opened the store first
        try:
            # Large arrays and pickle buffers go out of band (out_of_band.py): written once
            # from their memory; with memo(mmap=True) every array does, each hit mapping it.
            data = encode_result(
                value,
                allow_pickle=store.pickle_allowed,
                out_of_band_from=0 if self.options.mmap else OUT_OF_BAND_FROM,
            )
        except UnstorableValue as error:
            return self._not_stored(value, response_refusal(value) or error)
        # Only a pickle can hold an HTTP response (responses.py): msgpack results skip the search.
        if is_pickled(data.document if isinstance(data, OutOfBand) else data):
            refusal = response_refusal(value)
            if refusal is not None:
                return self._not_stored(value, refusal)
        lease = lease_for(key)
        stored = store.write(
            key, data, ttl=self.options.ttl, tag=self.identity, seconds=seconds, lease=lease
        )
        if stored and self.options.mmap:
            mapped = self.lookup(self.read_entry(key))
            if mapped is not MISSING:
                return mapped
        return value

    def _not_stored(self, value: Any, error: UnstorableValue) -> Any:
        """A result the store cannot keep: returned, with one warning (raised by a strict
        store)."""
        if self.store.strict:
            raise UnstorableValue(
                f"{self.func.__qualname__}(): {error}: the store is strict "
                "(Store(strict=True)). Return supported types, or use a store without "
                "strict=True."
            ) from None
        self.store.report_fault("result not stored", error)
        return value

    def _forget_in_memory(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.memory is not None:
            self.memory.discard(key)
            direct = None if kwargs or not self.direct_memory else direct_key(args)
            if direct is not None:
                self.memory.discard(direct)


def is_async(func: Callable[..., Any]) -> bool:
    import inspect  # at decoration, not at `import persistmemo`

    return inspect.iscoroutinefunction(inspect.unwrap(func)) or inspect.iscoroutinefunction(func)


def _decode_fault(error: CorruptEntry) -> str:
    """The kind of fault of an entry whose seal verified but whose value did not decode.

    The seal proves the bytes are the ones written, so this is never corruption: either
    the value needs what this process lacks (a class gone, a pickle refused here), or the
    codec wrote what it cannot read (a defect to report).
    """
    if isinstance(error, UndecodableValue):
        return "entry not decodable here"
    return "codec defect (an entry persistmemo wrote but cannot read; please report it)"
