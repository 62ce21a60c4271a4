"""Store: one diskcache ``Cache`` in one directory, holding sealed results under string keys.

Where the default store lives: ``$PERSISTMEMO_DIR`` when set, else the user cache directory
that platformdirs names (``~/.cache/persistmemo`` on Linux), read when the default store is
first used. Directories are created private to the user (0700): stored results can be as
sensitive as the data they were computed from, and a store others can write is a store whose
pickles nobody should load.

The store opens lazily, on first use, and the opening is bounded by ``timeout`` (diskcache
itself retries a locked database for 60 s whatever its timeout). Every operation is
fail-open: a fault becomes one ``PersistmemoWarning`` per kind and a miss (or an unsaved
result), never an exception in the caller. What happens to a damaged store:

- ``cache.db`` that is not a database at all (garbage, zeroed header) is moved aside as
  ``cache.db.corrupt-<time>`` and a new one is started; results are recomputed.
- a database SQLite reports malformed while in use (a truncated file) is left as it is and
  the store is bypassed for the rest of the process; ``persistmemo check`` tells more.
- a store this user cannot write (another user's, a read-only mount) is read read-only,
  with SQLite's write-ahead log, so that no stale value is served: existing entries are
  served, new results are not saved. When the log cannot be read (its index file is missing
  and cannot be created), the store is bypassed with a warning and tried again later.
- a directory someone else could write (another owner, group- or world-writable) is not
  written unless the store was opened with ``shared=True``: see docs/security.md.
- after a timeout on a locked database the store is bypassed for ``BYPASS_AFTER_TIMEOUT``
  seconds, so a stuck database costs one timeout, not one per call.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from persistmemo.codec import CorruptEntry
from persistmemo.faults import FaultReporter
from persistmemo.integrity import (
    ENV_SECRET,
    Sealer,
    SecretUnavailable,
    secret_from_text,
    untrusted_reason,
    user_secret,
)
from persistmemo.stores.base import (
    LEASE_PREFIX,
    MISSING,
    STATS_PREFIX,
    Missing,
    summarize,
    unseal_or_report,
)
from persistmemo.stores.entry_reader import EntryReader
from persistmemo.stores.schema import DBNAME

if TYPE_CHECKING:
    from pathlib import Path

    from persistmemo.stores.base import (
        CheckReport,
        EntryInfo,
        FunctionSummary,
        Lease,
        Progress,
        StoreBackend,
    )

T = TypeVar("T")

ENV_DIRECTORY = "PERSISTMEMO_DIR"
ENV_URL = "PERSISTMEMO_URL"
DEFAULT_TIMEOUT = 5.0
"""Seconds an operation (or the opening) waits for a locked database before giving up."""

DEFAULT_LEASE = 10.0
"""Seconds a computing caller's claim on a key lasts unless renewed (see locking.py)."""

REOPEN_AFTER = 5.0
BYPASS_AFTER_TIMEOUT = 5.0
READ_MANY_BATCH = 500
"""Keys per query of ``read_many``: under SQLite's limit of host parameters (999 in old builds)."""

# What store operations may raise. diskcache's Timeout joins when the engine is first
# imported (a store opening): no diskcache call can raise before that.
_IO_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)
_Timeout: type[BaseException] = TimeoutError


def default_directory() -> tuple[Path, str]:
    """Where the default store lives, and why: ``(path, reason)``."""
    from pathlib import Path  # pathlib costs milliseconds: imported when a store is used

    configured = os.environ.get(ENV_DIRECTORY)
    if configured:
        return Path(configured).expanduser(), f"${ENV_DIRECTORY}"
    import platformdirs  # only the default store needs it

    return Path(platformdirs.user_cache_dir("persistmemo", appauthor=False)), "platform default"


