"""Crash safety and a soak: killed writers and many concurrent processes never yield a wrong value.

The default run keeps both short (seconds). The long version (`pytest -m slow`) runs 8
processes for a minute and 200 kills.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from persistmemo import Store, memo

WORKERS = "import sys, workers; getattr(workers, sys.argv[1])(*map(float, sys.argv[2:]))"


def environment(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO / "tests"),
        "WORK_STORE": str(tmp_path / "store"),
        "WORK_LOG": str(tmp_path / "calls.log"),
        "WORK_LEASE": "2",
    }


def verify_store(tmp_path: Path, keys: int) -> int:
    """Read every key through a fresh interpreter's memo; returns how many were wrong."""
    code = (
        f"import workers\nprint(sum(workers.varied(x) != workers.truth(x) for x in range({keys})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def kill_loop(tmp_path: Path, kills: int, keys: int = 40) -> dict[str, int]:
    rng = random.Random(1)
    wrong = 0
    for _ in range(kills):
        writer = subprocess.Popen(
            [sys.executable, "-c", WORKERS, "crash_writer", str(keys)],
            env=environment(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert writer.stdout is not None
        assert writer.stdout.readline() == "writing\n"
        time.sleep(rng.uniform(0.01, 0.25))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        wrong += verify_store(tmp_path, keys)
    report = Store(tmp_path / "store").check()
    return {"kills": kills, "wrong": wrong, "bad_entries": len(report.problems)}


@pytest.mark.slow
def test_a_writer_killed_at_random_moments_never_leaves_a_wrong_value(tmp_path: Path) -> None:
    result = kill_loop(tmp_path, kills=12)
    print(result)
    assert result["wrong"] == 0
    # The store opens and works after the kills.
    store = Store(tmp_path / "store")

    @memo(store=store)
    def after(x: int) -> int:
        return x

    assert after(1) == after(1) == 1


def soak(tmp_path: Path, processes: int, seconds: float) -> dict[str, int]:
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKERS, "soak", str(seconds), str(seed)],
            env=environment(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(processes)
    ]
    totals = {"processes": processes, "operations": 0, "wrong": 0, "errors": 0, "hits": 0}
    for worker in workers:
        out, err = worker.communicate(timeout=seconds + 120)
        assert worker.returncode == 0, err
        for name, count in json.loads(out.splitlines()[-1]).items():
            totals[name] += count
    report = Store(tmp_path / "store").check()
    totals["check_problems"] = len(report.problems)
    return totals


@pytest.mark.slow
def test_eight_processes_of_mixed_calls_return_only_true_values(tmp_path: Path) -> None:
    totals = soak(tmp_path, processes=8, seconds=3)
    print(totals)
    assert totals["wrong"] == 0
    assert totals["errors"] == 0
    assert totals["check_problems"] == 0
    assert totals["hits"] > 0


@pytest.mark.slow
def test_long_soak_and_kill_loop(tmp_path: Path) -> None:
    totals = soak(tmp_path / "soak", processes=8, seconds=60)
    kills = kill_loop(tmp_path / "kills", kills=200)
    print(totals, kills)
    assert totals["wrong"] == totals["errors"] == totals["check_problems"] == 0
    assert kills["wrong"] == 0
