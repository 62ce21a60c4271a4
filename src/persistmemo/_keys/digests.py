"""Large buffers keyed by a BLAKE3 digest rather than by their bytes.

str, bytes and bytearray of ``LARGE_BUFFER`` and more, array buffers and frame columns are
keyed by a 256-bit BLAKE3 digest, computed on as many threads as the buffer's size is worth;
a frame's columns are encoded on several threads at once (``on_threads``). blake3 is imported
when the first large value is keyed: small arguments never load it.
"""

from __future__ import annotations

import _thread
import os

from persistmemo._hashing import MULTITHREADED_FROM, hashing_threads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TypeVar

    Item = TypeVar("Item")
    Result = TypeVar("Result")

LARGE_BUFFER = 64 * 1024
"""bytes, bytearray and str of at least this many bytes/characters are keyed by digest."""

DIGEST_SIZE = 32

_ONE_THREAD: set[int] = set()
"""Threads whose hashes stay on themselves: on_threads' workers, while the other workers keep
the cores busy (a BLAKE3 thread pool would cost them more than it gains)."""


def _hashing_threads(size: int | None = None) -> int:
    return 1 if _thread.get_ident() in _ONE_THREAD else hashing_threads(size)


def digest(buffer: bytes | bytearray | memoryview) -> bytes:
    """BLAKE3-256 of a buffer keyed by digest (str and bytes of 64 KiB and more, arrays).

    BLAKE3 hashes a 100 MB array in a few milliseconds on all cores (BLAKE2b takes ~70 ms,
    joblib.hash ~120 ms); the digest is the same however many threads computed it.
    """
    import blake3  # only large arguments need it

    size = buffer.nbytes if isinstance(buffer, memoryview) else len(buffer)
    return blake3.blake3(buffer, max_threads=_hashing_threads(size)).digest(DIGEST_SIZE)


def new_hasher(size: int | None = None) -> Any:
    """A BLAKE3 hasher to feed a column's buffers into, one after another: on as many
    threads as ``size`` bytes (all of them or the first buffer, when known) are worth.

    A hasher on several threads hands every update to its thread pool and waits for it,
    which costs more than hashing a small buffer on the calling thread.
    """
    import blake3  # only frames and columns need it

    return blake3.blake3(max_threads=_hashing_threads(size))


def parallel_threads(items: int, size: int) -> int:
    """How many threads ``items`` pieces of work hashing about ``size`` bytes in all are
    worth: one below MULTITHREADED_FROM, or in a forked child; else one a core, or an item."""
    if items < 2 or size < MULTITHREADED_FROM or hashing_threads() == 1:
        return 1
    return min(items, available_cores())


def available_cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def on_threads(
    work: Callable[[Item], Result],
    items: Sequence[Item],
    threads: int,
    anywhere: Sequence[bool] | None = None,
    weights: Sequence[int] | None = None,
) -> list[Result]:
    """``[work(item) for item in items]``, on ``threads`` threads, the calling one among
    them, for work that spends its time with the GIL released (BLAKE3, numpy's loops).

    An item whose ``anywhere`` is false is worked on by the calling thread (work that may
    run a caller's own code: its thread-locals and its stack are the caller's). When any
    item fails, what the first failing item (in order) raised is raised once all are done,
    as the loop would have raised it.

    ``weights`` (the bytes each item hashes) keep an item's hashes on the thread working on
    it unless it holds more than its share of the shared items' bytes: the threads keep the
    cores busy, and only an item the others cannot balance is hashed on all of them.

    The calling thread never waits for a helper to start: on a busy machine a new thread
    may not run for a while, and then the calling thread takes every item itself. It waits
    only for the items a helper has taken.
    """
    shared = [index for index in range(len(items)) if anywhere is None or anywhere[index]]
    if threads < 2 or len(shared) < 2:
        return [work(item) for item in items]
    import _thread  # only large frames need threads
    import threading

    own = [index for index in range(len(items)) if not (anywhere is None or anywhere[index])]
    results: list[Any] = [None] * len(items)
    failures: dict[int, BaseException] = {}
    pending = iter(shared)
    lock = threading.Lock()
    unfinished = [len(shared)]  # shared items not done yet
    finished = threading.Event()

    def take() -> int | None:
        with lock:
            return next(pending, None)

    def done() -> None:
        with lock:
            unfinished[0] -= 1
            if not unfinished[0]:
                finished.set()

    share = sum(weights[index] for index in shared) / threads if weights else 0

    def shared_work(index: int) -> Result:
        if weights is None or weights[index] > share:
            return work(items[index])
        me = _thread.get_ident()
        _ONE_THREAD.add(me)
        try:
            return work(items[index])
        finally:
            _ONE_THREAD.discard(me)

    def assist() -> None:
        while (index := take()) is not None:
            try:
                results[index] = shared_work(index)
            except BaseException as failure:  # raised in the calling thread
                failures[index] = failure
            done()

    def here(index: int, on_shared: bool = True) -> None:
        try:
            results[index] = shared_work(index) if on_shared else work(items[index])
        except Exception as failure:
            failures[index] = failure
        except BaseException:  # KeyboardInterrupt and the like: no item starts after it
            while take() is not None:
                pass
            raise

    for _ in range(min(threads, len(shared)) - 1):
        # Not threading.Thread: its start() waits until the new thread runs.
        _thread.start_new_thread(assist, ())
    for index in own:
        here(index, on_shared=False)
    while (shared_index := take()) is not None:
        here(shared_index)
        done()
    finished.wait()
    if failures:
        raise failures[min(failures)]
    return results
