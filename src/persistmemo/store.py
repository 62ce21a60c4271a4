"""Store: one diskcache ``Cache`` in one directory, holding encoded results under string keys.

Where the default store lives: ``$PERSISTMEMO_DIR`` when set, else the user cache directory
that platformdirs names (``~/.cache/persistmemo`` on Linux), read when the default store is
first used. Directories are created private to the user (0700): stored results can be as
sensitive as the data they were computed from.

The store opens lazily, on its first read or write, so decorating a function touches no disk.
Every store operation is fail-open: a fault becomes one ``PersistmemoWarning`` and a miss (or
an unsaved result), never an exception in the caller.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import diskcache
from diskcache.core import DEFAULT_SETTINGS, MODE_PICKLE

from persistmemo.codec import CorruptEntry
from persistmemo.faults import FaultReporter

if TYPE_CHECKING:
    from persistmemo.decorator import MemoDecorator

ENV_DIRECTORY = "PERSISTMEMO_DIR"
DEFAULT_TIMEOUT = 5.0
"""Seconds a store operation waits for a locked database before giving up (fail-open)."""

REOPEN_AFTER = 5.0
"""Seconds before a store that failed to open is tried again."""

STORE_ERRORS: Final = (sqlite3.Error, OSError, diskcache.Timeout, CorruptEntry)

# Never test a diskcache.Cache for truth: it has __len__, which runs a query.


class Missing:
    """The type of ``MISSING``: what a read returns when there is no usable entry."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = Missing()


def default_directory() -> tuple[Path, str]:
    """Where the default store lives, and why: ``(path, reason)``."""
    configured = os.environ.get(ENV_DIRECTORY)
    if configured:
        return Path(configured).expanduser(), f"${ENV_DIRECTORY}"
    import platformdirs  # only the default store needs it

    return Path(platformdirs.user_cache_dir("persistmemo", appauthor=False)), "platform default"


