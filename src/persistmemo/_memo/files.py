"""File inputs that never go stale: ``memo(files=["path"])`` keys a path by its content.

A path is keyed by itself and the digest of its file, or of every file under its directory.
As in git's index, a digest is remembered under the file's fingerprint, in this process and
(sealed) in the store, and trusted only when it was taken safely after the file's last
change. The rules: docs/options.md#files.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from typing import TYPE_CHECKING, Any

from persistmemo._codec.decoding import decode_value
from persistmemo._codec.encoding import encode_value
from persistmemo._hashing import hashing_threads
from persistmemo.errors import MissingInput
from persistmemo.stores.base import FINGERPRINT_PREFIX, Missing, secret_scoped

if TYPE_CHECKING:
    from persistmemo.stores.base import StoreBackend

RACY_NANOSECONDS = 2_000_000_000
"""A file modified less than this long before its digest was taken is hashed again on each
call (coarse file-system timestamps: 2 s on FAT, 1 s on some network file systems)."""

_CHUNK = 1 << 22


FINGERPRINT_TTL = 30 * 24 * 3600.0
"""How long a digest recorded in a store is kept (seconds): the table does not grow without
bound as files change; an unchanged file is hashed again once this long after it was."""

Fingerprint = tuple[int, int, int, int, int]  # device, inode, size, mtime_ns, ctime_ns
_Known = tuple[Fingerprint, bytes, int]  # fingerprint, digest, when it was taken (ns)

_table: dict[str, _Known] = {}
_TABLE_SIZE = 100_000  # fingerprints remembered; past it the table starts afresh
_Listing = list[tuple[str, Fingerprint]]
_directories: dict[
    tuple[str, frozenset[str]], tuple[_Listing, list[str], bytes | None, dict[str, _Known]]
] = {}
"""Per directory argument: its last listing (files with fingerprints, directories), the
digest when every file was clean, and the digests of its clean files by relative name."""
_DIRECTORIES_KEPT = 64  # directories remembered; past it they start afresh
_RECORD_LIMIT = 200_000  # files in one directory's record in a store (about 20 MB)
_lock = threading.Lock()


def file_key(
    value: object,
    parameter: str,
    skipped: frozenset[str] = frozenset(),
    *,
    store: StoreBackend | None = None,
) -> object:
    """What ``value`` (a path, None, or a list or tuple of them) is keyed on: each path as
    given, with the digest of what is there now. Directories in ``skipped`` (real paths: the
    store's own) are left out of a directory's walk. With ``store``, the digests of unchanged
    files are also remembered there, for other processes."""
    if value is None:
        return None  # an optional path not given: nothing to read
    if isinstance(value, (list, tuple)):
        return [file_key(item, parameter, skipped, store=store) for item in value]
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise TypeError(
            f"memo(files=[{parameter!r}]): argument {parameter!r} must be a path (str, bytes "
            f"or os.PathLike), None, or a list or tuple of them; got {type(value).__name__}"
        )
    path = os.fspath(value)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return ["file", path, content_digest(path, skipped, store)]


def content_digest(
    path: str, skipped: frozenset[str] = frozenset(), store: StoreBackend | None = None
) -> bytes:
    """The digest of the regular file at ``path``, or of the tree under the directory at
    ``path`` (names, kinds and contents, through links, each directory once); raises
    MissingInput when there is nothing to read there, or it cannot all be read: then the
    call runs uncached rather than be keyed on part of its input. With ``store``, digests
    recorded there by other processes are used for unchanged files (docs/options.md#files)."""
    try:
        info = os.stat(path)
    except OSError as error:  # missing, a dangling or looping link, no permission
        raise MissingInput(f"{path} cannot be read ({error}): the call is not cached") from None
    try:
        if stat.S_ISDIR(info.st_mode):
            return _tagged(b"dir", _directory_digest(path, skipped, store))
        if stat.S_ISREG(info.st_mode):
            return _tagged(b"file", _file_digest(path, info, store))
    except OSError as error:
        raise MissingInput(f"{path} cannot be read ({error}): the call is not cached") from None
    # A FIFO, a device, a socket: reading it to key it would consume or never end.
    raise MissingInput(f"{path} is not a regular file or a directory: the call is not cached")


def _holds_a_skipped(directory: str, skipped: frozenset[str]) -> bool:
    real = os.path.realpath(directory)
    return any(path.startswith(real + os.sep) for path in skipped)


def _tagged(kind: bytes, digest: bytes) -> bytes:
    import blake3

    return blake3.blake3(kind + b"\0" + digest).digest()


def _fingerprint(info: os.stat_result) -> Fingerprint:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _clean(fingerprint: Fingerprint, taken_at: int) -> bool:
    """Git's racily-clean rule: a digest is trusted for a fingerprint only when both times
    are safely older than the moment it was taken. ctime counts too: it cannot be set back,
    and an mtime restored with utime (or one in the future) would otherwise hide a rewrite.
    The rule is applied by whoever reads a digest, with the time it was taken, so it holds
    for digests recorded by another process as for this one's."""
    return taken_at - max(fingerprint[3], fingerprint[4]) > RACY_NANOSECONDS


def _remember(absolute: str, fingerprint: Fingerprint, digest: bytes, taken_at: int) -> None:
    with _lock:
        if len(_table) >= _TABLE_SIZE:
            _table.clear()
        _table[absolute] = (fingerprint, digest, taken_at)


def _file_digest(path: str, info: os.stat_result, store: StoreBackend | None = None) -> bytes:
    fingerprint = _fingerprint(info)
    absolute = os.path.abspath(path)
    known = _table.get(absolute)
    if known is not None and known[0] == fingerprint and _clean(fingerprint, known[2]):
        return known[1]
    key = None
    if store is not None:
        key = _file_record_key(path, fingerprint)
        recorded = _read_file_record(store, key)
        if recorded is not None and _clean(fingerprint, recorded[1]):
            _remember(absolute, fingerprint, *recorded)
            return recorded[0]
    taken_at = time.time_ns()
    digest = _hash_file(path)
    _remember(absolute, fingerprint, digest, taken_at)
    if key is not None and store is not None and _clean(fingerprint, taken_at):
        # (a racy digest is never trusted later, by anyone: not worth a write)
        _write_record(store, key, {"digest": digest, "at": taken_at})
    return digest


def _hash_file(path: str) -> bytes:
    import blake3  # a core dependency, loaded when a file is first keyed

    hasher = blake3.blake3(max_threads=hashing_threads())
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            hasher.update(chunk)
    return hasher.digest()


def _file_record_key(path: str, fingerprint: Fingerprint) -> str:
    import blake3

    named = f"{os.path.realpath(path)}\0{fingerprint}".encode("utf-8", "surrogateescape")
    return f"{FINGERPRINT_PREFIX}{blake3.blake3(named).hexdigest()}"


def _directory_record_key(root: str, skipped: frozenset[str]) -> str:
    import blake3

    named = "\0".join([os.path.realpath(root), *sorted(skipped)])
    digest = blake3.blake3(named.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{FINGERPRINT_PREFIX}dir:{digest}"


def _read_record(store: StoreBackend, key: str) -> Any:
    """The decoded record under ``key``, or None: absent, unusable (a store fault, a seal
    that fails: the store has reported it) or not of our making."""
    try:
        data = store.read(secret_scoped(store, key))
        if isinstance(data, Missing):
            return None
        return decode_value(data, allow_pickle=False)
    except Exception:  # a record that does not decode is no record; the call goes on
        return None


def _read_file_record(store: StoreBackend, key: str) -> tuple[bytes, int] | None:
    record = _read_record(store, key)
    if not isinstance(record, dict):
        return None
    digest, taken_at = record.get("digest"), record.get("at")
    if isinstance(digest, bytes) and len(digest) == 32 and type(taken_at) is int:
        return digest, taken_at
    return None


def _write_record(store: StoreBackend, key: str, record: object) -> None:
    # A fingerprint not kept costs a hash later, never the call.
    with contextlib.suppress(Exception):
        store.write(
            secret_scoped(store, key),
            encode_value(record, allow_pickle=False),
            ttl=FINGERPRINT_TTL,
            tag=FINGERPRINT_PREFIX.rstrip(":"),
        )


def _read_directory_record(store: StoreBackend, key: str) -> dict[str, _Known]:
    """relative name -> (fingerprint, digest, taken at), the well-formed rows only."""
    record = _read_record(store, key)
    rows = record.get("files") if isinstance(record, dict) else None
    known: dict[str, _Known] = {}
    if not isinstance(rows, list):
        return known
    for row in rows:
        if type(row) is not list or len(row) != 8:
            continue
        name, device, inode, size, modified, changed, digest, taken_at = row
        if (
            type(name) is str
            and type(device) is int
            and type(inode) is int
            and type(size) is int
            and type(modified) is int
            and type(changed) is int
            and type(digest) is bytes
            and len(digest) == 32
            and type(taken_at) is int
        ):
            known[name] = ((device, inode, size, modified, changed), digest, taken_at)
    return known


def _walk(root: str, skipped: frozenset[str]) -> tuple[_Listing, list[str]]:
    """(regular files as (relative name, fingerprint), directories by relative name) under
    ``root``, through links, each directory once (a link cycle ends). One stat per entry
    and little else: this runs on every call for an unchanged directory."""
    files: _Listing = []
    directories: list[str] = []
    seen: set[tuple[int, int]] = set()
    # Depth first, names in order: os.walk's order (which path of a directory reached twice
    # is the one keyed), so keys made before this walk are unchanged.
    pending: list[tuple[str, str, os.stat_result | None]] = [(root, "", None)]
    append_file = files.append
    while pending:
        directory, prefix, info = pending.pop()
        if info is None:
            info = os.stat(directory)
        if (info.st_dev, info.st_ino) in seen:
            continue  # a link back into the tree: walked already
        seen.add((info.st_dev, info.st_ino))
        if not (skipped and _holds_a_skipped(directory, skipped)):
            # (a directory made only to hold the store, like .cache/, is not an input either)
            directories.append(prefix[:-1] if prefix else ".")
        with os.scandir(directory) as listing:  # unlistable: raises, not keyed on a part
            entries = sorted(listing, key=_name_of)
        subdirectories: list[tuple[str, str, os.stat_result | None]] = []
        for entry in entries:
            try:
                entry_info = entry.stat()
            except FileNotFoundError:
                continue  # removed while walking (a spool, a log directory), or a dangling link
            mode = entry_info.st_mode
            if stat.S_ISREG(mode):
                append_file(
                    (
                        prefix + entry.name,
                        (
                            entry_info.st_dev,
                            entry_info.st_ino,
                            entry_info.st_size,
                            entry_info.st_mtime_ns,
                            entry_info.st_ctime_ns,
                        ),
                    )
                )
            elif stat.S_ISDIR(mode):
                if skipped and os.path.realpath(entry.path) in skipped:
                    continue
                subdirectories.append((entry.path, f"{prefix}{entry.name}/", entry_info))
            # FIFOs, devices, sockets: no content to key
        pending.extend(reversed(subdirectories))
    return files, directories


def _name_of(entry: os.DirEntry[str]) -> str:
    return entry.name


def _directory_digest(
    root: str, skipped: frozenset[str] = frozenset(), store: StoreBackend | None = None
) -> bytes:
    """Every entry under ``root`` by relative name and kind, files with their contents;
    symlinked directories are followed, each directory once (a link cycle ends)."""
    import blake3

    files, directories = _walk(root, skipped)
    cache_key = (os.path.abspath(root), skipped)
    state = _directories.get(cache_key)
    if state is not None and state[2] is not None and state[0] == files and state[1] == directories:
        # Same names, same fingerprints, all clean when the digest was made: still clean.
        return state[2]
    racy = RACY_NANOSECONDS
    here = state[3] if state is not None else {}
    record_key = _directory_record_key(root, skipped) if store is not None else None
    recorded: dict[str, _Known] | None = None
    kept: dict[str, _Known] = {}
    entries: list[tuple[str, bytes]] = [(name, b"dir") for name in directories]
    all_clean = True
    for relative, fingerprint in files:
        newest = max(fingerprint[3], fingerprint[4])
        known = here.get(relative)
        if known is None or known[0] != fingerprint or known[2] - newest <= racy:
            if recorded is None and store is not None and record_key is not None:
                recorded = _read_directory_record(store, record_key)
            known = recorded.get(relative) if recorded is not None else None
            if known is None or known[0] != fingerprint or known[2] - newest <= racy:
                taken_at = time.time_ns()
                try:
                    known = (fingerprint, _hash_file(os.path.join(root, relative)), taken_at)
                except FileNotFoundError:
                    all_clean = False  # removed while walking: keyed without it, this once
                    continue
        entries.append((relative, known[1]))
        if known[2] - newest > racy:
            kept[relative] = known
        else:
            all_clean = False  # hashed again next time (and not recorded: never trusted)
    hasher = blake3.blake3()
    for relative, digest in sorted(entries):
        encoded = relative.encode("utf-8", "surrogateescape")
        hasher.update(len(encoded).to_bytes(4, "big") + encoded + len(digest).to_bytes(2, "big"))
        hasher.update(digest)
    digest = hasher.digest()
    with _lock:
        _directories.pop(cache_key, None)
        remembered = sum(len(state[0]) for state in _directories.values())
        if len(_directories) >= _DIRECTORIES_KEPT or remembered + len(files) > _TABLE_SIZE:
            _directories.clear()  # (a few hundred bytes a file: bounded memory)
        _directories[cache_key] = (files, directories, digest if all_clean else None, kept)
    # Written when it says something new (a file hashed, added or gone): an unchanged
    # directory reads its record once per process and writes nothing.
    if (
        recorded is not None
        and record_key is not None
        and store is not None
        and kept != recorded
        and len(kept) <= _RECORD_LIMIT
    ):
        rows = [[name, *known[0], known[1], known[2]] for name, known in kept.items()]
        _write_record(store, record_key, {"files": rows})
    return digest


def forget(path: Any = None) -> None:
    """Forget the digests this process remembers (of ``path``, or all): the next call
    hashes again, or takes the digest a store recorded for the same fingerprint."""
    with _lock:
        _directories.clear()
        if path is None:
            _table.clear()
        else:
            _table.pop(os.path.abspath(os.fspath(path)), None)
