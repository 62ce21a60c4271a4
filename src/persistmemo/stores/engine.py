"""The diskcache engine under a Store: its Cache and Disk, adapted to persistmemo's needs.

Imported when a store first opens, not with the package: ``import persistmemo`` stays light.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import diskcache
from diskcache import Timeout
from diskcache.core import DEFAULT_SETTINGS, EVICTION_POLICY, METADATA

from persistmemo._sealing import SealedParts
from persistmemo.errors import CorruptEntry
from persistmemo.stores import connections
from persistmemo.stores.entry_reader import (
    close_with_thread,
    process_id,
    read_value_file,
    remove_value_file,
)
from persistmemo.stores.schema import DBNAME, MODE_BINARY, MODE_PICKLE, MODE_RAW

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

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if type(value) is SealedParts:
            filename, full_path = self.filename(key, value)
            return _write_sealed_parts(self, full_path, value), MODE_BINARY, filename, None
        return super().store(value, read, key=key)

    def _write(
        self,
        full_path: str,
        iterator: Any,
        mode: str,
        encoding: str | None = None,
        header: Callable[[], bytes] | None = None,
    ) -> int:
        """Write a new value file whole (``header()``, when given, over its first bytes last)
        through descriptors: see ``write_value_file``."""
        relative = os.path.relpath(full_path, self._directory)
        chunks = (
            iterator if "b" in mode else (chunk.encode(encoding or "utf-8") for chunk in iterator)
        )
        return write_value_file(self._directory, relative, chunks, header)

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:  # a pickled key: planted, as persistmemo's keys are str
            raise CorruptEntry("entry has a pickled key, which persistmemo never writes")
        return super().get(key, raw)

    def remove(self, file_path: str) -> None:
        remove_value_file(self._directory, file_path)


def _write_sealed_parts(disk: diskcache.Disk, full_path: str, sealed: SealedParts) -> int:
    """Write a value with an area to a new file (as every diskcache write is: no file is
    rewritten in place, so a reader's map of an old one stays valid), part by part from the
    arrays' own memory. The header's tags hash the area: for a large value that runs in a
    second thread while the parts are written, and the header is written last, before the
    row that makes the file visible exists."""
    parts = [bytes(sealed.header_size), *(memoryview(part).cast("B") for part in sealed.body)]
    if sealed.size < _HASH_WHILE_WRITING_FROM:
        parts[0] = sealed.header()
        return int(disk._write(full_path, iter(parts), "xb"))
    made: list[bytes] = []
    hashing = threading.Thread(
        target=lambda: made.append(sealed.header()), name="persistmemo-hash", daemon=True
    )
    hashing.start()

    def header() -> bytes:
        hashing.join()
        if not made:
            raise OSError(f"sealing {full_path} failed")
        return made[0]

    try:
        return int(disk._write(full_path, iter(parts), "xb", header=header))
    finally:
        hashing.join()


_HASH_WHILE_WRITING_FROM = 16 << 20
_CREATE_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_DIRECTORY_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_DIRECTORY", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def write_value_file(
    store: str,
    relative: str,
    chunks: Iterable[bytes | memoryview],
    header: Callable[[], bytes] | None = None,
) -> int:
    """Create the value file ``relative`` (``ab/cd/name.val``) in the store directory and
    write ``chunks`` into it, then ``header()`` over its first bytes; returns its size.

    Everything goes through descriptors, never a path that could be followed elsewhere: each
    subdirectory is made and opened relative to its parent's descriptor without following a
    link (a co-writer's planted symlink fails the write, it is never written through), the
    file is created new (``O_EXCL | O_NOFOLLOW``) and written, header included, through its
    own descriptor, so a file swapped under the name afterwards is not written either. A
    write that fails part way (disk full, a file size limit) removes its partial file: no
    row will ever name it. diskcache's own write makes directories and reopens by path.
    """
    *directories, name = relative.split(os.sep)
    for attempt in range(10):  # another process may remove an emptied directory meanwhile
        descriptor = os.open(store, _DIRECTORY_FLAGS & ~getattr(os, "O_NOFOLLOW", 0))
        # New subdirectories get the store directory's own mode: a team store's 2770 (its
        # group writes and keeps its group), whatever this member's umask.
        mode = os.fstat(descriptor).st_mode & 0o7777
        try:
            for directory in directories:
                made = False
                with contextlib.suppress(FileExistsError):
                    os.mkdir(directory, 0o700, dir_fd=descriptor)
                    made = True
                inner = os.open(directory, _DIRECTORY_FLAGS, dir_fd=descriptor)
                os.close(descriptor)
                descriptor = inner
                if made:
                    os.fchmod(descriptor, mode)
            file = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=descriptor)
        except FileNotFoundError:
            os.close(descriptor)
            if attempt == 9:
                raise
            continue
        except BaseException:
            os.close(descriptor)
            raise
        try:
            # Readable by the store's group where the store directory is (a team store),
            # whatever this member's umask; never by others.
            os.fchmod(file, 0o600 | (mode & 0o040))
            size = 0
            with open(file, "wb", closefd=False) as writer:
                for chunk in chunks:
                    size += writer.write(chunk)
            if header is not None:
                written = header()
                if os.pwrite(file, written, 0) != len(written):
                    raise OSError(f"{relative}: the header was written in part")
            return size
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=descriptor)
            raise
        finally:
            os.close(file)
            os.close(descriptor)
    raise AssertionError("unreachable")


WRITE_WAIT = 0.05
"""Seconds a write waits for a locked database in SQLite before the store tries it again."""

_ANY_EXPIRED = "SELECT 1 FROM Cache WHERE expire_time IS NOT NULL AND expire_time < ? LIMIT 1"

CHECKPOINT_PAGES = 4000
"""Pages in the write-ahead log at which a commit of the store's writer copies them into the
database (SQLite's default: 1000). Each such checkpoint syncs the log and the database to
disk, a cost spread over the commits between two of them: a miss's commit adds five
pages, so SQLite's default synced every 200 misses. The log grows to 16 MB (4 KiB pages)
before it is reused, and is removed when the last connection closes."""

CULL_EVERY = 8
"""Inserts by ``add_small`` between two culls, which remove what as many ``set`` calls would."""

_INSERT_NEW = (
    "INSERT OR IGNORE INTO Cache(key, raw, store_time, expire_time, access_time, access_count,"
    f" tag, size, mode, filename, value) VALUES (?, 1, ?, ?, ?, 0, ?, 0, {MODE_RAW}, NULL, ?)"
)


class _ForkSafeCache(diskcache.Cache):  # type: ignore[misc]
    """diskcache's Cache whose write transactions a fork waits for, and which takes its
    SQLite pragmas from the store, never from the Settings table.

    SQLite state must not cross a fork mid-transaction: the child would inherit a lock that
    no thread of its own can release, and its writes would time out. Every diskcache write
    (set, add, delete, touch, evict, clear) runs in ``_transact``; holding the store's fork
    lock there, and taking it before a fork, keeps forks between transactions.

    diskcache runs every ``sqlite_*`` row of its Settings table as a PRAGMA on each new
    connection: a row planted there (``locking_mode = EXCLUSIVE``, or SQL spliced into a
    value) would run in every writer. Here each connection gets the pragmas the store was
    opened with, and the size diskcache keeps in Settings (summed by triggers from rows
    anyone can plant) is recounted when it is not a number rather than failing every write.
    """

    def __init__(
        self,
        directory: str,
        *,
        fork_lock: threading.RLock,
        pragmas: tuple[tuple[str, Any], ...],
        **options: Any,
    ) -> None:
        self.fork_lock = fork_lock
        # A process's first insert culls: short runs that each insert a few keep the size too.
        self._inserts_since_cull = CULL_EVERY - 1
        self._pragmas = pragmas  # before diskcache's __init__, whose queries connect
        # Each statement waits in SQLite only briefly, and is tried again until the store's
        # timeout (here, and for writes in disk.py): SQLite's own wait sleeps up to 100 ms at
        # a time, and writers that take turns with short gaps would starve it.
        self._busy_wait = WRITE_WAIT
        deadline = time.monotonic() + options.get("timeout", 60)
        while True:
            try:
                super().__init__(directory, **options)
                return
            except (sqlite3.OperationalError, Timeout) as error:
                locked = isinstance(error, Timeout) or "locked" in str(error)
                if not locked or time.monotonic() > deadline:
                    raise
            self.close()  # diskcache's opening is idempotent: it starts again
            time.sleep(0.001 + 0.002 * (time.perf_counter_ns() % 1000) / 1000)

    @property
    def _con(self) -> Any:
        # diskcache asks for the connection several times per write: the common case (this
        # thread's connection, made in this process) is one attribute read and a compare.
        local = self._local
        connection = getattr(local, "con", None)
        if connection is not None and getattr(local, "pid", None) == process_id[0]:
            return connection
        if getattr(local, "pid", None) != os.getpid():
            self.close()
            local.pid = os.getpid()
        connection = getattr(local, "con", None)
        if connection is None:
            connection = local.con = connections.connect(
                os.path.join(self._directory, DBNAME),
                busy=connections.idle,  # its statements run in _transact, under fork_lock
                timeout=self._busy_wait,
                isolation_level=None,
            )
            for key, value in self._pragmas:
                self.reset(key, value, update=False)
            connection.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
        close_with_thread(local, connection)  # not when the garbage collector runs
        return connection

    def close(self) -> None:
        connection = getattr(self._local, "con", None)
        super().close()
        if connection is not None:
            connections.close(connection)

    @contextmanager
    def _transact(self, retry: bool = False, filename: str | None = None) -> Iterator[Any]:
        with self.fork_lock, super()._transact(retry, filename) as transaction:
            yield transaction

    def add_small(self, key: str, value: bytes, expire: float | None, tag: str | None) -> bool:
        """Store a new small ``value`` under ``key`` in one statement; False (nothing done)
        when the key has a row, live or expired, or the value goes to a file: ``set`` then.

        ``set`` runs seven statements (a transaction, a look for an old row and its file, a
        cull); a miss's key has no row in the common case, and culling every few inserts
        keeps the store's size and expiry in check just the same.
        """
        if len(value) >= self._disk.min_file_size or self._txn_id == threading.get_ident():
            return False
        now = time.time()
        parameters = (key, now, None if expire is None else now + expire, now, tag, value)
        with self.fork_lock:
            if self._con.execute(_INSERT_NEW, parameters).rowcount != 1:
                return False
        self._inserts_since_cull += 1
        if self._inserts_since_cull >= CULL_EVERY and self.cull_limit:
            self._inserts_since_cull = 0
            with contextlib.suppress(Timeout):
                self._cull_as_sets_would(CULL_EVERY)
        return True

    def _cull_as_sets_would(self, sets: int) -> None:
        """The culls ``sets`` calls of ``set`` would have made, each in a transaction of its
        own (the size is measured in pages, freed only when a transaction commits), stopping
        at the first that removes nothing. Nothing to remove (the common case) is found with
        two reads, without taking the write lock."""
        with self.fork_lock:  # a statement on this connection: a fork waits for it
            expired = self._sql(_ANY_EXPIRED, (time.time(),)).fetchall()
            if not expired and (self.eviction_policy == "none" or self.volume() < self.size_limit):
                return
        for _ in range(sets):
            with self._transact() as (sql, cleanup):
                before = self._con.total_changes
                self._cull(time.time(), sql, cleanup)
                culled = self._con.total_changes != before
            if not culled:
                return

    def volume(self) -> int:
        ((page_count,),) = self._sql("PRAGMA page_count").fetchall()
        size = self.reset("size")
        if type(size) is not int:
            ((size,),) = self._sql(
                "SELECT COALESCE(SUM(size), 0) FROM Cache WHERE typeof(size) = 'integer'"
            ).fetchall()
            self._sql("UPDATE Settings SET value = ? WHERE key = 'size'", (size,))
            self.size = size
        return int(self._page_size * page_count + size)


_SETTING_TYPES: dict[str, Any] = {
    "statistics": (0, 1),
    "tag_index": (0, 1),
    "eviction_policy": tuple(EVICTION_POLICY),
    "size_limit": range(2**63),
    "cull_limit": range(2**63),
    "disk_min_file_size": range(2**63),
    "disk_pickle_protocol": range(pickle.HIGHEST_PROTOCOL + 1),
}


def store_pragmas(settings: dict[str, Any]) -> dict[str, Any]:
    """The SQLite pragmas a store runs: diskcache's defaults, or what the store was given."""
    return {
        key: settings.get(key, value)
        for key, value in DEFAULT_SETTINGS.items()
        if key.startswith("sqlite_")
    }


def settings_problem(directory: Path, settings: dict[str, Any], timeout: float) -> str | None:
    """What is wrong with the Settings table of the store in ``directory``, or None.

    Read before diskcache opens it, since diskcache acts on every row: runs ``sqlite_*``
    rows as pragmas, sets any key as an attribute of its Cache or Disk, and fails (or
    loops) on values of the wrong type. Only diskcache's own keys with sane values pass;
    pragmas only with diskcache's defaults or the values the store was given.
    """
    database = directory / DBNAME
    if not database.exists():
        return None
    try:
        connection = connections.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=timeout)
        try:
            rows = connection.execute("SELECT key, value FROM Settings").fetchall()
        finally:
            connections.close(connection)
    except sqlite3.Error:
        return None  # no table yet, or not a database: diskcache's opening deals with it
    pragmas = store_pragmas(settings)
    for key, value in rows:
        problem = _setting_problem(key, value, pragmas)
        if problem is not None:
            return problem
    return None


def _is_int_between(low: int, high: int) -> Any:
    return lambda value: type(value) is int and low <= value <= high


# Values of diskcache's own pragmas that a store may have chosen (Store(sqlite_mmap_size=...)):
# another opener's valid choice is not tampering. Anything else (another pragma, text that
# is not a journal mode) is, since diskcache runs these rows as PRAGMA statements.
_SAFE_PRAGMA_VALUES: dict[str, Any] = {
    "sqlite_auto_vacuum": _is_int_between(0, 2),
    "sqlite_cache_size": _is_int_between(-(2**31), 2**31),
    "sqlite_journal_mode": lambda value: value in ("wal", "delete", "truncate", "persist"),
    "sqlite_mmap_size": _is_int_between(0, 2**40),
    "sqlite_synchronous": _is_int_between(0, 3),
}


def _setting_problem(key: object, value: object, pragmas: dict[str, Any]) -> str | None:
    if not isinstance(key, str):
        return f"an unknown setting {key!r}"
    if key in pragmas:
        safe = _SAFE_PRAGMA_VALUES.get(key)
        if value != pragmas[key] and value != DEFAULT_SETTINGS[key] and not (safe and safe(value)):
            return f"pragma {key[7:]} = {value!r}"
    elif key in METADATA:
        if type(value) is not int:
            return f"{key} = {value!r} (not a count)"
    elif key in _SETTING_TYPES:
        if not ((type(value) is int or key == "eviction_policy") and value in _SETTING_TYPES[key]):
            return f"{key} = {value!r}"
    else:
        return f"an unknown setting {key!r}"
    return None


def reset_settings(directory: Path, settings: dict[str, Any], timeout: float) -> None:
    """Rewrite the Settings table of the store in ``directory`` with sane values only: the
    store's own, diskcache's defaults where a value is wrong, and the counts recounted."""
    pragmas = store_pragmas(settings)
    connection = connections.connect(directory / DBNAME, timeout=timeout, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        current = dict(connection.execute("SELECT key, value FROM Settings").fetchall())
        wanted = {**DEFAULT_SETTINGS, **settings, **pragmas}
        for key, value in current.items():
            if key in wanted and key not in settings and not _setting_problem(key, value, pragmas):
                wanted[key] = value  # a setting a user chose before, kept
        ((count, size),) = connection.execute(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN typeof(size) = 'integer' THEN size END), 0)"
            " FROM Cache"
        ).fetchall()
        wanted.update(count=count, size=size, hits=0, misses=0)
        connection.execute("DELETE FROM Settings")
        connection.executemany("INSERT INTO Settings VALUES (?, ?)", wanted.items())
        connection.execute("COMMIT")
    finally:
        connections.close(connection)


def delete_if_value(cache: diskcache.Cache, key: str, value: object) -> bool:
    """Delete ``key`` only if it holds ``value``: one statement, so compare and delete are
    one atomic step (diskcache has no compare-and-delete of its own); True when it did."""
    with cache.transact():
        cursor = cache._sql(
            "DELETE FROM Cache WHERE key = ? AND raw = 1 AND mode = ? AND value = ?",
            (key, MODE_RAW, value),
        )
        return bool(cursor.rowcount > 0)


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


def delete_unending_lease(cache: diskcache.Cache, key: str, horizon: float) -> bool:
    """Delete the lease row ``key`` if it never expires or expires more than ``horizon``
    seconds from now (planted: callers renew theirs a lease at a time); True when it did."""
    with cache.transact():
        cursor = cache._sql(
            "DELETE FROM Cache WHERE key = ? AND raw = 1"
            " AND (expire_time IS NULL OR typeof(expire_time) NOT IN ('real', 'integer')"
            " OR expire_time > ?)",
            (key, time.time() + horizon),
        )
        return bool(cursor.rowcount > 0)


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
    """Open (creating if needed) the diskcache Cache of a store directory.

    The pragmas are passed explicitly, so that diskcache runs the store's values, not the
    ones in the table (``settings_problem`` has refused any unknown key before this).
    """
    pragmas = store_pragmas(settings)
    return _ForkSafeCache(
        str(directory),
        fork_lock=fork_lock,
        pragmas=tuple(sorted(pragmas.items())),
        timeout=timeout,
        disk=_BytesOnlyDisk,
        **{**settings, **pragmas},
    )
