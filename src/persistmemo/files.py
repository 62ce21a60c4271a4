"""File inputs that never go stale: ``memo(files=["path"])`` keys a path by its content.

An argument named in ``files=`` (a str or ``os.PathLike``, or a list or tuple of them) is keyed
by the path as given plus the content of the file, or, for a directory, of every file under
it (relative names and contents). Editing a file, adding or removing one under a directory is
a miss; touching a file without changing it is a hit.

Unchanged files are not read again on every call: like git's index, a table maps each file's
fingerprint (device, inode, size, mtime_ns, ctime_ns) to the digest of its content, and a file
is hashed again when any of them changed. A rewrite that restores size and mtime
(``os.utime``) still changes ctime. Git's "racily clean" rule applies: a file whose mtime is
not safely older than the moment its digest was taken is hashed again on each call, so a
same-size rewrite within the file system's timestamp granularity is still seen. The table
lives in this process (each process hashes a file once, then stats it).

A path that does not exist, cannot be read in full (permissions), or is not a regular file or
a directory (a FIFO, a device) raises ``MissingInput``: the function runs (and raises what it
raises) and nothing is cached. A result is not stored when a file it was keyed on changed
while the function ran (see call_paths.py).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from persistmemo.stores.base import StoreBackend

RACY_NANOSECONDS = 2_000_000_000
"""A file modified less than this long before its digest was taken is hashed again on each
call (coarse file-system timestamps: 2 s on FAT, 1 s on some network file systems)."""

_CHUNK = 1 << 22


class MissingInput(Exception):
    """A path named in ``files=`` does not exist: the call runs uncached."""


_table: dict[str, tuple[tuple[int, ...], bytes, int]] = {}
_TABLE_SIZE = 100_000  # fingerprints remembered; past it the table starts afresh
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
    return ["file", path, content_digest(path, skipped)]


def content_digest(path: str, skipped: frozenset[str] = frozenset()) -> bytes:
    """The digest of the regular file at ``path``, or of the tree under the directory at
    ``path`` (names, kinds and contents, through links, each directory once); raises
    MissingInput when there is nothing to read there, or it cannot all be read: then the
    call runs uncached rather than be keyed on part of its input."""
    try:
        info = os.stat(path)
    except OSError as error:  # missing, a dangling or looping link, no permission
        raise MissingInput(f"{path} cannot be read ({error}): the call is not cached") from None
    try:
        if stat.S_ISDIR(info.st_mode):
            return _tagged(b"dir", _directory_digest(path, skipped))
        if stat.S_ISREG(info.st_mode):
            return _tagged(b"file", _file_digest(path, info))
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


def _file_digest(path: str, info: os.stat_result) -> bytes:
    fingerprint = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    absolute = os.path.abspath(path)
    known = _table.get(absolute)
    if known is not None and known[0] == fingerprint:
        # Racily clean (git's rule): trusted only when both times are safely older than the
        # digest. ctime counts too: it cannot be set back, and an mtime restored with utime
        # (or one in the future) would otherwise hide a rewrite.
        newest = max(info.st_mtime_ns, info.st_ctime_ns)
        if known[2] - newest > RACY_NANOSECONDS:
            return known[1]
    taken_at = time.time_ns()
    digest = _hash_file(path)
    with _lock:
        if len(_table) >= _TABLE_SIZE:
            _table.clear()
        _table[absolute] = (fingerprint, digest, taken_at)
    return digest


def _hash_file(path: str) -> bytes:
    import blake3  # a core dependency, loaded when a file is first keyed

    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            hasher.update(chunk)
    return hasher.digest()


def _directory_digest(root: str, skipped: frozenset[str] = frozenset()) -> bytes:
    """Every entry under ``root`` by relative name and kind, files with their contents;
    symlinked directories are followed, each directory once (a link cycle ends)."""
    import blake3

    entries: list[tuple[str, bytes]] = []
    seen: set[tuple[int, int]] = set()

    def failed(error: OSError) -> None:
        raise error  # an unlistable directory: not keyed on part of the input

    for directory, subdirectories, names in os.walk(root, followlinks=True, onerror=failed):
        info = os.stat(directory)
        if (info.st_dev, info.st_ino) in seen:
            subdirectories[:] = []  # a link back into the tree: walked already
            continue
        seen.add((info.st_dev, info.st_ino))
        if skipped:
            subdirectories[:] = [
                name
                for name in subdirectories
                if os.path.realpath(os.path.join(directory, name)) not in skipped
            ]
        subdirectories.sort()
        relative_dir = os.path.relpath(directory, root).replace(os.sep, "/")
        if not (skipped and _holds_a_skipped(directory, skipped)):
            # (a directory made only to hold the store, like .cache/, is not an input either)
            entries.append((relative_dir, b"dir"))
        for name in sorted(names):
            full = os.path.join(directory, name)
            relative = f"{relative_dir}/{name}" if relative_dir != "." else name
            try:
                entry = os.stat(full)
            except FileNotFoundError:
                continue  # removed while walking (a spool, a log directory)
            if not stat.S_ISREG(entry.st_mode):
                continue  # FIFOs, devices, sockets: no content to key
            try:
                entries.append((relative, _file_digest(full, entry)))
            except FileNotFoundError:
                continue
    hasher = blake3.blake3()
    for relative, digest in sorted(entries):
        encoded = relative.encode("utf-8", "surrogateescape")
        hasher.update(len(encoded).to_bytes(4, "big") + encoded + len(digest).to_bytes(2, "big"))
        hasher.update(digest)
    return hasher.digest()


def forget(path: Any = None) -> None:
    """Forget remembered digests (of ``path``, or all): the next call hashes again."""
    with _lock:
        if path is None:
            _table.clear()
        else:
            _table.pop(os.path.abspath(os.fspath(path)), None)
