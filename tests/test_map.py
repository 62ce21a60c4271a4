"""f.map: many calls at once, only the misses computed, in order, resumable, quiet when piped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_python


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"MAP_STORE": str(tmp_path / "store"), "MAP_LOG": str(tmp_path / "calls.log")}


def computed(env: dict[str, str], kind: str) -> list[str]:
    log = Path(env["MAP_LOG"])
    if not log.exists():
        return []
    return [line.split()[1] for line in log.read_text().splitlines() if line.startswith(kind)]


def test_results_come_in_input_order_and_only_misses_are_computed(env: dict[str, str]) -> None:
    code = """
        import mapped
        print(mapped.power(3))
        print(mapped.power.map([1, 2, 3, 4, 3]))
        print(mapped.power.map([1, 2, 3], [3, 3, 3]))
        print(mapped.power.map([]))
    """
    out = run_python(code, env=env).stdout.splitlines()
    assert out == ["9", "[1, 4, 9, 16, 9]", "[1, 8, 27]", "[]"]
    assert sorted(computed(env, "power"), key=int) == ["1", "1", "2", "2", "3", "3", "4"]
    again = run_python("import mapped; print(mapped.power.map([4, 3, 2, 1]))", env=env)
    assert again.stdout.split("\n")[0] == "[16, 9, 4, 1]"
    assert len(computed(env, "power")) == 7  # all hits


def test_misses_run_in_worker_processes(env: dict[str, str]) -> None:
    code = "import mapped; print(mapped.spin.map(range(8), workers=2))"
    out = run_python(code, env=env).stdout.strip()
    assert out == str([x * 10 for x in range(8)])
    log = Path(env["MAP_LOG"]).read_text().splitlines()
    pids = {line.split()[2] for line in log if line.startswith("start")}
    assert len(pids) == 2  # two workers shared the eight items
    assert len(computed(env, "start")) == 8


def test_a_failing_item_raises_after_the_finished_ones_are_stored(env: dict[str, str]) -> None:
    code = """
        import mapped
        try:
            mapped.fragile.map([1, 2, 3, 4])
        except ValueError as error:
            print("raised", error)
    """
    assert run_python(code, env=env).stdout.strip() == "raised three is not allowed"
    assert computed(env, "fragile") == ["1", "2", "3"]  # in this process: in order, then stop
    code = "import mapped; print(mapped.fragile.map([1, 2, 4]))"
    assert run_python(code, env=env).stdout.strip() == "[1, 2, 4]"
    assert computed(env, "fragile") == ["1", "2", "3", "4"]


def test_a_killed_map_resumes_with_only_the_rest(env: dict[str, str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "import mapped; mapped.slow.map(range(30))"],
        env={**os.environ, **env, "PYTHONPATH": str(REPO / "tests")},
    )
    deadline = time.monotonic() + 30
    while len(computed(env, "slow")) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(computed(env, "slow"))
    assert done_before < 30
    out = run_python("import mapped; print(mapped.slow.map(range(30)))", env=env).stdout
    assert out.strip() == str(list(range(30)))
    logged = computed(env, "slow")
    assert sorted(set(logged), key=int) == [str(x) for x in range(30)]
    # Only the item being computed at the kill (logged, not yet stored) runs twice.
    assert len(logged) <= 31


def test_async_map_runs_misses_concurrently(env: dict[str, str]) -> None:
    code = """
        import asyncio, mapped
        print(asyncio.run(mapped.fetch.map(range(10), workers=10)))
    """
    assert run_python(code, env=env).stdout.strip() == str([x + 100 for x in range(10)])
    log = Path(env["MAP_LOG"]).read_text().splitlines()
    starts = [float(line.split()[3]) for line in log if line.startswith("fetch-start")]
    ends = [float(line.split()[3]) for line in log if line.startswith("fetch-end")]
    assert max(starts) < min(ends)  # all ten were running at once
    run_python(code, env=env)
    assert len(computed(env, "fetch-start")) == 10  # the second run: all hits


def test_progress_is_silent_when_piped_and_shown_when_asked(env: dict[str, str]) -> None:
    quiet = run_python("import mapped; mapped.slow.map(range(8))", env=env)
    assert quiet.stderr == ""
    shown = run_python("import mapped; mapped.slow.map(range(8, 16), progress=True)", env=env)
    assert "8/8" in shown.stderr
    assert "computed" in shown.stderr


def test_workers_need_an_importable_function(tmp_path: Path) -> None:
    from persistmemo import memo

    @memo(store=tmp_path / "store")
    def local(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="module level of an importable module"):
        local.map([1, 2, 3], workers=2)
    with pytest.raises(TypeError, match="workers="):
        local.map([1], workers=0)
    assert local.map([1, 2, 3]) == [1, 2, 3]


def test_read_many_reads_what_single_reads_read_across_batches(tmp_path: Path) -> None:
    import sqlite3

    from persistmemo import PersistmemoWarning, Store, memo

    store = Store(tmp_path / "store")

    @memo(store=store)
    def square(x: int) -> int:
        return x * x

    assert square.map(range(0, 1200, 2)) == [x * x for x in range(0, 1200, 2)]
    keys = [square.key(x) for x in range(1200)]
    found = store.read_many(keys)
    assert set(found) == {square.key(x) for x in range(0, 1200, 2)}  # odd ones were never stored
    assert all(bytes(found[key]) == bytes(store.read(key)) for key in found)  # type: ignore[arg-type]
    with sqlite3.connect(store.directory / "cache.db") as db:
        db.execute("UPDATE Cache SET value = X'01' WHERE key = ?", (square.key(4),))
    with pytest.warns(PersistmemoWarning, match="corrupt entry"):
        again = store.read_many(keys)
    assert square.key(4) not in again
    assert len(again) == 599


def test_map_reads_hits_from_redis_and_tiered_stores(redis_url: str, tmp_path: Path) -> None:
    from persistmemo import RedisStore, TieredStore, memo

    remote = RedisStore(redis_url, secret="map tests")

    @memo(store=remote)
    def double(x: int) -> int:
        return 2 * x

    assert double.map(range(700)) == [2 * x for x in range(700)]
    assert len(remote.read_many([double.key(x) for x in range(800)])) == 700
    tiered = TieredStore(local=tmp_path / "local", remote=remote)
    found = tiered.read_many([double.key(x) for x in range(10)])
    assert len(found) == 10
    assert len(tiered.local.read_many([double.key(x) for x in range(10)])) == 10  # filled


def test_repeated_inputs_get_results_of_their_own(tmp_path: Path) -> None:
    from persistmemo import memo

    @memo(store=tmp_path / "store")
    def listing(x: int) -> list[int]:
        return [x]

    first = listing.map([1, 1, 2])
    first[0].append(99)
    assert first == [[1, 99], [1], [2]]
    again = listing.map([1, 1])
    again[1].append(5)
    assert again == [[1], [1, 5]]


def interrupt_a_map_in_workers(env: dict[str, str], *, whole_group: bool) -> float:
    """Start a long f.map in 2 workers, send SIGINT once it is under way; seconds to stop."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import mapped; mapped.slow.map(range(200), workers=2)"],
        env={**os.environ, **env, "PYTHONPATH": str(REPO / "tests")},
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while len(computed(env, "slow")) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    interrupted = time.monotonic()
    if whole_group:  # a terminal's Ctrl-C reaches the whole process group: workers too
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert "KeyboardInterrupt" in err
    return time.monotonic() - interrupted


