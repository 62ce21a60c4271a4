"""Looking into a store: its entries and their metadata, per-function summaries, checks, pruning.

Everything here reads diskcache's table directly (read-only) and each value's sealed header,
so listing a store never decodes a value and never writes. Per entry, the store knows:

- when it was computed (diskcache's ``store_time``) and when it expires (``expire_time``);
- its size on disk (inline bytes, or the value file's size);
- its function identity (the entry's tag) and version (the key's third field);
- how long the computation took (the sealed header's compute seconds).

Hits are counted per process (``cache_info()``), not in the store: counting them there would
make every hit a write. "Compute stored" below is the sum of compute seconds of the entries:
the time that one more hit on each would save.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from persistmemo._keys.layout import result_key_ranges
from persistmemo._sealing import HEADER_READ, Sealer, compute_seconds
from persistmemo.errors import CorruptEntry, StoreUnreadable
from persistmemo.stores import connections
from persistmemo.stores.base import (
    SECRET_PREFIX,
    CheckReport,
    EntryInfo,
    Progress,
    judge_entry,
    looks_sealed_with_another_secret,
    split_key,
)
from persistmemo.stores.entry_reader import read_value_file
from persistmemo.stores.schema import DBNAME, MODE_BINARY, MODE_RAW

if TYPE_CHECKING:
    from pathlib import Path

    from persistmemo.stores.disk import Store

_ROWS = (
    "SELECT key, tag, store_time, expire_time, size, mode, filename, value FROM Cache"
    " WHERE raw = 1 AND key >= ? AND key < ?"
)


_ROW = _ROWS.replace("key >= ? AND key < ?", "key = ?")


def _connect(directory: Path) -> sqlite3.Connection:
    database = directory / DBNAME
    if not database.exists():
        raise FileNotFoundError(f"no persistmemo store at {directory} ({DBNAME} is missing)")
    return connections.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=5)


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


def iter_entries(directory: Path, function: str | None = None) -> Iterator[EntryInfo]:
    """Every entry of the store in ``directory`` (of one function, if given)."""
    with _reading(directory) as connection:
        for low, high in result_key_ranges(function):
            for row in connection.execute(_ROWS, (low, high)):
                entry = _entry_from_row(directory, row)
                if function is None or entry.function == function:
                    yield entry


def iter_keys(directory: Path, function: str | None = None) -> Iterator[str]:
    """Every entry key of the store in ``directory`` (leases and hit counts left out); with
    ``function``, the keys that begin with its name (check each key's identity: a function
    whose name extends it past a ':' shares the range)."""
    with _reading(directory) as connection:
        for low, high in result_key_ranges(function):
            rows = connection.execute(
                "SELECT key FROM Cache WHERE raw = 1 AND key >= ? AND key < ?", (low, high)
            )
            for (key,) in rows:
                if isinstance(key, str):
                    yield key


def entry_info(directory: Path, key: str) -> EntryInfo | None:
    """The metadata of the entry under ``key``, or None when there is none."""
    with _reading(directory) as connection:
        row = connection.execute(_ROW, (key,)).fetchone()
    return None if row is None else _entry_from_row(directory, row)


def _entry_from_row(directory: Path, row: tuple[Any, ...]) -> EntryInfo:
    # Every column is untrusted: a co-writer can plant any SQLite type in any of them.
    key, tag, stored_at, expires_at, size, mode, filename, value = row
    identity, version = split_key(key, tag)
    if mode == MODE_BINARY:
        size = size if type(size) is int and size >= 0 else 0
    else:
        size = len(value) if isinstance(value, bytes) else 0
    seconds = compute_seconds(_header(directory, mode, filename, value, size or None))
    return EntryInfo(
        key=key,
        function=identity,
        version=version,
        stored_at=_time(stored_at) or 0.0,
        expires_at=_time(expires_at),
        size=size,
        compute_seconds=seconds if seconds is not None and 0 <= seconds < _MAX_SECONDS else None,
    )


_MAX_SECONDS = 1e9
"""Compute seconds above this (31 years) are a planted header, not a measurement."""


def _time(value: object) -> float | None:
    """``value`` as epoch seconds, or None when it is not a finite number."""
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        return None
    return float(value)  # type: ignore[arg-type]


def recorded_hits(directory: Path, prefix: str) -> dict[str, int]:
    """Hit counts kept under ``prefix`` + function identity."""
    with _reading(directory) as connection:
        rows = connection.execute(
            "SELECT key, value FROM Cache WHERE raw = 1 AND key >= ? AND key < ?",
            (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)),
        )
        return {key[len(prefix) :]: int(value) for key, value in rows if isinstance(value, int)}


def check(store: Store, *, fix: bool = False, progress: Progress | None = None) -> CheckReport:
    """Check SQLite's integrity, every entry's seal (expired ones too) and that each sealed
    value decodes; with ``fix``, remove entries whose seal fails.

    When well-formed entries failing their tag outnumber those that verify, the store was
    sealed with another secret: that is reported and nothing is removed (see
    ``looks_sealed_with_another_secret``).
    """
    report = CheckReport()
    directory = store.directory
    sealer = Sealer(store.secret)  # opens the store: a garbage cache.db is moved aside
    if store.moved_aside is not None:
        orphans = _value_files(directory)
        named = ", ".join(orphans[:5]) + (", ..." if len(orphans) > 5 else "")
        report.problems.append(
            f"{DBNAME} was not a database: moved aside to {store.moved_aside.name}, a new "
            "one was started"
            + (f"; {len(orphans)} value files are orphaned ({named})" if orphans else "")
        )
    from persistmemo.stores import engine  # diskcache's words: only check needs them

    settings = store._settings
    tampered = engine.settings_problem(directory, settings, store.timeout)
    if tampered is not None:
        report.problems.append(
            f"{DBNAME}: its Settings table has {tampered}, which persistmemo never writes"
            + ("; reset" if fix else "; run check --fix to reset it")
        )
        if fix:
            engine.reset_settings(directory, settings, store.timeout)
    well_formed_failures = verified = 0
    with _reading(directory) as connection:
        for (line,) in connection.execute("PRAGMA integrity_check"):
            if line != "ok":
                report.problems.append(f"sqlite: {line}")
        (total,) = connection.execute("SELECT COUNT(*) FROM Cache WHERE raw = 1").fetchone()
        (low, _), (_, high) = result_key_ranges()  # every format, in one pass
        rows = connection.execute(
            "SELECT key, mode, filename, value, size FROM Cache"
            " WHERE raw = 1 AND key >= ? AND key < ? AND substr(key, 4, 1) = ':'",
            (low, high),
        )
        for done, (key, mode, filename, value, size) in enumerate(rows, 1):
            report.entries += 1
            try:
                stored = _stored_bytes(directory, mode, filename, value, size)
            except (CorruptEntry, OSError) as error:
                report.corrupt.append(key)
                report.problems.append(f"{key}: {error}")
                continue
            outcome = judge_entry(report, sealer, key, stored)
            if outcome != "verified":
                well_formed_failures += outcome == "well-formed"
                continue
            verified += 1
            if progress is not None:
                progress(done, total)
        recorded = {
            key[len(SECRET_PREFIX) :]
            for (key,) in connection.execute(
                "SELECT key FROM Cache WHERE raw = 1 AND key >= ? AND key < ?",
                (SECRET_PREFIX, SECRET_PREFIX[:-1] + ";"),
            )
        }
    # The fingerprints of the secrets that wrote here settle it when they can: only ours
    # means the failures are damage (removed by --fix); others but not ours, another secret.
    if recorded == {sealer.fingerprint}:
        another_secret = False
    elif recorded and sealer.fingerprint not in recorded:
        another_secret = well_formed_failures > 0
    else:
        another_secret = looks_sealed_with_another_secret(
            verified=verified, well_formed_failures=well_formed_failures
        )
    if another_secret:
        report.wrong_secret = True
        report.problems.insert(
            0,
            f"{well_formed_failures} of {report.entries} entries are sealed with a different "
            "secret: set $PERSISTMEMO_SECRET (or secret=) to the secret that wrote them; "
            "nothing was removed",
        )
    elif fix:
        report.removed = sum(store.purge(key) for key in report.corrupt)
    return report


def _value_files(directory: Path) -> list[str]:
    """Value files (``*.val``) under ``directory``, relative to it."""
    found = []
    for root, _, files in os.walk(directory):
        for name in files:
            if name.endswith(".val"):
                found.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(found)


def prune(
    store: Store,
    *,
    expired: bool = True,
    older_than: float | None = None,
    keep_versions: Mapping[str, Iterable[str]] | None = None,
    progress: Progress | None = None,
) -> int:
    """Remove expired entries, entries stored more than ``older_than`` seconds ago, and
    entries of the functions in ``keep_versions`` whose version is not listed there.
    Returns how many were removed."""
    keep = {name: set(versions) for name, versions in (keep_versions or {}).items()}
    cutoff = None if older_than is None else time.time() - older_than
    removed = store.remove_expired() if expired else 0
    # Expired entries count too: one older than the cutoff is old, whatever its TTL says.
    doomed = [
        entry.key
        for entry in iter_entries(store.directory)
        if (cutoff is not None and entry.stored_at < cutoff)
        or (entry.function in keep and entry.version not in keep[entry.function])
    ]
    for done, key in enumerate(doomed, 1):
        removed += store.purge(key)
        if progress is not None:
            progress(done, len(doomed))
    return removed


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
