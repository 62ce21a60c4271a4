"""Store: results in one diskcache ``Cache`` in one directory, under the sealed layer.

``DiskBackend`` holds the byte operations on diskcache's table (a hit is one SQL statement,
read through stores/entry_reader.py; writes go through diskcache, stores/engine.py); its
opening, location, faults and forks are ``StoreLifetime``'s (stores/disk_opening.py), the
listing of rows is stores/inspection.py's, and which store a path or the environment names
is stores/registry.py's. ``Store`` is the sealed layer (stores/sealed.py) over it.
"""

from __future__ import annotations

import functools
import math
import os
import sqlite3
import threading
import time

from persistmemo._deferred import load_before_fork
from persistmemo._faults import FaultReporter
from persistmemo._secret import secret_from_text
from persistmemo.stores import disk_opening as opening
from persistmemo.stores.api import Backend, Row
from persistmemo.stores.base import (
    LEASE_PREFIX,
    SECRET_PREFIX,
    STATS_PREFIX,
    sealed_with_another_secret,
)
from persistmemo.stores.claims import KeyClaims, claims_available, claims_in
from persistmemo.stores.disk_opening import (
    DEFAULT_LEASE,
    DEFAULT_TIMEOUT,
    StoreLifetime,
    _live_stores,
    absolute_path,
    default_directory,
)
from persistmemo.stores.schema import MODE_RAW
from persistmemo.stores.sealed import SealedStore

# typing costs a cold start ~8 ms (it imports re): names for the type checker only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from typing import Any, TypeVar

    from persistmemo._sealing import SealedParts, Sealer
    from persistmemo.errors import CorruptEntry
    from persistmemo.stores.api import Found
    from persistmemo.stores.base import CheckReport

    T = TypeVar("T")


READ_MANY_BATCH = 500
"""Keys per query of ``get_many``: under SQLite's limit of host parameters (999 in old builds)."""

GET_MANY_BATCH = 8192
"""Keys per read of ``get_many_bytes`` (f.map's hits): one scan of their key range, or IN
lists (stores/entry_reader.py); the values of one read are in memory at once."""

__all__ = ["DiskBackend", "Store", "default_directory"]

_PLAIN = (LEASE_PREFIX, STATS_PREFIX)
"""Keys whose values are a token or a count, not sealed bytes."""

_ADD_HITS = (
    "UPDATE Cache SET value = value + ?, store_time = ? WHERE key = ? AND raw = 1"
    " AND mode = ? AND filename IS NULL AND expire_time IS NULL AND typeof(value) = 'integer'"
    " AND value >= 0 AND value < 4611686018427387904"
)


def _load_inspection() -> None:
    from persistmemo.stores import inspection  # noqa: F401  (loaded, not named)


load_before_fork(_load_inspection)


