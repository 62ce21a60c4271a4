"""Key building, before and after a change, measured interleaved in one process.

    python benchmarks/key_speed.py /path/to/other/checkout/src [rounds]

The other checkout's ``persistmemo`` is copied under another name (``persistmemo_before``)
so that both import side by side; each case is timed in turns, and the medians are shown.
"""

from __future__ import annotations

import gc
import random
import re
import shutil
import statistics
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any


def import_before(source: Path) -> Any:
    """The package under ``source`` (a ``src`` directory), renamed ``persistmemo_before``."""
    copy = Path(tempfile.mkdtemp()) / "persistmemo_before"
    shutil.copytree(source / "persistmemo", copy, ignore=shutil.ignore_patterns("__pycache__"))
    for path in copy.rglob("*.py"):
        path.write_text(re.sub(r"\bpersistmemo\b", "persistmemo_before", path.read_text()))
    sys.path.insert(0, str(copy.parent))
    import persistmemo_before  # type: ignore[import-not-found]

    return persistmemo_before


def cases(package: Any) -> dict[str, tuple[Callable[[], object], int]]:
    encode = __import__(f"{package.__name__}._keys.canonical", fromlist=["encode"]).encode
    rng = random.Random(1)
    features = {f"feature_{i}": rng.random() for i in range(100)}
    floats = [rng.random() for _ in range(1000)]
    ints = [rng.randrange(-(2**40), 2**40) for _ in range(1_000_000)]
    tags = {f"tag{i}" for i in range(100)}
    mixed = (1, 2.5, "x", None, True)

    def f(x: object) -> int:
        return 0

    f.__module__, f.__qualname__ = "bench", "f"
    memoized = package.memo(store=package.Store(tempfile.mkdtemp()), version="1")(f)
    memoized(123)
    return {
        "dict 100 str->float": (lambda: encode(features), 2000),
        "list 1,000 floats": (lambda: encode(floats), 2000),
        "list 1,000,000 ints": (lambda: encode(ints), 3),
        "set 100 str": (lambda: encode(tags), 2000),
        "tuple 5 mixed": (lambda: encode(mixed), 20000),
        "f.key(123)": (lambda: memoized.key(123), 20000),
        "f(123), a hit": (lambda: memoized(123), 5000),
        "f.key(dict 100)": (lambda: memoized.key(features), 2000),
    }


def main() -> None:
    import persistmemo

    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    sides = {"before": cases(import_before(Path(sys.argv[1]))), "after": cases(persistmemo)}
    samples: dict[tuple[str, str], list[float]] = {}
    gc.disable()
    for turn in range(rounds):
        for case in sides["after"]:
            for side in ("before", "after") if turn % 2 else ("after", "before"):
                call, number = sides[side][case]
                seconds = timeit.timeit(call, number=number) / number
                samples.setdefault((case, side), []).append(seconds)
    gc.enable()
    print(f"{'case':22} {'before':>12} {'after':>12} {'after/before':>13}")
    for case in sides["after"]:
        before = statistics.median(samples[case, "before"])
        after = statistics.median(samples[case, "after"])
        unit, scale = ("ms", 1e3) if before > 1e-3 else ("us", 1e6)
        times = f"{before * scale:9.2f} {unit} {after * scale:9.2f} {unit}"
        print(f"{case:22} {times} {after / before:12.2f}x")


if __name__ == "__main__":
    main()
