"""Functions that the f.map tests run in fresh interpreters (store and log from the environment).

MAP_STORE is the store directory, MAP_LOG the file each computation appends a line to.
"""

from __future__ import annotations

import asyncio
import os
import time

from persistmemo import Store, memo

STORE = Store(os.environ["MAP_STORE"])


def log(event: str) -> None:
    with open(os.environ["MAP_LOG"], "a") as file:
        file.write(f"{event} {os.getpid()} {time.time():.6f}\n")


@memo(store=STORE)
def power(base: int, exponent: int = 2) -> int:
    log(f"power {base} {exponent}")
    return base**exponent


@memo(store=STORE)
def spin(x: int) -> int:
    """About 0.2 s of CPU."""
    log(f"start {x}")
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    log(f"end {x}")
    return x * 10


@memo(store=STORE)
def fragile(x: int) -> int:
    log(f"fragile {x}")
    if x == 3:
        raise ValueError("three is not allowed")
    return x


@memo(store=STORE)
def slow(x: int) -> int:
    time.sleep(0.1)
    log(f"slow {x}")
    return x


@memo(store=STORE)
async def fetch(x: int) -> int:
    log(f"fetch-start {x}")
    await asyncio.sleep(0.2)
    log(f"fetch-end {x}")
    return x + 100


@memo(store=STORE, mmap=True)
def ramp(x: int) -> object:
    """An array result returned as read-only maps (memo(mmap=True))."""
    import numpy as np

    log(f"ramp {x}")
    return {"values": np.arange(20_000, dtype=np.float64) + x, "x": x}
