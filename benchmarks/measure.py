"""Timing helpers: the systems of a scenario take turns within every round, and every round's
figure is kept (the report gives the median and the spread over rounds)."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

Samples = list[float]


def interleaved_per_call(
    calls: dict[str, Callable[[], object]], *, repeats: int, sample_seconds: float = 0.02
) -> dict[str, Samples]:
    """Seconds per call of each system in each of ``repeats`` rounds, the systems taking
    turns within every round (a neighbour's load on the shared machine then falls on all of
    them alike). A fast call is repeated within its turn until the turn lasts about
    ``sample_seconds``; a turn's figure is the mean of its calls."""
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
    samples: dict[str, Samples] = {name: [] for name in calls}
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
    return samples


def interleaved_once(
    calls: dict[str, Callable[[int], object]],
    *,
    repeats: int,
    after: dict[str, Callable[[int], object]] | None = None,
) -> dict[str, Samples]:
    """Seconds of one call of each system in each of ``repeats`` rounds, taking turns within
    every round. Each call gets its round's number (a miss uses a new key per round);
    ``after[name]`` then cleans up outside the timing (a 100 MB entry deleted before the
    next is written)."""
    cleanup = after or {}
    samples: dict[str, Samples] = {name: [] for name in calls}
    names = list(calls)
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name](round_index)
            samples[name].append(time.perf_counter() - start)
            if name in cleanup:
                cleanup[name](round_index)
    return samples


def quartiles(samples: Samples) -> tuple[float, float, float]:
    """(first quartile, median, third quartile) of the rounds' figures."""
    if len(samples) < 2:
        return samples[0], samples[0], samples[0]
    first, median, third = statistics.quantiles(samples, n=4, method="inclusive")
    return first, median, third
