"""The first call's cost: each source file is parsed once per process, not once per function."""

from __future__ import annotations

import importlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from persistmemo._versioning import sources as source_index
from persistmemo._versioning.versions import code_version


def test_each_source_file_is_parsed_once_for_every_function_that_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "coldpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for number in range(3):
        helpers = "\n".join(f"def h{i}(x):\n    return h{i + 1}(x) + {number}\n" for i in range(9))
        (package / f"m{number}.py").write_text(helpers + "\ndef h9(x):\n    return x\n")
    (package / "main.py").write_text(
        "from . import m0, m1, m2\n\n"
        + "\n".join(
            f"def f{i}(x):\n    return m{i % 3}.h0(x) + m{i % 3}.h{i}(x)\n" for i in range(9)
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    main = importlib.import_module("coldpkg.main")
    before = source_index.parse_count
    versions = {code_version(getattr(main, f"f{i}")) for i in range(9)}
    assert len(versions) == 9
    assert source_index.parse_count - before == 4  # main.py, m0.py, m1.py, m2.py


# --- the version remembered in the store: a warm start derives nothing -----------------------

RUNNER = """
import json, os, sys
if os.environ.get("PRETEND_PYTHON"):
    sys.version = os.environ["PRETEND_PYTHON"]  # another build of Python, as far as we know
sys.path.insert(0, os.environ["PROJECT"])
import main
value = main.compute(3)
print(json.dumps({
    "value": value,
    "version": main.compute.version(),
    "derived": "persistmemo._versioning.sources" in sys.modules,
}))
"""


class Project:
    """A small program in its own directory, run in fresh interpreters against one store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.code = root / "code"
        self.code.mkdir()
        self.runs = 0

    def write(self, name: str, text: str) -> None:
        path = self.code / name
        path.write_text(text)
        # Written "long ago": a file is trusted to hold the code the process runs when it
        # was written before the process started (the rule the version walk applies).
        past = time.time() - 60 - self.runs
        os.utime(path, (past, past))

    def run(self, store: str = "store", **env: str) -> dict[str, object]:
        self.runs += 1
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PERSISTMEMO_")}
        environment.update(
            {"PROJECT": str(self.code), "PERSISTMEMO_DIR": str(self.root / store), **env}
        )
        done = subprocess.run(
            [sys.executable, "-c", RUNNER], env=environment, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
        return result

    def fresh_version(self, **env: str) -> object:
        """The version derived from scratch (a store with nothing remembered)."""
        self.runs += 1
        seen = self.run(store=f"fresh-{self.runs}", **env)
        assert seen["derived"] is True
        return seen["version"]


MAIN = """
from persistmemo import memo
from helpers import scale

@memo
def compute(x):
    return scale(x) + 1
"""


@pytest.fixture
def project(tmp_path: Path) -> Project:
    project = Project(tmp_path)
    project.write("main.py", MAIN)
    project.write("helpers.py", "def scale(x):\n    return x * 2\n")
    return project


def test_a_warm_start_serves_the_remembered_version_without_parsing(project: Project) -> None:
    first = project.run()
    assert first["derived"] is True  # nothing remembered yet: derived, then remembered
    second = project.run()
    assert second == {**first, "derived": False}  # no source parsed, no ast imported
    assert project.run()["derived"] is False
    assert second["version"] == project.fresh_version()


def test_editing_the_function_gives_the_version_derived_afresh(project: Project) -> None:
    before = project.run()
    project.run()
    project.write("main.py", MAIN.replace("+ 1", "+ 2"))
    after = project.run()
    assert after["derived"] is True
    assert after["value"] == 8
    assert after["version"] != before["version"]
    assert after["version"] == project.fresh_version()
    assert project.run()["derived"] is False


def test_editing_a_helper_in_another_module_gives_a_new_version(project: Project) -> None:
    before = project.run()
    project.write("helpers.py", "def scale(x):\n    return x * 3\n")
    after = project.run()
    assert after["value"] == 10
    assert after["version"] != before["version"]
    assert after["version"] == project.fresh_version()


SCALED = """
import os
from persistmemo import memo

FACTOR = int(os.environ.get("FACTOR", "2"))

def make_scale(k):
    def scale(x):
        return x * k
    return scale

times = make_scale(int(os.environ.get("CLOSED", "2")))

def offset(x, by=int(os.environ.get("DEFAULT", "1"))):
    return x + by

@memo
def compute(x):
    return offset(times(x) * FACTOR)
"""

RUNTIME_VALUES = {
    "a constant's value": "FACTOR",
    "a helper's captured value": "CLOSED",
    "a helper's default": "DEFAULT",
}


@pytest.mark.parametrize("variable", RUNTIME_VALUES.values(), ids=RUNTIME_VALUES.keys())
def test_a_value_computed_at_run_time_gives_its_own_version(
    project: Project, variable: str
) -> None:
    project.write("main.py", SCALED)
    before = project.run()
    assert project.run()["derived"] is False
    after = project.run(**{variable: "5"})  # the same files, another value
    assert after["value"] != before["value"]
    assert after["derived"] is True
    assert after["version"] != before["version"]
    assert after["version"] == project.fresh_version(**{variable: "5"})
    assert project.run(**{variable: "5"}) == {**after, "derived": False}
    assert project.run() == {**before, "derived": False}  # the first one is still remembered


MUTABLES = """
import os
from persistmemo import memo

def one(x):
    return x + 1

def two(x):
    return x + 2

class Table:
    weights = [int(os.environ.get("WEIGHT", "2"))]
    steps = {"first": two if os.environ.get("STEP") else one}

def offset(x, opts={"by": int(os.environ.get("BY", "1"))}):
    return x + opts["by"]

@memo
def compute(x):
    return offset(Table.steps["first"](x) * Table.weights[0])
"""

MUTABLE_VALUES = {
    "a class attribute list": "WEIGHT",
    "a class attribute dispatch table": "STEP",
    "a helper's mutable default": "BY",
}


@pytest.mark.parametrize("variable", MUTABLE_VALUES.values(), ids=MUTABLE_VALUES.keys())
def test_a_mutable_value_set_at_import_gives_its_own_version_and_a_warm_start(
    project: Project, variable: str
) -> None:
    project.write("main.py", MUTABLES)
    before = project.run()
    assert project.run() == {**before, "derived": False}
    after = project.run(**{variable: "5"})
    assert after["value"] != before["value"]
    assert after["version"] == project.fresh_version(**{variable: "5"})
    assert project.run(**{variable: "5"}) == {**after, "derived": False}
    assert project.run() == {**before, "derived": False}


CHOSEN = """
import os
from persistmemo import memo

step = (lambda x: x + 1) if os.environ.get("CHOICE") else (lambda x: x + 2)

@memo
def compute(x):
    return step(x)
"""


def test_a_helper_chosen_at_run_time_from_one_line_gives_its_own_version(
    project: Project,
) -> None:
    project.write("main.py", CHOSEN)
    before = project.run()
    after = project.run(CHOICE="1")
    assert (before["value"], after["value"]) == (5, 4)
    assert after["derived"] is True
    assert after["version"] != before["version"]
    assert after["version"] == project.fresh_version(CHOICE="1")


def test_another_python_derives_the_version_again(project: Project) -> None:
    project.run()
    assert project.run()["derived"] is False
    assert project.run(PRETEND_PYTHON="3.99.0 (another build)")["derived"] is True


def test_a_file_edited_after_the_process_imported_it_is_not_taken_by_its_stat(
    project: Project,
) -> None:
    project.run()
    code = (
        "import json, os, sys, pathlib\n"
        "sys.path.insert(0, os.environ['PROJECT'])\n"
        "import main\n"
        "path = pathlib.Path(os.environ['PROJECT'], 'helpers.py')\n"
        "path.write_text('def scale(x):\\n    return x * 7\\n')\n"  # the running code: x * 2
        "print(json.dumps([main.compute(3), main.compute.version()]))\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PERSISTMEMO_")}
    environment.update(
        {"PROJECT": str(project.code), "PERSISTMEMO_DIR": str(project.root / "store")}
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    value, version = json.loads(done.stdout)
    assert value == 7
    # Derived from the code it runs (bytecode), not the remembered version of the old file,
    # nor a version of the file as it is now.
    project.write("helpers.py", "def scale(x):\n    return x * 7\n")
    assert version != project.fresh_version()
    project.write("helpers.py", "def scale(x):\n    return x * 2\n")
    assert version != project.run()["version"]


def test_remembered_versions_are_not_entries(project: Project) -> None:
    project.run()
    code = (
        "import os\nfrom persistmemo import Store\n"
        "store = Store(os.environ['STORE'])\nprint(len(store), len(list(store.entries())))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "STORE": str(project.root / "store")},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1"]


def test_a_version_record_planted_without_the_secret_is_not_served(project: Project) -> None:
    first = project.run()
    store = project.root / "store"
    with sqlite3.connect(store / "cache.db") as connection:
        (key,) = connection.execute(
            "SELECT key FROM Cache WHERE key LIKE 'pm-version:%'"
        ).fetchone()
    plant = (
        "import sys\nfrom persistmemo import Store\n"
        "from persistmemo._codec.encoding import encode_value\n"
        "Store(sys.argv[1], secret=b'not the owner secret').write(sys.argv[2], "
        "encode_value('0123456789abcdef', allow_pickle=False), ttl=None, tag='pm-version')"
    )
    done = subprocess.run(
        [sys.executable, "-c", plant, str(store), key], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    again = project.run()
    assert again["version"] == first["version"] != "0123456789abcdef"
    assert again["derived"] is True


def test_the_opcodes_of_global_writes_are_those_of_this_python() -> None:
    import opcode

    from persistmemo._versioning.kept_state import _GLOBAL_WRITE_OPCODES

    known = _GLOBAL_WRITE_OPCODES.get(sys.version_info[:2])
    if known is None:
        pytest.skip("this Python's opcodes are read from the opcode module")
    names = ("STORE_GLOBAL", "DELETE_GLOBAL", "EXTENDED_ARG")
    assert known == tuple(opcode.opmap[name] for name in names)


def test_the_opcode_of_import_name_is_that_of_this_python() -> None:
    import opcode

    from persistmemo._versioning.body_imports import import_name_opcode

    assert import_name_opcode() == opcode.opmap["IMPORT_NAME"]
