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


def timed_call(name: str, x: int) -> None:
    """Print the result and the seconds the call took, for the parent test to read."""
    function = globals()[name]
    start = time.perf_counter()
    value = function(x)
    print(value, f"{time.perf_counter() - start:.3f}", flush=True)
