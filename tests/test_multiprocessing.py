"""Worker processes of every start method share a script's entries with the script itself."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = """
    import multiprocessing, os, sys
    from persistmemo import memo

    FACTOR = {factor}

    @memo
    def scaled(x):
        with open(os.environ["CALL_LOG"], "a") as log:
            log.write(f"{{x}}\\n")
        return x * FACTOR

    if __name__ == "__main__":
        first = scaled(1)
        method = sys.argv[1]
        with multiprocessing.get_context(method).Pool(2) as pool:
            print(first, pool.map(scaled, [1, 2]))
"""

AVAILABLE = multiprocessing.get_all_start_methods()
METHODS = [method for method in ("spawn", "forkserver", "fork") if method in AVAILABLE]


def run_script(path: Path, method: str, store: Path, log: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(path), method],
        env={"PERSISTMEMO_DIR": str(store), "CALL_LOG": str(log), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=path.parent,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("method", METHODS)
def test_workers_hit_the_scripts_own_entries(tmp_path: Path, method: str) -> None:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(SCRIPT.format(factor=2)))
    log = tmp_path / "calls.log"
    output = run_script(script, method, tmp_path / "store", log)
    assert output == "2 [2, 4]"
    assert sorted(log.read_text().split()) == ["1", "2"]  # the worker hit the parent's 1


@pytest.mark.parametrize("method", METHODS[:1])
def test_two_scripts_with_the_same_code_do_not_share_results(tmp_path: Path, method: str) -> None:
    store, log = tmp_path / "store", tmp_path / "calls.log"
    for name, factor in (("double", 2), ("triple", 3)):
        (tmp_path / name).mkdir()
        script = tmp_path / name / "job.py"
        script.write_text(textwrap.dedent(SCRIPT.format(factor=factor)))
        expected = f"{factor} [{factor}, {2 * factor}]"
        assert run_script(script, method, store, log) == expected
