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

A path that does not exist raises ``MissingInput``: the function runs (and raises what it
raises) and nothing is cached.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from typing import Any

RACY_NANOSECONDS = 2_000_000_000
"""A file modified less than this long before its digest was taken is hashed again on each
call (coarse file-system timestamps: 2 s on FAT, 1 s on some network file systems)."""

_CHUNK = 1 << 22


class MissingInput(Exception):
    """A path named in ``files=`` does not exist: the call runs uncached."""


_table: dict[str, tuple[tuple[int, ...], bytes, int]] = {}
_lock = threading.Lock()


def file_key(value: object, parameter: str) -> object:
    """What ``value`` (a path, or a list or tuple of paths) is keyed on: each path as given,
    with the digest of what is there now."""
    if isinstance(value, (list, tuple)):
        return [file_key(item, parameter) for item in value]
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"memo(files=[{parameter!r}]): argument {parameter!r} must be a path (str or "
            f"os.PathLike) or a list or tuple of paths; got {type(value).__name__}"
        )
    path = os.fspath(value)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return ["file", path, content_digest(path)]


def content_digest(path: str) -> bytes:
    """The digest of the file at ``path``, or of the names and contents of every file under
    the directory at ``path``; raises MissingInput when there is nothing there."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise MissingInput(
            f"{path} does not exist: a files= argument that is not there is not cached"
        ) from None
    if stat.S_ISDIR(info.st_mode):
        return _directory_digest(path)
    return _file_digest(path, info)


def _file_digest(path: str, info: os.stat_result) -> bytes:
    fingerprint = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    absolute = os.path.abspath(path)
    known = _table.get(absolute)
    if (
        known is not None
        and known[0] == fingerprint
        and known[2] - info.st_mtime_ns > RACY_NANOSECONDS
    ):
        return known[1]
    taken_at = time.time_ns()
    digest = _hash_file(path)
    with _lock:
        _table[absolute] = (fingerprint, digest, taken_at)
    return digest


def _hash_file(path: str) -> bytes:
    import blake3  # a core dependency, loaded when a file is first keyed

    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            hasher.update(chunk)
    return hasher.digest()


def _directory_digest(root: str) -> bytes:
    import blake3

    hasher = blake3.blake3()
    entries: list[tuple[str, bytes]] = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories.sort()
        for name in sorted(names):
            full = os.path.join(directory, name)
            try:
                info = os.stat(full)
            except OSError:
                continue  # removed while walking, or a dangling link: not an input now
            if stat.S_ISREG(info.st_mode):
                relative = os.path.relpath(full, root).replace(os.sep, "/")
                entries.append((relative, _file_digest(full, info)))
    for relative, digest in sorted(entries):
        encoded = relative.encode("utf-8", "surrogateescape")
        hasher.update(len(encoded).to_bytes(4, "big") + encoded + digest)
    return hasher.digest()


def forget(path: Any = None) -> None:
    """Forget remembered digests (of ``path``, or all): the next call hashes again."""
    with _lock:
        if path is None:
            _table.clear()
        else:
            _table.pop(os.path.abspath(os.fspath(path)), None)
