"""One computation per key across threads and processes: leases kept in the store itself.

The first caller to claim a missed key computes it while a background thread renews its
lease (a lease row; a lock needs none: stores/claims.py); the others poll the store and
return the result, or raise the failure the holder recorded before it released its claim.
The rules: docs/guarantees.md#one-computation-per-key.
"""

from __future__ import annotations

import collections
import contextvars
import itertools
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

from persistmemo._codec.decoding import decode_value
from persistmemo._codec.encoding import encode_value
from persistmemo._keys.layout import identity_of
from persistmemo._memo.responses import response_in
from persistmemo._naming import module_name
from persistmemo.errors import ComputationFailed, CorruptEntry, UnstorableValue
from persistmemo.stores.base import FAILURE_PREFIX, MISSING, Lease
from persistmemo.stores.claims import release_left_behind

# No typing at run time (the cold-start budget, docs/architecture.md): for type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    from persistmemo.stores.base import StoreBackend as Store

    T = TypeVar("T")


IDLE_INTERVAL = 60.0
FIRST_POLL = 0.002
LONGEST_POLL = 0.05


# The claims held, per thread and per asyncio task (a context variable): a caller already
# holding a key (recursion into its own arguments) computes instead of waiting for itself.
_held: contextvars.ContextVar[dict[str, Lease]] = contextvars.ContextVar("persistmemo_leases")
_NONE_HELD: dict[str, Lease] = {}  # never changed: a context's claims are set anew


def lease_for(key: str) -> Lease | None:
    """The lease this thread or task holds on ``key`` while computing it, if any."""
    return _held.get(_NONE_HELD).get(key)


def _poll_delays() -> Iterator[float]:
    delay = FIRST_POLL
    while True:
        yield delay
        delay = min(delay * 1.5, LONGEST_POLL)


def compute_once(
    store: Store, key: str, read: Callable[[], object], compute: Callable[[], T]
) -> tuple[object, bool]:
    """``(value, computed)``: the stored value once someone computed it, or ours."""
    held = _held.get(_NONE_HELD)
    if key in held:
        return compute(), True
    if _unreleased:
        _release_pending()  # claims a RecursionError left for a later frame
    token = _new_token()
    entered = False
    if not store.try_lease(key, token):
        found = _wait_for_claim(store, key, token, read)
        if found is not MISSING:
            return found, False
    try:
        lease, handle, context = _hold(store, key, token, held)
        entered = True
        try:
            found = read()  # stored while we were claiming
            if found is not MISSING:
                return found, False
            try:
                return compute(), True
            except Exception as error:
                _record_failure(store, key, error)
                raise
        finally:
            _let_go(store, key, token, lease, handle, context)
    except BaseException:
        if not entered:  # claimed, then struck before holding (a RecursionError, Ctrl-C)
            _left_unheld(store, key, token)
        if not _held.get(_NONE_HELD):  # this thread's outermost claim: the stack is short again
            _release_left_behind()
        raise


def _hold(
    store: Store, key: str, token: str, held: dict[str, Lease]
) -> tuple[Lease, int, contextvars.Token[dict[str, Lease]]]:
    """Start holding ``key``'s claim for ``token`` (a plain call, not a context manager:
    every miss passes here): its lease, keeper handle and context token, for ``_let_go``."""
    _live_tokens.add(token)
    lease = Lease(key, token)
    context = _held.set({**held, key: lease})
    # A claim held as a lock lasts as long as its holder: nothing to renew.
    handle = _keeper.hold(store, key, token) if store.leases_expire else 0
    return lease, handle, context


def _wait_for_claim(store: Store, key: str, token: str, read: Callable[[], object]) -> object:
    """Poll until ``key`` is stored (its value) or claimed for ``token`` (MISSING); raises
    the failure of the computation waited for."""
    waiting, delays, found = _Waiting(store, key, token, read), _poll_delays(), _STILL_WAITING
    while found is _STILL_WAITING:
        time.sleep(next(delays))
        found = waiting.poll()
    return found


_STILL_WAITING = object()


class _Waiting:
    """One caller's wait for a key another caller claimed: what each poll does after its
    sleep (sync and async waits alike)."""

    def __init__(self, store: Store, key: str, token: str, read: Callable[[], object]) -> None:
        self._store, self._key, self._token, self._read = store, key, token, read
        self._since = time.time()
        self._next_holder_check = time.monotonic() + HOLDER_CHECK_AFTER

    def poll(self) -> object:
        """The stored value, MISSING once the key is claimed for us, or _STILL_WAITING."""
        store, key = self._store, self._key
        found = self._read()
        if found is not MISSING:
            return found
        _raise_if_failed(store, key, self._since)
        if time.monotonic() >= self._next_holder_check:
            _take_over_if_holder_died(store, key)
            self._next_holder_check = time.monotonic() + HOLDER_CHECK_AFTER
        if store.try_lease(key, self._token):
            return MISSING
        return _STILL_WAITING


