"""The README's main job: an expensive function computed once, then answered from disk.

The first process computes; a second, fresh interpreter asks for the same result and gets it
from the store without running the function, as a script's second run would.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from persistmemo import _environment as environment
from persistmemo import memo

SAMPLES = 8_000_000
_CHILD_CODE = "from persistmemo._demo import _child; _child()"


@memo
def estimate_pi(samples: int, seed: int = 2026) -> float:
    """Monte Carlo estimate of pi: a stand-in for any slow, deterministic computation."""
    rng = random.Random(seed)
    inside = sum(rng.random() ** 2 + rng.random() ** 2 <= 1.0 for _ in range(samples))
    return 4.0 * inside / samples


def _timed_call(samples: int) -> tuple[float, float, bool]:
    before = estimate_pi.cache_info().misses
    start = time.perf_counter()
    value = estimate_pi(samples)
    elapsed = time.perf_counter() - start
    return value, elapsed, estimate_pi.cache_info().misses > before


def _child() -> None:
    value, elapsed, computed = _timed_call(int(sys.argv[2]))
    print(f"{value!r} {elapsed:.9f} {int(computed)}")


def run(store_directory: str | None = None, samples: int = SAMPLES) -> int:
    """Run the demo against ``store_directory`` (a fresh temporary store by default)."""
    directory = store_directory or tempfile.mkdtemp(prefix="persistmemo-demo-")
    os.environ[environment.DIRECTORY] = directory
    print(f"persistmemo demo: estimate_pi({samples:_}) memoized in {directory}\n")

    value, first, computed = _timed_call(samples)
    source = "computed" if computed else "from disk"
    print(f"1. this process, first call : {first * 1e3:10.1f} ms  {source}")
    _, second, _ = _timed_call(samples)
    print(f"2. this process, again      : {second * 1e3:10.3f} ms  from disk")

    child = subprocess.run(
        [sys.executable, "-c", _CHILD_CODE, "child", str(samples)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, environment.DIRECTORY: directory},
    )
    child_value, child_time, child_computed = child.stdout.split()
    source = "computed" if child_computed == "1" else "from disk, function not run"
    print(f"3. a fresh process          : {float(child_time) * 1e3:10.3f} ms  {source}")
    print(f"\nresult {value!r}; the fresh process got {child_value}")
    if float(child_value) != value or child_computed == "1":
        print("unexpected: the fresh process did not answer from the store", file=sys.stderr)
        return 1
    print(
        f"a fresh process answered {first / float(child_time):,.0f}x faster than computing "
        f"(opening the store included); a warm hit in this process, {first / second:,.0f}x"
    )
    print(f"(run it again with --store {Path(directory)} to start warm)")
    return 0
