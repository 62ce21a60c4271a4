"""Sealed entries: every stored value carries a keyed digest bound to its own key.

SQLite pages carry no checksums, and diskcache hands back a truncated or edited value file as
it is. So each stored value is framed as

    0x01 (frame version) · tag (16 bytes) · compute seconds · stored at · encoded value

where the encoded value is the codec's (format byte · payload) and ``tag`` is a 16-byte MAC
made with the secret (keyed BLAKE2b, or keyed BLAKE3 for bodies of 64 KiB and more) over the
length-prefixed entry key, the metadata and the encoded value. The metadata (two float64)
is how long the function took, from which the tools tell the time a cache saves, and when
the entry was stored (epoch seconds; the disk store also has diskcache's own record).

Before anything is decoded the tag is checked: a flipped bit, a truncation, random bytes,
another valid document, or another entry's bytes copied over this one (a swap of two keys)
all fail it, and the entry counts as a miss. The scheme is fixed here, never
named by the stored bytes, so nothing in a store can downgrade it.

The secret also authenticates pickle-fallback values: without it, bytes planted in the store
by someone else are refused before any unpickling, so they cannot run code
(CVE-2025-69872 is that hole in diskcache's own pickling). The secret lives outside every
store, in the user's config directory (``secret.key``, 0600): whoever can write a store must
not be able to rewrite the key that vouches for it. ``$PERSISTMEMO_SECRET`` (any string) or
``Store(secret=...)`` replace it, for stores shared between users or machines.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import struct
import threading
import time
from typing import TYPE_CHECKING

from persistmemo.codec import CorruptEntry
from persistmemo.faults import FaultReporter

if TYPE_CHECKING:
    from pathlib import Path

FRAME_VERSION = b"\x01"
TAG_SIZE = 16
_METADATA = struct.Struct(">dd")
HEADER_SIZE = 1 + TAG_SIZE + _METADATA.size
ENV_SECRET = "PERSISTMEMO_SECRET"
SECRET_FILE_NAME = "secret.key"


LARGE_BODY = 64 * 1024
"""Bodies of at least this many bytes are tagged with keyed BLAKE3, which is several times
faster on large inputs; smaller ones with keyed BLAKE2b, which is faster on small ones. The
choice follows from the length alone, both are full-strength MACs, so no stored byte can
pick a weaker check."""


class Sealer:
    """Seals and opens entries with one secret; what does not depend on the entry is
    prepared once, so that checking a small hit costs one hasher copy and two updates."""

    __slots__ = ("_blake2b", "_blake3_key")

    def __init__(self, secret: bytes) -> None:
        self._blake2b = hashlib.blake2b(key=secret[:64], digest_size=TAG_SIZE)
        self._blake3_key = hashlib.blake2b(secret, digest_size=32, person=b"pm-seal-b3").digest()

    def seal(
        self, key: str, encoded: bytes, seconds: float = 0.0, stored_at: float | None = None
    ) -> bytes:
        """Frame ``encoded`` (a codec output that took ``seconds`` to compute) for ``key``."""
        body = _METADATA.pack(seconds, time.time() if stored_at is None else stored_at) + encoded
        return FRAME_VERSION + self._tag(key, body) + body

    def unseal(self, key: str, stored: bytes) -> bytes | memoryview:
        """The encoded value inside ``stored``; raises CorruptEntry when the tag fails."""
        if len(stored) <= HEADER_SIZE or stored[0] != FRAME_VERSION_BYTE:
            raise CorruptEntry(f"entry {key} is not a sealed persistmemo value")
        if len(stored) < LARGE_BODY:
            # Small entries: slicing copies a few bytes, cheaper than memoryview objects.
            if not hmac.compare_digest(stored[1:_BODY], self._tag(key, stored[_BODY:])):
                raise CorruptEntry(_FAILED.format(key))
            return stored[HEADER_SIZE:]
        view = memoryview(stored)
        if not hmac.compare_digest(view[1:_BODY], self._tag(key, view[_BODY:])):
            raise CorruptEntry(_FAILED.format(key))
        return view[HEADER_SIZE:]

    def _tag(self, key: str, body: bytes | memoryview) -> bytes:
        key_bytes = key.encode("utf-8", "surrogatepass")
        prefix = len(key_bytes).to_bytes(4, "big") + key_bytes
        if len(body) >= LARGE_BODY:
            import blake3  # only large entries need it

            large = blake3.blake3(prefix, key=self._blake3_key, max_threads=blake3.blake3.AUTO)
            large.update(body)
            return large.digest(TAG_SIZE)
        hasher = self._blake2b.copy()
        hasher.update(prefix)
        hasher.update(body)
        return hasher.digest()


_BODY = 1 + TAG_SIZE
FRAME_VERSION_BYTE = FRAME_VERSION[0]
_FAILED = "entry {} fails its integrity check (changed, truncated or moved)"


def seal(secret: bytes, key: str, encoded: bytes, seconds: float = 0.0) -> bytes:
    """``Sealer(secret).seal(...)``, for one-off use."""
    return Sealer(secret).seal(key, encoded, seconds)


def unseal(secret: bytes, key: str, stored: bytes) -> bytes | memoryview:
    """``Sealer(secret).unseal(...)``, for one-off use."""
    return Sealer(secret).unseal(key, stored)


def entry_metadata(stored: bytes) -> tuple[float, float] | None:
    """``(compute seconds, stored at)`` from a sealed entry's header (not verified), or None."""
    if stored[:1] != FRAME_VERSION or len(stored) < HEADER_SIZE:
        return None
    seconds, stored_at = _METADATA.unpack_from(stored, 1 + TAG_SIZE)
    return float(seconds), float(stored_at)


