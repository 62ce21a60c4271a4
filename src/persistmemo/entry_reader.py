"""The hit path's read: one SQL statement against diskcache's table, nothing else.

``diskcache.Cache.get`` checks the process id, looks up the eviction policy and decodes
keys and values in Python on every call. A hit needs none of that: persistmemo's keys are
always ``str`` (stored raw) and its values always ``bytes`` (inline, or in a file when
large), so one indexed SELECT on ``Cache(key, raw)`` and, for large values, one file read is
the whole job. The schema read here is diskcache 5's; the write path stays diskcache's own.

Each thread gets its own connection, reopened after a fork. ``immutable=True`` opens a store
on a read-only mount, where SQLite cannot create its WAL index: nothing may write it then,
and nothing can.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import TYPE_CHECKING

from persistmemo.codec import CorruptEntry
from persistmemo.schema import DBNAME, MODE_BINARY, MODE_RAW

if TYPE_CHECKING:
    from pathlib import Path

_SELECT = (
    "SELECT mode, filename, value, expire_time FROM Cache"
    " WHERE key = ? AND raw = 1 AND (expire_time IS NULL OR expire_time > ?)"
)


class EntryReader:
    """Reads stored bytes by key from a diskcache directory."""

    __slots__ = ("_database", "_directory", "_immutable", "_local", "_timeout")

    def __init__(self, directory: Path, *, timeout: float, immutable: bool = False) -> None:
        self._directory = directory
        self._database = directory / DBNAME
        self._timeout = timeout
        self._immutable = immutable
        self._local = threading.local()

    def read(self, key: str, now: float) -> tuple[bytes, float | None] | None:
        """The bytes stored under ``key`` and not expired at ``now``, with their expiry time
        (epoch seconds, None for none), or None."""
        local = self._local
        cursor = getattr(local, "cursor", None)
        if cursor is None or local.pid != os.getpid():
            cursor = self._connect()
        # fetchall, not fetchone: it runs the statement to its end, which ends the read
        # transaction; a statement left open would keep SQLite from checkpointing the WAL.
        rows = cursor.execute(_SELECT, (key, now)).fetchall()
        if not rows:
            return None
        ((mode, filename, value, expires_at),) = rows
        if mode == MODE_RAW and type(value) is bytes:
            return value, expires_at
        if mode == MODE_BINARY and filename:
            try:
                with open(os.path.join(self._directory, filename), "rb") as stored:
                    return stored.read(), expires_at
            except FileNotFoundError:
                return None  # removed since the row was read: diskcache's get says the same
        raise CorruptEntry(f"entry {key} has diskcache mode {mode}, which persistmemo never writes")

    def probe(self) -> None:
        """Read the table once: raises sqlite3.Error when the database cannot be read."""
        cursor = self._connect()
        cursor.execute("SELECT key FROM Cache LIMIT 1").fetchall()

    def _connect(self) -> sqlite3.Cursor:
        if self._immutable:
            uri = f"{self._database.as_uri()}?immutable=1"
            connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
        else:
            connection = sqlite3.connect(
                self._database, timeout=self._timeout, isolation_level=None
            )
            connection.execute("PRAGMA query_only = 1")
        self._local.connection = connection
        cursor = self._local.cursor = connection.cursor()
        self._local.pid = os.getpid()
        return cursor

    def close(self) -> None:
        """Close this thread's connection."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = self._local.cursor = None
