"""Timing helpers: medians of repeated runs, every system measured in the same process."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

TARGET_REPEAT_SECONDS = 0.15


def per_call(call: Callable[[], object], *, calls: int, repeats: int) -> float:
    """Median over ``repeats`` runs of the mean seconds per call of up to ``calls`` calls
    (fewer for slow systems: about ``TARGET_REPEAT_SECONDS`` a run is enough for a median)."""
    call()  # warm: first-use costs (opening, imports) are not a hit's
    start = time.perf_counter()
    for _ in range(10):
        call()
    estimate = (time.perf_counter() - start) / 10
    calls = max(10, min(calls, int(TARGET_REPEAT_SECONDS / max(estimate, 1e-9))))
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                call()
            samples.append((time.perf_counter() - start) / calls)
    finally:
        if gc_was_enabled:
            gc.enable()
    return statistics.median(samples)


def each_once(calls: list[Callable[[], object]], *, repeats: int) -> float:
    """Median over ``repeats`` rounds of the mean seconds of calls that each run once
    (misses: every call must be new, so a round consumes its own list)."""
    per_round = max(1, len(calls) // repeats)
    samples = []
    for start_index in range(0, per_round * repeats, per_round):
        batch = calls[start_index : start_index + per_round]
        start = time.perf_counter()
        for call in batch:
            call()
        samples.append((time.perf_counter() - start) / len(batch))
    return statistics.median(samples)


def once(call: Callable[[], object], *, repeats: int) -> float:
    """Median seconds of one call, repeated (for slow operations)."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def interleaved_per_call(
    calls: dict[str, Callable[[], object]], *, repeats: int, sample_seconds: float = 0.02
) -> dict[str, float]:
    """Median seconds per call of each system, the systems taking turns within every round
    (a neighbour's load on the shared machine then falls on all of them alike). A fast call
    is repeated within its turn until the turn lasts about ``sample_seconds``."""
    inner = {}
    for name, call in calls.items():
        call()  # warm: first-use costs (opening, imports, the page cache) are not a hit's
        start = time.perf_counter()
        call()
        estimate = time.perf_counter() - start
        if estimate < 1e-3:  # one fast call is mostly the timer's own noise
            start = time.perf_counter()
            for _ in range(100):
                call()
            estimate = (time.perf_counter() - start) / 100
        inner[name] = max(1, min(1_000_000, int(sample_seconds / max(estimate, 1e-9))))
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for round_index in range(repeats):
            # The order turns too: no system always runs right after the slowest one.
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                call, count = calls[name], inner[name]
                start = time.perf_counter()
                for _ in range(count):
                    call()
                samples[name].append((time.perf_counter() - start) / count)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


def interleaved_once(
    calls: dict[str, Callable[[int], object]],
    *,
    repeats: int,
    after: dict[str, Callable[[int], object]] | None = None,
) -> dict[str, float]:
    """Median seconds of one call of each system, taking turns within every round. Each call
    gets its round's number (a miss uses a new key per round); ``after[name]`` then cleans
    up outside the timing (a 100 MB entry deleted before the next is written)."""
    cleanup = after or {}
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name](round_index)
            samples[name].append(time.perf_counter() - start)
            if name in cleanup:
                cleanup[name](round_index)
    return {name: statistics.median(values) for name, values in samples.items()}