def compute_seconds(stored: bytes) -> float | None:
    """The compute seconds recorded in a sealed entry's header (not verified), or None."""
    metadata = entry_metadata(stored)
    return None if metadata is None else metadata[0]


class SecretUnavailable(OSError):
    """The user's secret key file cannot be read or created safely."""


_secret_lock = threading.Lock()
_secrets_by_path: dict[Path, bytes] = {}


def secret_from_text(text: str) -> bytes:
    """A 32-byte secret from any string (a passphrase shared between machines)."""
    return hashlib.blake2b(text.encode(), digest_size=32, person=b"persistmemo").digest()


def default_secret_path() -> Path:
    """``secret.key`` in the user config directory (platformdirs)."""
    from pathlib import Path

    import platformdirs  # only needed when no secret is given

    return Path(platformdirs.user_config_dir("persistmemo", appauthor=False)) / SECRET_FILE_NAME


def user_secret(path: Path | None = None) -> bytes:
    """The secret of this user: ``$PERSISTMEMO_SECRET``, else the key file (made on first use).

    Raises SecretUnavailable, with the way out in its message, when the file cannot be
    created or is not private to this user (another owner, readable or writable by others,
    a symlink or not a regular file, in a directory others can write): such a key vouches
    for nothing. An empty or malformed key file of this user's is replaced, with a warning.
    """
    configured = os.environ.get(ENV_SECRET)
    if configured:
        return secret_from_text(configured)
    path = path or default_secret_path()
    with _secret_lock:
        if path not in _secrets_by_path:
            _secrets_by_path[path] = _load_or_create(path)
        return _secrets_by_path[path]


_SECRET_SIZE = 32
_SECRET_LIMITS = (16, 4096)
"""A key file holds 32 random bytes; 16 to 4096 are accepted (a key written by hand)."""

_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO planted as the key opens at once, then is refused
    | getattr(os, "O_CLOEXEC", 0)
)


class _Malformed(Exception):
    """The key file is ours but empty or of a wrong size: it can be replaced."""


