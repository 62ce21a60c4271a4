"""The diskcache engine under a Store: its Cache and Disk, adapted to persistmemo's needs.

Imported when a store first opens, not with the package: ``import persistmemo`` stays light.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import diskcache
from diskcache import Timeout
from diskcache.core import DEFAULT_SETTINGS

from persistmemo.codec import CorruptEntry
from persistmemo.schema import MODE_PICKLE

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["DEFAULT_SETTINGS", "Timeout", "delete_if_value", "open_cache"]


class _BytesOnlyDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's Disk that refuses to unpickle.

    persistmemo writes only str keys and bytes (or str lease tokens, int hit counts) values,
    which diskcache stores raw. A pickled row can only have been planted, and unpickling it
    would run code.
    """

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_PICKLE:
            raise CorruptEntry("entry holds a diskcache pickle, which persistmemo never writes")
        return super().fetch(mode, filename, value, read)


class _ForkSafeCache(diskcache.Cache):  # type: ignore[misc]
    """diskcache's Cache whose write transactions a fork waits for.

    SQLite state must not cross a fork mid-transaction: the child would inherit a lock that
    no thread of its own can release, and its writes would time out. Every diskcache write
    (set, add, delete, touch, evict, clear) runs in ``_transact``; holding the store's fork
    lock there, and taking it before a fork, keeps forks between transactions.
    """

    fork_lock: threading.RLock

    @contextmanager
    def _transact(self, retry: bool = False, filename: str | None = None) -> Iterator[Any]:
        with self.fork_lock, super()._transact(retry, filename) as transaction:
            yield transaction


def delete_if_value(cache: diskcache.Cache, key: str, value: str) -> None:
    """Delete ``key`` only if it holds ``value``: one statement, so compare and delete are
    one atomic step (diskcache has no compare-and-delete of its own)."""
    with cache.transact():
        cache._sql("DELETE FROM Cache WHERE key = ? AND raw = 1 AND value = ?", (key, value))


def open_cache(
    directory: Path, *, timeout: float, fork_lock: threading.RLock, settings: dict[str, Any]
) -> diskcache.Cache:
    """Open (creating if needed) the diskcache Cache of a store directory."""
    cache = _ForkSafeCache(str(directory), timeout=timeout, disk=_BytesOnlyDisk, **settings)
    cache.fork_lock = fork_lock
    return cache
