"""The hit path's read: one SQL statement against diskcache's table, nothing else.

``EntryReader`` reads a key's row on this thread's own connection, and ``read_value_file``
a large value's file; everything in the table is untrusted, so a value file is opened (or
removed) only when it is a regular file inside the store. Why not ``Cache.get``:
docs/architecture.md#the-disk-store-on-sqlite; the checks: docs/security.md.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import sys
import threading
import weakref

from persistmemo._keys.layout import result_key_ranges
from persistmemo._sealing import (
    AREA_FRAMES,
    FRAME_AREA,
    FRAME_OUT_OF_BAND,
    FRAME_VERSION,
    AreaCheck,
)
from persistmemo.errors import CorruptEntry
from persistmemo.stores import connections
from persistmemo.stores.connections import forking, wait_for_fork
from persistmemo.stores.recent_rows import ROWS_KEPT, RecentRows, recent_rows_of
from persistmemo.stores.schema import DBNAME, MODE_BINARY, MODE_RAW

# typing costs a cold start ~8 ms (it imports re): names for the type checker only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import queue
    from collections.abc import Callable
    from typing import Any, Literal

    from persistmemo._sealing import Sealer
    from persistmemo.stores.api import Found

_SELECT = (
    "SELECT mode, filename, value, expire_time, size FROM Cache"
    " WHERE key = ? AND raw = 1 AND (expire_time IS NULL OR expire_time > ?)"
)

# The row of a small value, its expiry checked by the caller: fewer columns and conditions
# than _SELECT, which every hit pays for. A bytes value is unsealed whatever the row's mode
# says (its tag is what is trusted), so the mode is not read.
_SELECT_SMALL = "SELECT value, expire_time, filename FROM Cache WHERE key = ? AND raw = 1"

# f.map's hits (read_keys): the values of many keys, by a scan of their key range when they
# are most of its rows, else by IN lists of at most IN_BATCH keys (under SQLite's limit of
# host parameters, 999 in old builds); the conditions are _SELECT's. A bytes value is taken
# as read_small takes it (its tag is what is trusted); any other row is read by ``read``.
_LIVE = "raw = 1 AND (expire_time IS NULL OR expire_time > ?)"
_SELECT_KEYS_IN = f"SELECT key, value FROM Cache WHERE key IN ({{}}) AND {_LIVE}"
_SELECT_BETWEEN = f"SELECT key, value FROM Cache WHERE key >= ? AND key <= ? AND {_LIVE}"
# The same rows, by a scan of the whole table in rowid order (neighbouring pages), which
# costs about 60% of the index's walk (a seek of the table for each row) per row: for a
# range holding at least half the table's rows.
_SELECT_BETWEEN_BY_TABLE = _SELECT_BETWEEN.replace("FROM Cache", "FROM Cache NOT INDEXED")
_TABLE_ROWS = "SELECT value FROM Settings WHERE key = 'count'"  # diskcache keeps it
_COUNT_BETWEEN = (
    "SELECT count(*) FROM (SELECT 1 FROM Cache WHERE key >= ? AND key <= ? AND raw = 1 LIMIT ?)"
)
IN_BATCH = 500
SCAN_FROM = 64
"""Keys from which ``read_keys`` considers a scan of their range."""
SCAN_ROWS_PER_KEY = 1.5
"""A range is scanned when it holds at most this many rows per key asked for: a row of the
scan costs about 60% of what a key of an IN list does (measured, the statements alone: ~1.2
against ~1.9 µs; ~0.7 by a scan of the table)."""

if TYPE_CHECKING:
    OpenMode = Literal["normal", "ro", "immutable"]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_FILE_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC
_DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC
_WALK_BY_DESCRIPTOR = os.open in os.supports_dir_fd and bool(_NOFOLLOW)
# What opening a planted name raises: a symlink (ELOOP; EMLINK on the BSDs), a file where a
# directory should be, a socket, a directory where a file should be.
_PLANTED_ERRNOS = frozenset(
    (errno.ELOOP, errno.EMLINK, errno.ENOTDIR, errno.ENXIO, errno.EISDIR, errno.EOPNOTSUPP)
)


def value_file_parts(filename: object) -> list[str] | None:
    """The path components of a value file named in the table, or None unless the name is
    a relative, normalized path that stays inside the store directory."""
    if not isinstance(filename, str) or not filename or "\x00" in filename:
        return None
    if os.path.isabs(filename) or os.path.normpath(filename) != filename:
        return None
    parts = filename.split(os.sep)
    if os.altsep:
        parts = [piece for part in parts for piece in part.split(os.altsep)]
    if any(part in ("", ".", "..") for part in parts):
        return None
    return parts


def read_value_file(
    directory: str | os.PathLike[str],
    filename: object,
    size: int | None,
    *,
    limit: int | None = None,
    mapped: bool = False,
    area_check: AreaCheck | None = None,
) -> bytes | memoryview:
    """The bytes of a value file (the first ``limit`` of them, if given).

    A large file is read into a writable buffer of its own (arrays decoded from it are views
    of it, not copies); with ``mapped``, a value file holding a value with an area
    (_sealing.AREA_FRAMES) is mapped read-only instead of read. The map stays valid
    whatever happens to the entry: a write makes a new file, and removing the file leaves
    the map's pages in place.

    Raises FileNotFoundError when the file is gone (removed since the row was read: a plain
    miss), CorruptEntry when the name or the file is not a value file of ``size`` bytes,
    and OSError for other I/O faults.
    """
    parts = value_file_parts(filename)
    if parts is None:
        raise CorruptEntry(f"value file {filename!r} is not a path inside the store")
    # The final name is not followed (O_NOFOLLOW) and must be a regular file: a FIFO opens
    # at once (O_NONBLOCK) and is refused, as is a device. A directory on the way that is a
    # symlink is not walked around here: reading a regular file cannot hang or exhaust
    # memory, and its bytes are used only if their tag verifies (removal is stricter).
    try:
        descriptor = os.open(os.path.join(directory, *parts), _FILE_FLAGS)
    except OSError as error:
        if error.errno in _PLANTED_ERRNOS:
            raise CorruptEntry(f"value file {filename!r} is not a regular file") from None
        raise
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise CorruptEntry(f"value file {filename!r} is not a regular file")
        if size is not None and info.st_size != size:
            raise CorruptEntry(
                f"value file {filename!r} holds {info.st_size} bytes, its entry says {size}"
            )
        wanted = info.st_size if limit is None else min(limit, info.st_size)
        if mapped and wanted and os.pread(descriptor, 1, 0) in (FRAME_OUT_OF_BAND, FRAME_AREA):
            # Imported here: only mapped hits need it (a cold start skips it). The map
            # holds no descriptor: a thousand live results would exhaust the process's.
            from persistmemo.stores.read_only_maps import map_read_only

            return map_read_only(descriptor, wanted)
        head = start = None
        if area_check is not None and limit is None and wanted:
            # The head first, checked before anything is sized by the file or its header.
            head = os.pread(descriptor, min(wanted, _HEAD), 0)
            start = _area_start(area_check, head, wanted, filename)
        if wanted >= _READ_INTO_FROM:
            return _read_into_buffer(descriptor, wanted, filename, area_check, head, start)
        # One call, no buffered reader: the hit path (a file within the head: already read).
        data = head if head is not None and len(head) == wanted else os.read(descriptor, wanted)
        while len(data) < wanted:  # a very large file comes in pieces
            piece = os.read(descriptor, wanted - len(data))
            if not piece:
                break
            data += piece
    finally:
        os.close(descriptor)
    if len(data) != wanted:
        raise CorruptEntry(f"value file {filename!r} changed while it was read")
    if start is not None and area_check is not None:
        area_check.update(memoryview(data)[start:])
    return data


_SEALED_FRAMES = AREA_FRAMES | {FRAME_VERSION[0]}


def _area_start(area_check: AreaCheck, head: bytes, size: int, filename: object) -> int | None:
    """Where the area starts in a value file of ``size`` bytes beginning with ``head``
    (None: a value without one), its header checked first (frame 3). Raises CorruptEntry
    for a file no persistmemo writes, and for a frame 2 entry whose document goes past the
    head: its lengths have no tag of their own, so a planted one could name any size."""
    if len(head) < min(size, _HEAD):
        raise CorruptEntry(f"value file {filename!r} changed while it was read")
    if not head or head[0] not in _SEALED_FRAMES:
        raise CorruptEntry(f"value file {filename!r} holds no sealed persistmemo value")
    start = area_check.begin(head, size)
    if start is not None and start > len(head) and head[0] == FRAME_OUT_OF_BAND[0]:
        raise CorruptEntry(
            f"value file {filename!r}: a frame 2 document larger than {_HEAD} bytes"
            " (recomputed and written as frame 3)"
        )
    return start


_READ_INTO_FROM = 1 << 20
_PAGE = 4096
_COPY_OFFSET = 64
_HEAD = 64 * 1024  # read first: the frame's header and (usually) its whole document
_PARTS = (1 << 20, 8 << 20)  # the sizes of the parts hashed while the next is read
_HASH_WHILE_READING_FROM = 4 << 20


def _read_into_buffer(
    descriptor: int,
    size: int,
    filename: object,
    area_check: AreaCheck | None,
    checked_head: bytes | None = None,
    start: int | None = None,
) -> memoryview:
    # A writable buffer of the hit's own (_ReadBuffers: one no earlier result views any
    # more), not zeroed first: the kernel copies the file into it, the only copy a hit
    # makes, and the arrays decoded from it are views of it.
    raw, address = _read_buffers.lend(size + _PAGE)
    # The file's byte 0 lands 64 bytes past a page boundary: the kernel copies from the page
    # cache at half speed or worse when source and destination are page-aligned alike
    # (measured: 100 MB in 40-90 ms instead of 20), and 64-byte aligned arrays stay so.
    shift = (_COPY_OFFSET - address) % _PAGE
    buffer = memoryview(raw)[shift : shift + size]
    if checked_head is None:
        head = min(size, _HEAD)
        _read_exactly(descriptor, buffer, 0, head, filename)
    else:  # read and checked by the caller (_area_start): what was checked is what is kept
        head = len(checked_head)
        buffer[:head] = checked_head
    if start is None or area_check is None:
        _read_exactly(descriptor, buffer, head, size, filename)
        return buffer
    if start > head:
        _read_exactly(descriptor, buffer, head, start, filename)  # the rest of the document
    # Checked before the area is read: a planted row naming a large (or sparse) file of
    # someone else's costs this small read, not the file's bulk.
    area_check.check_head(buffer[:start])
    if start < head:
        area_check.update(buffer[start:head])
    position = max(start, head)
    if size - position < _HASH_WHILE_READING_FROM:
        _read_exactly(descriptor, buffer, position, size, filename)
        area_check.update(buffer[position:])
        return buffer
    # Each part is hashed by a second thread while the next is read (both release the
    # GIL): a large hit costs about the longer of the two, not their sum.
    import queue

    parts: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
    hashing = threading.Thread(
        target=_hash_parts, args=(parts, area_check), name="persistmemo-hash", daemon=True
    )
    hashing.start()
    part = max(_PARTS[0], min(_PARTS[1], (size - position) // 8))
    try:
        while position < size:
            end = min(size, position + part)
            _read_exactly(descriptor, buffer, position, end, filename)
            parts.put(buffer[position:end])
            position = end
    finally:
        parts.put(None)
        hashing.join()
    return buffer


class _ReadBuffers:
    """The buffers large hits read into, each lent again once nothing views it any more.

    A fresh buffer costs a page fault per page the read first touches, and the kernel
    zeroes each page: measured, 40 MB in 6 ms with huge pages and 40 ms without, as long as
    the read itself, paid by every hit since malloc hands buffers this large back to the
    system when they are freed. Every view of a buffer (the arrays of a result, the
    memoryviews of a read) holds a reference to it: a kept buffer whose count is back to
    the one the list holds is viewed by nothing, and only such a buffer is lent again, for
    a read at most a quarter smaller than it (a small result never pins a large buffer).

    Kept: at most KEPT_BYTES in at most KEPT_BUFFERS buffers, lent ones included; idle
    ones are dropped first to make room for a new one. So a process holds at most
    KEPT_BYTES more than its results' own memory, and nothing is kept where reference
    counts cannot be read (an interpreter other than CPython).
    """

    __slots__ = ("_idle", "_kept", "_lock")

    KEPT_BYTES = 128 << 20
    KEPT_BUFFERS = 4

    def __init__(self) -> None:
        self._kept: list[Any] = []
        self._lock = threading.Lock()
        # The count of a buffer only the list holds, as _references reads it.
        self._idle = _references([bytearray(1)], 0) if hasattr(sys, "getrefcount") else -1

    def lend(self, size: int) -> tuple[memoryview, int]:
        """A writable buffer of at least ``size`` bytes (a memoryview of it, which keeps it
        lent while any view of it lives) and its address."""
        with self._lock:  # the count is read and the view taken with no other lender between
            kept, raw = self._kept, None
            for index in range(len(kept)):
                if size <= len(kept[index]) <= size + size // 4 and (
                    _references(kept, index) == self._idle
                ):
                    raw = kept[index]
                    break
            else:
                raw = _allocate(size)
                self._keep(raw)
            view = memoryview(raw)
        array = getattr(raw, "__array_interface__", None)
        return view, 0 if array is None else array["data"][0]  # a map is page-aligned

    def _keep(self, raw: Any) -> None:
        kept = self._kept
        if self._idle < 0 or len(raw) > self.KEPT_BYTES:
            return
        total = sum(map(len, kept)) + len(raw)
        index = 0
        while (total > self.KEPT_BYTES or len(kept) >= self.KEPT_BUFFERS) and index < len(kept):
            if _references(kept, index) == self._idle:
                total -= len(kept.pop(index))
            else:
                index += 1
        if total <= self.KEPT_BYTES and len(kept) < self.KEPT_BUFFERS:
            kept.append(raw)

    def after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork


def _references(kept: list[Any], index: int) -> int:
    return sys.getrefcount(kept[index])


def _allocate(size: int) -> Any:
    # numpy's allocator (huge pages for large sizes) when numpy is loaded, as it is when
    # arrays were stored; else a private anonymous map, with huge pages where they exist (a
    # shared one, mmap's default, is shared memory: 4 KiB pages, each a fault).
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        return numpy.empty(size, numpy.uint8)
    import mmap

    private = getattr(mmap, "MAP_PRIVATE", None)
    if private is None:  # Windows
        return mmap.mmap(-1, size)
    raw = mmap.mmap(-1, size, flags=private | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        raw.madvise(mmap.MADV_HUGEPAGE)
    return raw


_read_buffers = _ReadBuffers()
if hasattr(os, "register_at_fork"):  # no fork on Windows
    os.register_at_fork(after_in_child=_read_buffers.after_fork)


def _hash_parts(parts: queue.SimpleQueue[memoryview | None], area_check: AreaCheck) -> None:
    while (part := parts.get()) is not None:
        area_check.update(part)


def _read_exactly(
    descriptor: int, buffer: memoryview, start: int, end: int, filename: object
) -> None:
    while start < end:
        count = os.preadv(descriptor, [buffer[start:end]], start)
        if not count:
            raise CorruptEntry(f"value file {filename!r} changed while it was read")
        start += count


def remove_value_file(directory: str | os.PathLike[str], filename: object) -> bool:
    """Remove a value file, and the subdirectories it leaves empty; True when removed.

    Only a regular file inside the store, reached without following symlinks, is removed:
    a row naming anything else loses its row, never a file outside the store. Errors are
    suppressed, as diskcache's own removal does (two processes may remove one file).
    """
    parts = value_file_parts(filename)
    if parts is None or not _WALK_BY_DESCRIPTOR:
        return False
    descriptors: list[int] = []
    removed = False
    try:
        descriptors.append(os.open(os.fspath(directory), _DIRECTORY_FLAGS))
        for part in parts[:-1]:
            descriptors.append(os.open(part, _DIRECTORY_FLAGS | _NOFOLLOW, dir_fd=descriptors[-1]))
        info = os.stat(parts[-1], dir_fd=descriptors[-1], follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode):
            return False
        os.unlink(parts[-1], dir_fd=descriptors[-1])
        removed = True
        # Empty subdirectories go (diskcache's removedirs), never the store directory; the
        # first one that is not empty stops it.
        for depth in range(len(parts) - 1, 0, -1):
            os.rmdir(parts[depth - 1], dir_fd=descriptors[depth - 1])
    except OSError:
        pass
    finally:
        for descriptor in descriptors:
            os.close(descriptor)
    return removed


def close_with_thread(local: threading.local, connection: sqlite3.Connection) -> None:
    """Close ``connection`` (held in the thread-local ``local``) when its thread ends.

    A thread's locals are dropped when it ends, but an sqlite3 connection sits in a
    reference cycle (its statement cache) and would wait for the garbage collector, keeping
    its file descriptors: a holder outside the cycle closes it at once.
    """
    closer = getattr(local, "closer", None)
    if closer is None or closer.connection is not connection:
        local.closer = _ThreadConnection(connection, None)


_URI_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~/")


def file_uri(path: str) -> str:
    """``Path(path).as_uri()`` of an absolute path, for SQLite's URI filenames.

    On POSIX, every byte but the unreserved ones and ``/`` is percent-encoded, as pathlib
    does (``%``, ``?`` and ``#`` included, which SQLite would otherwise take for an escape,
    the query and the fragment); built here, since pathlib costs a cold start milliseconds.
    """
    if os.name != "posix":
        from pathlib import Path  # drives, UNC shares and backslashes: pathlib knows them

        return Path(path).as_uri()
    encoded = os.fsencode(os.path.abspath(path))
    return "file://" + "".join(chr(b) if b in _URI_SAFE else f"%{b:02X}" for b in encoded)


# This process's id, kept current across forks: os.getpid() is a system call, and the hit
# path asks on every read whether its connection was made in this process.
process_id = [os.getpid()]
if hasattr(os, "register_at_fork"):  # no fork on Windows
    os.register_at_fork(after_in_child=lambda: process_id.__setitem__(0, os.getpid()))


class _ThreadConnection:
    """One thread's connection; closed when the thread ends (its thread-local dies)."""

    __slots__ = ("__weakref__", "busy", "connection", "cursor", "pid", "recent", "signature")

    def __init__(self, connection: sqlite3.Connection, signature: tuple[int, ...] | None) -> None:
        self.connection = connection
        # The small rows it read since the store last changed (recent_rows.py), if watched.
        self.recent: RecentRows | None = None
        # True while a statement runs: a fork waits for it (connections.py).
        self.busy = False
        self.cursor = connection.cursor()
        self.pid = os.getpid()
        self.signature = signature
        # The finalizer holds the connection, not this holder: when the thread's locals are
        # dropped at its end, the holder dies and the connection is closed with it.
        closer = weakref.finalize(self, connections.close, connection)
        closer.atexit = False  # at exit, hit counts are still to be written (decorator.py)

    def begin(self) -> None:
        """Mark a statement under way, once no fork is waiting for statements to end."""
        self.busy = True
        if forking[0]:
            self.busy = False
            wait_for_fork()
            self.busy = True

    def run(self, statement: str, parameters: tuple[object, ...] = ()) -> list[Any]:
        """Run a reading ``statement`` to its end; its rows."""
        self.begin()
        try:
            return self.cursor.execute(statement, parameters).fetchall()
        finally:
            self.busy = False


