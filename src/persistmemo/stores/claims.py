"""Claims on keys as byte-range locks on one file: one computation per key, at a syscall's cost.

A claim is a POSIX record lock (``fcntl.lockf``) on one byte of the store's
``cache.db-claims`` file, at an offset derived from the key. It takes no write transaction,
and the system drops it when its holder dies, so a claim needs no renewal and no take-over
of a dead holder. Record locks belong to a process: threads are kept apart by the offsets
held here, one object per file in each process (closing any descriptor of the file would
drop all of a process's locks on it, so the file is opened once), and a forked child holds
none of its parent's. A holder that is stopped (``SIGSTOP``, a suspended job) keeps its
lock: once it has been seen stopped for a lease on end, one waiter takes the key's second
byte and computes. Where these locks are missing (Windows) a store keeps lease rows
instead; where the file cannot be opened or locked, a caller computes unclaimed (one
warning). Why: docs/guarantees.md#one-computation-per-key.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import sys
import threading
import time
from binascii import a2b_base64

from persistmemo._deferred import load_before_fork
from persistmemo._keys.layout import DIGEST_CHARACTERS, KEY_FORMAT

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from blake3 import blake3
else:

    def blake3(data: bytes) -> object:
        """blake3's hasher, imported at the first key that is not a result's (those are
        rare): a re-run that only hits never loads blake3 (the cold-start budget,
        docs/architecture.md)."""
        _load_blake3()
        return globals()["blake3"](data)

    def _load_blake3() -> None:
        from blake3 import blake3 as hasher

        globals()["blake3"] = hasher

    load_before_fork(_load_blake3)


try:
    import fcntl
except ImportError:  # Windows: lease rows instead
    fcntl = None  # type: ignore[assignment]

CLAIMS_FILE = "cache.db-claims"
"""Named after the database: diskcache's own check leaves such files alone."""

_OFFSETS = 1 << 62
"""Offsets a key's byte is chosen from: two keys claimed at once share one with chance
~2**-62, and then one merely waits for the other. The byte ``_OFFSETS`` further on is the
key's take-over byte."""