def _load_or_create(path: Path) -> bytes:
    """Read the key file, creating it (or repairing an empty or malformed one of ours)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_key_directory(path.parent)
        try:
            return _read_key(path)
        except (FileNotFoundError, _Malformed):
            pass
        # Created (or repaired) under a lock on the directory, so that processes starting
        # at once all end up with the one key that was written first.
        with _directory_lock(path.parent):
            try:
                return _read_key(path)
            except FileNotFoundError:
                return _write_key(path, replace=False)
            except _Malformed as malformed:
                secret = _write_key(path, replace=True)
                FaultReporter("secret key").report(  # once per process: the key is cached
                    "secret key repaired",
                    f"{path} {malformed}; replaced it with a new key (entries sealed with the "
                    "old one are misses and will be recomputed)",
                )
                return secret
    except SecretUnavailable:
        raise
    except OSError as error:
        raise SecretUnavailable(
            f"secret key {path} cannot be read or created: {error}; fix its directory's "
            f"permissions, or set ${ENV_SECRET}"
        ) from error


def _check_key_directory(directory: Path) -> None:
    info = os.lstat(directory)
    if stat.S_ISLNK(info.st_mode):
        info = os.stat(directory)  # a config directory may be a link the user made
    if hasattr(os, "getuid") and info.st_uid not in (os.getuid(), 0):
        raise SecretUnavailable(
            f"secret key directory {directory} is owned by uid {info.st_uid}, not by this "
            f"user: whoever owns it can replace the key. Use a directory of your own "
            f"($XDG_CONFIG_HOME) or set ${ENV_SECRET}"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise SecretUnavailable(
            f"secret key directory {directory} is writable by other users, who could replace "
            f"the key: chmod go-w {directory}, or set ${ENV_SECRET}"
        )


def _read_key(path: Path) -> bytes:
    """The key in ``path``; FileNotFoundError, _Malformed, or SecretUnavailable (unsafe)."""
    try:
        descriptor = os.open(path, _READ_FLAGS)
    except OSError as error:
        if isinstance(error, FileNotFoundError):
            raise
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise SecretUnavailable(
                f"secret key {path} is a symbolic link, which is not followed: remove it "
                f"(a new key is made) or set ${ENV_SECRET}"
            ) from None
        raise
    with os.fdopen(descriptor, "rb") as key_file:
        info = os.fstat(descriptor)
        remedy = f"remove it (a new key is made) or set ${ENV_SECRET}"
        if not stat.S_ISREG(info.st_mode):
            raise SecretUnavailable(f"secret key {path} is not a regular file: {remedy}")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise SecretUnavailable(
                f"secret key {path} is owned by uid {info.st_uid}, not by this user: {remedy}"
            )
        if info.st_mode & 0o077:
            raise SecretUnavailable(
                f"secret key {path} is readable or writable by other users (mode "
                f"{stat.S_IMODE(info.st_mode):04o}): anyone who read it can forge entries, "
                f"so make a new one: remove it, or set ${ENV_SECRET}"
            )
        data = key_file.read(_SECRET_LIMITS[1] + 1)
    low, high = _SECRET_LIMITS
    if not low <= len(data) <= high:
        raise _Malformed(f"held {len(data)} bytes, not a key of {low} to {high} bytes")
    return data


def _write_key(path: Path, *, replace: bool) -> bytes:
    """Write a new key atomically: a temporary file, fsync, then link (or rename) into place."""
    import tempfile

    secret = os.urandom(_SECRET_SIZE)
    descriptor, temporary = tempfile.mkstemp(prefix=".secret-", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as new_file:  # mkstemp makes it 0600
            new_file.write(secret)
            new_file.flush()
            os.fsync(new_file.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)  # fails if another writer got there first
            except FileExistsError:
                return _read_key(path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    _sync_directory(path.parent)
    return secret


def _sync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename is still atomic
    finally:
        os.close(descriptor)


class _directory_lock:
    """An exclusive ``flock`` on a directory (nothing where flock does not exist)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._descriptor = -1

    def __enter__(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: link() alone decides who creates the key
            return
        self._descriptor = os.open(self._directory, os.O_RDONLY)
        fcntl.flock(self._descriptor, fcntl.LOCK_EX)

    def __exit__(self, *exc_info: object) -> None:
        if self._descriptor >= 0:
            os.close(self._descriptor)  # closing releases the lock


def untrusted_reason(path: Path) -> str | None:
    """Why ``path`` cannot be trusted to hold or vouch for secrets, or None when it can."""
    info = path.stat()
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return f"is owned by uid {info.st_uid}, not by this user"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "is writable by other users"
    return None


def forget_cached_secrets() -> None:
    """Drop secrets read so far (the next use reads the key file again)."""
    with _secret_lock:
        _secrets_by_path.clear()