class DiskBackend(StoreLifetime, Backend):
    """Bytes in one diskcache ``Cache`` in ``directory`` (None: the default location)."""

    def __init__(
        self,
        directory: str | None,
        *,
        strict: bool,
        timeout: float,
        lease: float,
        secret: bytes | None,
        shared: bool,
        settings: dict[str, Any],
    ) -> None:
        self._requested = directory
        self.shared = shared
        self._resolved: tuple[str, str] | None = None
        self.strict = strict
        self.timeout = timeout
        self.lease = lease
        self._given_secret = secret
        # No index on tags: nothing of persistmemo's looks rows up by tag (a function's
        # entries are a range of keys), and the index was one more page in every write.
        self._settings = {"tag_index": False, **settings}
        self._faults = FaultReporter(str(directory or "(default)"))
        self._fork_lock = threading.RLock()
        self._claims: KeyClaims | None = None
        self._reset_state()
        _live_stores.add(self)

    @property
    def where(self) -> str:  # type: ignore[override]
        return self._directory

    @property
    def faults(self) -> FaultReporter:
        return self._faults

    def opened_sealer(self) -> Sealer:
        """The sealer of the opened store (its secret depends on the directory)."""
        if self._reader is None:
            self._await(self._reader_ready, self._open)
        return self._sealer

    def usable(self) -> bool:
        return not (self._broken or (self._bypass_until and time.monotonic() < self._bypass_until))

    def may_map(self) -> bool:
        # Decided on the opened store: whether others can write it is found when it opens.
        return self._ready_reader() is not None and self._may_map(True)

    def fault(self, kind: str, error: BaseException) -> tuple[str, str] | None:
        return self._fault_words(kind, error)

    def _with_cache(self, operation: Callable[[Any], T], default: T) -> T:
        """``operation(cache)``, or ``default`` when nothing may be written here now (read
        only, foreign, bypassed: reported when that was found)."""
        cache = self._writable_cache()
        return default if cache is None else self._until_unlocked(operation, cache)

    # --- reading ---------------------------------------------------------------------------

    def get(self, key: str, *, mapped: bool = False) -> Found | None:
        reader = self._reader
        if reader is None and (reader := self._ready_reader()) is None:
            return None
        if self._bypass_until and time.monotonic() < self._bypass_until:
            return None
        if key[2:3] == "-" and key.startswith(_PLAIN):  # results are pm1:, pm2:, pm3:
            return self._plain(reader, key)
        if not mapped:
            small = reader.read_small(key, time.time())
            if small is None:
                return None
            if small is not False:
                return small[0], small[1], None
        return reader.read(key, time.time(), mapped, self._sealer)

    def _plain(self, reader: Any, key: str) -> Found | None:
        found = reader.plain(key, time.time())
        if found is None:
            return None
        value, expires_at = found
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            value = bytes(value) if isinstance(value, bytes) else b""
        finite = type(expires_at) in (int, float) and math.isfinite(expires_at)
        return value, float(expires_at) if finite else None, None

    def get_many(self, keys: list[str], *, mapped: bool = False) -> dict[str, Found]:
        reader = self._reader
        if reader is None and (reader := self._ready_reader()) is None:
            return {}
        if self._bypass_until and time.monotonic() < self._bypass_until:
            return {}
        found: dict[str, Any] = {}
        now = time.time()
        sealed = [key for key in keys if not key.startswith(_PLAIN)]
        for start in range(0, len(sealed), READ_MANY_BATCH):
            rows = reader.read_many(
                sealed[start : start + READ_MANY_BATCH], now, mapped, self._sealer
            )
            for key, (data, expires_at) in rows.items():
                found[key] = data if isinstance(data, Exception) else (data, expires_at, None)
        for key in keys:
            if key.startswith(_PLAIN) and (plain := self._plain(reader, key)) is not None:
                found[key] = plain
        return found

    def get_many_bytes(
        self, keys: list[str], *, mapped: bool = False
    ) -> tuple[list[tuple[str, bytes]], dict[str, Found | CorruptEntry]]:
        reader = self._reader
        if reader is None and (reader := self._ready_reader()) is None:
            return [], {}
        if self._bypass_until and time.monotonic() < self._bypass_until:
            return [], {}
        now = time.time()
        if len(keys) > GET_MANY_BATCH:
            keys = sorted(keys)  # each read one range of the index, scanned when dense
        held: list[tuple[str, bytes]] = []
        others: dict[str, Found | CorruptEntry] = {}
        for start in range(0, len(keys), GET_MANY_BATCH):
            found, rest = reader.read_keys(
                keys[start : start + GET_MANY_BATCH], now, mapped, self._sealer
            )
            held += found
            others.update(rest)
        # A lease's token or a hit count is not bytes: the reader left it to ``read``, which
        # refuses it; read it as get_many does (bytes planted there fail their seal above).
        for key in [key for key in others if key.startswith(_PLAIN)]:
            plain = self._plain(reader, key)
            if plain is None:
                del others[key]
            else:
                others[key] = plain
        return held, others

    def read_all(self, key: str) -> bytes | memoryview | None:
        from persistmemo.stores import inspection  # listing: not on a call's path

        return inspection.stored_bytes(self.directory, key)

    def scan(self, prefix: str) -> Iterator[Row]:
        from persistmemo.stores import inspection  # listing: not on a call's path

        return inspection.rows(self.directory, prefix)

    def keys(self, prefix: str) -> list[str]:
        from persistmemo.stores import inspection  # listing: not on a call's path

        return inspection.keys(self.directory, prefix)

    def values(self, prefix: str) -> Iterator[tuple[str, bytes | memoryview | CorruptEntry]]:
        from persistmemo.stores import inspection  # listing: not on a call's path

        return inspection.values(self.directory, prefix)

    def count_results(self) -> int:
        """Stored results, in one query (expired ones not yet removed included)."""
        reader = self._ready_reader()
        return 0 if reader is None else reader.count_results()

    # --- writing ---------------------------------------------------------------------------

    def put(
        self,
        key: str,
        value: bytes | SealedParts | str | int,
        *,
        ttl: float | None = None,
        tag: str | None = None,
        release: tuple[str, str] | None = None,
    ) -> bool:
        def store(cache: Any) -> bool:
            if release is None:
                if type(value) is bytes and cache.add_small(key, value, ttl, tag):
                    return True
                return bool(cache.set(key, value, expire=ttl, tag=tag))
            with cache.transact():
                stored = bool(cache.set(key, value, expire=ttl, tag=tag))
                self._engine.delete_if_value(cache, *release)
            return stored

        return self._with_cache(store, False)

    def _until_unlocked(self, write: Callable[[Any], T], cache: Any) -> T:
        """``write(cache)``, tried again while the database is locked, until the store's
        timeout: SQLite's own wait does not cover a write whose snapshot another writer
        made stale (SQLITE_BUSY_SNAPSHOT, returned at once), and writers that take turns
        can starve one waiting in it."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return write(cache)
            except (sqlite3.OperationalError, self._engine.Timeout) as error:
                locked = isinstance(error, self._engine.Timeout) or "locked" in str(error)
                if not locked or time.monotonic() > deadline:
                    raise
            # Apart from the others retrying (no random: a cold start would import it).
            time.sleep(0.001 + 0.002 * (time.perf_counter_ns() % 1000) / 1000)

    def add(self, key: str, value: str, ttl: float) -> bool:
        def add(cache: Any) -> bool:
            try:
                return bool(cache.add(key, value, expire=ttl))
            except TypeError:  # an expiry of another type (text, a blob): planted
                return False

        return self._with_cache(add, False)

    def claim(self, key: str, token: str, ttl: float, horizon: float) -> tuple[bool, bool]:
        """``add``; a lease row no caller could have made (no expiry, one of another type,
        or one further than ``horizon``) is removed in one statement, then claimed."""

        def claim(cache: Any) -> tuple[bool, bool]:
            try:
                if cache.add(key, token, expire=ttl):
                    return True, False
            except TypeError:  # an expiry of another type (text, a blob): planted as well
                pass
            if not self._engine.delete_unending_lease(cache, key, horizon):
                return False, False
            return bool(cache.add(key, token, expire=ttl)), True

        return self._with_cache(claim, (True, False))

    offers_key_claims = claims_available()

    def key_claims(self) -> KeyClaims | None:
        claims = self._claims
        if claims is None and self.offers_key_claims and self._writable_cache() is not None:
            claims = self._claims = claims_in(self._directory, shared=self.shared)
            if claims.foreign_wait is None:
                claims.foreign_wait = functools.partial(
                    self._faults.report, "claim held by another user"
                )
        return claims

    def delete_if(self, key: str, value: object) -> bool:
        return self._with_cache(
            lambda cache: self._engine.delete_if_value(cache, key, value), False
        )

    def expire_if(self, key: str, value: str, ttl: float) -> bool:
        touch = self._engine.touch_if_value if self._engine is not None else None
        return self._with_cache(
            lambda cache: bool(touch is not None and touch(cache, key, value, ttl)), False
        )

    def delete(self, key: str) -> bool:
        return self._with_cache(lambda cache: self._engine.delete_any(cache, key), False)

    def delete_many(self, keys: list[str]) -> int:
        removed = [0, 0]  # rows removed, batches done: kept when a locked batch is tried again

        def delete(cache: Any) -> int:
            for start in range(removed[1] * READ_MANY_BATCH, len(keys), READ_MANY_BATCH):
                with cache.transact():  # one commit per batch, not per entry
                    batch = keys[start : start + READ_MANY_BATCH]
                    count = sum(self._engine.delete_any(cache, key) for key in batch)
                removed[0] += count  # committed
                removed[1] += 1
            return removed[0]

        return self._with_cache(delete, 0)

    def purge_expired(self) -> int:
        return self._with_cache(lambda cache: int(cache.expire()), 0)

    def clear(self) -> None:
        self._with_cache(lambda cache: cache.clear(), 0)

    def incr(self, key: str, amount: int) -> None:
        if self._cache is None and self._reader is not None and self._writes_in_place():
            changed = self._reader.write_once(_ADD_HITS, (amount, time.time(), key, MODE_RAW))
            if changed == 1:
                return
        self._with_cache(lambda cache: cache.incr(key, amount), 0)

    def _writes_in_place(self) -> bool:
        """Whether a count may be added with the reader's one statement, without diskcache:
        a script that only hits writes its counts at exit, and importing and opening
        diskcache for that was a fifth of its run."""
        return not (self._read_only or self._foreign or self._broken)

    # --- beneath the entries -----------------------------------------------------------------

    def sealed_with_another_secret(
        self, sealer: Sealer, *, verified: int, well_formed_failures: int
    ) -> bool:
        # The fingerprints of the secrets that wrote here (written when a secret first opens
        # the store for writing) settle it when they can.
        recorded = {key[len(SECRET_PREFIX) :] for key in self.keys(SECRET_PREFIX)}
        return sealed_with_another_secret(
            recorded, sealer, verified=verified, well_formed_failures=well_formed_failures
        )

    def check_storage(self, report: CheckReport, *, fix: bool) -> None:
        self.opened_sealer()  # opens the store: a garbage cache.db is moved aside
        from persistmemo.stores import inspection  # listing: not on a call's path

        inspection.check_database(
            self.directory,
            report,
            moved_aside=self.moved_aside,
            settings=self._settings,
            timeout=self.timeout,
            engine=opening.load_engine(),
            fix=fix,
        )


class Store(SealedStore):
    """A persistent store of memoized results: one diskcache ``Cache`` in ``directory``.

    - ``directory``: None for the default location (see ``default_directory``).
    - ``strict=True`` refuses results that need the pickle fallback (a TypeError when the
      result is stored).
    - ``timeout``: seconds an operation, or opening the store, waits for a locked database.
    - ``lease``: seconds a computing caller's claim on a key lasts if it dies (see memo's
      ``lock``); a live caller renews it.
    - ``secret``: the key that seals entries (bytes or a passphrase); default
      ``$PERSISTMEMO_SECRET`` or the user's ``secret.key``. Pickled (a memoized function sent
      to joblib or Dask workers), a store sends its settings, and a given secret with them
      unless it is ``$PERSISTMEMO_SECRET``'s (see persistmemo.stores.pickled).
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

    backend: DiskBackend

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
            known = opening.load_engine().DEFAULT_SETTINGS
            unknown = set(settings).difference(known)
            if unknown:
                raise TypeError(
                    f"Store() got unknown settings {sorted(unknown)}; diskcache settings are "
                    f"{sorted(known)}"
                )
        for name in ("size_limit", "cull_limit", "disk_min_file_size"):
            value = settings.get(name)
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(f"Store({name}=...) takes a whole number; got {value!r}")
                value = settings[name] = int(value)  # stored as SQLite REAL, it would look tampered
            if name in settings and (type(value) is not int or value < 0):
                raise TypeError(f"Store({name}=...) takes a whole number of bytes; got {value!r}")
        for name in ("sqlite_cache_size", "sqlite_mmap_size"):
            value = settings.get(name)
            if name in settings and type(value) is not int:
                raise TypeError(f"Store({name}=...) takes a whole number; got {value!r}")
        policy = settings.get("eviction_policy")
        if policy is not None:
            policies = opening.load_engine().EVICTION_POLICY
            if policy not in policies:
                raise ValueError(
                    f"Store(eviction_policy={policy!r}) is not one of diskcache's: "
                    f"{sorted(policies)}"
                )
        for name, seconds in (("timeout", timeout), ("lease", lease)):
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
                raise TypeError(f"Store({name}=...) takes seconds as a number; got {seconds!r}")
            if not (0 < seconds < float("inf")):
                raise ValueError(f"Store({name}=...) must be positive, finite seconds")
        if secret is not None and not isinstance(secret, (bytes, str)):
            raise TypeError(
                f"Store(secret=...) takes bytes or a passphrase (str); got {type(secret).__name__}"
            )
        if secret is not None and not secret:
            raise ValueError("Store(secret=...) is empty: give a passphrase, or leave it out")
        if directory is not None and (not os.fspath(directory) or "://" in os.fspath(directory)):
            raise ValueError(
                f"Store({os.fspath(directory)!r}): a store directory is a path; for a "
                "redis:// URL use RedisStore, or memo(store=url)"
            )
        given = secret_from_text(secret) if isinstance(secret, str) else secret
        backend = DiskBackend(
            # Resolved once: a relative path means the working directory of now, not of a
            # later thread after os.chdir (and SQLite's file URIs need absolute paths).
            None if directory is None else absolute_path(directory),
            strict=strict,
            timeout=float(timeout),
            lease=float(lease),
            secret=given,
            shared=bool(shared),
            settings=settings,
        )
        super().__init__(backend, strict=strict, lease=lease, secret=given)

    def __repr__(self) -> str:
        backend = self.backend
        where = backend._resolved[0] if backend._resolved else (backend._requested or "(default)")
        return f"Store({str(where)!r})"

    def settings(self) -> dict[str, Any]:
        """The arguments that make this store again: its directory (the default store's
        resolved here), options and diskcache settings; ``secret`` as given, or None."""
        backend = self.backend
        diskcache = {
            name: value
            for name, value in backend._settings.items()
            if not (name == "tag_index" and value is False)  # the store's own default
        }
        return {
            "directory": backend._directory,
            "strict": self.strict,
            "timeout": backend.timeout,
            "lease": self.lease,
            "secret": self._given_secret,
            "shared": backend.shared,
            **diskcache,
        }

    # The secret is the opened directory's (a team store's rules, the key file): the
    # backend settles it when it opens, and again after a fork.

    def _sealer_ready(self) -> Sealer:
        return self.backend.opened_sealer()

    @property
    def _sealer(self) -> Sealer | None:  # type: ignore[override]
        """The opened store's sealer (None before it opens): its secret may change when it
        opens again, after a fork."""
        backend = self.backend
        return backend._sealer if backend._reader is not None else None

    @property
    def pickle_allowed(self) -> bool:
        """Whether pickle-fallback results may be stored and loaded (settled when the store
        opens; False before)."""
        return self.backend.pickle_allowed

    @pickle_allowed.setter
    def pickle_allowed(self, allowed: bool) -> None:
        """Settled by the backend when it opens."""

    @property
    def secret(self) -> bytes:
        """The key that seals this store's entries (resolved when the store opens)."""
        self.backend.opened_sealer()
        return self.backend._secret

    def open(self) -> bool:
        """Open the store now (it otherwise opens on first use); True when it is usable."""
        backend = self.backend
        backend.opened_sealer()
        return backend._reader is not None and not backend._broken

    def __len__(self) -> int:
        """Number of stored results (expired ones not yet removed included; leases, hit
        counts and failure records are not results)."""
        return int(self._call("read failed", self.backend.count_results, 0))

    # --- where ---------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The store's directory (for the default store, resolved on first use)."""
        return self.backend.directory

    @property
    def location_reason(self) -> str:
        """Why the store lives where it does: ``argument``, ``$PERSISTMEMO_DIR`` or default."""
        return self.backend.location_reason

    @property
    def moved_aside(self) -> Path | None:
        """Where a garbage cache.db was moved when the store opened, if it was."""
        return self.backend.moved_aside

    @property
    def shared(self) -> bool:
        return self.backend.shared

    @property
    def timeout(self) -> float:
        return self.backend.timeout

    def iter_keys(self, function: str | None = None) -> Iterator[str]:
        """Every entry key (leases and hit counts left out), in no particular order; with
        ``function``, those of exactly that function."""
        yield from self._result_keys(function)
