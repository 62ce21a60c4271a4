"""One computation per key across threads and processes: leases kept in the store itself.

When several callers miss the same key at once, the first to claim it computes; the others
poll the store and return its result as soon as it is there. A claim is a lease: a store
entry added atomically (diskcache ``add`` in a transaction) with an expiry. The holder's
process renews its leases from a background thread while it computes, so a long computation
keeps its claim; a holder that dies (SIGKILL) or is paused (SIGSTOP) stops renewing, and the
others take over once the lease runs out. Releasing compares the token first, so a holder
resumed after its lease expired cannot delete the new holder's lease.

A caller already holding a key (a function that, through recursion, asks for its own key
again) computes instead of waiting for itself; claims are tracked per thread and per asyncio
task through a context variable.

Limits: the lease lives in the store, so it protects callers of one store on one machine
(and, with a shared store, wherever the store reaches). A caller whose store is unusable
computes without a claim.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from persistmemo.store import MISSING

if TYPE_CHECKING:
    from persistmemo.backend import StoreBackend as Store

T = TypeVar("T")

IDLE_INTERVAL = 60.0
FIRST_POLL = 0.002
LONGEST_POLL = 0.05


class Lease:
    """Our claim on one key while we compute it."""

    __slots__ = ("key", "released", "token")

    def __init__(self, key: str, token: str) -> None:
        self.key = key
        self.token = token
        self.released = False  # set by a store write that released it with the value


_held: contextvars.ContextVar[dict[str, Lease]] = contextvars.ContextVar("persistmemo_leases")


def lease_for(key: str) -> Lease | None:
    """The lease this thread or task holds on ``key`` while computing it, if any."""
    return _held.get({}).get(key)


def _poll_delays() -> Iterator[float]:
    delay = FIRST_POLL
    while True:
        yield delay
        delay = min(delay * 1.5, LONGEST_POLL)


def compute_once(
    store: Store, key: str, read: Callable[[], object], compute: Callable[[], T]
) -> tuple[object, bool]:
    """``(value, computed)``: the stored value once someone computed it, or ours."""
    if key in _held.get({}):
        return compute(), True
    token = _new_token()
    delays = _poll_delays()
    while not store.try_lease(key, token):
        time.sleep(next(delays))
        found = read()
        if found is not MISSING:
            return found, False
    with _holding(store, key, token):
        found = read()  # stored while we were claiming
        if found is not MISSING:
            return found, False
        return compute(), True


async def compute_once_async(
    store: Store, key: str, read: Callable[[], object], compute: Callable[[], Awaitable[T]]
) -> tuple[object, bool]:
    """``compute_once`` for coroutines: waiting yields to the event loop."""
    import asyncio  # only coroutines wait this way; plain imports stay light

    if key in _held.get({}):
        return await compute(), True
    token = _new_token()
    delays = _poll_delays()
    while not store.try_lease(key, token):
        await asyncio.sleep(next(delays))
        found = read()
        if found is not MISSING:
            return found, False
    with _holding(store, key, token):
        found = read()
        if found is not MISSING:
            return found, False
        return await compute(), True


def _new_token() -> str:
    return f"{os.getpid()}-{os.urandom(8).hex()}"


@contextmanager
def _holding(store: Store, key: str, token: str) -> Iterator[None]:
    lease = Lease(key, token)
    held = _held.set({**_held.get({}), key: lease})
    handle = _keeper.hold(store, key, token)
    try:
        yield
    finally:
        _keeper.drop(handle)
        _held.reset(held)
        if not lease.released:  # the result's write releases it; errors and misses do not
            store.release_lease(key, token)


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
            with self._lock:
                still_held = set(self._leases.values())
            for store, key, token in held:
                if (store, key, token) in still_held:
                    store.renew_lease(key, token)

    def after_fork_in_child(self) -> None:
        # The renewing thread did not survive the fork, and the parent's leases are not ours.
        self.__init__()  # type: ignore[misc]


_keeper = _LeaseKeeper()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_keeper.after_fork_in_child)
