"""The diskcache engine under a Store: its Cache and Disk, adapted to persistmemo's needs.

Imported when a store first opens, not with the package: ``import persistmemo`` stays light.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import diskcache
from diskcache import Timeout
from diskcache.core import DEFAULT_SETTINGS

from persistmemo.codec import CorruptEntry
from persistmemo.stores.entry_reader import close_with_thread, read_value_file, remove_value_file
from persistmemo.stores.schema import MODE_BINARY, MODE_PICKLE, MODE_RAW

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "DEFAULT_SETTINGS",
    "Timeout",
    "delete_any",
    "delete_if_value",
    "open_cache",
    "touch_if_value",
]


class _BytesOnlyDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's Disk that refuses to unpickle, and trusts no file name in the table.

    persistmemo writes only str keys and bytes (or str lease tokens, int hit counts) values,
    which diskcache stores raw. A pickled row can only have been planted, and unpickling it
    would run code. A value file name is read and removed only when it names a regular file
    inside the store (see entry_reader): every removal diskcache makes (delete, evict,
    clear, expire, cull, an overwrite) goes through ``remove``, so a planted row naming
    ``/home/me/thesis.tex`` loses its row and nothing else.
    """

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        # Only the two modes persistmemo writes, read the way it reads them: diskcache's
        # own fetch opens text-mode files and file handles (read=True) unchecked, so a
        # planted row naming a FIFO would hang the caller, /dev/zero exhaust its memory.
        if mode == MODE_RAW:
            return value
        if mode == MODE_BINARY and not read:
            return read_value_file(self._directory, filename, None)
        if mode == MODE_PICKLE:
            raise CorruptEntry("entry holds a diskcache pickle, which persistmemo never writes")
        raise CorruptEntry(f"entry has diskcache mode {mode}, which persistmemo never writes")

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:  # a pickled key: planted, as persistmemo's keys are str
            raise CorruptEntry("entry has a pickled key, which persistmemo never writes")
        return super().get(key, raw)

    def remove(self, file_path: str) -> None:
        remove_value_file(self._directory, file_path)


class _ForkSafeCache(diskcache.Cache):  # type: ignore[misc]
    """diskcache's Cache whose write transactions a fork waits for.

    SQLite state must not cross a fork mid-transaction: the child would inherit a lock that
    no thread of its own can release, and its writes would time out. Every diskcache write
    (set, add, delete, touch, evict, clear) runs in ``_transact``; holding the store's fork
    lock there, and taking it before a fork, keeps forks between transactions.
    """

    fork_lock: threading.RLock

    @property
    def _con(self) -> Any:
        connection = super()._con
        close_with_thread(self._local, connection)  # not when the garbage collector runs
        return connection

    @contextmanager
    def _transact(self, retry: bool = False, filename: str | None = None) -> Iterator[Any]:
        with self.fork_lock, super()._transact(retry, filename) as transaction:
            yield transaction


def delete_if_value(cache: diskcache.Cache, key: str, value: str) -> None:
    """Delete ``key`` only if it holds ``value``: one statement, so compare and delete are
    one atomic step (diskcache has no compare-and-delete of its own)."""
    with cache.transact():
        cache._sql(
            "DELETE FROM Cache WHERE key = ? AND raw = 1 AND mode = ? AND value = ?",
            (key, MODE_RAW, value),
        )


def touch_if_value(cache: diskcache.Cache, key: str, value: str, expire: float) -> bool:
    """Make ``key`` expire ``expire`` seconds from now if it holds ``value`` and has not
    expired; True when it did. The comparison is SQL's, on the raw column: a row planted in
    another mode is never fetched (nor its file opened), it just does not match."""
    now = time.time()
    with cache.transact():
        cursor = cache._sql(
            "UPDATE Cache SET expire_time = ? WHERE key = ? AND raw = 1 AND mode = ?"
            " AND value = ? AND (expire_time IS NULL OR expire_time > ?)",
            (now + expire, key, MODE_RAW, value, now),
        )
        return bool(cursor.rowcount == 1)


def delete_any(cache: diskcache.Cache, key: str) -> bool:
    """Delete ``key`` whether or not it has expired (diskcache's delete skips expired rows,
    so a damaged expired entry would outlive ``check --fix``); its value file goes after
    the commit, through the Disk's checked removal."""
    with cache._transact() as (sql, cleanup):
        rows = sql("SELECT rowid, filename FROM Cache WHERE key = ? AND raw = 1", (key,)).fetchall()
        if not rows:
            return False
        ((rowid, filename),) = rows
        sql("DELETE FROM Cache WHERE rowid = ?", (rowid,))
        cleanup(filename)
    return True


def open_cache(
    directory: Path, *, timeout: float, fork_lock: threading.RLock, settings: dict[str, Any]
) -> diskcache.Cache:
    """Open (creating if needed) the diskcache Cache of a store directory."""
    cache = _ForkSafeCache(str(directory), timeout=timeout, disk=_BytesOnlyDisk, **settings)
    cache.fork_lock = fork_lock
    return cache
