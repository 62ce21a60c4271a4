"""Rows a connection read since the store last changed, served again without a query.

Every commit to a store rewrites the header of SQLite's write-ahead-log index
(``cache.db-shm``): its change counter, its last frame and its salts
(https://www.sqlite.org/walformat.html#the_wal_index_file_format). While the header is
unchanged, no transaction has committed, so a row read after the header was taken is still
the row a query would return. Reading 96 bytes costs a small fraction of a query. What is
kept is the row's sealed bytes: they are unsealed at every hit, as read.

The index file is opened once the connection has read, which holds it: SQLite removes it
only with the last connection to close, and leaving WAL mode waits for every connection.
Its descriptor is not closed while the file is in use: closing any descriptor of a file
drops every POSIX lock the process holds on it, SQLite's own included (the same hazard as in
disk_opening.share_database_files). So one descriptor per database is kept and shared by
the process's connections, forked children included, until the file is removed and no
connection watches it. Rows are kept only in stores no one else can write (entry_reader.py):
another member could replace the index file at its path.

Where kept rows are seldom served again (more keys than are kept, read in turn; a store
written all the time), watching is paused for a while, so such reads pay nearly nothing.
"""

from __future__ import annotations

import os
import stat
import threading
import weakref

# The header, twice (a writer writes the second copy, then the first; a reader trusts them
# only when both agree), up to the checkpoint information that follows.
_HEADER_SIZE = 48
_HEADER_READ = 2 * _HEADER_SIZE
_IS_INIT = 12  # the header's isInit byte: 1 once a connection built the index

ROWS_KEPT = 1024
"""Rows kept per connection (each thread has its own); when full, they are dropped."""

ROW_BYTES_KEPT = 4096
"""Rows with larger values are read every time (a bound on what is kept: 4 MiB)."""

PAUSED_READS = 4 * ROWS_KEPT
"""Reads made without watching when fewer than one in SERVED_AT_LEAST of the reads since
the last review were served from kept rows."""

SERVED_AT_LEAST = 4


class RecentRows:
    """A connection's rows read since the header ``seen`` (None: nothing may be served)."""

    __slots__ = (
        "__weakref__",
        "_descriptor",
        "absent",
        "paused",
        "reads",
        "rows",
        "seen",
        "served",
    )

    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor
        self.rows: dict[str, tuple[bytes, float | None]] = {}
        self.seen: bytes | None = None
        # The last key read and found absent since ``seen``: a miss reads its key again once
        # it holds the key's claim, and nothing can have stored it while nothing committed.
        self.absent: str | None = None
        self.reads = 0  # queries made while watching, since the last review
        self.served = 0  # rows served without a query, since the last review
        self.paused = 0  # reads still to make without watching

    def header(self) -> bytes | None:
        """The index header now, or None when it cannot be trusted (torn, short, unset)."""
        try:
            found = os.pread(self._descriptor, _HEADER_READ, 0)
        except OSError:
            return None
        if (
            len(found) != _HEADER_READ
            or found[_IS_INIT] != 1
            or found[:_HEADER_SIZE] != found[_HEADER_SIZE:]
        ):
            return None
        return found

    def keep(self, key: str, value: bytes, expires_at: float | None) -> None:
        """Keep ``key``'s row, read after the header ``seen`` was taken."""
        if len(value) > ROW_BYTES_KEPT:
            return
        rows = self.rows
        if len(rows) >= ROWS_KEPT:
            # All at once: dropping the oldest one by one costs a dict a scan past the
            # holes its earlier deletions left, every time.
            rows.clear()
        rows[key] = (value, expires_at)

    def review(self) -> None:
        """Pause watching when too few reads were served from kept rows (every ROWS_KEPT
        queries made while watching)."""
        if self.served * SERVED_AT_LEAST < self.reads + self.served:
            self.paused = PAUSED_READS
            self.seen = self.absent = None
            self.rows.clear()
        self.reads = self.served = 0


# One descriptor of the index file per database file (device, inode) for the life of the
# process, as SQLite keeps one index per database file for all of a process's connections:
# a connection made later watches the file the earlier ones do, whatever the path names now.
# How many connections watch each is counted: one no connection watches whose file is gone
# (SQLite removes it with a store's last connection) is closed, so that stores opened and
# removed in turn do not keep a descriptor each.
_descriptors: dict[tuple[int, int], int] = {}
_watchers: dict[tuple[int, int], int] = {}
_descriptors_lock = threading.Lock()


def recent_rows_of(database: str) -> RecentRows | None:
    """Rows to keep for a connection to ``database`` that has read from it, or None where
    there is no index file to watch (no ``pread``, no WAL, not a regular file) or the one
    watched was removed under the process's connections (it is no longer the store's)."""
    if not hasattr(os, "pread"):
        return None
    try:
        info = os.stat(database)
    except OSError:
        return None
    file = (info.st_dev, info.st_ino)
    with _descriptors_lock:
        _close_unwatched_removed()
        descriptor = _descriptors.get(file)
        if descriptor is None:
            descriptor = _open_index(f"{database}-shm")
            if descriptor is None:
                return None
            _descriptors[file] = descriptor
        else:
            try:
                if os.fstat(descriptor).st_nlink == 0:
                    return None
            except OSError:
                return None
        _watchers[file] = _watchers.get(file, 0) + 1
        rows = RecentRows(descriptor)
    weakref.finalize(rows, _unwatched, file)
    return rows


def _open_index(path: str) -> int | None:
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        descriptor = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(descriptor).st_mode):
            return descriptor
    except OSError:
        pass
    # Closed at once: no connection of this process holds a lock on what is not a file.
    os.close(descriptor)
    return None


def _unwatched(file: tuple[int, int]) -> None:
    with _descriptors_lock:
        _watchers[file] = _watchers.get(file, 1) - 1


def _close_unwatched_removed() -> None:
    for file, descriptor in list(_descriptors.items()):
        if _watchers.get(file, 0) > 0:
            continue
        try:
            removed = os.fstat(descriptor).st_nlink == 0
        except OSError:
            removed = True
        if removed:
            del _descriptors[file]
            _watchers.pop(file, None)
            os.close(descriptor)
