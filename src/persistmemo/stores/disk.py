"""Store: one diskcache ``Cache`` in one directory, holding sealed results under string keys.

This module holds the entry operations (read, write, delete, leases, hit counts, looking
inside); the store's opening, location, faults and forks are ``StoreLifetime``'s
(stores/disk_opening.py), and which store a path or the environment names is
stores/registry.py's.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from persistmemo._codec.decoding import Encoded
from persistmemo._codec.out_of_band import OutOfBand
from persistmemo._faults import FaultReporter
from persistmemo._keys.layout import identity_of, is_result_key
from persistmemo._sealing import (
    secret_from_text,
)
from persistmemo.errors import CorruptEntry
from persistmemo.stores import disk_opening as opening
from persistmemo.stores.base import (
    LEASE_PREFIX,
    MISSING,
    STATS_PREFIX,
    Missing,
    planted_lease_after,
    summarize,
    unseal_or_report,
)
from persistmemo.stores.disk_opening import (
    DEFAULT_LEASE,
    DEFAULT_TIMEOUT,
    StoreLifetime,
    _live_stores,
    absolute_path,
    default_directory,
)
from persistmemo.stores.schema import MODE_RAW

# typing costs a cold start ~8 ms (it imports re): names for the type checker only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    from persistmemo.stores.base import (
        CheckReport,
        EntryInfo,
        FunctionSummary,
        Lease,
        Progress,
    )

if TYPE_CHECKING:
    T = TypeVar("T")

READ_MANY_BATCH = 500
"""Keys per query of ``read_many``: under SQLite's limit of host parameters (999 in old builds)."""

__all__ = ["Store", "default_directory"]


_ADD_HITS = (
    "UPDATE Cache SET value = value + ?, store_time = ? WHERE key = ? AND raw = 1"
    " AND mode = ? AND filename IS NULL AND expire_time IS NULL AND typeof(value) = 'integer'"
    " AND value >= 0 AND value < 4611686018427387904"
)


