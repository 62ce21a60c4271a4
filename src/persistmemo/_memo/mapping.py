"""``f.map(...)``: many calls at once, computing only the misses.

Hits are looked up first, in batches; the misses run in this process, in worker processes
that call the memoized function themselves (so each result is stored when done, and leases
hold across workers), or as concurrent awaits for ``async def``, with an optional progress
line. The rules: docs/options.md#fmap.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from persistmemo.errors import PersistmemoWarning
from persistmemo.stores.base import MISSING

if TYPE_CHECKING:
    from concurrent.futures import Executor, Future

BATCH = 8192
"""Keys per store read of hits (the disk store reads them with one scan of their key range
when they are most of its rows: stores/entry_reader.py); the encoded values of one batch
are in memory at once, besides the decoded results."""

PROGRESS_AFTER = 0.5
"""Seconds a map runs before its progress line appears (on a terminal)."""

ASYNC_WORKERS = 16


class MapTarget(Protocol):
    """What mapping needs of a memoized function (decorator.py provides it)."""

    store: Any
    options: Any
    hits: int
    misses: int

    def key(self, *args: Any, **kwargs: Any) -> str: ...

    def keys_of(self, calls: list[tuple[Any, ...]]) -> list[str]: ...

    def lookup(self, data: Any) -> object: ...

    def lookup_many(self, found: dict[str, Any]) -> dict[str, object]: ...

    def read_entries(self, keys: list[str]) -> dict[str, Any]: ...

    def read_entry(self, key: str) -> Any: ...

    def inputs_unchanged(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool: ...

    def save(self, key: str, value: Any, seconds: float) -> Any: ...


def _calls(iterables: Sequence[Iterable[Any]]) -> list[tuple[Any, ...]]:
    if not iterables:
        raise TypeError("map() needs at least one iterable of arguments")
    return list(zip(*iterables, strict=False))  # like map(): the shortest one ends it


def _read_hits(target: MapTarget, unique: list[str]) -> dict[str, object]:
    """The decoded hits among ``unique`` (distinct keys), read in batches where the store
    can: in key order when there are several, so that each is one range of its index."""
    if len(unique) <= BATCH:
        return target.lookup_many(target.read_entries(unique))
    unique = sorted(unique)
    found: dict[str, object] = {}
    for start in range(0, len(unique), BATCH):
        found.update(target.lookup_many(target.read_entries(unique[start : start + BATCH])))
    return found


class Progress:
    """One status line on stderr, rewritten in place; silent unless wanted."""

    def __init__(self, name: str, total: int, hits: int, wanted: bool | None) -> None:
        self.name = name
        self.total = total
        self.hits = hits
        self.done = hits
        self.misses = 0
        self.started = time.monotonic()
        self.shown = False
        if wanted is None:
            isatty = getattr(sys.stderr, "isatty", None)
            wanted = bool(isatty and isatty())
            self.delay = PROGRESS_AFTER
        else:
            self.delay = 0.0
        self.enabled = wanted and total > 0

    def advance(self) -> None:
        self.done += 1
        self.misses += 1
        if self.enabled and time.monotonic() - self.started >= self.delay:
            self._show()

    def finish(self) -> None:
        if self.enabled and self.shown:
            self._show()
            sys.stderr.write("\n")
            sys.stderr.flush()

    def _show(self) -> None:
        elapsed = time.monotonic() - self.started
        rate = self.misses / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = f"{left / rate:.0f} s left" if rate > 0 and left else ""
        line = (
            f"\r{self.name}: {self.done}/{self.total} ({self.hits} hits, {self.misses} "
            f"computed, {rate:.1f}/s) {eta}"
        )
        sys.stderr.write(line.ljust(78))
        sys.stderr.flush()
        self.shown = True


def map_sync(
    target: MapTarget,
    call: Callable[..., Any],
    iterables: Sequence[Iterable[Any]],
    workers: int | None,
    progress: bool | None,
    name: str,
    executor: Executor | None = None,
) -> list[Any]:
    """The sync ``f.map`` (docs/options.md#fmap)."""
    keys, hits, missing, meter, distinct = _plan(target, iterables, progress, name)
    try:
        if executor is not None:
            hits.update(_in_executor(target, call, missing, executor, meter))
        elif workers is None or workers <= 1 or len(missing) <= 1:
            for key, args in missing.items():
                hits[key] = call(*args)
                meter.advance()
        else:
            computed = _in_processes(call, missing, workers, meter, name)
            hits.update(_as_stored(target, computed))
    finally:
        meter.finish()
    return _in_order(keys, hits, distinct, target)


def _as_stored(target: MapTarget, computed: dict[str, object]) -> dict[str, object]:
    """Results computed in worker processes arrive as unpickled copies, their arrays
    writable; with ``memo(mmap=True)`` each is read back from the store as a hit reads it
    (read-only maps), as a miss computed here returns it. A result the store did not keep
    is the worker's, as a miss's would be."""
    if target.options.mmap and computed:
        computed.update(_read_hits(target, list(computed)))
    return computed


def _plan(
    target: MapTarget, iterables: Sequence[Iterable[Any]], progress: bool | None, name: str
) -> tuple[list[str], dict[str, object], dict[str, tuple[Any, ...]], Progress, bool]:
    """Keys in input order, the hits read in batches, the distinct misses, the meter, and
    whether the keys are distinct."""
    calls = _calls(iterables)
    keys = target.keys_of(calls)
    unique = list(set(keys))
    hits = _read_hits(target, unique)
    missing: dict[str, tuple[Any, ...]]
    if len(hits) == len(unique):  # every key a hit (the usual map of a warm store)
        target.hits += len(keys)
        missing = {}
    else:
        target.hits += sum(1 for key in keys if key in hits)
        missing = _misses(keys, calls, hits)
    meter = Progress(name, len(hits) + len(missing), len(hits), progress)
    return keys, hits, missing, meter, len(unique) == len(keys)


def _misses(
    keys: list[str], calls: list[tuple[Any, ...]], hits: dict[str, object]
) -> dict[str, tuple[Any, ...]]:
    """The calls to compute, one per distinct key that is not a hit."""
    missing: dict[str, tuple[Any, ...]] = {}
    for key, args in zip(keys, calls, strict=True):
        if key not in hits and key not in missing:
            missing[key] = args
    return missing


def _in_order(
    keys: list[str], results: dict[str, object], distinct: bool, target: MapTarget
) -> list[Any]:
    """The results in input order; an input that repeats gets its own copy, as a call would
    (a hit decodes a fresh object each time), so mutating one result leaves the others.
    With ``memo(mmap=True)`` the copy is read again from the store, as a hit reads it: a
    deep copy of read-only arrays would be writable."""
    if distinct:
        return [results[key] for key in keys]
    ordered: list[Any] = []
    given: set[str] = set()
    for key in keys:
        if key in given:
            again = target.lookup(target.read_entry(key)) if target.options.mmap else MISSING
            if again is MISSING:  # not stored (or not mapped): a copy of the one computed
                import copy

                again = copy.deepcopy(results[key])
            ordered.append(again)
        else:
            given.add(key)
            ordered.append(results[key])
    return ordered


def _in_processes(
    call: Callable[..., Any],
    missing: dict[str, tuple[Any, ...]],
    workers: int,
    meter: Progress,
    name: str,
) -> dict[str, object]:
    import pickle
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    try:
        pickle.dumps(call)
    except Exception as error:
        raise TypeError(
            f"{name}.map(workers={workers}) runs misses in worker processes, which import "
            f"{name} by name; it cannot be sent there ({error}). Define it at module level "
            "of an importable module, or leave workers= out to compute in this process."
        ) from None
    context = _worker_context()
    unimportable = _main_unimportable(call, context)
    if unimportable:
        raise TypeError(
            f"{name}.map(workers={workers}) starts its workers with {context.get_start_method()!r}"
            f", which imports {name} from your script again, and {unimportable}. Define it in "
            "an importable module, use the 'fork' start method, or leave workers= out."
        )
    results: dict[str, object] = {}
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    )
    try:
        futures = {}
        with _own_threads_only_warning_hidden():
            for key, args in missing.items():
                try:
                    futures[pool.submit(call, *args)] = key  # starts workers as needed
                except Exception as error:  # an argument that does not pickle, say
                    raise TypeError(f"{name}.map(workers=...): {error}") from error
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                failure = future.exception()
                if failure is not None:
                    raise failure
                results[futures[future]] = future.result()
                meter.advance()
    except BaseException as error:
        # A failure: nothing more starts; what runs in a worker finishes and is stored there
        # (the next run finds it), without this process waiting for it. Ctrl-C: the workers
        # stop too (a terminal sends them the interrupt as well, which a worker would
        # otherwise report as that item's result and go on to the next); what they were
        # computing is lost, the rest is stored.
        workers_running = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        if not isinstance(error, Exception):
            for process in workers_running:
                process.terminate()
        raise
    pool.shutdown(wait=True)
    return results


