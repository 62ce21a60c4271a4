"""Rows a connection read since the store last changed, served again without a query.

Every commit to a store rewrites the header of SQLite's write-ahead-log index
(``cache.db-shm``): its change counter, its last frame and its salts
(https://www.sqlite.org/walformat.html#the_wal_index_file_format). While the header is
unchanged, no transaction has committed, so a row read after the header was taken is still
the row a query would return: SQLite keeps a connection's page cache between transactions
by the same test. Reading 96 bytes costs a small fraction of a query.

The index file is opened once the connection has read, which holds it: SQLite then keeps
the file in place (it is removed only by the last connection to close, and leaving WAL
mode waits for every connection), so the header read is the one SQLite writes. It is read
with ``pread``, not mapped: another member of a team store may truncate the file, which
would make a map's reader crash, and makes a read come back short here (no rows served).
What is kept is the row's sealed bytes: they are unsealed at every hit, as read.
"""

from __future__ import annotations

import os
import stat
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


class RecentRows:
    """A connection's rows read since the header ``seen`` (None: nothing may be served)."""

    __slots__ = ("__weakref__", "_descriptor", "rows", "seen")

    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor
        self.rows: dict[str, tuple[bytes, float | None]] = {}
        self.seen: bytes | None = None
        weakref.finalize(self, os.close, descriptor)

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


def recent_rows_of(database: str) -> RecentRows | None:
    """Rows to keep for a connection to ``database`` that has read from it, or None where
    there is no index file to watch (no ``pread``, no WAL, not a regular file)."""
    if not hasattr(os, "pread"):
        return None
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        descriptor = os.open(f"{database}-shm", flags | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            return None
    except OSError:
        os.close(descriptor)
        return None
    return RecentRows(descriptor)