class Store(StoreLifetime):
    """A persistent store of memoized results: one diskcache ``Cache`` in ``directory``.

    - ``directory``: None for the default location (see ``default_directory``).
    - ``strict=True`` refuses results that need the pickle fallback (a TypeError when the
      result is stored).
    - ``timeout``: seconds an operation, or opening the store, waits for a locked database.
    - ``lease``: seconds a computing caller's claim on a key lasts if it dies (see memo's
      ``lock``); a live caller renews it.
    - ``secret``: the key that seals entries (bytes or a passphrase); default
      ``$PERSISTMEMO_SECRET`` or the user's ``secret.key``.
    - ``shared=True``: the directory is shared on purpose by a group of users. It may be
      group-writable or created by another member (a new one is made ``2770``); the
      pickle fallback is refused unless ``secret=`` or ``$PERSISTMEMO_SECRET`` is given.
      Without it, a directory that others can write is read but never written (a warning
      says so), since whoever can write it can replay or plant entries (docs/security.md).
    - other keywords are diskcache settings (``size_limit``, ``eviction_policy``, ...); a
      policy that records reads (``least-recently-used``) makes every hit a write.

    >>> import tempfile
    >>> with Store(tempfile.mkdtemp()) as store:
    ...     @store.memo
    ...     def square(x: int) -> int:
    ...         return x * x
    ...     square(3), square(3), square.cache_info().hits
    (9, 9, 1)
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        strict: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        lease: float = DEFAULT_LEASE,
        secret: bytes | str | None = None,
        shared: bool = False,
        **settings: Any,
    ) -> None:
        if settings:
            from persistmemo.stores.engine import DEFAULT_SETTINGS

            unknown = set(settings).difference(DEFAULT_SETTINGS)
            if unknown:
                raise TypeError(
                    f"Store() got unknown settings {sorted(unknown)}; diskcache settings are "
                    f"{sorted(DEFAULT_SETTINGS)}"
                )
        for name in ("size_limit", "cull_limit", "disk_min_file_size"):
            value = settings.get(name)
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(f"Store({name}=...) takes a whole number; got {value!r}")
                settings[name] = int(value)  # stored as SQLite REAL, it would look tampered
        if not (timeout > 0 and lease > 0):
            raise ValueError("Store(timeout=..., lease=...) must be positive seconds")
        # Resolved once: a relative path means the working directory of now, not of a
        # later thread after os.chdir (and SQLite's file URIs need absolute paths).
        self._requested = None if directory is None else absolute_path(directory)
        self.shared = bool(shared)
        self._resolved: tuple[str, str] | None = None
        self.strict = strict
        self.timeout = float(timeout)
        self.lease = float(lease)
        self._given_secret = secret_from_text(secret) if isinstance(secret, str) else secret
        # Tags group each function's entries; their index makes cache_clear() a range delete.
        self._settings = {"tag_index": True, **settings}
        self._faults = FaultReporter(str(self._requested or "(default)"))
        self._fork_lock = threading.RLock()
        self._reset_state()
        _live_stores.add(self)

    def __repr__(self) -> str:
        where = self._resolved[0] if self._resolved else (self._requested or "(default)")
        return f"Store({str(where)!r})"

    # --- decorating ----------------------------------------------------------------------

    def memo(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """``memo`` with this store: ``@store.memo`` or ``@store.memo(ttl=60)``."""
        # An upward reach, for convenience: the decorator sits above the stores.
        from persistmemo._memo.decorator import memo

        decorate = memo(store=self, **options)
        return decorate if func is None else decorate(func)

    # --- entries -------------------------------------------------------------------------

    def read(self, key: str) -> Encoded | Missing:
        """The verified encoded value under ``key``, or MISSING (absent, expired, unusable)."""
        found = self.read_with_expiry(key)
        return found if found is MISSING else found[0]  # type: ignore[index]

    def read_with_expiry(
        self, key: str, with_expiry: bool = True, *, mapped: bool = False
    ) -> tuple[Encoded, float | None] | Missing:
        """``(encoded value, expiry time or None)`` under ``key``, or MISSING. The expiry
        costs nothing extra here (``with_expiry`` matters to remote stores). ``mapped``: a
        value with an area comes back as a read-only map of its file, checked up to the
        area's tag (see integrity.py)."""
        reader = self._reader
        if reader is None and (reader := self._ready_reader()) is None:
            return MISSING
        if self._bypass_until and time.monotonic() < self._bypass_until:
            return MISSING
        if mapped:
            mapped = self._may_map(mapped)
        try:
            found = reader.read(key, time.time(), mapped, self._sealer)
        except CorruptEntry as error:  # a planted or damaged value file
            self.report_fault("corrupt entry", error)
            return MISSING
        except RecursionError:
            raise  # too deep a stack: locking.py releases the claim once unwound
        except Exception as error:  # I/O, SQLite, or a planted row of unexpected types
            self._io_fault("read failed", error)
            return MISSING
        if found is None:
            return MISSING
        data, expires_at, area_check = found
        try:  # unseal_or_report, inlined: every hit passes here
            if area_check is None and not mapped:  # a small entry: no keywords to pass
                return self._sealer.unseal(key, data), expires_at
            return self._sealer.unseal(key, data, mapped=mapped, area_check=area_check), expires_at
        except CorruptEntry as error:
            self.report_fault("corrupt entry", error)
            return MISSING

    def read_many(self, keys: list[str], *, mapped: bool = False) -> dict[str, Encoded]:
        """The verified encoded values of those ``keys`` that are stored, in few queries.

        What ``f.map`` reads its hits with: one SELECT per batch of keys instead of one per
        key; each value is verified like a single read.
        """
        reader = self._reader
        if reader is None and (reader := self._ready_reader()) is None:
            return {}
        if self._bypass_until and time.monotonic() < self._bypass_until:
            return {}
        mapped = self._may_map(mapped)
        found: dict[str, Encoded] = {}
        now = time.time()
        for start in range(0, len(keys), READ_MANY_BATCH):
            try:
                rows = reader.read_many(keys[start : start + READ_MANY_BATCH], now, mapped)
            except RecursionError:
                raise  # too deep a stack: locking.py releases the claim once unwound
            except Exception as error:
                self._io_fault("read failed", error)
                return found
            for key, (data, _) in rows.items():
                if isinstance(data, CorruptEntry):
                    self.report_fault("corrupt entry", data)
                    continue
                encoded = unseal_or_report(
                    self._sealer, key, data, self.report_fault, mapped=mapped
                )
                if encoded is not MISSING:
                    found[key] = encoded  # type: ignore[assignment]
        return found

    def _with_cache(self, kind: str, operation: Callable[[Any], T], default: T) -> T:
        """``operation(cache)``, or ``default`` when the store is unusable or faults (the
        fault reported once, as ``kind`` unless its cause names it better)."""
        cache = self._writable_cache()
        if cache is None:
            return default
        try:
            return operation(cache)
        except RecursionError:
            raise  # too deep a stack: locking.py releases the claim once unwound
        except Exception as error:  # whatever diskcache or SQLite raise on a planted state
            self._io_fault(kind, error)
            return default

    def write(
        self,
        key: str,
        encoded: bytes | OutOfBand,
        *,
        ttl: float | None,
        tag: str,
        seconds: float = 0.0,
        lease: Lease | None = None,
    ) -> bool:
        """Seal and store ``encoded`` (computed in ``seconds``) under ``key``, releasing
        ``lease`` (our claim on the key) in the same transaction: one commit, not two.

        False (and a warning) when the store cannot keep it.
        """
        if self._reader is None:
            self._await(self._reader_ready, self._open)  # the sealer is the opened store's
        sealed = self._sealer.seal(key, encoded, seconds)
        # A result's key names its function: a tag would store the name a third time (the
        # row and two indexes) for nothing. Bookkeeping records keep theirs.
        stored_tag = None if is_result_key(key) else tag

        def store(cache: Any) -> bool:
            if lease is None:
                return bool(cache.set(key, sealed, expire=ttl, tag=stored_tag))
            with cache.transact():
                stored = bool(cache.set(key, sealed, expire=ttl, tag=stored_tag))
                self._engine.delete_if_value(cache, LEASE_PREFIX + key, lease.token)
            lease.released = True
            return stored

        return self._with_cache("write failed", store, False)

    def delete(self, key: str) -> bool:
        """Remove one entry; True when it was there."""
        return self._with_cache("delete failed", lambda cache: bool(cache.delete(key)), False)

    def purge(self, key: str) -> bool:
        """Remove one entry, expired or not (``delete`` leaves expired ones to expiry);
        True when it was there. What ``check --fix`` and ``prune`` use."""
        return self._with_cache(
            "delete failed", lambda cache: self._engine.delete_any(cache, key), False
        )

    def delete_tagged(self, tag: str) -> int:
        """Remove every entry of the function ``tag``; returns how many. Results are found
        by their keys (which name the function); entries written before ``pm2`` by their
        tag as well."""
        cache = self._writable_cache()
        if cache is None:
            return 0
        try:
            # pm1 entries carry their function's name as a tag; the store's bookkeeping
            # records carry "pm-..." tags, which no function's clear may reach.
            removed = 0 if tag.startswith("pm-") else int(cache.evict(tag))
            keys = [key for key in self.iter_keys(tag) if identity_of(key) == tag]
            delete_any = self._engine.delete_any  # expired entries too, as evict does
            for start in range(0, len(keys), READ_MANY_BATCH):
                with cache.transact():  # one commit per batch, not per entry
                    batch = keys[start : start + READ_MANY_BATCH]
                    removed += sum(delete_any(cache, key) for key in batch)
            return removed
        except RecursionError:
            raise  # too deep a stack: locking.py releases the claim once unwound
        except Exception as error:
            self._io_fault("delete failed", error)
            # a Timeout part-way says how many were removed before it
            return int(error.args[0]) if isinstance(error, opening.TIMEOUT) and error.args else 0

    def clear(self) -> int:
        """Remove every entry of every function, and the store's bookkeeping (hit counts,
        remembered versions and file digests); returns how many entries (results) there
        were."""

        def clear(cache: Any) -> int:
            results = len(self)
            cache.clear()
            return results

        return self._with_cache("clear failed", clear, 0)

    def remove_expired(self) -> int:
        """Remove every expired entry now (they are misses already); returns how many."""
        return self._with_cache("delete failed", lambda cache: int(cache.expire()), 0)

    def __len__(self) -> int:
        """Number of stored results (expired ones not yet removed included; leases, hit
        counts and failure records are not results)."""
        reader = self._ready_reader()
        if reader is None:
            return 0
        try:
            return reader.count_results()
        except Exception as error:  # a fault is a warning and nothing counted
            self._io_fault("read failed", error)
            return 0

    def open(self) -> bool:
        """Open the store now (it otherwise opens on first use); True when it is usable."""
        if self._reader is None:
            self._await(self._reader_ready, self._open)
        return self._reader is not None and not self._broken

    @property
    def secret(self) -> bytes:
        """The key that seals this store's entries (resolved when the store opens)."""
        if self._reader is None:
            self._await(self._reader_ready, self._open)
        return self._secret

    # --- looking inside (see inspection.py) ----------------------------------------------

    def entries(self, function: str | None = None) -> Iterator[EntryInfo]:
        """Every entry's metadata (of one function identity, if given), without decoding."""
        from persistmemo.stores import inspection

        return inspection.iter_entries(self.directory, function)

    def entry_info(self, key: str) -> EntryInfo | None:
        """Metadata of the entry under ``key``, or None."""
        from persistmemo.stores import inspection

        return inspection.entry_info(self.directory, key)

    def functions(self) -> dict[str, FunctionSummary]:
        """Per-function summaries: entries, bytes, versions, oldest/newest, compute stored."""

        return summarize(self.entries())

    def check(self, *, fix: bool = False, progress: Progress | None = None) -> CheckReport:
        """Check SQLite's integrity and every entry's seal; ``fix`` removes bad entries."""
        from persistmemo.stores import inspection

        return inspection.check(self, fix=fix, progress=progress)

    def prune(
        self,
        *,
        expired: bool = True,
        older_than: float | None = None,
        keep_versions: Mapping[str, Iterable[str]] | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Remove expired entries, entries older than ``older_than`` seconds, and entries of
        the functions named in ``keep_versions`` whose version is not listed; returns how many.
        """
        from persistmemo.stores import inspection

        return inspection.prune(
            self,
            expired=expired,
            older_than=older_than,
            keep_versions=keep_versions,
            progress=progress,
        )

    def record_hits(self, function: str, hits: int) -> None:
        """Add ``hits`` to the hit count the store keeps for ``function`` (one write)."""
        if hits <= 0:
            return
        if self._bypass_until and time.monotonic() < self._bypass_until:
            return  # a locked or failing store: counts are for people, not worth a wait
        in_place = self._cache is None and self._reader is not None
        usable = not (self._read_only or self._foreign or self._broken)
        if in_place and usable:
            added = self._add_hits_in_place(STATS_PREFIX + function, hits)
            if added is not None:
                return
        self._with_cache("write failed", lambda c: c.incr(STATS_PREFIX + function, hits), 0)

    def _add_hits_in_place(self, name: str, hits: int) -> bool | None:
        """Add to an existing hit count row with one statement, without diskcache: a
        script that only hits writes its counts at exit, and importing and opening
        diskcache for that was a fifth of its run. None when there is no such row yet
        (diskcache then makes it); True when added; False when the store failed (reported
        once, and bypassed for a while: a locked store costs one timeout at exit, not one
        per function)."""
        reader = self._reader
        if reader is None:
            return None
        try:  # the reader's connection: a new one would read the schema again (~0.4 ms)
            changed = reader.write_once(_ADD_HITS, (hits, time.time(), name, MODE_RAW))
        except Exception as error:
            self._io_fault("write failed", error)
            return False
        return True if changed == 1 else None

    def recorded_hits(self) -> dict[str, int]:
        """Hit counts per function, as flushed by processes at their exit."""
        from persistmemo.stores import inspection

        return inspection.recorded_hits(self.directory, STATS_PREFIX)

    def forget_hits(self, function: str) -> None:
        """Drop the recorded hit count of ``function`` (its entries were cleared)."""
        self._with_cache("delete failed", lambda cache: cache.delete(STATS_PREFIX + function), 0)

    # --- leases (one computation per key; see locking.py) --------------------------------

    def try_lease(self, key: str, token: str) -> bool:
        """Claim ``key`` for ``lease`` seconds; True when claimed (or the store is unusable).

        A claim no caller could have made (no expiry, or one further away than
        ``planted_lease_after``) is removed and reported, then claimed: waiting on it would
        never end."""

        def claim(cache: Any) -> bool:
            name = LEASE_PREFIX + key
            try:
                if cache.add(name, token, expire=self.lease):
                    return True
            except TypeError:  # an expiry of another type (text, a blob): planted as well
                pass
            if not self._engine.delete_unending_lease(cache, name, planted_lease_after(self.lease)):
                return False
            self._faults.report(
                "planted lease",
                f"{name} had no end (or one too far away to be a caller's): removed, so that "
                "callers do not wait for it forever",
            )
            return bool(cache.add(name, token, expire=self.lease))

        return self._with_cache("lease failed", claim, True)

    def renew_lease(self, key: str, token: str) -> bool:
        """Extend our claim on ``key``; False when it is no longer ours (or cannot be told).

        Runs in the lease keeper's thread: it never raises and never warns (a warning the
        filters make an error would end that thread); a lease that is not renewed expires.
        """
        cache = self._writable_cache()
        if cache is None:
            return False
        try:
            return bool(self._engine.touch_if_value(cache, LEASE_PREFIX + key, token, self.lease))
        except Exception:
            return False

    def lease_holder(self, key: str) -> str | None:
        """The token of the live lease on ``key``, or None (read-only SQL: never a file)."""
        reader = self._ready_reader()
        if reader is None:
            return None
        try:
            return reader.lease_token(LEASE_PREFIX + key, time.time())
        except Exception:
            return None

    def release_lease(self, key: str, token: str) -> None:
        """Drop our claim on ``key``, unless it expired and someone else holds it now."""
        self._with_cache(
            "lease failed",
            lambda cache: self._engine.delete_if_value(cache, LEASE_PREFIX + key, token),
            None,
        )

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def iter_keys(self, function: str | None = None) -> Iterator[str]:
        """Every entry key (leases and hit counts left out), in no particular order; with
        ``function``, those in its key range (see inspection.iter_keys)."""
        from persistmemo.stores import inspection

        try:
            yield from inspection.iter_keys(self.directory, function)
        except Exception as error:
            self._io_fault("read failed", error)
