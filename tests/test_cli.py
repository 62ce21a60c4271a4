"""The `persistmemo` command line, run as the real console script against real stores."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_python
from persistmemo import Store, memo

SCRIPT = Path(sys.executable).parent / "persistmemo"

APP = """
import time
from persistmemo import memo

@memo
def load(day: int) -> list[int]:
    time.sleep(0.02)
    return [day] * {factor}

@memo(ttl=0.5)
def fresh(x: int) -> int:
    return x
"""


def cli(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "persistmemo"]
    return subprocess.run(
        [*command, *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def app(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A store populated by two decorated functions of an importable module `app`."""
    (tmp_path / "app.py").write_text(APP.format(factor=3))
    env = {"PERSISTMEMO_DIR": str(tmp_path / "store"), "PYTHONPATH": str(tmp_path)}
    run_python(
        "from app import load, fresh\n"
        "for day in range(4): load(day)\n"
        "load(0); load(1)\n"  # two hits, recorded at exit
        "for x in range(3): fresh(x)\n",
        cwd=tmp_path,
        env=env,
    )
    return tmp_path, env


def test_ls_lists_functions_with_entries_versions_compute_and_hits(
    app: tuple[Path, dict[str, str]],
) -> None:
    _, env = app
    table = cli("ls", env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "FUNCTION",
        "ENTRIES",
        "SIZE",
        "VERSIONS",
        "COMPUTE",
        "HITS",
        "SAVED",
    ]
    assert all(len(line) <= 80 for line in lines)
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["app.load"][1] == "4"
    assert rows["app.fresh"][1] == "3"
    listed = json.loads(cli("ls", "--json", env=env).stdout)
    load = next(item for item in listed if item["function"] == "app.load")
    assert load["entries"] == 4
    assert load["hits"] == 2
    assert len(load["versions"]) == 1
    assert load["compute_seconds"] >= 4 * 0.02
    assert load["saved_seconds"] > 0