def _in_executor(
    target: MapTarget,
    call: Callable[..., Any],
    missing: dict[str, tuple[Any, ...]],
    executor: Executor,
    meter: Progress,
) -> dict[str, object]:
    from concurrent.futures import FIRST_COMPLETED, wait

    results: dict[str, object] = {}
    futures: dict[Future[tuple[Any, float]], str] = {}
    failure: BaseException | None = None
    version = _version_of(call)
    stale = 0
    try:
        for key, args in missing.items():
            futures[executor.submit(computed, call, *args, persistmemo_version=version)] = key
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                if future.cancelled():
                    continue
                error = future.exception()
                if error is not None:
                    if failure is None:
                        failure = error
                        for other in pending:
                            other.cancel()  # what runs already cannot be: waited for, stored
                    continue
                key = futures[future]
                value, seconds = future.result()
                if seconds == _RAN_OTHER_CODE:
                    stale += 1
                    results[key] = call(*missing[key])  # here, with this process's code
                    meter.advance()
                    continue
                target.misses += 1
                if target.inputs_unchanged(key, missing[key], {}):
                    value = target.save(key, value, seconds)
                results[key] = value
                meter.advance()
    except BaseException:
        for future in futures:  # Ctrl-C, or a submit that failed: nothing more starts
            future.cancel()
        raise
    if stale:
        import warnings

        warnings.warn(
            f"{stale} of the items given to the executor were computed in this process "
            "instead: its workers run other code for this function (a module or a helper "
            "edited since they started), whose results would be stored under this code's "
            "version. Start a new executor to use it again.",
            PersistmemoWarning,
            stacklevel=4,
        )
    if failure is not None:
        raise failure
    return results


