"""Every SQLite connection persistmemo opens, so that a forked child closes them all first.

SQLite keeps its file-lock bookkeeping in process memory: one record per database file,
shared by every connection of the process. A connection that asks for a lock the record
already shows only bumps a counter, and reuses the ``-shm`` mapping already made. ``fork()``
copies that record but not the kernel's locks (POSIX locks belong to the process that took
them). A child that keeps an inherited connection open therefore makes all its new
connections "hold" their locks through the counter alone: once the parent's last connection
closes, the next process to close its own believes it is alone, checkpoints and unlinks the
write-ahead log, and the child goes on writing into the unlinked file (or, with another
writer, into another ``-shm``), so its results are lost and the database can be damaged.

So every connection is opened here, usable from any thread (``check_same_thread=False``:
the child's one thread closes the connections of all the parent's threads), and the child
closes them all in its after-fork hook, before it can open one. Closing in the child releases
nothing of the parent's: the kernel's locks are the parent's, and the child's unlock asks
the kernel to release locks the child does not hold.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# By id: connections do not take weak references. Each is removed when closed through
# ``close``; the holders that close connections when their threads end call it too.
_open: dict[int, sqlite3.Connection] = {}


def connect(database: str | os.PathLike[str], **options: Any) -> sqlite3.Connection:
    """``sqlite3.connect`` for a store's database, registered to be closed after a fork."""
    connection: sqlite3.Connection = sqlite3.connect(database, check_same_thread=False, **options)
    _open[id(connection)] = connection
    return connection


def close(connection: sqlite3.Connection) -> None:
    """Close ``connection`` (again is harmless) and forget it; SQLite errors are ignored."""
    _open.pop(id(connection), None)
    with contextlib.suppress(sqlite3.Error):
        connection.close()


def open_count() -> int:
    """How many connections this process has open through ``connect``."""
    return len(_open)


def _close_inherited() -> None:
    inherited = list(_open.values())
    _open.clear()
    for connection in inherited:
        with contextlib.suppress(sqlite3.Error):
            connection.close()


if hasattr(os, "register_at_fork"):  # no fork on Windows
    os.register_at_fork(after_in_child=_close_inherited)
