"""The disk backend's rows, read directly (read-only) from diskcache's table.

Listings, whole values for ``check``, and the database beneath them. Listing never decodes a
value and never writes: per row, diskcache's ``store_time`` and ``expire_time``, the size on
disk, the tag and the value's first bytes (its sealed header, which holds the compute
seconds); the sealed layer (stores/sealed.py) makes entries of them.
"""

from __future__ import annotations

import math
import os
import sqlite3
import types
from collections.abc import Iterator
from contextlib import contextmanager

from persistmemo._sealing import HEADER_READ
from persistmemo.errors import CorruptEntry, StoreUnreadable
from persistmemo.stores import connections
from persistmemo.stores.api import Row
from persistmemo.stores.entry_reader import read_value_file
from persistmemo.stores.schema import DBNAME, MODE_BINARY, MODE_RAW

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from persistmemo.stores.base import CheckReport


def _connect(directory: Path) -> sqlite3.Connection:
    database = directory / DBNAME
    if not database.exists():
        raise FileNotFoundError(f"no persistmemo store at {directory} ({DBNAME} is missing)")
    connection = connections.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=5)
    # Any text may be planted: text that is not UTF-8 must not stop a listing or a check
    # (such a key was not persistmemo's: it is left out, and other columns read as such).
    connection.text_factory = _lenient_text
    return connection


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _ours(key: object) -> bool:
    """Whether ``key`` could be a key persistmemo wrote: text that is valid UTF-8."""
    if not isinstance(key, str):
        return False
    try:
        key.encode()
    except UnicodeEncodeError:
        return False
    return True