@pytest.mark.parametrize("whole_group", [False, True], ids=["parent", "process-group"])
def test_ctrl_c_stops_a_map_in_worker_processes_without_waiting_for_the_rest(
    env: dict[str, str], whole_group: bool
) -> None:
    assert interrupt_a_map_in_workers(env, whole_group=whole_group) < 5  # not the 10 s left
    assert len(computed(env, "slow")) < 60


def test_workers_exit_when_the_mapping_process_is_killed(env: dict[str, str]) -> None:
    marker = f"persistmemo-map-test-{os.getpid()}-{time.monotonic_ns()}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import mapped; mapped.slow.map(range(200), workers=2)  # {marker}",
        ],
        env={**os.environ, **env, "PYTHONPATH": str(REPO / "tests")},
    )
    deadline = time.monotonic() + 30
    while len(computed(env, "slow")) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.kill()
    process.wait()

    def still_running() -> list[str]:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(entry.name)
            except OSError:
                continue
        return found

    deadline = time.monotonic() + 5
    while still_running():
        assert time.monotonic() < deadline, f"workers left running: {still_running()}"
        time.sleep(0.1)
    started = time.monotonic()
    out = run_python("import mapped; print(len(mapped.slow.map(range(20))))", env=env).stdout
    assert out.strip() == "20"
    assert time.monotonic() - started < 8  # the killed workers' claims are taken over


def test_spawned_workers_for_a_function_of_python_c_are_refused_with_a_type_error(
    tmp_path: Path,
) -> None:
    code = f"""
        import multiprocessing
        multiprocessing.set_start_method("spawn")
        from persistmemo import Store, memo

        @memo(store=Store({str(tmp_path / "store")!r}))
        def square(x):
            return x * x

        try:
            square.map(range(4), workers=2)
        except TypeError as error:
            print("refused:", "no file" in str(error))
    """
    assert run_python(code).stdout.strip() == "refused: True"