_FLAGS = (
    os.O_RDWR
    | os.O_CREAT
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_HELD_ELSEWHERE = (errno.EAGAIN, errno.EACCES)


def offset_of(key: str) -> int:
    """The byte of the claims file that stands for ``key``: a result's key ends in a digest
    of its call already (22 characters of base64: layout.py), 12 of which, 72 bits, give
    it; any other key is hashed."""
    if key[-DIGEST_CHARACTERS - 1 : -DIGEST_CHARACTERS] == ":" and key.startswith(KEY_FORMAT):
        try:  # the digest's characters 8 to 20: three whole groups of base64, 9 bytes
            tail = a2b_base64(key[-14:-2].translate(_FROM_URL_SAFE))
            return int.from_bytes(tail, "little") % _OFFSETS
        except ValueError:  # binascii.Error: not base64, so not a digest
            pass
    return int.from_bytes(blake3(key.encode()).digest(8), "little") % _OFFSETS


_FROM_URL_SAFE = str.maketrans("-_", "+/")


def claims_available() -> bool:
    """Whether this platform has record locks (else a store keeps lease rows)."""
    return fcntl is not None


class KeyClaims:
    """The claims this process holds on the keys of one store directory (``claims_in``)."""

    __slots__ = (
        "_descriptor",
        "_foreign",
        "_guard",
        "_held",
        "_mode",
        "_path",
        "_stopped",
        "foreign_wait",
    )

    def __init__(self, path: str, mode: int) -> None:
        self._path = path
        self._mode = mode
        self._descriptor: int | None = None
        self._held: dict[int, str] = {}  # offset: the token of the claim
        # offset: (the holder seen stopped, since when, last seen so)
        self._stopped: dict[int, tuple[int, float, float]] = {}
        # offset: (another user's process seen holding it, since when, whether told)
        self._foreign: dict[int, tuple[int, float, bool]] = {}
        self.foreign_wait: Callable[[str], None] | None = None
        """Told, once per wait, when another user's process has held a key past ``patience``."""
        self._guard = threading.Lock()

    def try_claim(self, key: str, token: str, patience: float) -> bool:
        """Claim ``key`` for ``token``; False when another thread or process holds it.

        A holder seen stopped (``SIGSTOP``, a suspended job) for ``patience`` seconds on end
        is taken over: one waiter then takes the key's second byte, and computes. Raises
        OSError when the file cannot be opened or locked (the caller computes unclaimed).
        """
        offset = offset_of(key)
        if not self._lock(offset, token):
            return self._take_over_if_stopped(key, offset, token, patience)
        # No calls once the lock is taken, up to the caller's holding it: a call may raise
        # RecursionError at the limit, and the claim would be held by nobody.
        if offset in self._stopped:
            del self._stopped[offset]
        if offset in self._foreign:
            del self._foreign[offset]
        return True

    def _lock(self, offset: int, token: str) -> bool:
        with self._guard:
            if offset in self._held:
                return False
            descriptor = self._open()
            self._held[offset] = token
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except BaseException as error:
            with self._guard:
                self._held.pop(offset, None)
            if isinstance(error, OSError) and error.errno in _HELD_ELSEWHERE:
                return False
            raise
        return True

    def _take_over_if_stopped(self, key: str, offset: int, token: str, patience: float) -> bool:
        pid = _holder_pid(self._descriptor, offset) if self._descriptor is not None else 0
        now = time.monotonic()
        if pid <= 0:
            self._stopped.pop(offset, None)
            return False
        if not _stopped(pid):
            self._stopped.pop(offset, None)
            self._tell_if_foreign(key, offset, pid, patience)
            return False
        seen = self._stopped.get(offset)
        # Stopped since the first poll that saw it so, if the polls since saw it so too.
        since = seen[1] if seen is not None and seen[0] == pid and now - seen[2] < 1.0 else now
        self._stopped[offset] = (pid, since, now)
        if now - since < patience:
            return False
        return self._lock(offset + _OFFSETS, token)  # the take-over byte: one waiter wins it

    def _tell_if_foreign(self, key: str, offset: int, pid: int, patience: float) -> None:
        """Say (once per holder) that another user's process holds ``key``'s claim."""
        report = self.foreign_wait
        if report is None or not _foreign(pid):
            return
        seen = self._foreign.get(offset)
        now = time.monotonic()
        if seen is None or seen[0] != pid:
            self._foreign[offset] = (pid, now, False)
        elif now - seen[1] >= patience and not seen[2]:
            self._foreign[offset] = (pid, seen[1], True)
            report(
                f"the claim on {key} (or on the whole claims file) has been held for "
                f"{patience:g} s by process {pid} of another user: waiting for it"
            )

    def holder(self, key: str) -> str | None:
        """The token of this process's claim on ``key``, or None (another process's claim
        needs no take-over: the system drops it with its holder)."""
        offset = offset_of(key)
        return self._held.get(offset) or self._held.get(offset + _OFFSETS)

    def holds(self, key: str, token: str) -> bool:
        """Whether ``token``'s claim on ``key`` is held now."""
        return self.holder(key) == token

    def release(self, key: str, token: str) -> None:
        """Drop ``token``'s claim on ``key`` (nothing when it holds none)."""
        first = offset_of(key)
        for offset in (first, first + _OFFSETS):
            self._release_offset(offset, token)

    def release_left_behind(self, left_behind: Callable[[str], bool]) -> None:
        """Drop the claims whose token ``left_behind(token)`` says no computation holds."""
        for offset, token in list(self._held.items()):
            if left_behind(token):
                self._release_offset(offset, token)

    def _release_offset(self, offset: int, token: str) -> None:
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
        self._stopped = {}
        self._foreign = {}
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


def _foreign(pid: int) -> bool:
    """Whether process ``pid`` runs as another user (Linux's /proc tells)."""
    try:
        return os.stat(f"/proc/{pid}").st_uid != os.getuid()
    except OSError:
        return False


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


def release_left_behind(left_behind: Callable[[str], bool]) -> None:
    """``KeyClaims.release_left_behind`` for every claims file this process has open."""
    for claims in list(_claims.values()):
        claims.release_left_behind(left_behind)


def _after_fork_in_child() -> None:
    global _claims_guard
    _claims_guard = threading.Lock()
    for claims in list(_claims.values()):
        claims.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
