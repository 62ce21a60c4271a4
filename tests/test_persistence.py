"""Results outlive the process and are shared between processes; the environment switches."""

from __future__ import annotations

import stat
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import run_python

WORK_MODULE = """
import os
from persistmemo import memo

LOG = os.environ["WORK_LOG"]

@memo
def slow_square(x: int) -> int:
    with open(LOG, "a") as log:
        log.write(f"{os.getpid()} {x}\\n")
    return x * x
"""


def make_work_module(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    (tmp_path / "work.py").write_text(WORK_MODULE)
    log = tmp_path / "calls.log"
    env = {"WORK_LOG": str(log), "PERSISTMEMO_DIR": str(tmp_path / "store")}
    return tmp_path, log, env


def calls(log: Path) -> list[str]:
    return log.read_text().split("\n")[:-1] if log.exists() else []


def test_results_survive_a_restart(tmp_path: Path) -> None:
    cwd, log, env = make_work_module(tmp_path)
    code = "from work import slow_square; print(slow_square(7), slow_square.cache_info())"
    first = run_python(code, cwd=cwd, env=env).stdout
    second = run_python(code, cwd=cwd, env=env).stdout
    assert first.startswith("49 CacheInfo(hits=0, misses=1)")
    assert second.startswith("49 CacheInfo(hits=1, misses=0)")
    assert len(calls(log)) == 1


def test_four_concurrent_processes_share_one_store(tmp_path: Path) -> None:
    cwd, log, env = make_work_module(tmp_path)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    worker = textwrap.dedent(
        """
        import os, sys, time
        from work import slow_square
        index, workers = int(sys.argv[1]), 4
        mine = range(index, 40, workers)
        assert [slow_square(x) for x in mine] == [x * x for x in mine]
        open(os.path.join(sys.argv[2], str(index)), "w").close()
        deadline = time.monotonic() + 30
        while len(os.listdir(sys.argv[2])) < workers and time.monotonic() < deadline:
            time.sleep(0.01)
        before = slow_square.cache_info()
        assert [slow_square(x) for x in range(40)] == [x * x for x in range(40)]
        after = slow_square.cache_info()
        print(after.hits - before.hits, after.misses - before.misses)
        """
    )
    import os

    full_env = {**os.environ, **env, "PYTHONPATH": str(cwd)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", worker, str(i), str(barrier)],
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    # After the barrier every process finds all 40 results, 30 of them computed by others.
    assert [out.split() for out, _ in outputs] == [["40", "0"]] * 4
    assert sorted(int(line.split()[1]) for line in calls(log)) == list(range(40))


def test_persistmemo_dir_chooses_the_default_store(tmp_path: Path) -> None:
    cwd, _, env = make_work_module(tmp_path)
    run_python("from work import slow_square; slow_square(3)", cwd=cwd, env=env)
    store = tmp_path / "store"
    assert (store / "cache.db").exists()
    assert stat.S_IMODE(store.stat().st_mode) == 0o700


def test_platform_cache_directory_is_the_default_without_persistmemo_dir(tmp_path: Path) -> None:
    cwd, log, env = make_work_module(tmp_path)
    env = {"WORK_LOG": str(log), "XDG_CACHE_HOME": str(tmp_path / "xdg"), "PERSISTMEMO_DIR": ""}
    code = "from work import slow_square; slow_square(3); print(slow_square.store.directory)"
    printed = run_python(code, cwd=cwd, env=env).stdout.strip()
    if sys.platform.startswith("linux"):
        assert printed == str(tmp_path / "xdg" / "persistmemo")
        assert (tmp_path / "xdg" / "persistmemo" / "cache.db").exists()


def test_persistmemo_disable_runs_the_function_and_touches_no_store(tmp_path: Path) -> None:
    cwd, log, env = make_work_module(tmp_path)
    env["PERSISTMEMO_DISABLE"] = "1"
    code = "from work import slow_square; print(slow_square(5), slow_square(5))"
    assert run_python(code, cwd=cwd, env=env).stdout.split() == ["25", "25"]
    assert len(calls(log)) == 2
    assert not (tmp_path / "store").exists()
