"""Rows a connection read since the store last changed, served again without a query.

Every commit to a store rewrites the header of SQLite's write-ahead-log index
(``cache.db-shm``): its change counter, its last frame and its salts
(https://www.sqlite.org/walformat.html#the_wal_index_file_format). While the header is
unchanged, no transaction has committed, so a row read after the header was taken is still
the row a query would return. Reading 96 bytes costs a small fraction of a query. What is
kept is the row's sealed bytes: they are unsealed at every hit, as read.

The index file is opened once the connection has read, which holds it: SQLite then keeps
the file in place (it is removed only by the last connection to close, and leaving WAL
mode waits for every connection). Its descriptor is never closed: closing any descriptor
of a file drops every POSIX lock the process holds on it, SQLite's own included (the same
hazard as in disk_opening.share_database_files), so one descriptor per index file is kept
for the life of the process and shared by its connections, forked children included.

Where kept rows are seldom served again (more keys than are kept, read in turn; a store
written all the time), watching is paused for a while, so such reads pay nearly nothing.
"""

from __future__ import annotations

import os
import stat
import threading

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

    __slots__ = ("_descriptor", "absent", "paused", "reads", "rows", "seen", "served")

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


# One descriptor per index file (device, inode) for the life of the process: see above.
_descriptors: dict[tuple[int, int], int] = {}
_descriptors_lock = threading.Lock()


def recent_rows_of(database: str) -> RecentRows | None:
    """Rows to keep for a connection to ``database`` that has read from it, or None where
    there is no index file to watch (no ``pread``, no WAL, not a regular file)."""
    if not hasattr(os, "pread"):
        return None
    path = f"{database}-shm"
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    with _descriptors_lock:
        descriptor = _descriptors.get((info.st_dev, info.st_ino))
        if descriptor is None:
            flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
            try:
                descriptor = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0))
                opened = os.fstat(descriptor)
            except OSError:
                return None
            # Kept even if the path now names another file (replaced in between): closing
            # it could drop locks, and the file it names is recorded as what it is.
            _descriptors[(opened.st_dev, opened.st_ino)] = descriptor
            if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
                return None
    return RecentRows(descriptor)