async def compute_once_async(
    store: Store, key: str, read: Callable[[], object], compute: Callable[[], Awaitable[T]]
) -> tuple[object, bool]:
    """``compute_once`` for coroutines: waiting yields to the event loop."""
    held = _held.get(_NONE_HELD)
    if key in held:
        return await compute(), True
    if _unreleased:
        _release_pending()
    token = _new_token()
    entered = False
    if not store.try_lease(key, token):
        found = await _wait_for_claim_async(store, key, token, read)
        if found is not MISSING:
            return found, False
    try:
        lease, handle, context = _hold(store, key, token, held)
        entered = True
        try:
            found = read()
            if found is not MISSING:
                return found, False
            try:
                return await compute(), True
            except Exception as error:
                _record_failure(store, key, error)
                raise
        finally:
            _let_go(store, key, token, lease, handle, context)
    except BaseException:
        if not entered:
            _left_unheld(store, key, token)
        if not _held.get(_NONE_HELD):
            _release_left_behind()
        raise


async def _wait_for_claim_async(
    store: Store, key: str, token: str, read: Callable[[], object]
) -> object:
    """``_wait_for_claim`` for coroutines: waiting yields to the event loop."""
    import asyncio  # only coroutines wait this way; plain imports stay light

    waiting, delays, found = _Waiting(store, key, token, read), _poll_delays(), _STILL_WAITING
    while found is _STILL_WAITING:
        await asyncio.sleep(next(delays))
        found = waiting.poll()
    return found


def _release_left_behind() -> None:
    """Release the claims of this thread that no computation holds: a RecursionError can
    strike between a claim and its holding (any call may raise it at the limit), where
    nothing could queue its release; other processes would wait for it while this one
    lives. Run where the stack is short again."""
    _release_pending()
    thread = str(threading.get_ident())
    release_left_behind(
        lambda token: token.split("|")[2:3] == [thread] and token not in _live_tokens
    )


def _left_unheld(store: Store, key: str, token: str) -> None:
    """Queue the release of a claim that was taken but never held (C calls only: there may
    be no stack for more); the frames unwinding above, or the next claim, release it."""
    _live_tokens.discard(token)
    _unreleased.append((store, key, token, None, 0))


# This process's recent failures, so that waiting threads raise the holder's own exception.
_failures: dict[tuple[int, str], tuple[float, BaseException]] = {}
_FAILURES_KEPT = 256


def _record_failure(store: Store, key: str, error: BaseException) -> None:
    """Tell the callers waiting for ``key`` that its computation failed (before release)."""
    try:
        now = time.time()
        if len(_failures) >= _FAILURES_KEPT:
            _failures.clear()
        _failures[(id(store), key)] = (now, error)
        try:
            pickled: bytes | None = encode_value(error, allow_pickle=store.pickle_allowed)
        except UnstorableValue:
            pickled = None
        described = f"{module_name(type(error).__module__)}.{type(error).__qualname__}"
        text = f"{described}: {error}"
        if response_in(error) is not None:
            # raise_for_status()'s error keeps the response, with its request; its text
            # names the URL, with any key in its query.
            pickled = None
            text = f"{described} (its message, naming a request's URL, is not shared)"
        record = {
            "at": now,
            "pid": os.getpid(),
            "error": text,
            "pickled": pickled if store.pickle_allowed else None,
        }
        # Kept one lease long: every caller waiting now polls within it, and callers that
        # arrive after the failure compute again.
        store.write(
            FAILURE_PREFIX + key,
            encode_value(record, allow_pickle=False),
            ttl=max(store.lease, 1.0),
            tag=identity_of(key),
            seconds=0.0,
        )
    except Exception:
        pass


def _raise_if_failed(store: Store, key: str, waiting_since: float) -> None:
    """Raise the failure of the computation we waited for, if it failed since we began."""
    local = _failures.get((id(store), key))
    if local is not None and local[0] >= waiting_since:
        raise local[1]
    data = store.read(FAILURE_PREFIX + key)
    if data is MISSING:
        return
    try:
        record: Any = decode_value(bytes(data), allow_pickle=False)  # type: ignore[arg-type]
        failed_at = float(record["at"])
    except (CorruptEntry, KeyError, TypeError, ValueError):
        return
    if failed_at < waiting_since:
        return  # an earlier failure: the computation we wait for is a new one
    pickled = record.get("pickled")
    if pickled and store.pickle_allowed:
        try:
            rebuilt = decode_value(pickled, allow_pickle=True)
        except CorruptEntry:
            rebuilt = None
        if isinstance(rebuilt, BaseException):
            raise rebuilt
    raise ComputationFailed(
        f"the computation this call waited for failed in process {record.get('pid')}: "
        f"{record.get('error')}"
    )


def _new_token() -> str:
    # Host and pid first: a waiter on the same host can tell its holder died (see below);
    # the thread: its claims left behind are found (_release_left_behind). Then a number
    # this process never issues twice, after random bytes drawn once per process, so that a
    # later process given the same pid issues other tokens.
    prefix = _token_prefix or _new_token_prefix()
    return f"{prefix}{threading.get_ident()}|{next(_token_numbers):x}{_token_nonce}"


_token_prefix = ""
_token_nonce = ""
_token_numbers = itertools.count()