class Store:
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
        if not (timeout > 0 and lease > 0):
            raise ValueError("Store(timeout=..., lease=...) must be positive seconds")
        # Resolved once: a relative path means the working directory of now, not of a
        # later thread after os.chdir (and SQLite's file URIs need absolute paths).
        self._requested = None if directory is None else _absolute(directory)
        self.shared = bool(shared)
        self._resolved: tuple[Path, str] | None = None
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

    def _reset_state(self) -> None:
        self._cache: Any = None  # the diskcache Cache, once open
        self._engine: Any = None  # persistmemo.stores.engine, imported by the opening
        self._reader: EntryReader | None = None
        self._secret = b""
        self._sealer = Sealer(b"")
        self._pickle_trusted = False
        self.pickle_allowed = False
        self._opening: threading.Thread | None = None
        self._read_only = False
        self._foreign = False  # a directory others can write, not opened as shared
        self.moved_aside: Path | None = None  # where a garbage cache.db went, if it did
        self._open_lock = threading.Lock()
        self._reopen_at = 0.0
        self._read_only_cause = ""
        self._bypass_until = 0.0
        self._broken = False

    # --- where ---------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The store's directory (for the default store, resolved on first use)."""
        return self._location()[0]

    @property
    def location_reason(self) -> str:
        """Why the store lives where it does: ``argument``, ``$PERSISTMEMO_DIR`` or default."""
        return self._location()[1]

    def _location(self) -> tuple[Path, str]:
        if self._resolved is None:
            if self._requested is not None:
                self._resolved = (self._requested, "argument")
            else:
                path, reason = default_directory()
                self._resolved = (_absolute(path), reason)
                self._faults = FaultReporter(str(self._resolved[0]))
        return self._resolved

    def __repr__(self) -> str:
        where = self._resolved[0] if self._resolved else (self._requested or "(default)")
        return f"Store({str(where)!r})"

    # --- decorating ----------------------------------------------------------------------

    def memo(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """``memo`` with this store: ``@store.memo`` or ``@store.memo(ttl=60)``."""
        # An upward reach, for convenience: the decorator sits above the stores.
        from persistmemo.decorator import memo

        decorate = memo(store=self, **options)
        return decorate if func is None else decorate(func)

    # --- entries -------------------------------------------------------------------------

    def read(self, key: str) -> bytes | memoryview | Missing:
        """The verified encoded value under ``key``, or MISSING (absent, expired, unusable)."""
        found = self.read_with_expiry(key)
        return found if found is MISSING else found[0]  # type: ignore[index]

    def read_with_expiry(
        self, key: str, with_expiry: bool = True
    ) -> tuple[bytes | memoryview, float | None] | Missing:
        """``(encoded value, expiry time or None)`` under ``key``, or MISSING. The expiry
        costs nothing extra here (``with_expiry`` matters to remote stores)."""
        reader = self._reader
        if reader is None and (reader := self._ready_reader()) is None:
            return MISSING
        if self._bypass_until and time.monotonic() < self._bypass_until:
            return MISSING
        try:
            found = reader.read(key, time.time())
        except (sqlite3.Error, OSError) as error:
            self._io_fault("read failed", error)
            return MISSING
        except CorruptEntry as error:  # a planted or damaged value file
            self.report_fault("corrupt entry", error)
            return MISSING
        if found is None:
            return MISSING
        encoded = unseal_or_report(self._sealer, key, found[0], self.report_fault)
        return encoded if encoded is MISSING else (encoded, found[1])  # type: ignore[return-value]

    def read_many(self, keys: list[str]) -> dict[str, bytes | memoryview]:
        """The verified encoded values of those ``keys`` that are stored, in few queries.

        What ``f.map`` reads its hits with: one SELECT per batch of keys instead of one per
        key; each value is verified like a single read.
        """
        reader = self._reader
        if reader is None and (reader := self._ready_reader()) is None:
            return {}
        if self._bypass_until and time.monotonic() < self._bypass_until:
            return {}
        found: dict[str, bytes | memoryview] = {}
        now = time.time()
        for start in range(0, len(keys), READ_MANY_BATCH):
            try:
                rows = reader.read_many(keys[start : start + READ_MANY_BATCH], now)
            except (sqlite3.Error, OSError) as error:
                self._io_fault("read failed", error)
                return found
            for key, (data, _) in rows.items():
                if isinstance(data, CorruptEntry):
                    self.report_fault("corrupt entry", data)
                    continue
                encoded = unseal_or_report(self._sealer, key, data, self.report_fault)
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
        except _IO_ERRORS as error:
            self._io_fault(kind, error)
            return default

    def write(
        self,
        key: str,
        encoded: bytes,
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

        def store(cache: Any) -> bool:
            if lease is None:
                return bool(cache.set(key, sealed, expire=ttl, tag=tag))
            with cache.transact():
                stored = bool(cache.set(key, sealed, expire=ttl, tag=tag))
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
        """Remove every entry tagged ``tag`` (one function's); returns how many."""
        cache = self._writable_cache()
        if cache is None:
            return 0
        try:
            return int(cache.evict(tag))
        except _IO_ERRORS as error:
            self._io_fault("delete failed", error)
            # a Timeout part-way says how many were removed before it
            return int(error.args[0]) if isinstance(error, _Timeout) and error.args else 0

    def clear(self) -> int:
        """Remove every entry of every function; returns how many."""
        return self._with_cache("clear failed", lambda cache: int(cache.clear()), 0)

    def remove_expired(self) -> int:
        """Remove every expired entry now (they are misses already); returns how many."""
        return self._with_cache("delete failed", lambda cache: int(cache.expire()), 0)

    def __len__(self) -> int:
        """Number of entries (expired ones not yet removed and live leases included)."""
        return self._with_cache("read failed", len, 0)

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
        if hits > 0:
            self._with_cache("write failed", lambda c: c.incr(STATS_PREFIX + function, hits), 0)

    def recorded_hits(self) -> dict[str, int]:
        """Hit counts per function, as flushed by processes at their exit."""
        from persistmemo.stores import inspection

        return inspection.recorded_hits(self.directory, STATS_PREFIX)

    def forget_hits(self, function: str) -> None:
        """Drop the recorded hit count of ``function`` (its entries were cleared)."""
        self._with_cache("delete failed", lambda cache: cache.delete(STATS_PREFIX + function), 0)

    # --- leases (one computation per key; see locking.py) --------------------------------

    def try_lease(self, key: str, token: str) -> bool:
        """Claim ``key`` for ``lease`` seconds; True when claimed (or the store is unusable)."""
        return self._with_cache(
            "lease failed",
            lambda cache: bool(cache.add(LEASE_PREFIX + key, token, expire=self.lease)),
            True,
        )

    def renew_lease(self, key: str, token: str) -> bool:
        """Extend our claim on ``key``; False when it is no longer ours."""
        cache = self._writable_cache()
        if cache is None:
            return False
        try:
            with cache.transact():
                if cache.get(LEASE_PREFIX + key) != token:
                    return False
                return bool(cache.touch(LEASE_PREFIX + key, expire=self.lease))
        except _IO_ERRORS:
            return False

    def release_lease(self, key: str, token: str) -> None:
        """Drop our claim on ``key``, unless it expired and someone else holds it now."""
        self._with_cache(
            "lease failed",
            lambda cache: self._engine.delete_if_value(cache, LEASE_PREFIX + key, token),
            None,
        )

    # --- faults --------------------------------------------------------------------------

    def report_fault(self, kind: str, error: BaseException) -> None:
        """Warn once per kind of fault; the caller carries on without the store."""
        self._faults.report(kind, f"{type(error).__name__}: {error}")

    def _io_fault(self, kind: str, error: BaseException) -> None:
        if isinstance(error, sqlite3.DatabaseError) and not isinstance(
            error, sqlite3.OperationalError
        ):
            # Malformed pages: nothing this process reads from it can be relied on.
            self._broken = True
            self._faults.report(
                "corrupt database",
                f"{error}; the store is bypassed for the rest of this process "
                "(run `persistmemo check`, or delete the store directory)",
            )
            return
        if isinstance(error, _Timeout) or "locked" in str(error):
            self._bypass_until = time.monotonic() + BYPASS_AFTER_TIMEOUT
            kind = "database locked"
        self.report_fault(_fault_cause(error) or kind, error)

    # --- lifetime ------------------------------------------------------------------------

    def _ready_reader(self) -> EntryReader | None:
        self._await(self._reader_ready, self._open)
        return None if self._broken else self._reader

    def _reader_ready(self) -> bool:
        return self._reader is not None

    def _writer_ready(self) -> bool:
        return self._cache is not None or self._read_only

    def _writable_cache(self) -> Any:
        if self._reader is None:
            self._await(self._reader_ready, self._open)
        if self._broken or (self._bypass_until and time.monotonic() < self._bypass_until):
            return None
        if self._foreign:
            return None  # reported when opened: others could plant or replay entries here
        if self._cache is None and self._reader is not None and not self._read_only:
            self._await(self._writer_ready, self._open_writer)
        return self._cache

    def _await(self, ready: Callable[[], bool], opener: Callable[[], None]) -> None:
        """Run ``opener`` in a thread unless ``ready()``, waiting at most ``timeout``.

        diskcache retries a locked database for 60 s while opening: a caller waits no longer
        than an operation would, and the opening finishes in the background.
        """
        with self._open_lock:
            if ready() or self._broken:
                return
            if self._bypass_until and time.monotonic() < self._bypass_until:
                return  # the last wait for an opening timed out: do not wait on every call
            opening = self._opening
            if opening is None:
                if time.monotonic() < self._reopen_at:
                    return
                opening = self._opening = threading.Thread(
                    target=self._run_opening, args=(opener,), name="persistmemo-open", daemon=True
                )
                opening.start()
        opening.join(self.timeout)
        if opening.is_alive():
            self._bypass_until = time.monotonic() + BYPASS_AFTER_TIMEOUT
            self._faults.report(
                "database locked",
                f"opening took longer than {self.timeout:g} s; calls run without the store "
                "until it opens",
            )

    def _run_opening(self, opener: Callable[[], None]) -> None:
        try:
            opener()
        except (sqlite3.Error, OSError) as error:  # SecretUnavailable is an OSError
            self._reopen_at = time.monotonic() + REOPEN_AFTER
            self._faults.report(
                "cannot open",
                f"{type(error).__name__}: {error}; calls run without the store, which is "
                f"tried again in {REOPEN_AFTER:g} s",
            )
        finally:
            self._opening = None

    def _open(self) -> None:
        """Make the store readable: directory, secret, and a reader.

        An existing database that answers a query is read at once, and diskcache (an import
        and a schema check: ~10 ms) opens only for the first write, so a process that only
        hits starts faster. Anything else (no database yet, garbage, a read-only mount, a
        lock) goes through diskcache's opening, which handles each case.
        """
        directory = self.directory
        self._make_directory(directory)
        problem = untrusted_reason(directory)
        self._foreign = problem is not None and not self.shared
        self._secret, self._pickle_trusted = self._load_secret(directory, problem)
        self._sealer = Sealer(self._secret)
        # Whether pickle-fallback values may be written and read here: a plain
        # attribute, as the hit path reads it on every call.
        self.pickle_allowed = self._pickle_trusted and not self.strict
        if (directory / DBNAME).exists():
            reader = EntryReader(
                directory, timeout=self.timeout, mode="ro" if self._foreign else "normal"
            )
            try:
                reader.probe()
            except sqlite3.Error:
                reader.close()
            else:
                self._reader = reader
                return
        if self._foreign:
            self._broken = True  # nothing readable, and nothing may be written here
            return
        self._open_writer()
        if self._reader is None and self._cache is not None:
            self._reader = EntryReader(directory, timeout=self.timeout)
        elif self._reader is None and self._read_only:
            self._reader = self._read_only_reader(directory)

    def _make_directory(self, directory: Path) -> None:
        if directory.is_dir():
            return
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.shared:
            # The group shares it: group members write, new files keep the group.
            os.chmod(directory, 0o2770)

    def _read_only_reader(self, directory: Path) -> EntryReader | None:
        """A reader for a store this process cannot write, or None (reported) when it cannot
        be read without risking stale values."""
        modes: list[Literal["ro", "immutable"]] = ["ro"]
        if _file_system_read_only(directory) and not (directory / f"{DBNAME}-wal").exists():
            # Nothing can write through this mount; the reader still checks on every read
            # that the database did not change through another (entry_reader.py).
            modes.append("immutable")
        error: sqlite3.Error | None = None
        for mode in modes:
            reader = EntryReader(directory, timeout=self.timeout, mode=mode)
            try:
                reader.probe()
            except sqlite3.Error as failure:
                reader.close()
                error = failure
                continue
            self._faults.report(
                "read-only store",
                f"{self._read_only_cause}; existing entries are served, new results are not saved",
            )
            return reader
        self._read_only = False
        self._reopen_at = time.monotonic() + REOPEN_AFTER
        self._faults.report(
            "read-only store",
            f"{self._read_only_cause}, and its write-ahead log cannot be read ({error}: "
            f"{DBNAME}-shm is missing and cannot be created): calls run without the store "
            f"rather than risk stale results; it is tried again in {REOPEN_AFTER:g} s "
            "(it opens once its owner has it open)",
        )
        return None

    def _open_writer(self) -> None:
        """Open diskcache's Cache (creating the database); a read-only store stays read-only."""
        directory = self.directory
        try:
            self._cache = self._open_cache(directory)
        except sqlite3.OperationalError as error:
            if not _is_read_only(directory, error):
                raise
            self._read_only = True
            self._read_only_cause = str(error)  # reported with how it is read, if it is

    def _open_cache(self, directory: Path) -> Any:
        global _IO_ERRORS, _Timeout
        from persistmemo.stores import engine

        _IO_ERRORS, _Timeout = (sqlite3.Error, OSError, engine.Timeout), engine.Timeout
        self._engine = engine

        def open_cache() -> Any:
            return engine.open_cache(
                directory, timeout=self.timeout, fork_lock=self._fork_lock, settings=self._settings
            )

        try:
            return open_cache()
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError):
                raise
            aside = directory / f"{DBNAME}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
            for suffix in ("", "-wal", "-shm"):
                source = directory / f"{DBNAME}{suffix}"
                if source.exists():
                    source.rename(f"{aside}{suffix}")
            self.moved_aside = aside
            self._faults.report(
                "corrupt database",
                f"{error}; moved it aside to {aside.name} and started an empty store",
            )
            return open_cache()

    def _load_secret(self, directory: Path, problem: str | None) -> tuple[bytes, bool]:
        """The sealing secret, and whether pickle-fallback values may be trusted here."""
        explicit = self._given_secret is not None or bool(os.environ.get(ENV_SECRET))
        if self._given_secret is not None:
            secret = self._given_secret
        else:
            try:
                secret = user_secret()
            except SecretUnavailable as error:
                # Entries sealed with a one-off secret are private to this process: misses
                # for everyone else, never a wrong value.
                self._faults.report("secret key unavailable", str(error))
                return os.urandom(32), False
        if problem and self.shared:
            if not explicit:
                self._faults.report(
                    "shared store",
                    f"{directory} {problem}; pickle-fallback results are neither stored nor "
                    f"loaded: give every user the same secret (${ENV_SECRET} or secret=) to "
                    "allow them",
                )
            return secret, explicit
        if problem:
            self._faults.report(
                "untrusted store directory",
                f"{directory} {problem}, so others could plant or replay entries: results are "
                "read (each is sealed with your secret) but not stored here, and pickle-fallback "
                f"results are refused. If it is shared on purpose, open it as "
                f"Store({str(directory)!r}, shared=True); otherwise use a directory of your own",
            )
        return secret, problem is None

    def close(self) -> None:
        """Close this thread's database connections; the store reopens when used again."""
        if self._cache is not None:
            self._cache.close()
        if self._reader is not None:
            self._reader.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        # A thread of the parent may have held a lock or been opening at the fork: the
        # child starts from the settled state, or from scratch.
        self._fork_lock = threading.RLock()
        if self._reader is None:
            self._reset_state()
        else:
            self._open_lock = threading.Lock()
            self._opening = None
            if self._cache is not None:
                self._cache.fork_lock = self._fork_lock
        self._faults.after_fork()

    def iter_keys(self) -> Iterator[str]:
        """Every entry key (leases and hit counts left out), in no particular order."""
        cache = self._writable_cache()
        if cache is None:
            return
        for key in cache.iterkeys():
            if isinstance(key, str) and key.startswith("pm1:"):
                yield key


def _file_system_read_only(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): assume it can be written
        return False


def _fault_cause(error: BaseException) -> str | None:
    """Name a fault by its cause, so that one cause warns once whatever operation met it."""
    message = str(error).lower()
    code = getattr(error, "errno", None)
    if code == errno.ENOSPC or "disk is full" in message:
        return "disk full"
    if code == errno.EROFS or "readonly" in message or "read-only" in message:
        return "read-only store"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return None


def _is_read_only(directory: Path, error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    if "readonly" in message or "read-only" in message:
        return True
    return "unable to open" in message and not os.access(directory, os.W_OK)


_live_stores: weakref.WeakSet[Store] = weakref.WeakSet()


_held_for_fork: list[threading.RLock] = []


def _hold_writes_for_fork() -> None:
    for store in list(_live_stores):
        store._fork_lock.acquire()
        _held_for_fork.append(store._fork_lock)


def _resume_writes_after_fork() -> None:
    while _held_for_fork:
        _held_for_fork.pop().release()


def _reinitialize_after_fork() -> None:
    global _registry_lock
    _held_for_fork.clear()
    _registry_lock = threading.Lock()
    for store in list(_live_stores):
        store._after_fork_in_child()


_default_store: StoreBackend | None = None
_stores_by_directory: dict[str, StoreBackend] = {}
_registry_lock = threading.Lock()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_hold_writes_for_fork,
        after_in_parent=_resume_writes_after_fork,
        after_in_child=_reinitialize_after_fork,
    )


def _absolute(directory: str | os.PathLike[str]) -> Path:
    from pathlib import Path

    return Path(os.path.abspath(os.path.expanduser(os.fspath(directory))))


def default_store() -> StoreBackend:
    """The process-wide default store.

    ``$PERSISTMEMO_URL`` (``redis://...``) makes it a RedisStore, and with
    ``$PERSISTMEMO_DIR`` also set, a TieredStore with that directory in front. Without
    ``$PERSISTMEMO_URL`` it is the disk store in ``$PERSISTMEMO_DIR``, else in the platform
    cache directory (resolved when first used).
    """
    global _default_store
    with _registry_lock:
        if _default_store is None:
            url = os.environ.get(ENV_URL)
            if url:
                from persistmemo.stores.redis import RedisStore
                from persistmemo.stores.tiered import TieredStore

                remote = RedisStore(url)
                local = os.environ.get(ENV_DIRECTORY)
                chosen: StoreBackend = TieredStore(Store(local), remote) if local else remote
            else:
                chosen = Store()
            _default_store = chosen
        return _default_store


REMOTE_SCHEMES = ("redis", "rediss", "unix")


def store_at(directory: str | os.PathLike[str]) -> StoreBackend:
    """The process-wide store of ``directory``: every ``memo(store=path)`` shares one.

    A ``redis://``, ``rediss://`` or ``unix://`` URL names a RedisStore (one per URL); any
    other URL is refused rather than taken for a directory named ``http:``.
    """
    text = os.fspath(directory)
    scheme, separator, _ = text.partition("://")
    if separator:
        if scheme.lower() not in REMOTE_SCHEMES:
            raise ValueError(
                f"store={text!r}: a store is a directory path or a redis://, rediss:// or "
                f"unix:// URL; the scheme {scheme!r} is not supported"
            )
        with _registry_lock:
            remote = _stores_by_directory.get(text)
            if remote is None:
                # backends/ sits above this module (it imports Store): imported here, and
                # only when a URL asks for it, so the core never imports redis-py.
                from persistmemo.stores.redis import RedisStore

                remote = _stores_by_directory[text] = RedisStore(text)
            return remote
    path = os.path.abspath(os.path.expanduser(text))
    with _registry_lock:
        store = _stores_by_directory.get(path)
        if store is None:
            store = _stores_by_directory[path] = Store(path)
        return store