_RAN_OTHER_CODE = -1.0
"""The seconds ``computed`` answers when the worker's code is not the caller's."""


def _version_of(call: Callable[..., Any]) -> str | None:
    """The version of the code behind ``call`` here, or None when it cannot be told."""
    try:
        return str(call.version())  # type: ignore[attr-defined]
    except Exception:
        return None


def computed(
    call: Callable[..., Any], *args: Any, persistmemo_version: str | None = None
) -> tuple[Any, float]:
    """In the executor: the memoized function's own code (not its wrapper, which would read
    and write the store there), and the seconds it took. ``call`` travels as the wrapper,
    which a process pool pickles by name: a worker that imported the function's module (or
    forked with ``__main__``) before it was edited has other code, which is not run (its
    result would be stored under the caller's version): ``_RAN_OTHER_CODE`` then."""
    if persistmemo_version is not None:
        here = _version_of(call)
        if here is not None and here != persistmemo_version:
            return None, _RAN_OTHER_CODE
    started = time.perf_counter()
    value = call.__wrapped__(*args)  # type: ignore[attr-defined]
    return value, time.perf_counter() - started


def _exit_with_parent(parent: int) -> None:
    """In each worker: exit when the mapping process is gone (killed with SIGKILL), rather
    than go on computing the queued items, and holding their claims, for nobody.

    Watched through a pidfd, which becomes readable when that process ends whoever its
    parent is: under ``forkserver`` a worker's parent is the server, and after a kill it
    is init, so ``getppid()`` says nothing about the mapping process.
    """
    import select
    import threading

    try:
        handle: int | None = os.pidfd_open(parent)
    except (AttributeError, OSError):  # no pidfd (Linux < 5.3, other systems), or gone
        handle = None

    def watch() -> None:
        if handle is not None:
            try:
                poller = select.poll()  # not select(): a descriptor past 1023 is refused
                poller.register(handle, select.POLLIN)
                poller.poll()
            except (OSError, ValueError, AttributeError):
                while _alive(parent):
                    time.sleep(0.5)
        else:
            while _alive(parent):
                time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="persistmemo-parent-watch", daemon=True).start()