@contextmanager
def _reading(directory: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection; a database that cannot be read raises StoreUnreadable."""
    try:
        connection = _connect(directory)
        try:
            yield connection
        finally:
            connections.close(connection)
    except sqlite3.DatabaseError as error:
        raise StoreUnreadable(
            f"{directory / DBNAME} cannot be read ({error}): run `persistmemo check` "
            "(it moves a damaged database aside), or delete the store directory"
        ) from error


def _stored_bytes(
    directory: Path, mode: int, filename: str | None, value: object, size: int | None
) -> bytes | memoryview:
    if mode == MODE_RAW and isinstance(value, bytes):
        return value
    if mode == MODE_BINARY and filename:
        return read_value_file(directory, filename, size)
    raise CorruptEntry(f"diskcache mode {mode} is not a persistmemo value")


def _header(
    directory: Path, mode: int, filename: str | None, value: object, size: int | None
) -> bytes:
    if mode == MODE_BINARY and filename:
        try:
            return bytes(read_value_file(directory, filename, size, limit=HEADER_READ))
        except (OSError, CorruptEntry):
            return b""
    return value[:HEADER_READ] if isinstance(value, bytes) else b""


def _bounds(prefix: str) -> tuple[str, tuple[str, ...]]:
    """The SQL condition and parameters of the keys that start with ``prefix``."""
    if not prefix:
        return "typeof(key) = 'text'", ()
    return "key >= ? AND key < ?", (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1))


def _absent(directory: Path) -> bool:
    """Whether no database is there yet: nothing stored, nothing to list."""
    return not (directory / DBNAME).exists()


def rows(directory: Path, prefix: str) -> Iterator[Row]:
    """Every row whose key starts with ``prefix``, expired ones too, read-only."""
    if _absent(directory):
        return
    condition, parameters = _bounds(prefix)
    with _reading(directory) as connection:
        found = connection.execute(
            "SELECT key, tag, store_time, expire_time, size, mode, filename, value FROM Cache"
            f" WHERE raw = 1 AND {condition}",
            parameters,
        )
        for row in found:
            if _ours(row[0]):
                yield _row(directory, row)


def _row(directory: Path, row: tuple[Any, ...]) -> Row:
    # Every column is untrusted: a co-writer can plant any SQLite type in any of them.
    key, tag, stored_at, expires_at, size, mode, filename, value = row
    if mode == MODE_BINARY:
        size = size if type(size) is int and size >= 0 else 0
    else:
        size = len(value) if isinstance(value, bytes) else 0
    return Row(
        key,
        size=size,
        stored_at=_time(stored_at) or 0.0,
        expires_at=_time(expires_at),
        head=_header(directory, mode, filename, value, size or None),
        tag=tag,
    )


def keys(directory: Path, prefix: str) -> list[str]:
    """Every key that starts with ``prefix`` (expired ones too), read-only."""
    if _absent(directory):
        return []
    condition, parameters = _bounds(prefix)
    with _reading(directory) as connection:
        found = connection.execute(
            f"SELECT key FROM Cache WHERE raw = 1 AND {condition}", parameters
        )
        return [key for (key,) in found if _ours(key)]


def values(directory: Path, prefix: str) -> Iterator[tuple[str, bytes | memoryview | CorruptEntry]]:
    """Every key that starts with ``prefix`` with its whole stored bytes (expired ones too),
    or the CorruptEntry that says why they cannot be read."""
    if _absent(directory):
        return
    condition, parameters = _bounds(prefix)
    with _reading(directory) as connection:
        found = connection.execute(
            f"SELECT key, mode, filename, value, size FROM Cache WHERE raw = 1 AND {condition}",
            parameters,
        )
        for key, mode, filename, value, size in found:
            if not _ours(key):
                continue
            try:
                yield key, _stored_bytes(directory, mode, filename, value, size)
            except (CorruptEntry, OSError) as error:
                yield key, CorruptEntry(str(error))


def stored_bytes(directory: Path, key: str) -> bytes | memoryview | None:
    """The whole stored bytes under ``key``, expired or not, or None when absent."""
    if _absent(directory):
        return None
    with _reading(directory) as connection:
        found = connection.execute(
            "SELECT mode, filename, value, size FROM Cache WHERE raw = 1 AND key = ?", (key,)
        ).fetchall()
    if not found:
        return None
    return _stored_bytes(directory, *found[0])


_MAX_SECONDS = 1e9
"""Compute seconds above this (31 years) are a planted header, not a measurement."""


def _time(value: object) -> float | None:
    """``value`` as epoch seconds, or None when it is not a finite number."""
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        return None
    return float(value)  # type: ignore[arg-type]


def check_database(
    directory: Path,
    report: CheckReport,
    *,
    moved_aside: Path | None,
    settings: dict[str, Any],
    timeout: float,
    engine: types.ModuleType,
    fix: bool,
) -> None:
    """What ``check`` looks at beneath the entries: a garbage cache.db moved aside at
    opening (``moved_aside``), diskcache's Settings table, and SQLite's integrity."""
    if moved_aside is not None:
        orphans = _value_files(directory)
        named = ", ".join(orphans[:5]) + (", ..." if len(orphans) > 5 else "")
        report.problems.append(
            f"{DBNAME} was not a database: moved aside to {moved_aside.name}, a new "
            "one was started"
            + (f"; {len(orphans)} value files are orphaned ({named})" if orphans else "")
        )
    tampered = engine.settings_problem(directory, settings, timeout)
    if tampered is not None:
        report.problems.append(
            f"{DBNAME}: its Settings table has {tampered}, which persistmemo never writes"
            + ("; reset" if fix else "; run check --fix to reset it")
        )
        if fix:
            engine.reset_settings(directory, settings, timeout)
    with _reading(directory) as connection:
        for (line,) in connection.execute("PRAGMA integrity_check"):
            if line != "ok":
                report.problems.append(f"sqlite: {line}")


def _value_files(directory: Path) -> list[str]:
    """Value files (``*.val``) under ``directory``, relative to it."""
    found = []
    for root, _, files in os.walk(directory):
        for name in files:
            if name.endswith(".val"):
                found.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(found)


def directory_size(directory: Path) -> int:
    """Bytes the store takes on disk (database, WAL and value files)."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                continue
    return total