def _new_token_prefix() -> str:
    global _token_prefix, _token_nonce
    _token_nonce = "-" + os.urandom(8).hex()
    _token_prefix = f"{_host()}|{os.getpid()}|"
    return _token_prefix


_host_identity: str | None = None


def _host() -> str:
    """This host and pid namespace: the name, the boot and the pid namespace, so that a
    container sharing the host's name (or another machine with a default one) is never
    taken for this one, where pids mean other processes."""
    global _host_identity
    if _host_identity is None:
        parts = [os.uname().nodename if hasattr(os, "uname") else ""]
        try:
            with open("/proc/sys/kernel/random/boot_id") as boot:
                parts.append(boot.read().strip())
            parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
        except OSError:
            parts.append("no-boot-id")  # not Linux: never matched by _holder_is_gone
        _host_identity = "/".join(parts).replace("|", "_")
    return _host_identity


HOLDER_CHECK_AFTER = 0.5
"""Seconds a caller waits before it asks whether the lease's holder is still alive."""


def _holder_is_gone(token: str) -> bool:
    """Whether ``token`` was issued by a process of this host that no longer exists.

    Only on POSIX (``kill(pid, 0)`` probes; on Windows ``os.kill`` would terminate), and
    only for another process of the same host: a holder elsewhere is waited for until its
    lease runs out, as before.
    """
    host, _, rest = token.partition("|")
    pid_text = rest.partition("|")[0]
    if os.name != "posix" or host != _host() or "no-boot-id" in host or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid() or pid <= 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, another user's
    return False


def _take_over_if_holder_died(store: Store, key: str) -> None:
    """Release the lease of a holder that was killed (a crashed run being resumed), so the
    next claim succeeds now rather than when the lease runs out; and a claim of this very
    process that no computation holds (a RecursionError struck between the claim and the
    computation), which would otherwise keep this process's callers waiting for nobody."""
    holder = store.lease_holder(key)
    if holder and (_holder_is_gone(holder) or _left_behind_here(holder)):
        store.release_lease(key, holder)


# The tokens of the claims a computation of this process holds now (compute_once).
_live_tokens: set[str] = set()


def _left_behind_here(token: str) -> bool:
    pid = token.split("|", 2)[1:2]
    return pid == [str(os.getpid())] and token not in _live_tokens


def _let_go(store: Store, key: str, token: str, lease: Lease, handle: int, context: Any) -> None:
    # A RecursionError may leave no stack for the store's calls here: the claim is queued
    # (C calls only, no frame needed) and released by this frame, a frame further up, or
    # the keeper thread, whichever first has the stack for it.
    _held.reset(context)
    _unreleased.append((store, key, token, lease, handle))
    _live_tokens.discard(token)
    _release_pending()


# Claims waiting to be released: (store, key, token, lease, keeper handle).
_unreleased: collections.deque[tuple[Any, str, str, Lease | None, int]] = collections.deque()


def _release_pending() -> None:
    while _unreleased:
        try:
            item = _unreleased.pop()
        except IndexError:
            return  # another thread took the last one
        store, key, token, lease, handle = item
        try:
            if handle:
                _keeper.drop(handle)
            if lease is None or not lease.released:  # a result's write releases a lease row
                store.release_lease(key, token)
        except RecursionError:
            _unreleased.append(item)
            return


class _LeaseKeeper:
    """Renews the leases this process holds, every third of their duration."""

    def __init__(self) -> None:
        self._leases: dict[int, tuple[Store, str, str]] = {}
        self._next_handle = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._interval = IDLE_INTERVAL

    def hold(self, store: Store, key: str, token: str) -> int:
        with self._lock:
            self._next_handle += 1
            self._leases[self._next_handle] = (store, key, token)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._renew_forever, name="persistmemo-leases", daemon=True
                )
                self._thread.start()
            # Waking the thread costs a switch on every miss: only when it would otherwise
            # sleep past this lease's first renewal.
            if store.lease / 3 < self._interval:
                self._interval = store.lease / 3
                self._wake.set()
            return self._next_handle

    def drop(self, handle: int) -> None:
        with self._lock:
            self._leases.pop(handle, None)

    def _renew_forever(self) -> None:
        while True:
            with self._lock:
                held = list(self._leases.values())
            interval = min((store.lease / 3 for store, _, _ in held), default=IDLE_INTERVAL)
            self._interval = interval
            self._wake.clear()
            if self._wake.wait(interval):
                continue  # a new lease: recompute the interval, renew nothing yet
            _release_pending()  # claims a too-deep failure could not release itself
            with self._lock:
                still_held = set(self._leases.values())
            for store, key, token in held:
                if (store, key, token) in still_held:
                    store.renew_lease(key, token)

    def after_fork_in_child(self) -> None:
        # The renewing thread did not survive the fork, and the parent's leases are not ours.
        self.__init__()  # type: ignore[misc]


def _after_fork_in_child() -> None:
    global _token_prefix
    _token_prefix = ""  # another pid, and random bytes of its own
    _keeper.after_fork_in_child()


_keeper = _LeaseKeeper()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
