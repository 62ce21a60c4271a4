"""One computation per key: concurrent callers wait for the one that computes, with leases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, run_python
from memory_backend import MemoryBackend
from persistmemo import Store, memo
from persistmemo.stores.sealed import SealedStore

CALL = "import sys, workers; workers.timed_call(sys.argv[1], int(sys.argv[2]))"


class Cluster:
    """Processes running tests/workers.py against one store and one call log."""

    def __init__(self, tmp_path: Path, lease: float) -> None:
        self.log = tmp_path / "calls.log"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO / "tests"),
            "WORK_STORE": str(tmp_path / "store"),
            "WORK_LOG": str(self.log),
            "WORK_LEASE": str(lease),
        }
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, function: str, x: int, seconds: float) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", CALL, function, str(x)],
            env={**self.env, "WORK_SECONDS": str(seconds)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.processes.append(process)
        return process

    def result(self, process: subprocess.Popen[str]) -> tuple[int, float]:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        value, seconds = out.split()
        return int(value), float(seconds)

    def outcome(self, process: subprocess.Popen[str]) -> tuple[str, float]:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        value, seconds = out.split()
        return value, float(seconds)

    def events(self, kind: str) -> list[str]:
        if not self.log.exists():
            return []
        return [line for line in self.log.read_text().splitlines() if line.startswith(kind)]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events(kind)) < count:
            assert time.monotonic() < deadline, f"no {kind!r} event within {timeout} s"
            time.sleep(0.01)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path, lease=1.0)
    yield running
    running.stop()


def test_eight_processes_compute_a_one_second_function_once(cluster: Cluster) -> None:
    processes = [cluster.start("slow", 1, seconds=1.0) for _ in range(8)]
    results = [cluster.result(process) for process in processes]
    assert [value for value, _ in results] == [10] * 8
    assert len(cluster.events("start")) == 1
    # Waiters return when the result lands: about one second each, not eight in a row.
    slowest = max(seconds for _, seconds in results)
    print(f"8 processes, 1 s function: slowest caller {slowest:.2f} s")
    assert slowest < 5


def test_processes_waiting_on_a_failing_computation_finish_in_one_failure_time(
    cluster: Cluster,
) -> None:
    processes = [cluster.start("failing", 6, seconds=1.5)]
    cluster.wait_for("start")
    processes += [cluster.start("failing", 6, seconds=1.5) for _ in range(3)]
    outcomes = [cluster.outcome(process) for process in processes]
    slowest = max(seconds for _, seconds in outcomes)
    print(f"4 processes, a function failing after 1.5 s: slowest caller {slowest:.2f} s")
    # Store pickles are allowed here (a private store), so waiters raise the same type.
    assert [value for value, _ in outcomes] == ["ValueError"] * 4
    assert len(cluster.events("start")) == 1
    assert slowest < 1.5 * 2  # one failure time (and process start-up), not four


def test_a_killed_holder_is_taken_over_after_its_lease(cluster: Cluster) -> None:
    holder = cluster.start("slow", 2, seconds=60)
    cluster.wait_for("start")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    value, seconds = cluster.result(cluster.start("slow", 2, seconds=0.1))
    assert value == 20
    assert len(cluster.events("start")) == 2
    assert seconds < 1.0 + 3  # the lease (1 s) plus the computation, with room for a busy box


def test_a_killed_holder_on_this_host_is_taken_over_without_waiting_out_its_lease(
    tmp_path: Path,
) -> None:
    cluster = Cluster(tmp_path, lease=30.0)  # a crashed run, resumed: no 30 s wait
    try:
        holder = cluster.start("slow", 7, seconds=60)
        cluster.wait_for("start")
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        value, seconds = cluster.result(cluster.start("slow", 7, seconds=0.1))
        assert value == 70
        assert len(cluster.events("start")) == 2
        assert seconds < 5
    finally:
        cluster.stop()


def test_a_paused_holder_is_taken_over_after_its_lease(cluster: Cluster) -> None:
    holder = cluster.start("slow", 3, seconds=60)
    cluster.wait_for("start")
    holder.send_signal(signal.SIGSTOP)
    value, seconds = cluster.result(cluster.start("slow", 3, seconds=0.1))
    assert value == 30
    assert len(cluster.events("start")) == 2
    assert seconds < 1.0 + 3


def test_a_long_computation_keeps_its_lease_alive(cluster: Cluster) -> None:
    holder = cluster.start("slow", 4, seconds=3.0)  # three lease lengths
    cluster.wait_for("start")
    waiter = cluster.start("slow", 4, seconds=0.1)
    assert cluster.result(waiter)[0] == 40
    assert cluster.result(holder)[0] == 40
    assert len(cluster.events("start")) == 1


def test_unlocked_functions_let_every_process_compute(cluster: Cluster) -> None:
    processes = [cluster.start("slow_unlocked", 5, seconds=0.5) for _ in range(2)]
    assert [cluster.result(process)[0] for process in processes] == [50, 50]
    assert len(cluster.events("start")) == 2


def test_a_resumed_holder_does_not_release_the_new_holders_lease() -> None:
    # Lease rows (a backend without record locks): a disk store's claims are locks, which
    # do not run out while their holder lives.
    store = SealedStore(MemoryBackend(), secret="resumed holder", lease=0.2)
    assert store.leases_expire
    assert store.try_lease("k", "first")
    assert not store.try_lease("k", "second")
    time.sleep(0.3)  # the first holder was paused past its lease
    assert store.try_lease("k", "second")
    store.release_lease("k", "first")  # the first holder wakes up and releases
    assert not store.try_lease("k", "third")  # still the second holder's
    store.release_lease("k", "second")
    assert store.try_lease("k", "third")


def test_threads_compute_once_and_share_the_result(store: Store) -> None:
    calls = []

    @memo(store=store)
    def slow(x: int) -> int:
        calls.append(x)
        time.sleep(0.3)
        return x + 1

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(slow(1))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [2] * 8
    assert calls == [1]
    assert slow.cache_info().misses == 1


def test_callers_waiting_on_a_failing_computation_share_its_exception(store: Store) -> None:
    attempts = []

    @memo(store=store, ignore=["attempts"])  # read back (len): state declared, not keyed
    def flaky(x: int) -> int:
        attempts.append(x)
        time.sleep(0.3)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return x

    outcomes: dict[str, object] = {}

    def call(name: str) -> None:
        try:
            outcomes[name] = flaky(1)
        except RuntimeError as error:
            outcomes[name] = error

    first = threading.Thread(target=call, args=("first",))
    first.start()
    time.sleep(0.1)
    second = threading.Thread(target=call, args=("second",))
    second.start()
    first.join(10)
    second.join(10)
    assert isinstance(outcomes["first"], RuntimeError)
    assert outcomes["second"] is outcomes["first"]  # shared, not computed again
    assert len(attempts) == 1
    assert flaky(1) == 1  # a caller arriving after the failure computes again
    assert len(attempts) == 2


def test_recursion_into_another_memoized_function_does_not_deadlock(store: Store) -> None:
    @memo(store=store)
    def inner(x: int) -> int:
        return x * 2

    @memo(store=store)
    def outer(x: int) -> int:
        return inner(x) + inner(x + 1)

    assert outer(1) == 2 + 4
    assert outer(1) == 6


def test_a_recursion_error_in_memoized_recursion_leaves_no_lease_behind(tmp_path: Path) -> None:
    # In a fresh interpreter: the default recursion limit, and a lease long enough that a
    # claim left behind would make the retry wait for it.
    code = """
        import sqlite3, sys, time
        from persistmemo import Store, memo

        store = Store(sys.argv[1], lease=30)

        @memo(store=store)
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)

        try:
            fib(3000)
        except RecursionError:
            pass
        else:
            raise SystemExit("expected a RecursionError")
        import persistmemo.stores.claims as claims
        held = sum(len(each._held) for each in claims._claims.values())
        assert held == 0, f"{held} claims held by nobody: other processes would wait for them"
        with sqlite3.connect(store.directory / "cache.db") as db:
            left = db.execute("SELECT count(*) FROM Cache WHERE key LIKE 'pm-lease:%'").fetchone()
        started = time.monotonic()
        for n in range(0, 3001, 50):
            fib(n)  # bottom-up: every level fits in the stack
        print(left[0], round(time.monotonic() - started, 1))
    """
    leases_left, retry_seconds = run_python(code, args=(str(tmp_path / "store"),)).stdout.split()
    assert leases_left == "0"
    assert float(retry_seconds) < 10
