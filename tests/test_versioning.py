"""Versions derived from code: trivial edits keep the cache, real changes drop it."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

from conftest import run_python
from persistmemo._versioning.versions import code_version

_counter = itertools.count()


def load_module(tmp_path: Path, source: str) -> ModuleType:
    """Import ``source`` as a fresh module (a new name each time, as after an edit)."""
    name = f"versioned_{next(_counter)}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def version_of(tmp_path: Path, source: str, name: str = "f", **options: Any) -> str:
    return code_version(getattr(load_module(tmp_path, source), name), **options)


ORIGINAL = """
def f(x):
    total = x * 2
    return total + 1
"""

TRIVIAL_EDITS = {
    "comment": """
def f(x):
    # double it
    total = x * 2  # and more
    return total + 1
""",
    "docstring": '''
def f(x):
    """Add a docstring."""
    total = x * 2
    return total + 1
''',
    "reformat": """
def f(
    x,
):
    total = (x *
             2)

    return total+1
""",
    "decorator": """
import functools

@functools.lru_cache
def f(x):
    total = x * 2
    return total + 1
""",
    "moved": """


x = 1



def f(x):
    total = x * 2
    return total + 1
""",
}

REAL_CHANGES = {
    "constant": ORIGINAL.replace("x * 2", "x * 3"),
    "operator": ORIGINAL.replace("total + 1", "total - 1"),
    "parameter": ORIGINAL.replace("def f(x):", "def f(x, y=0):"),
    "statement": ORIGINAL.replace("return total + 1", "total += 1\n    return total + 1"),
}


def test_comments_docstrings_formatting_and_decorators_keep_the_version(tmp_path: Path) -> None:
    original = version_of(tmp_path, ORIGINAL)
    for edit, source in TRIVIAL_EDITS.items():
        assert version_of(tmp_path, source) == original, edit


def test_changes_to_what_the_function_does_change_the_version(tmp_path: Path) -> None:
    original = version_of(tmp_path, ORIGINAL)
    versions = {edit: version_of(tmp_path, source) for edit, source in REAL_CHANGES.items()}
    assert original not in versions.values()
    assert len(set(versions.values())) == len(versions)


def test_reverting_a_change_gives_the_old_version_back(tmp_path: Path) -> None:
    original = version_of(tmp_path, ORIGINAL)
    version_of(tmp_path, REAL_CHANGES["constant"])
    assert version_of(tmp_path, ORIGINAL) == original


def test_functions_without_source_get_a_bytecode_version() -> None:
    namespace: dict[str, Any] = {}
    exec("def f(x):\n    return x + 1\n", namespace)
    exec("def g(x):\n    return x + 2\n", namespace)
    assert code_version(namespace["f"]) != code_version(namespace["g"])
    assert code_version(namespace["f"]) == code_version(namespace["f"])
    assert code_version(lambda x: x + 1) != code_version(lambda x: x + 2)


HELPERS = """
SCALE = {scale}

def helper(x):
    return x + {offset}

def f(x):
    return helper(x) * SCALE
"""


def test_helpers_and_constants_of_the_module_are_in_the_version_by_default(
    tmp_path: Path,
) -> None:
    def versions(scale: int, offset: int) -> tuple[str, str]:
        source = HELPERS.format(scale=scale, offset=offset)
        return (
            version_of(tmp_path, source, include_globals=False),
            version_of(tmp_path, source),
        )

    plain, deep = versions(2, 1)
    plain_helper, deep_helper = versions(2, 5)
    plain_constant, deep_constant = versions(3, 1)
    assert plain == plain_helper == plain_constant  # include_globals=False looks at f alone
    assert len({deep, deep_helper, deep_constant}) == 3
    assert versions(2, 1) == (plain, deep)


SCRIPT = """
import os
from persistmemo import memo

@memo
def compute(x):
    with open(os.environ["WORK_LOG"], "a") as log:
        log.write("called\\n")
    return x * {factor}  # {comment}

if __name__ == "__main__":
    print(compute(2), compute.key(2))