class _BytesOnlyDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's Disk that refuses to unpickle.

    persistmemo writes only str keys and bytes values, which diskcache stores raw. A pickled
    row can only have been planted by someone else, and unpickling it would run their code.
    """

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_PICKLE:
            raise CorruptEntry("entry holds a diskcache pickle, which persistmemo never writes")
        return super().fetch(mode, filename, value, read)


class Store:
    """A persistent store of memoized results: one diskcache ``Cache`` in ``directory``.

    ``directory`` None means the default store location (see ``default_directory``).
    ``strict=True`` refuses results that need the pickle fallback (a TypeError when the
    result is stored). ``timeout`` bounds how long an operation waits for a locked database.
    Other keyword settings pass to ``diskcache.Cache`` (``size_limit``, ``eviction_policy``,
    ...); a policy that records reads (``least-recently-used``) makes every hit a write.

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
        **settings: Any,
    ) -> None:
        unknown = set(settings).difference(DEFAULT_SETTINGS)
        if unknown:
            raise TypeError(
                f"Store() got unknown settings {sorted(unknown)}; diskcache settings are "
                f"{sorted(DEFAULT_SETTINGS)}"
            )
        self._requested = None if directory is None else Path(directory).expanduser()
        self._resolved: tuple[Path, str] | None = None
        self.strict = strict
        self.timeout = timeout
        # Tags group each function's entries; their index makes cache_clear() a range delete.
        self._settings = {"tag_index": True, **settings}
        self._cache: diskcache.Cache | None = None
        self._open_lock = threading.Lock()
        self._reopen_at = 0.0
        self._faults = FaultReporter(str(self._requested or "(default)"))

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
                self._resolved = default_directory()
                self._faults = FaultReporter(str(self._resolved[0]))
        return self._resolved

    def __repr__(self) -> str:
        where = self._resolved[0] if self._resolved else (self._requested or "(default)")
        return f"Store({str(where)!r})"

    # --- decorating ----------------------------------------------------------------------

    def memo(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """``memo`` with this store: ``@store.memo`` or ``@store.memo(ttl=60)``."""
        from persistmemo.decorator import memo  # decorator imports store

        decorate: MemoDecorator = memo(store=self, **options)
        return decorate if func is None else decorate(func)

    # --- entries -------------------------------------------------------------------------

    def read_entry(self, key: str) -> bytes | Missing:
        """The stored bytes under ``key``, or MISSING (absent, expired or unreadable)."""
        cache = self._cache
        if cache is None and (cache := self._open()) is None:
            return MISSING
        try:
            data = cache.get(key, MISSING)
        except STORE_ERRORS as error:
            self.report_fault("read failed", error)
            return MISSING
        if data is MISSING or type(data) is bytes:
            return data
        self.report_fault("corrupt entry", CorruptEntry(f"{key} holds a {type(data).__name__}"))
        return MISSING

    def write_entry(self, key: str, data: bytes, *, ttl: float | None, tag: str) -> bool:
        """Store ``data`` under ``key``; False (and a warning) when the store cannot."""
        cache = self._cache
        if cache is None and (cache := self._open()) is None:
            return False
        try:
            return bool(cache.set(key, data, expire=ttl, tag=tag))
        except STORE_ERRORS as error:
            self.report_fault("write failed", error)
            return False

    def delete_entry(self, key: str) -> bool:
        """Remove one entry; True when it was there."""
        cache = self._cache
        if cache is None and (cache := self._open()) is None:
            return False
        try:
            return bool(cache.delete(key))
        except STORE_ERRORS as error:
            self.report_fault("delete failed", error)
            return False

    def delete_tagged(self, tag: str) -> int:
        """Remove every entry tagged ``tag`` (one function's); returns how many."""
        cache = self._cache
        if cache is None and (cache := self._open()) is None:
            return 0
        try:
            return int(cache.evict(tag))
        except diskcache.Timeout as error:
            self.report_fault("delete failed", error)
            return int(error.args[0]) if error.args else 0
        except STORE_ERRORS as error:
            self.report_fault("delete failed", error)
            return 0

    def clear(self) -> int:
        """Remove every entry of every function; returns how many."""
        cache = self._cache
        if cache is None and (cache := self._open()) is None:
            return 0
        try:
            return int(cache.clear())
        except STORE_ERRORS as error:
            self.report_fault("clear failed", error)
            return 0

    def __len__(self) -> int:
        """Number of entries, expired ones not yet removed included."""
        cache = self._cache
        if cache is None and (cache := self._open()) is None:
            return 0
        try:
            return len(cache)
        except STORE_ERRORS as error:
            self.report_fault("read failed", error)
            return 0

    def report_fault(self, kind: str, error: BaseException) -> None:
        """Warn once per kind of fault; the caller carries on without the store."""
        self._faults.report(kind, f"{type(error).__name__}: {error}")

    # --- lifetime ------------------------------------------------------------------------

    def _open(self) -> diskcache.Cache | None:
        with self._open_lock:
            if self._cache is not None:
                return self._cache
            if time.monotonic() < self._reopen_at:
                return None
            try:
                directory = self.directory
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._cache = diskcache.Cache(
                    str(directory), timeout=self.timeout, disk=_BytesOnlyDisk, **self._settings
                )
            except STORE_ERRORS as error:
                self._reopen_at = time.monotonic() + REOPEN_AFTER
                self._faults.report(
                    "cannot open",
                    f"{type(error).__name__}: {error}; calls run without the store, which is "
                    f"tried again in {REOPEN_AFTER:g} s",
                )
                return None
            return self._cache

    def close(self) -> None:
        """Close this thread's database connection; the store reopens when used again."""
        if self._cache is not None:
            self._cache.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_default_store: Store | None = None
_stores_by_directory: dict[str, Store] = {}
_registry_lock = threading.Lock()


def default_store() -> Store:
    """The process-wide default store (its directory is resolved when first used)."""
    global _default_store
    with _registry_lock:
        if _default_store is None:
            _default_store = Store()
        return _default_store


def store_at(directory: str | os.PathLike[str]) -> Store:
    """The process-wide store of ``directory``: every ``memo(store=path)`` shares one."""
    path = os.path.abspath(os.path.expanduser(os.fspath(directory)))
    with _registry_lock:
        store = _stores_by_directory.get(path)
        if store is None:
            store = _stores_by_directory[path] = Store(path)
        return store
