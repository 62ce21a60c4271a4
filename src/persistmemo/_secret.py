"""The secret that seals entries: the user's key file, a passphrase, or ``$PERSISTMEMO_SECRET``.

The key file lives outside every store (``secret.key`` in the user's config directory): one
another user could write is refused with the way out, and an empty or malformed one of this
user's is replaced, with a warning. The stores and the command line read it here. The rules:
docs/security.md#the-secret.
"""

from __future__ import annotations

import os
import stat
import threading

from persistmemo import _environment as environment
from persistmemo._faults import FaultReporter
from persistmemo._hashing import blake2b
from persistmemo.errors import SecretUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

SECRET_FILE_NAME = "secret.key"

_secret_lock = threading.Lock()
_secrets_by_path: dict[str, bytes] = {}


def secret_from_text(text: str) -> bytes:
    """A 32-byte secret from any string (a passphrase shared between machines)."""
    return blake2b(text.encode(), digest_size=32, person=b"persistmemo").digest()


def default_secret_path() -> Path:
    """``secret.key`` in the user config directory (platformdirs)."""
    from pathlib import Path

    import platformdirs  # only needed when no secret is given

    return Path(platformdirs.user_config_dir("persistmemo", appauthor=False)) / SECRET_FILE_NAME


def user_secret(path: str | os.PathLike[str] | None = None) -> bytes:
    """The secret of this user: ``$PERSISTMEMO_SECRET``, else the key file (made on first use).

    Raises SecretUnavailable, with the way out in its message, when the file cannot be
    created or is not private to this user (another owner, readable or writable by others,
    a symlink or not a regular file, in a directory others can write): such a key vouches
    for nothing. An empty or malformed key file of this user's is replaced, with a warning.
    """
    configured = environment.secret()
    if configured:
        return secret_from_text(configured)
    # A str from here on: pathlib costs a cold start milliseconds, and os takes strings.
    name = os.fspath(path or default_secret_path())
    with _secret_lock:
        if name not in _secrets_by_path:
            _secrets_by_path[name] = _load_or_create(name)
        return _secrets_by_path[name]


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


def _load_or_create(path: str) -> bytes:
    """Read the key file, creating it (or repairing an empty or malformed one of ours)."""
    try:
        parent = _parent(path)
        os.makedirs(parent, mode=0o700, exist_ok=True)
        _check_key_directory(parent)
        try:
            return _read_key(path)
        except (FileNotFoundError, _Malformed):
            pass
        # Created (or repaired) under a lock on the directory, so that processes starting
        # at once all end up with the one key that was written first.
        with _directory_lock(parent):
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
            f"permissions, or set ${environment.SECRET}"
        ) from error


def _parent(path: str) -> str:
    """The directory of ``path`` (``Path(path).parent``, as a str)."""
    return os.path.dirname(path) or os.curdir


def _check_key_directory(directory: str) -> None:
    info = os.lstat(directory)
    if stat.S_ISLNK(info.st_mode):
        info = os.stat(directory)  # a config directory may be a link the user made
    if hasattr(os, "getuid") and info.st_uid not in (os.getuid(), 0):
        raise SecretUnavailable(
            f"secret key directory {directory} is owned by uid {info.st_uid}, not by this "
            f"user: whoever owns it can replace the key. Use a directory of your own "
            f"($XDG_CONFIG_HOME) or set ${environment.SECRET}"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise SecretUnavailable(
            f"secret key directory {directory} is writable by other users, who could replace "
            f"the key: chmod go-w {directory}, or set ${environment.SECRET}"
        )


def _read_key(path: str) -> bytes:
    """The key in ``path``; FileNotFoundError, _Malformed, or SecretUnavailable (unsafe)."""
    try:
        descriptor = os.open(path, _READ_FLAGS)
    except OSError as error:
        if isinstance(error, FileNotFoundError):
            raise
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise SecretUnavailable(
                f"secret key {path} is a symbolic link, which is not followed: remove it "
                f"(a new key is made) or set ${environment.SECRET}"
            ) from None
        raise
    with os.fdopen(descriptor, "rb") as key_file:
        info = os.fstat(descriptor)
        remedy = f"remove it (a new key is made) or set ${environment.SECRET}"
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
                f"so make a new one: remove it, or set ${environment.SECRET}"
            )
        data = key_file.read(_SECRET_LIMITS[1] + 1)
    low, high = _SECRET_LIMITS
    if not low <= len(data) <= high:
        raise _Malformed(f"held {len(data)} bytes, not a key of {low} to {high} bytes")
    return data


def _write_key(path: str, *, replace: bool) -> bytes:
    """Write a new key atomically: a temporary file, fsync, then link (or rename) into place."""
    import tempfile

    secret = os.urandom(_SECRET_SIZE)
    descriptor, temporary = tempfile.mkstemp(prefix=".secret-", dir=_parent(path))
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
    _sync_directory(_parent(path))
    return secret


def _sync_directory(directory: str) -> None:
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

    def __init__(self, directory: str) -> None:
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


def untrusted_reason(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be trusted to hold or vouch for secrets, or None when it can."""
    info = os.stat(path)
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return f"is owned by uid {info.st_uid}, not by this user"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "is writable by other users"
    return None


def forget_cached_secrets() -> None:
    """Drop secrets read so far (the next use reads the key file again)."""
    with _secret_lock:
        _secrets_by_path.clear()
