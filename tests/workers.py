"""Decorated functions that the cross-process tests run in fresh interpreters.

Configured through the environment, so that every process of one test shares the store, the
call log and the timing: WORK_STORE, WORK_LOG, WORK_LEASE (seconds), WORK_SECONDS (how long
`slow` computes in this process).
"""

from __future__ import annotations

import os
import time

from persistmemo import Store, memo

STORE = Store(
    os.environ["WORK_STORE"],
    lease=float(os.environ.get("WORK_LEASE", "10")),
    timeout=float(os.environ.get("WORK_TIMEOUT", "5")),
)


def log(event: str) -> None:
    with open(os.environ["WORK_LOG"], "a") as file:
        file.write(f"{event} {os.getpid()} {time.time():.6f}\n")


@memo(store=STORE)
def slow(x: int) -> int:
    log("start")
    time.sleep(float(os.environ.get("WORK_SECONDS", "1")))
    log("end")
    return x * 10


@memo(store=STORE, lock=False)
def slow_unlocked(x: int) -> int:
    log("start")
    time.sleep(float(os.environ.get("WORK_SECONDS", "1")))
    return x * 10


@memo(store=STORE)
def failing(x: int) -> int:
    log("start")
    time.sleep(float(os.environ.get("WORK_SECONDS", "1")))
    raise ValueError(f"no result for {x}")


def timed_call(name: str, x: int) -> None:
    """Print the result and the seconds the call took, for the parent test to read.

    An exception is printed as its type name in place of the result.
    """
    function = globals()[name]
    start = time.perf_counter()
    try:
        value = function(x)
    except Exception as error:
        value = type(error).__name__
    print(value, f"{time.perf_counter() - start:.3f}", flush=True)


def truth(x: int) -> bytes:
    """What `varied` returns: sizes on both sides of diskcache's 32 KB file threshold."""
    return bytes([x % 251]) * (10 + (x * 7919) % 70_000)


@memo(store=STORE, lock=False)
def varied(x: int) -> bytes:
    return truth(x)


@memo(store=STORE)
def tripled(x: int) -> list[int]:
    return [x, x, x]


def crash_writer(keys: int) -> None:
    """Write and rewrite entries until killed."""
    import random

    rng = random.Random(os.getpid())
    print("writing", flush=True)
    while True:
        x = rng.randrange(keys)
        if rng.random() < 0.3:
            varied.invalidate(x)
        varied.refresh(x)


def soak(seconds: float, seed: int) -> None:
    """Mixed calls for ``seconds``; prints a JSON line of counts (wrong values must be 0)."""
    import json
    import random

    rng = random.Random(seed)
    counts = {"operations": 0, "wrong": 0, "errors": 0, "hits": 0}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        x = rng.randrange(300)
        action = rng.random()
        try:
            if action < 0.55:
                counts["wrong"] += varied(x) != truth(x)
            elif action < 0.85:
                counts["wrong"] += tripled(x) != [x, x, x]
            elif action < 0.97:
                varied.invalidate(x)
            else:
                tripled.cache_clear()
        except Exception as error:  # the point: none may reach the caller
            counts["errors"] += 1
            print(f"error: {error!r}", flush=True)
        counts["operations"] += 1
    counts["hits"] = varied.cache_info().hits + tripled.cache_info().hits
    print(json.dumps(counts), flush=True)