def test_show_lists_one_functions_entries_newest_first(app: tuple[Path, dict[str, str]]) -> None:
    _, env = app
    shown = cli("show", "app.load", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "app.load: 4 entries" in shown.stdout
    entries = json.loads(cli("show", "app.load", "--json", env=env).stdout)
    stored = [entry["stored_at"] for entry in entries]
    assert stored == sorted(stored, reverse=True)
    missing = cli("show", "app.nothing", env=env)
    assert missing.returncode == 1
    assert "app.load" in missing.stdout


def test_stats_reports_the_whole_store(app: tuple[Path, dict[str, str]]) -> None:
    _, env = app
    figures = json.loads(cli("stats", "--json", env=env).stdout)
    assert figures["functions"] == 2
    assert figures["entries"] == 7
    assert figures["hits"] == 2
    assert figures["disk_bytes"] > figures["value_bytes"] > 0
    assert "compute stored" in cli("stats", env=env).stdout


def test_clear_removes_named_functions_and_asks_before_a_whole_store(
    app: tuple[Path, dict[str, str]],
) -> None:
    _, env = app
    cleared = cli("clear", "app.fresh", env=env)
    assert cleared.returncode == 0
    assert "removed 3 entries" in cleared.stdout
    assert [item["function"] for item in json.loads(cli("ls", "--json", env=env).stdout)] == [
        "app.load"
    ]
    refused = cli("clear", env=env, stdin="")
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert cli("clear", "--yes", env=env).returncode == 0
    assert json.loads(cli("ls", "--json", env=env).stdout) == []


def test_prune_removes_expired_and_old_entries(app: tuple[Path, dict[str, str]]) -> None:
    _, env = app
    time.sleep(0.6)  # app.fresh's entries expire
    pruned = cli("prune", "--expired", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 3 entries" in pruned.stdout
    assert "removed 4 entries" in cli("prune", "--older-than", "0s", env=env).stdout
    bad = cli("prune", "--older-than", "soon", env=env)
    assert bad.returncode == 2
    assert "30d" in bad.stderr


def test_prune_keeps_only_current_versions(app: tuple[Path, dict[str, str]]) -> None:
    tmp_path, env = app
    (tmp_path / "app.py").write_text(APP.format(factor=5))  # a real change: a new version
    run_python("from app import load; load(0); load(9)", cwd=tmp_path, env=env)
    listed = json.loads(cli("ls", "--json", env=env).stdout)
    assert len(next(i for i in listed if i["function"] == "app.load")["versions"]) == 2
    pruned = cli("prune", "--keep-versions", "current", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 4 entries" in pruned.stdout
    load = next(
        i for i in json.loads(cli("ls", "--json", env=env).stdout) if i["function"] == "app.load"
    )
    assert load["entries"] == 2
    assert len(load["versions"]) == 1


def test_check_finds_and_fixes_a_corrupt_entry(app: tuple[Path, dict[str, str]]) -> None:
    tmp_path, env = app
    healthy = cli("check", env=env)
    assert healthy.returncode == 0
    assert "checked 7 entries: ok" in healthy.stdout
    with sqlite3.connect(tmp_path / "store" / "cache.db") as connection:
        connection.execute(
            "UPDATE Cache SET value = X'0102' WHERE key = "
            "(SELECT key FROM Cache WHERE key LIKE 'pm1:app.load:%' LIMIT 1)"
        )
    broken = cli("check", env=env)
    assert broken.returncode == 1
    assert "1 problems" in broken.stdout
    fixed = cli("check", "--fix", env=env)
    assert "removed 1" in fixed.stdout
    assert cli("check", env=env).returncode == 0


def test_path_says_where_the_default_store_lives_and_why(tmp_path: Path) -> None:
    configured = cli("path", env={"PERSISTMEMO_DIR": str(tmp_path / "mine")})
    assert configured.stdout.strip() == f"{tmp_path / 'mine'}\t($PERSISTMEMO_DIR)"
    default = cli("path", env={"PERSISTMEMO_DIR": "", "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert "(platform default)" in default.stdout


def test_commands_on_a_missing_store_exit_1(tmp_path: Path) -> None:
    missing = cli("ls", "--store", str(tmp_path / "nowhere"), env={})
    assert missing.returncode == 1
    assert "no persistmemo store" in missing.stderr
    assert cli("frobnicate", env={}).returncode == 2


def test_demo_computes_then_answers_from_disk_in_a_fresh_process(tmp_path: Path) -> None:
    demo = cli("demo", "--samples", "20000", "--store", str(tmp_path / "demo"), env={})
    assert demo.returncode == 0, demo.stderr
    assert "computed" in demo.stdout
    assert "from disk, function not run" in demo.stdout


def test_python_api_entries_info_version_and_functions(store: Store) -> None:
    @memo(store=store, version="v7")
    def square(x: int) -> int:
        time.sleep(0.01)
        return x * x

    square(2)
    square(3)
    assert square.version() == "v7"
    info = square.info(2)
    assert info is not None
    assert info.version == "v7"
    assert info.compute_seconds is not None
    assert info.compute_seconds >= 0.01
    assert square.info(4) is None
    assert [entry.key for entry in square.entries()] == [square.key(3), square.key(2)]
    summary = store.functions()[square.entries()[0].function]
    assert summary.entries == 2
    assert summary.versions == {"v7"}


class _Terminal:
    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.written: list[str] = []

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("tty", [True, False])
def test_progress_shows_on_a_terminal_and_stays_quiet_when_piped(
    tty: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from persistmemo.cli import Progress

    terminal = _Terminal(tty)
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = Progress("checking")
    for done in range(1, 4):
        progress(done, 3)
    shown = "".join(terminal.written)
    assert ("checking 3/3" in shown) is tty
    assert (shown == "") is not tty