def _watched_rows(connection: sqlite3.Connection, database: str) -> RecentRows | None:
    """The rows to keep for ``connection``, once it has read (which holds the index file in
    place: recent_rows.py), or None (a store that cannot be read yet reads every time)."""
    try:
        connection.execute("PRAGMA schema_version").fetchall()
    except sqlite3.Error:
        return None
    return recent_rows_of(database)


def _busy_flag_of(held: _ThreadConnection) -> Callable[[], bool]:
    holder = weakref.ref(held)  # the check must not keep the thread's connection open

    def busy() -> bool:
        found = holder()
        return found is not None and found.busy

    return busy


class EntryReader:
    """Reads stored bytes by key from a diskcache directory."""

    __slots__ = (
        "_database",
        "_directory",
        "_keep_rows",
        "_local",
        "_mode",
        "_timeout",
        "_wal",
    )

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        timeout: float,
        mode: OpenMode = "normal",
        keep_rows: bool = False,
    ) -> None:
        """``keep_rows``: serve a row read again without a query while the store is
        unchanged (recent_rows.py), only for a store no one else can write: another member
        could replace the index file watched. Each thread's connection keeps SQLite's own
        page cache and maps nothing: the store's (32 MiB of cache, 64 MiB of map) per thread
        made a few reading threads cost hundreds of MiB."""
        self._directory = os.fspath(directory)
        self._database = os.path.join(self._directory, DBNAME)
        self._wal = f"{self._database}-wal"
        self._timeout = timeout
        self._mode: OpenMode = mode
        self._keep_rows = keep_rows
        self._local = threading.local()

    @property
    def mode(self) -> OpenMode:
        """How the database is opened.

        - ``normal``: read-write open, ``query_only``; SQLite itself falls back to read-only
          files.
        - ``ro``: ``mode=ro``, for a reader who cannot write the store: it still reads the
          write-ahead log, so it never misses the owner's latest writes.
        - ``immutable``: only on a read-only file system with no write-ahead log; every read
          first checks that ``cache.db`` is unchanged and no log appeared (one ``stat``
          each), and reopens otherwise, so even then no stale value is served.
        """
        return self._mode

    def read(
        self, key: str, now: float, mapped: bool = False, sealer: Sealer | None = None
    ) -> tuple[bytes | memoryview, float | None, AreaCheck | None] | None:
        """The bytes stored under ``key`` and not expired at ``now``, with their expiry time
        (epoch seconds, None for none) and, when ``sealer`` is given and a large value's
        area was hashed while it was read, that hash; or None. ``mapped``: see
        ``read_value_file``."""
        held = getattr(self._local, "held", None)
        if held is None or held.pid != process_id[0] or self._mode == "immutable":
            held = self._held()
        # fetchall, not fetchone: it runs the statement to its end, which ends the read
        # transaction; a statement left open would keep SQLite from checkpointing the WAL.
        held.busy = True  # held.begin(), inlined: the hit path
        if forking[0]:  # a fork waits for statements under way: start none until it is done
            held.begin()
        try:
            rows = held.cursor.execute(_SELECT, (key, now)).fetchall()
        finally:
            held.busy = False
        if not rows:
            return None
        ((mode, filename, value, expires_at, size),) = rows
        if mode == MODE_RAW and type(value) is bytes:
            return value, expires_at, None
        if mode == MODE_BINARY and filename:
            check = None
            if sealer is not None and not mapped:
                check = AreaCheck(sealer, key)
            try:
                found = read_value_file(
                    self._directory, filename, size, mapped=mapped, area_check=check
                )
                return found, expires_at, check
            except FileNotFoundError:
                return None  # removed since the row was read: diskcache's get says the same
        raise CorruptEntry(f"entry {key} has diskcache mode {mode}, which persistmemo never writes")

    def read_small(
        self, key: str, now: float
    ) -> tuple[bytes, float | None] | Literal[False] | None:
        """The hit path's read: ``(bytes, expiry)`` of a live row held in the table, None
        when there is none (or it expired), or False when the row needs ``read`` (a value
        file, or anything persistmemo does not write: ``read`` says what)."""
        held = getattr(self._local, "held", None)
        if held is None or held.pid != process_id[0] or self._mode == "immutable":
            held = self._held()
        recent = held.recent
        header = None
        if recent is not None:
            if recent.paused:  # kept rows were seldom served again: not watched for a while
                recent.paused -= 1
            else:
                # Taken before the query: a row read after it is current while it is unchanged.
                header = recent.header()
                if header is not None and header == recent.seen:
                    kept = recent.rows.get(key)
                    if kept is not None:
                        recent.served += 1
                        expires_at = kept[1]
                        return kept if expires_at is None or expires_at > now else None
                    if key == recent.absent:  # a miss's read again, once it holds the claim
                        return None
                else:
                    recent.rows.clear()
                    recent.absent = None
                    recent.seen = header
                recent.reads += 1
                if recent.reads >= ROWS_KEPT:
                    recent.review()
        held.busy = True
        if forking[0]:
            held.begin()
        try:
            rows = held.cursor.execute(_SELECT_SMALL, (key,)).fetchall()
        finally:
            held.busy = False
        if not rows:
            if header is not None and not held.connection.in_transaction:
                recent.absent = key  # type: ignore[union-attr]
            return None
        ((value, expires_at, filename),) = rows
        if type(value) is not bytes or filename is not None:
            return False
        if expires_at is not None:
            if type(expires_at) is not float and type(expires_at) is not int:
                return False
            if expires_at <= now:
                return None
        if header is not None and not held.connection.in_transaction:
            recent.keep(key, value, expires_at)  # type: ignore[union-attr]
        return value, expires_at

    def read_many(
        self, keys: list[str], now: float, mapped: bool = False, sealer: Sealer | None = None
    ) -> dict[str, tuple[bytes | memoryview | CorruptEntry, float | None]]:
        """``read`` for many keys in one query: what was found, by key (a damaged entry's
        value is the CorruptEntry to report). At most SQLite's variable limit per call."""
        held = getattr(self._local, "held", None)
        if held is None or held.pid != process_id[0] or self._mode == "immutable":
            held = self._held()
        marks = ",".join("?" * len(keys))
        rows = held.run(
            "SELECT key, mode, filename, value, expire_time, size FROM Cache"
            f" WHERE key IN ({marks}) AND raw = 1 AND (expire_time IS NULL OR expire_time > ?)",
            (*keys, now),
        )
        found: dict[str, tuple[bytes | memoryview | CorruptEntry, float | None]] = {}
        for key, mode, filename, value, expires_at, size in rows:
            if mode == MODE_RAW and type(value) is bytes:
                found[key] = (value, expires_at)
            elif mode == MODE_BINARY and filename:
                try:
                    # Checked as a single read checks it: a planted file's header first.
                    check = None if sealer is None or mapped else AreaCheck(sealer, key)
                    data = read_value_file(
                        self._directory, filename, size, mapped=mapped, area_check=check
                    )
                    found[key] = (data, expires_at)
                except FileNotFoundError:
                    continue
                except CorruptEntry as error:
                    found[key] = (error, expires_at)
            else:
                found[key] = (CorruptEntry(f"entry {key} has diskcache mode {mode}"), expires_at)
        return found

    def read_keys(
        self, keys: list[str], now: float, mapped: bool = False, sealer: Sealer | None = None
    ) -> tuple[list[tuple[str, bytes]], dict[str, Found | CorruptEntry]]:
        """The live values of ``keys`` (any number, in any order: f.map's hits), without
        their expiry: ``(key, bytes)`` of the values held in the table, and the others as
        ``read`` answers them (a value file's bytes or map), or the CorruptEntry to report.

        When the keys are most of the rows between the least and the greatest (the stored
        calls of one function, asked for again), those rows are read by one scan of that
        key range (of the whole table, when the range holds half its rows or more), which
        costs a third to two thirds of what IN lists (used otherwise) cost per key.
        """
        held = self._reading()
        count = len(keys)
        if count >= SCAN_FROM:
            low, high = min(keys), max(keys)
            most = int(SCAN_ROWS_PER_KEY * count)
            # Counted on the index alone, and at most `most + 1` of them: a sparse range
            # costs this count little beside the lookups of its keys.
            ((stored,),) = held.run(_COUNT_BETWEEN, (low, high, most + 1))
            if stored <= most:
                wanted = set(keys)
                rows = held.run(self._range_scan(held, stored), (low, high, now))
                found = [row for row in rows if type(row[1]) is bytes and row[0] in wanted]
                if len(found) == len(rows):
                    return found, {}
                return found, self._others(rows, wanted, now, mapped, sealer)
        keys = sorted(keys)  # neighbouring keys: neighbouring pages of the index
        rows = []
        for start in range(0, count, IN_BATCH):
            batch = keys[start : start + IN_BATCH]
            rows += held.run(_SELECT_KEYS_IN.format(",".join("?" * len(batch))), (*batch, now))
        found = [row for row in rows if type(row[1]) is bytes]
        if len(found) == len(rows):
            return found, {}
        return found, self._others(rows, None, now, mapped, sealer)

    @staticmethod
    def _range_scan(held: _ThreadConnection, stored: int) -> str:
        """The statement that reads a range of ``stored`` rows: by the index, or by a scan
        of the table when they are half its rows or more (its count is diskcache's, which
        anyone who can write the store can change: it only chooses the plan)."""
        try:
            found = held.run(_TABLE_ROWS)
        except sqlite3.Error:  # no Settings table: the index, whose plan needs none
            return _SELECT_BETWEEN
        table = found[0][0] if found else None
        if type(table) is int and stored * 2 >= table:
            return _SELECT_BETWEEN_BY_TABLE
        return _SELECT_BETWEEN

    def _others(
        self,
        rows: list[tuple[str, object]],
        wanted: set[str] | None,
        now: float,
        mapped: bool,
        sealer: Sealer | None,
    ) -> dict[str, Found | CorruptEntry]:
        """``read`` of the rows (of the keys ``wanted``, if given) whose value is not bytes:
        a value file, or a row persistmemo does not write."""
        others: dict[str, Found | CorruptEntry] = {}
        for key, value in rows:
            if type(value) is bytes or (wanted is not None and key not in wanted):
                continue
            try:
                found = self.read(key, now, mapped, sealer)
            except CorruptEntry as error:
                others[key] = error
                continue
            if found is not None:  # else removed since: a miss
                others[key] = found
        return others

    def _reading(self) -> _ThreadConnection:
        """This thread's connection, ready to read."""
        held = getattr(self._local, "held", None)
        if held is None or held.pid != process_id[0] or self._mode == "immutable":
            held = self._held()
        return held

    def plain(self, key: str, now: float) -> tuple[object, object] | None:
        """``(value, expire_time)`` of the live raw row ``key`` (a lease's token, a count),
        or None. Either may be of any SQLite type: whoever can write the store chose it."""
        rows = self._held().run(
            "SELECT value, expire_time FROM Cache WHERE key = ? AND raw = 1 AND mode = ?"
            " AND (expire_time IS NULL OR typeof(expire_time) NOT IN ('real', 'integer')"
            " OR expire_time > ?)",
            (key, MODE_RAW, now),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def count_results(self) -> int:
        """Stored results (keys of every format in RESULT_FORMATS, expired ones not yet
        removed included): leases, hit counts and other records are bookkeeping, not
        results."""
        ranges = " OR ".join(
            f"(key >= '{low}' AND key < '{high}')" for low, high in result_key_ranges()
        )
        return int(
            self._held().run(f"SELECT COUNT(*) FROM Cache WHERE raw = 1 AND ({ranges})")[0][0]
        )

    def write_once(self, statement: str, parameters: tuple[object, ...]) -> int:
        """Run one writing ``statement`` on this thread's connection (``normal`` mode only),
        which is query-only again afterwards; returns the rows it changed. Raises
        sqlite3.Error (a read-only store, a lock held past the timeout)."""
        if self._mode != "normal":
            raise sqlite3.OperationalError(f"a reader opened {self._mode} does not write")
        held = self._held()
        cursor = held.cursor
        held.begin()
        try:
            cursor.execute("PRAGMA query_only = 0")
            try:
                cursor.execute("PRAGMA synchronous = NORMAL")  # the store's own setting
                return int(cursor.execute(statement, parameters).rowcount)
            finally:
                cursor.execute("PRAGMA query_only = 1")
        finally:
            held.busy = False

    def probe(self) -> None:
        """Read the table once: raises sqlite3.Error when the database cannot be read."""
        self._held().run("SELECT key FROM Cache LIMIT 1")

    def _held(self) -> _ThreadConnection:
        held: _ThreadConnection | None = getattr(self._local, "held", None)
        if held is not None and held.pid == os.getpid():
            if self._mode != "immutable":
                return held
            if not os.path.exists(self._wal) and held.signature == self._signature():
                return held
            # The database changed under an immutable reader (another mount wrote it): its
            # pages may be stale, so it reopens, and reads the log if one appeared.
            self._local.held = None
            connections.close(held.connection)
        if self._mode == "immutable" and os.path.exists(self._wal):
            self._mode = "ro"
        return self._connect()

    def _signature(self) -> tuple[int, ...]:
        info = os.stat(self._database)
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def _connect(self) -> _ThreadConnection:
        signature = None
        if self._mode == "normal":
            connection = connections.connect(
                self._database, timeout=self._timeout, isolation_level=None
            )
            connection.execute("PRAGMA query_only = 1")
        else:
            if self._mode == "immutable":
                signature = self._signature()
            query = "immutable=1" if self._mode == "immutable" else "mode=ro"
            connection = connections.connect(
                f"{file_uri(self._database)}?{query}",
                uri=True,
                timeout=self._timeout,
                isolation_level=None,
            )
        held = self._local.held = _ThreadConnection(connection, signature)
        connections.watch(connection, _busy_flag_of(held))
        if self._keep_rows and self._mode != "immutable":
            held.recent = _watched_rows(connection, self._database)
        return held

    def close(self) -> None:
        """Close this thread's connection (other threads' close when those threads end)."""
        held = getattr(self._local, "held", None)
        if held is not None:
            self._local.held = None
            connections.close(held.connection)