@contextlib.contextmanager
def _own_threads_only_warning_hidden() -> Iterator[None]:
    """Python 3.12+ warns that forking a multi-threaded process may deadlock the child. When
    the only other threads are persistmemo's own (lease renewal, opening), the stores are
    fork-safe (stores/connections.py): hidden then; a program's own threads still warn."""
    import threading
    import warnings

    others = [t for t in threading.enumerate() if t is not threading.current_thread()]
    if not others or not all(t.name.startswith("persistmemo-") for t in others):
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"This process .* is multi-threaded", DeprecationWarning)
        yield


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it exists
        return True
    return True


def _main_unimportable(call: Callable[..., Any], context: Any) -> str | None:
    """Why a worker started afresh cannot import ``call`` from ``__main__`` (code from
    ``python -c``, a pipe or an interactive session has no file to run again), or None."""
    code = getattr(call, "__wrapped__", call)
    if context.get_start_method() == "fork" or getattr(code, "__module__", None) != "__main__":
        return None
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or not os.path.isfile(path):
        return "your script has no file to import it from (python -c, a pipe, a notebook)"
    return None


def _worker_context() -> Any:
    """The start method of ``f.map``'s workers: the one the program set
    (``multiprocessing.set_start_method``), else ``fork`` on Linux, else the platform's
    default (macOS's system libraries do not survive a fork).

    Measured on 2 workers: fork starts a map of 4 items in ~70 ms, spawn in ~270-320 ms,
    and forkserver and spawn run the user's script again in each worker (a script without an
    ``if __name__ == "__main__":`` guard fails there). The store is fork-safe: a child
    closes every inherited SQLite connection first (stores/connections.py).
    """
    import multiprocessing

    chosen = multiprocessing.get_start_method(allow_none=True)
    if chosen is not None:
        return multiprocessing.get_context(chosen)
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


async def map_async(
    target: MapTarget,
    call: Callable[..., Awaitable[Any]],
    iterables: Sequence[Iterable[Any]],
    workers: int | None,
    progress: bool | None,
    name: str,
) -> list[Any]:
    """The async ``f.map``: misses run concurrently, at most ``workers`` at a time."""
    import asyncio

    keys, hits, missing, meter, distinct = _plan(target, iterables, progress, name)
    limit = asyncio.Semaphore(workers or ASYNC_WORKERS)

    async def one(key: str, args: tuple[Any, ...]) -> None:
        async with limit:
            hits[key] = await call(*args)
            meter.advance()

    tasks = [asyncio.ensure_future(one(key, args)) for key, args in missing.items()]
    try:
        if tasks:
            await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        meter.finish()
    return _in_order(keys, hits, distinct, target)
