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
    assert "app.load" in missing.stderr


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
    pruned = cli("prune", "--keep-versions", "current", "--module", "app", env=env)
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
            "(SELECT key FROM Cache WHERE key LIKE 'pm3:app.load:%' LIMIT 1)"
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


def test_a_reader_that_goes_away_ends_the_command_quietly(app: tuple[Path, dict[str, str]]) -> None:
    _, env = app
    for args in (["ls", "--json"], ["show", "app.load"], ["stats"]):
        process = subprocess.Popen(
            [sys.executable, "-m", "persistmemo", *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()  # as `| head -1` does once it has its line: no reader left
        stderr = process.stderr.read()
        process.stderr.close()
        assert process.wait(timeout=60) == 141, stderr  # as a tool killed by SIGPIPE
        assert stderr == b"", args


def test_a_pipe_to_head_gets_its_line_and_no_error(app: tuple[Path, dict[str, str]]) -> None:
    _, env = app
    shell = subprocess.run(
        ["sh", "-c", f"{sys.executable} -m persistmemo show app.load --json | head -1"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.stdout == "[\n"
    assert shell.stderr == ""


@pytest.mark.parametrize(
    "url", ["http://example.com", "redis://host:notaport/0", "redis://host:6379/zero"]
)
def test_a_malformed_store_url_is_a_usage_error_on_one_line(url: str) -> None:
    result = cli("ls", "--store", url, env={})
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "redis://host:6379/0" in result.stderr  # says what to write instead


def test_show_json_of_an_unknown_function_keeps_stdout_for_json(
    app: tuple[Path, dict[str, str]],
) -> None:
    _, env = app
    missing = cli("show", "app.nothing", "--json", env=env)
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert "no entries for 'app.nothing'" in missing.stderr


def test_an_infinite_ttl_shows_as_never_expiring(tmp_path: Path) -> None:
    env = {"PERSISTMEMO_DIR": str(tmp_path / "store")}
    run_python(
        "from persistmemo import memo\n"
        "@memo(ttl=float('inf'), name='app.forever', version='1')\n"
        "def forever(x): return x\n"
        "forever(1)\n",
        env=env,
    )
    shown = cli("show", "app.forever", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "inf" not in shown.stdout
    assert shown.stdout.splitlines()[-1].split()[-1] == "never"
    as_json = cli("show", "app.forever", "--json", env=env)
    assert "Infinity" not in as_json.stdout  # not JSON
    assert json.loads(as_json.stdout)[0]["expires_at"] is None


def test_clear_of_a_function_with_no_entries_says_so_and_exits_1(
    app: tuple[Path, dict[str, str]],
) -> None:
    _, env = app
    nothing = cli("clear", "nosuch.func", env=env)
    assert nothing.returncode == 1
    assert "no entries matched 'nosuch.func'" in nothing.stderr
    assert "app.load" in nothing.stderr  # the functions there are
    partly = cli("clear", "app.fresh", "nosuch.func", env=env)
    assert partly.returncode == 1
    assert "app.fresh: removed 3 entries" in partly.stdout
    assert "nosuch.func" in partly.stderr


def test_check_uses_the_secret_given_by_secret_file(tmp_path: Path) -> None:
    key_file = tmp_path / "their-secret.key"
    key_file.write_bytes(os.urandom(32))
    store_dir = tmp_path / "store"
    run_python(
        "import sys\n"
        "from pathlib import Path\n"
        "from persistmemo import Store, memo\n"
        "store = Store(sys.argv[1], secret=Path(sys.argv[2]).read_bytes())\n"
        "@memo(store=store, name='app.sealed', version='1')\n"
        "def sealed(x): return x\n"
        "for x in range(4): sealed(x)\n",
        args=(str(store_dir), str(key_file)),
    )
    env = {"PERSISTMEMO_DIR": str(store_dir)}
    assert cli("check", env=env).returncode == 1  # this user's own key: every tag fails
    after = cli("check", "--secret-file", str(key_file), env=env)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "checked 4 entries: ok" in after.stdout
    before = cli("--secret-file", str(key_file), "check", env=env)  # a global option
    assert "checked 4 entries: ok" in before.stdout


def test_an_unreadable_or_short_secret_file_is_a_usage_error(
    app: tuple[Path, dict[str, str]],
) -> None:
    tmp_path, env = app
    missing = cli("check", "--secret-file", str(tmp_path / "nowhere"), env=env)
    assert missing.returncode == 2
    assert "--secret-file" in missing.stderr
    (tmp_path / "short").write_bytes(b"passphrase\n")
    short = cli("check", "--secret-file", str(tmp_path / "short"), env=env)
    assert short.returncode == 2
    assert "PERSISTMEMO_SECRET" in short.stderr


PLANTED = """
from pathlib import Path
Path(__file__).with_name("planted-ran").write_text("top-level code of a planted module ran")
"""


def test_prune_current_imports_only_the_modules_named_on_the_command_line(
    app: tuple[Path, dict[str, str]],
) -> None:
    tmp_path, env = app
    # Whoever can write the store names a function after a module next to the user.
    (tmp_path / "planted.py").write_text(PLANTED)
    run_python(
        "from persistmemo import memo\n"
        "@memo(name='planted.evil', version='1')\n"
        "def evil(x): return x\n"
        "evil(1)\n",
        env=env,
    )
    command = [sys.executable, "-m", "persistmemo", "prune", "--keep-versions", "current"]
    unnamed = subprocess.run(
        command, cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True
    )
    assert unnamed.returncode == 2
    assert "--module" in unnamed.stderr
    named = subprocess.run(
        [*command, "--module", "app"],
        cwd=tmp_path,  # `python -m` puts this directory, and planted.py, on sys.path
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert named.returncode == 0, named.stderr
    assert not (tmp_path / "planted-ran").exists()
    assert "outside the --module modules" in named.stderr
    listed = {item["function"] for item in json.loads(cli("ls", "--json", env=env).stdout)}
    assert "planted.evil" in listed  # its versions are kept, not guessed


PLANT = """
import sys
from persistmemo import Store
from persistmemo._codec.encoding import encode_value
from math import inf, nan
store = Store(sys.argv[1])
for key, seconds in {planted!r}:
    function = key.split(":")[1]
    store.write(key, encode_value(1), ttl=None, tag=function, seconds=seconds)
"""


def plant(store_dir: Path, *entries: tuple[str, float]) -> None:
    """Entries written straight into the store, as whoever can write it may."""
    run_python(PLANT.format(planted=list(entries)), args=(str(store_dir),))


def strict_json(text: str) -> object:
    def refuse(constant: str) -> object:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_output_holds_null_where_an_unverified_header_says_nan_or_infinity(
    tmp_path: Path,
) -> None:
    plant(
        tmp_path / "store",
        ("pm1:app.planted:v1:00", float("nan")),
        ("pm1:app.planted:v1:01", float("inf")),
        ("pm1:app.other:v1:00", 1.5),
    )
    env = {"PERSISTMEMO_DIR": str(tmp_path / "store")}
    for command in (["ls"], ["stats"], ["show", "app.planted"]):
        result = cli(*command, "--json", env=env)
        assert result.returncode == 0, result.stderr
        strict_json(result.stdout)
    listed = strict_json(cli("ls", "--json", env=env).stdout)
    assert isinstance(listed, list)
    figures = {item["function"]: item["compute_seconds"] for item in listed}
    assert figures["app.other"] == 1.5


def test_names_from_the_store_reach_the_terminal_with_control_characters_escaped(
    tmp_path: Path,
) -> None:
    evil = "app.\x1b[2J\x1b]0;owned\x07evil\u202e"
    plant(
        tmp_path / "store",
        (f"pm1:{evil}:v1:00", 0.1),
        ("pm1:app.digest:v\x1b[31m:\x1b[31mred", 0.1),
    )
    env = {"PERSISTMEMO_DIR": str(tmp_path / "store")}
    outputs = [
        cli("ls", env=env),
        cli("show", evil, env=env),
        cli("show", "app.digest", env=env),
        cli("show", "app.nothing", env=env),
        cli("clear", evil, env=env),
    ]
    for output in outputs:
        shown = output.stdout + output.stderr
        assert "\x1b" not in shown
        assert "\x07" not in shown
        assert "\u202e" not in shown
    assert "owned\\x07evil\\u202e" in outputs[0].stdout  # clipped at the left
    assert "\\x1b[31m" in outputs[2].stdout
    assert "removed 1 entries" in outputs[4].stdout


def test_no_entries_messages_name_a_few_functions_not_all(tmp_path: Path) -> None:
    plant(tmp_path / "store", *((f"pm1:app.f{index:02d}:v1:00", 0.1) for index in range(25)))
    env = {"PERSISTMEMO_DIR": str(tmp_path / "store")}
    for command in (["show", "app.nothing"], ["clear", "app.nothing"]):
        missing = cli(*command, env=env)
        assert missing.returncode == 1
        assert "app.f00, app.f01" in missing.stderr
        assert "app.f09 and 15 more" in missing.stderr
        assert "app.f24" not in missing.stderr


USERMOD = """
import platform  # platform.version() is callable: it must not be called
from pathlib import Path

from persistmemo import memo

MARKS = Path(__file__).with_name("marks.log")


def __getattr__(name):  # a lazy attribute, as numpy's submodules are
    with open(MARKS, "a") as marks:
        marks.write(f"module __getattr__ {{name}}\\n")
    raise AttributeError(name)


class Trap:
    @staticmethod
    def version():
        with open(MARKS, "a") as marks:
            marks.write("Trap.version called\\n")
        return "trap"


class Model:
    @memo(ignore=["self"])
    def predict(self, x):
        return x + {step}

    @staticmethod
    @memo
    def build(x):
        return x + {step}

    @memo
    @classmethod
    def make(cls, x):
        return x + {step}


@memo
def load(x):
    return x + {step}


@memo(name="usermod.renamed")
def under_another_name(x):
    return x + {step}
"""

CALL_USERMOD = (
    "import usermod\n"
    "usermod.load(1); usermod.Model().predict(1); usermod.Model.build(1)\n"
    "usermod.Model.make(1); usermod.under_another_name(1)\n"
)


def test_prune_current_finds_memoized_functions_in_the_module_namespace_only(
    tmp_path: Path,
) -> None:
    paths = [str(tmp_path), os.environ.get("PYTHONPATH", "")]
    env = {"PERSISTMEMO_DIR": str(tmp_path / "store"), "PYTHONPATH": os.pathsep.join(paths)}
    for step in (1, 2):  # two versions of each function
        (tmp_path / "usermod.py").write_text(USERMOD.format(step=step))
        run_python(CALL_USERMOD, cwd=tmp_path, env=env)
    planted = ["usermod.platform", "usermod.Trap", "usermod.ghost.thing", "usermod.MARKS"]
    run_python(
        "from persistmemo import memo\n"
        f"for name in {planted!r}:\n"
        "    memo(name=name, version='1')(lambda x: x)(1)\n",
        env=env,
    )
    pruned = cli("prune", "--keep-versions", "current", "--module", "usermod", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert not (tmp_path / "marks.log").exists(), (tmp_path / "marks.log").read_text()
    assert "removed 5 entries" in pruned.stdout
    listed = {
        item["function"]: item["versions"]
        for item in json.loads(cli("ls", "--json", env=env).stdout)
    }
    memoized = [
        "usermod.load",
        "usermod.Model.predict",
        "usermod.Model.build",
        "usermod.Model.make",
        "usermod.renamed",
    ]
    assert all(len(listed[function]) == 1 for function in memoized), listed
    assert all(listed[function] == ["1"] for function in planted)  # kept, never guessed
    for function in planted:
        assert f"{function}: not a memoized function of usermod" in pruned.stderr


def _cli_within(
    seconds: float, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "persistmemo", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=seconds,
    )


def test_a_secret_file_that_is_not_a_regular_file_is_refused_without_waiting(
    tmp_path: Path,
) -> None:
    plant(tmp_path / "store", ("pm1:app.load:v1:00", 0.1))
    env = {"PERSISTMEMO_DIR": str(tmp_path / "store")}
    fifo = tmp_path / "secret.fifo"
    os.mkfifo(fifo)
    blocked = _cli_within(15, "check", "--secret-file", str(fifo), env=env)
    assert blocked.returncode == 2
    assert "not a regular file" in blocked.stderr
    real = tmp_path / "secret.key"
    real.write_bytes(os.urandom(32))
    (tmp_path / "link.key").symlink_to(real)
    linked = _cli_within(15, "check", "--secret-file", str(tmp_path / "link.key"), env=env)
    assert linked.returncode == 2
    assert "symbolic link" in linked.stderr
    assert str(real) in linked.stderr  # the file to give instead
    (tmp_path / "huge.key").write_bytes(b"k" * (1 << 20))
    huge = _cli_within(15, "check", "--secret-file", str(tmp_path / "huge.key"), env=env)
    assert huge.returncode == 2
    assert "more than a key file" in huge.stderr


def test_show_with_module_says_what_goes_into_the_current_version(
    app: tuple[Path, dict[str, str]],
) -> None:
    _, env = app
    result = cli("show", "app.load", "--module", "app", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    version = next(line for line in lines if line.startswith("current version")).split()[2]
    assert any(line.split()[1] == version for line in lines[2:] if len(line.split()) > 1)
    assert "code       app.load (source)" in result.stdout
    unknown = cli("show", "app.load", "--module", "json", env=env)
    assert unknown.returncode == 1
    assert "no memoized function" in unknown.stderr


def test_prune_current_keeps_everything_when_the_function_is_disabled(
    app: tuple[Path, dict[str, str]],
) -> None:
    _, env = app
    before = cli("show", "app.load", "--json", env=env)
    disabled = {**env, "PERSISTMEMO_DISABLE": "1"}
    result = cli("prune", "--keep-versions", "current", "--module", "app", env=disabled)
    assert result.returncode == 0, result.stderr
    after = cli("show", "app.load", "--json", env=env)
    assert after.stdout == before.stdout  # the real current version was kept, not a placeholder


def test_a_module_that_does_not_import_prunes_nothing_and_says_so(
    app: tuple[Path, dict[str, str]],
) -> None:
    _, env = app
    before = cli("show", "app.load", "--json", env=env).stdout
    pruned = cli("prune", "--keep-versions", "current", "--module", "nosuchmodule", env=env)
    assert pruned.returncode == 1
    assert "nothing was pruned" in pruned.stderr
    assert "Traceback" not in pruned.stderr
    assert cli("show", "app.load", "--json", env=env).stdout == before
    shown = cli("show", "app.load", "--module", "nosuchmodule", env=env)
    assert shown.returncode == 1
    assert "Traceback" not in shown.stderr