"""


def test_editing_a_module_invalidates_in_a_fresh_process(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    env = {"WORK_LOG": str(log), "PERSISTMEMO_DIR": str(tmp_path / "store")}
    code = "from tool import compute; print(compute(2))"

    def run(factor: int, comment: str) -> tuple[str, int]:
        (tmp_path / "tool.py").write_text(SCRIPT.format(factor=factor, comment=comment))
        before = len(log.read_text().splitlines()) if log.exists() else 0
        result = run_python(code, cwd=tmp_path, env=env).stdout.strip()
        return result, len(log.read_text().splitlines()) - before

    assert run(10, "first") == ("20", 1)
    assert run(10, "first") == ("20", 0)  # restart: a hit
    assert run(10, "only the comment changed") == ("20", 0)
    assert run(3, "body changed") == ("6", 1)  # the stale 20 is not served
    assert run(10, "reverted") == ("20", 0)  # the old entry is found again


def test_a_script_and_its_import_share_one_identity(tmp_path: Path) -> None:
    (tmp_path / "tool.py").write_text(SCRIPT.format(factor=10, comment="x"))
    env = {"WORK_LOG": str(tmp_path / "calls.log"), "PERSISTMEMO_DIR": str(tmp_path / "store")}
    import os
    import subprocess
    import sys

    as_script = subprocess.run(
        [sys.executable, "tool.py"],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    as_module = run_python(
        "from tool import compute; print(compute(2), compute.key(2))", cwd=tmp_path, env=env
    ).stdout.split()
    as_dash_m = subprocess.run(
        [sys.executable, "-m", "tool"],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert as_script == as_module == as_dash_m
    assert as_script[1].startswith("pm3:tool.compute:")
    assert (tmp_path / "calls.log").read_text().count("called") == 1


def test_a_version_that_cannot_be_derived_leaves_the_function_running_uncached(
    tmp_path: Path,
) -> None:
    # A formula nested too deeply for the version's walk of the syntax tree on Python
    # 3.10-3.12 (their ast.parse gives up); 3.13 parses it, and then its version is derived.
    body = "return x" + " + 1" * 2500
    (tmp_path / "deep.py").write_text(
        f"from persistmemo import memo\n\n@memo\ndef f(x):\n    {body}\n"
    )
    if sys.version_info < (3, 13):
        expected = ["2501", "2501", "0", "True"]  # uncached, with one warning
    else:
        expected = ["2501", "2501", "1", "False"]  # versioned: the second call hits
    code = """
        import warnings, deep
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print(deep.f(1), deep.f(1), deep.f.cache_info().hits)
        print(any("cannot derive a version" in str(w.message) for w in caught))
    """
    out = run_python(code, cwd=tmp_path, env={"PERSISTMEMO_DIR": str(tmp_path / "s")}).stdout
    assert out.split() == expected


def test_a_disabled_function_derives_no_version(tmp_path: Path) -> None:
    (tmp_path / "deep.py").write_text(
        "from persistmemo import memo\n\n@memo\ndef f(x):\n    return x" + " + 1" * 2500 + "\n"
    )
    code = "import deep, sys; print(deep.f(1)); "
    code += "print('persistmemo._versioning.versions' in sys.modules)"
    env = {"PERSISTMEMO_DIR": str(tmp_path / "s"), "PERSISTMEMO_DISABLE": "1"}
    assert run_python(code, cwd=tmp_path, env=env).stdout.split() == ["2501", "False"]


def test_a_miss_after_the_code_changed_is_explained_at_debug_level(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text(
        "from persistmemo import memo\n\n@memo\ndef f(x):\n    return x * 2\n"
    )
    code = """
        import logging, sys
        logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(message)s")
        import job
        print("result", job.f(3))
    """
    env = {"PERSISTMEMO_DIR": str(tmp_path / "store")}
    first = run_python(code, cwd=tmp_path, env=env).stdout
    assert "a miss under version" not in first  # nothing stored before: nothing to explain
    (tmp_path / "job.py").write_text(
        "from persistmemo import memo\n\n@memo\ndef f(x):\n    return x * 3\n"
    )
    second = run_python(code, cwd=tmp_path, env=env).stdout
    assert "result 9" in second
    assert "job.f: a miss under version" in second


# As ipykernel runs cells: each run compiled under its own name, kept in linecache.
NOTEBOOK = """
import hashlib, linecache
namespace = {"__name__": "__main__"}
count = 0

def run_cell(text):
    global count
    count += 1
    name = f"<ipython-input-{count}-{hashlib.sha1(text.encode()).hexdigest()[:12]}>"
    linecache.cache[name] = (len(text), None, text.splitlines(True), name)
    exec(compile(text, name, "exec"), namespace)
"""


def test_notebook_cells_re_run_after_the_first_call_are_followed(tmp_path: Path) -> None:
    code = NOTEBOOK + textwrap.dedent("""
        run_cell("from persistmemo import memo\\nSCALE = 2\\n")
        run_cell("def helper(x):\\n    return x * SCALE\\n")
        run_cell("@memo\\ndef g(x):\\n    return helper(x)\\n")
        run_cell("print(g(10))")
        run_cell("def helper(x):\\n    return x * SCALE + 1000\\n")
        run_cell("print(g(10))")
        run_cell("SCALE = 7\\n")
        run_cell("print(g(10))")
        run_cell("print(g(10), g.cache_info().hits)")
    """)
    out = run_python(code, env={"PERSISTMEMO_DIR": str(tmp_path / "store")}).stdout.split()
    assert out == ["20", "1020", "1070", "1070", "1"]


def test_a_cell_run_again_under_the_same_name_is_read_anew(tmp_path: Path) -> None:
    # Runners that reuse one name per cell: linecache holds the new text under the old name.
    code = """
        import linecache
        namespace = {"__name__": "__main__"}

        def run_cell(name, text):
            linecache.cache[name] = (len(text), None, text.splitlines(True), name)
            exec(compile(text, name, "exec"), namespace)

        run_cell("<cell-1>", "from persistmemo import memo\\n")
        run_cell("<cell-2>", "@memo\\ndef f(x):\\n    return x * 2\\n")
        run_cell("<cell-3>", "print(f(10))")
        run_cell("<cell-2>", "@memo\\ndef f(x):\\n    return x * 3\\n")
        run_cell("<cell-3>", "print(f(10))")
    """
    out = run_python(code, env={"PERSISTMEMO_DIR": str(tmp_path / "store")}).stdout.split()
    assert out == ["20", "30"]


def test_notebook_controls_and_classes_follow_re_run_cells(tmp_path: Path) -> None:
    code = NOTEBOOK + textwrap.dedent("""
        run_cell("from persistmemo import memo\\nSCALE = 2\\n")
        run_cell("class Tool:\\n    def run(self, x):\\n        return x * SCALE\\n")
        run_cell("@memo\\ndef f(x):\\n    return Tool().run(x)\\n")
        run_cell("first = f.version()\\nprint(f.map([10, 11]))")
        run_cell("SCALE = 3\\n")
        run_cell("print(f.map([10, 11]), f.version() != first)")
    """)
    out = run_python(code, env={"PERSISTMEMO_DIR": str(tmp_path / "store")}).stdout.split("\n")
    assert out[:2] == ["[20, 22]", "[30, 33] True"]
