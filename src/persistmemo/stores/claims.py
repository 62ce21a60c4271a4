"""Claims on keys as byte-range locks on one file: one computation per key, at a syscall's cost.

A claim is a POSIX record lock (``fcntl.lockf``) on one byte of the store's ``claims`` file,
at an offset derived from the key. It takes no write transaction, and the system drops it
when its holder dies, so a claim needs no renewal and no take-over of a dead holder. Record
locks belong to a process: threads are kept apart by the offsets held here, one object per
file in each process (closing any descriptor of the file would drop all of a process's
locks on it, so the file is opened once), and a forked child holds none of its parent's. A
holder that is stopped (``SIGSTOP``, a suspended job) keeps its lock: a waiter computes
unclaimed once the holder has been stopped for longer than a lease. Where these locks are
missing (Windows), or the file cannot be opened for writing, a store keeps lease rows
instead. Why: docs/architecture.md#one-computation-per-key.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import sys
import threading
import time

from blake3 import blake3

try:
    import fcntl
except ImportError:  # Windows: lease rows instead
    fcntl = None  # type: ignore[assignment]

CLAIMS_FILE = "claims"

_OFFSETS = 1 << 62
"""Offsets a key's byte is chosen from: two keys claimed at once share one with chance
~2**-62, and then one merely waits for the other."""

_FLAGS = (
    os.O_RDWR
    | os.O_CREAT
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_HELD_ELSEWHERE = (errno.EAGAIN, errno.EACCES)


def offset_of(key: str) -> int:
    """The byte of the claims file that stands for ``key``."""
    return int.from_bytes(blake3(key.encode()).digest(8), "little") % _OFFSETS


def claims_available() -> bool:
    """Whether this platform has record locks (else a store keeps lease rows)."""
    return fcntl is not None


class KeyClaims:
    """The claims this process holds on the keys of one store directory (``claims_in``)."""

    __slots__ = ("_descriptor", "_guard", "_held", "_mode", "_path", "_refused_since")

    def __init__(self, path: str, mode: int) -> None:
        self._path = path
        self._mode = mode
        self._descriptor: int | None = None
        self._held: dict[int, str] = {}  # offset: the token of the claim
        self._refused_since: dict[int, float] = {}  # offset: when a claim was first refused
        self._guard = threading.Lock()

    def try_claim(self, key: str, token: str, patience: float) -> bool:
        """Claim ``key`` for ``token``; False when another thread or process holds it. True
        without a claim when the holder has been stopped for ``patience`` seconds: the key
        is then computed unclaimed. Raises OSError when the file cannot be opened or locked
        (the caller then uses lease rows)."""
        offset = offset_of(key)
        with self._guard:
            if offset in self._held:
                return False
            descriptor = self._open()
            self._held[offset] = token
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError as error:
            with self._guard:
                self._held.pop(offset, None)
            if error.errno not in _HELD_ELSEWHERE:
                raise
            return self._holder_stopped_since(descriptor, offset, patience)
        self._refused_since.pop(offset, None)
        return True

    def _holder_stopped_since(self, descriptor: int, offset: int, patience: float) -> bool:
        now = time.monotonic()
        first = self._refused_since.setdefault(offset, now)
        if now - first < patience or not _stopped(_holder_pid(descriptor, offset)):
            return False
        self._refused_since.pop(offset, None)
        return True

    def holder(self, key: str) -> str | None:
        """The token of this process's claim on ``key``, or None (another process's claim
        needs no take-over: the system drops it with its holder)."""
        return self._held.get(offset_of(key))

    def holds(self, key: str, token: str) -> bool:
        """Whether ``token``'s claim on ``key`` is held now."""
        return self._held.get(offset_of(key)) == token

    def release(self, key: str, token: str) -> None:
        """Drop ``token``'s claim on ``key`` (nothing when it holds none)."""
        offset = offset_of(key)
        with self._guard:
            if self._held.get(offset) != token or self._descriptor is None:
                return
            # Unlocked before the offset is free here again: a thread that claims it next
            # must not find this process's old lock still in place.
            fcntl.lockf(self._descriptor, fcntl.LOCK_UN, 1, offset)
            del self._held[offset]

    def _open(self) -> int:
        if self._descriptor is None:
            descriptor = os.open(self._path, _FLAGS, self._mode)
            try:
                info = os.fstat(descriptor)
                if not stat.S_ISREG(info.st_mode):
                    raise OSError(errno.EINVAL, f"{self._path} is not a regular file")
                if info.st_uid == os.getuid() and info.st_mode & self._mode != self._mode:
                    os.fchmod(descriptor, info.st_mode & 0o777 | self._mode)  # past the umask
            except OSError:
                os.close(descriptor)
                raise
            self._descriptor = descriptor
        return self._descriptor

    def after_fork_in_child(self) -> None:
        # Record locks are not inherited: the child holds none of its parent's claims. The
        # descriptor is kept (closing it in the child drops only the child's locks).
        self._held = {}
        self._refused_since = {}
        self._guard = threading.Lock()


# struct flock, native alignment: Linux's field order, and the BSDs' (macOS's).
_LINUX_FLOCK = "hhqqi4x"  # l_type, l_whence, l_start, l_len, l_pid
_BSD_FLOCK = "qqihh"  # l_start, l_len, l_pid, l_type, l_whence


def _holder_pid(descriptor: int, offset: int) -> int:
    """The process holding the lock on ``offset`` (0: none now, or not known)."""
    try:
        if sys.platform.startswith("linux"):
            request = struct.pack(_LINUX_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
            kind, _, _, _, pid = struct.unpack(
                _LINUX_FLOCK, fcntl.fcntl(descriptor, fcntl.F_GETLK, request)
            )
        else:
            request = struct.pack(_BSD_FLOCK, offset, 1, 0, fcntl.F_WRLCK, os.SEEK_SET)
            _, _, pid, kind, _ = struct.unpack(
                _BSD_FLOCK, fcntl.fcntl(descriptor, fcntl.F_GETLK, request)
            )
    except (OSError, struct.error):
        return 0
    return int(pid) if kind != fcntl.F_UNLCK else 0


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (a signal, a suspended job, a tracer): Linux's
    /proc tells; elsewhere a stopped holder is waited for."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as status:
            fields = status.read().rpartition(b")")[2].split()
    except OSError:
        return False
    return bool(fields) and fields[0] in (b"T", b"t")


_claims: dict[str, KeyClaims] = {}
_claims_guard = threading.Lock()


def claims_in(directory: str, *, shared: bool) -> KeyClaims:
    """The one ``KeyClaims`` of this process for the store in ``directory``."""
    path = os.path.join(os.path.realpath(directory), CLAIMS_FILE)
    with _claims_guard:
        claims = _claims.get(path)
        if claims is None:
            # Group-writable in a team's store: every member's claims lock the same file.
            claims = _claims[path] = KeyClaims(path, 0o660 if shared else 0o600)
        return claims


def _after_fork_in_child() -> None:
    global _claims_guard
    _claims_guard = threading.Lock()
    for claims in list(_claims.values()):
        claims.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
