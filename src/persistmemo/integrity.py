"""Sealed entries: every stored value carries a keyed digest bound to its own key.

SQLite pages carry no checksums, and diskcache hands back a truncated or edited value file as
it is. So each stored value is framed as

    0x01 (frame version) · tag (16 bytes) · compute seconds (float64) · encoded value

where the encoded value is the codec's (format byte · payload) and ``tag`` is
``blake2b(key=secret, digest_size=16)`` over the length-prefixed entry key, the compute
seconds and the encoded value. The compute seconds are the entry's metadata: how long the
function took, from which the tools tell the time a cache saves.

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
import secrets
import stat
import struct
import threading
from pathlib import Path

from persistmemo.codec import CorruptEntry

FRAME_VERSION = b"\x01"
TAG_SIZE = 16
_SECONDS = struct.Struct(">d")
HEADER_SIZE = 1 + TAG_SIZE + _SECONDS.size
ENV_SECRET = "PERSISTMEMO_SECRET"
SECRET_FILE_NAME = "secret.key"


def seal(secret: bytes, key: str, encoded: bytes, seconds: float = 0.0) -> bytes:
    """Frame ``encoded`` (a codec output that took ``seconds`` to compute) for ``key``."""
    body = _SECONDS.pack(seconds) + encoded
    return FRAME_VERSION + _tag(secret, key, body) + body


def unseal(secret: bytes, key: str, stored: bytes) -> memoryview:
    """The encoded value inside ``stored``; raises CorruptEntry when the tag does not match."""
    if stored[:1] != FRAME_VERSION or len(stored) <= HEADER_SIZE:
        raise CorruptEntry(f"entry {key} is not a sealed persistmemo value")
    view = memoryview(stored)
    if not hmac.compare_digest(view[1 : 1 + TAG_SIZE], _tag(secret, key, view[1 + TAG_SIZE :])):
        raise CorruptEntry(f"entry {key} fails its integrity check (changed, truncated or moved)")
    return view[HEADER_SIZE:]


def compute_seconds(stored: bytes) -> float | None:
    """The compute seconds recorded in a sealed entry's header (not verified), or None."""
    if stored[:1] != FRAME_VERSION or len(stored) < HEADER_SIZE:
        return None
    seconds: float = _SECONDS.unpack_from(stored, 1 + TAG_SIZE)[0]
    return seconds


def _tag(secret: bytes, key: str, body: bytes | memoryview) -> bytes:
    hasher = hashlib.blake2b(key=secret, digest_size=TAG_SIZE)
    key_bytes = key.encode("utf-8", "surrogatepass")
    hasher.update(struct.pack(">I", len(key_bytes)))
    hasher.update(key_bytes)
    hasher.update(body)
    return hasher.digest()


class SecretUnavailable(OSError):
    """The user's secret key file cannot be read or created safely."""


_secret_lock = threading.Lock()
_secrets_by_path: dict[Path, bytes] = {}


def secret_from_text(text: str) -> bytes:
    """A 32-byte secret from any string (a passphrase shared between machines)."""
    return hashlib.blake2b(text.encode(), digest_size=32, person=b"persistmemo").digest()


def default_secret_path() -> Path:
    """``secret.key`` in the user config directory (platformdirs)."""
    import platformdirs  # only needed when no secret is given

    return Path(platformdirs.user_config_dir("persistmemo", appauthor=False)) / SECRET_FILE_NAME


def user_secret(path: Path | None = None) -> bytes:
    """The secret of this user: ``$PERSISTMEMO_SECRET``, else the key file (made on first use).

    Raises SecretUnavailable when the file cannot be created, or is not private to this user
    (writable by others, or owned by someone else): such a key vouches for nothing.
    """
    configured = os.environ.get(ENV_SECRET)
    if configured:
        return secret_from_text(configured)
    path = path or default_secret_path()
    with _secret_lock:
        if path not in _secrets_by_path:
            _secrets_by_path[path] = _load_or_create(path)
        return _secrets_by_path[path]


def _load_or_create(path: Path) -> bytes:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(descriptor, "wb") as new_file:
                new_file.write(secrets.token_bytes(32))
        problem = untrusted_reason(path)
        if problem:
            raise SecretUnavailable(f"secret key {path} {problem}")
        data = path.read_bytes()
    except OSError as error:
        if isinstance(error, SecretUnavailable):
            raise
        raise SecretUnavailable(f"secret key {path} cannot be read or created: {error}") from error
    if len(data) < 16:
        raise SecretUnavailable(f"secret key {path} is too short ({len(data)} bytes)")
    return data


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
