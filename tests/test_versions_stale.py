"""A version follows the code the process runs, whatever happened to its files since import.

Each test runs a process that imports code, changes a file under it before the first call
(as an editor, ``cp -p``, a deploy or a test runner does), and calls; then a new process on
the files as they are must compute with them, not be served the first one's results (nor
its remembered version).

Files written by a test are seconds old, while a real checkout is older than the process
that imports it: ``OLD_FILES`` makes the process take every file as written before it
started, so that only the stamps the process took stand between it and a stale version.
"""

from __future__ import annotations

import os
from pathlib import Path

from conftest import run_python

# The process "started" in the far future: every file looks older than it, as a checkout
# made long before the worker started does.
OLD_FILES = (
    "import time, persistmemo._versioning.source_stamps as stamps\n"
    "stamps._process_start[:] = [time.time_ns() + 10**15]\n"
)
# The process started now, with no margin: files the test wrote before it are old.
STARTED_NOW = (
    "import time, persistmemo._versioning.source_stamps as stamps\n"
    "stamps._process_start[:] = [time.time_ns()]\n"
    "stamps._START_MARGIN_NS = 0\n"
)

HELPER = "def helper(x):\n    return x + {}\n"


def _environment(tmp_path: Path, store: str = "store") -> dict[str, str]:
    return {"PERSISTMEMO_DIR": str(tmp_path / store), "PYTHONDONTWRITEBYTECODE": "1"}


def _result(tmp_path: Path, code: str, store: str = "store", **env: str) -> list[str]:
    done = run_python(code, cwd=tmp_path, env={**_environment(tmp_path, store), **env})
    return done.stdout.split()


def test_a_helper_copied_over_with_its_old_mtime_before_the_first_call_is_not_served_later(
    tmp_path: Path,
) -> None:
    (tmp_path / "helper.py").write_text(HELPER.format(1))
    (tmp_path / "helper_b.py").write_text(HELPER.format(2))
    os.utime(tmp_path / "helper_b.py", ns=(0, os.stat(tmp_path / "helper.py").st_mtime_ns))
    (tmp_path / "main.py").write_text(
        "import helper\nfrom persistmemo import memo\n\n"
        "@memo\ndef f(x):\n    return helper.helper(x)\n"
    )
    first = _result(
        tmp_path,
        OLD_FILES + "import shutil, main\n"
        "shutil.copy2('helper_b.py', 'helper.py')\n"  # cp -p: same size, same mtime
        "print(main.f(10), main.f.version())\n",
    )
    assert first[0] == "11"  # the running code: helper A
    then = _result(tmp_path, "import main; print(main.f(10), main.f.version())")
    fresh = _result(tmp_path, "import main; print(main.f(10), main.f.version())", "fresh")
    assert then == fresh == ["12", fresh[1]]
    assert first[1] != fresh[1]


def test_a_module_rewritten_in_place_with_its_mtime_restored_is_not_served_later(
    tmp_path: Path,
) -> None:
    module = "from persistmemo import memo\n\n@memo\ndef f(x):\n    return x + {}\n"
    (tmp_path / "mod.py").write_text(module.format(1))
    first = _result(
        tmp_path,
        OLD_FILES + "import os, mod\n"
        "before = os.stat('mod.py')\n"
        f"open('mod.py', 'w').write({module.format(2)!r})\n"
        "os.utime('mod.py', ns=(before.st_atime_ns, before.st_mtime_ns))\n"
        "print(mod.f(10), mod.f.version())\n",
    )
    assert first[0] == "11"
    then = _result(tmp_path, "import mod; print(mod.f(10), mod.f.version())")
    fresh = _result(tmp_path, "import mod; print(mod.f(10), mod.f.version())", "fresh")
    assert then == fresh == ["12", fresh[1]]
    assert first[1] != fresh[1]


def test_a_release_symlink_switched_before_the_first_call_is_not_served_the_old_release(
    tmp_path: Path,
) -> None:
    worker = (
        "import helper\nfrom persistmemo import memo\n\n"
        "@memo(name='worker.f')\ndef f(x):\n    return helper.helper(x)\n"
    )
    for release, add in (("r1", 1), ("r2", 2)):
        directory = tmp_path / "releases" / release
        directory.mkdir(parents=True)
        (directory / "helper.py").write_text(HELPER.format(add))
        (directory / "worker.py").write_text(worker)
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "releases" / "r1")
    path = {"PYTHONPATH": os.pathsep.join([str(current), os.environ.get("PYTHONPATH", "")])}
    first = _result(
        tmp_path,
        OLD_FILES + "import os, worker\n"
        "os.symlink('releases/r2', 'next'); os.replace('next', 'current')\n"
        "print(worker.f(10), worker.f.version())\n",
        **path,
    )
    assert first[0] == "11"  # the worker still runs release r1
    code = "import worker; print(worker.f(10), worker.f.version())"
    then = _result(tmp_path, code, **path)
    fresh = _result(tmp_path, code, "fresh", **path)
    assert then == fresh == ["12", fresh[1]]


def test_a_helper_without_a_stamp_replaced_after_the_process_started_is_not_trusted(
    tmp_path: Path,
) -> None:
    # Imported after the last decoration: no stamp, only its ctime tells it was replaced.
    (tmp_path / "helper.py").write_text(HELPER.format(1))
    (tmp_path / "helper_b.py").write_text(HELPER.format(2))
    os.utime(tmp_path / "helper_b.py", ns=(0, os.stat(tmp_path / "helper.py").st_mtime_ns))
    (tmp_path / "main.py").write_text(
        "from persistmemo import memo\n\n"
        "@memo\ndef f(x):\n    return helper.helper(x)\n\n"
        "import helper\n"
    )
    first = _result(
        tmp_path,
        STARTED_NOW + "import shutil, time, main\n"
        "time.sleep(0.05)\n"  # a ctime clearly after the start, on any clock granularity
        "shutil.copy2('helper_b.py', 'helper.py')\n"
        "print(main.f(10), main.f.version())\n",
    )
    assert first[0] == "11"
    then = _result(tmp_path, "import main; print(main.f(10), main.f.version())")
    assert then[0] == "12"
    assert first[1] != then[1]


def test_code_run_with_exec_under_a_files_name_is_versioned_by_the_code_it_runs(
    tmp_path: Path,
) -> None:
    (tmp_path / "tool.py").write_text(
        "from persistmemo import memo\n\n@memo(name='tool.f')\ndef f(x):\n    return x + 1\n"
    )
    exec_variant = (
        OLD_FILES + "source = open('tool.py').read().replace('x + 1', 'x + 5')\n"
        "namespace = {'__name__': 'tool'}\n"
        "exec(compile(source, 'tool.py', 'exec'), namespace)\n"
        "print(namespace['f'](10), namespace['f'].version())\n"
    )
    assert _result(tmp_path, exec_variant)[0] == "15"
    imported = _result(tmp_path, "import tool; print(tool.f(10), tool.f.version())")
    assert imported[0] == "11"


MUTABLES = """
import os
from persistmemo import memo

class Table:
    weights = [1]
Table.weights[0] = int(os.environ.get("C", "1"))    # a class attribute filled at import

def helper(x, opts={"add": 0}):
    return x + opts["add"]
helper.__defaults__[0]["add"] = int(os.environ.get("D", "0"))   # a mutable default

@memo
def by_class_attribute(x):
    return x * Table.weights[0]

@memo
def by_default(x):
    return helper(x)
"""


def test_a_mutable_default_or_class_attribute_filled_at_import_is_in_the_version(
    tmp_path: Path,
) -> None:
    (tmp_path / "mutables.py").write_text(MUTABLES)
    code = "import mutables as m; print(m.by_class_attribute(10), m.by_default(10))"
    assert _result(tmp_path, code) == ["10", "10"]
    assert _result(tmp_path, code, C="3") == ["30", "10"]
    assert _result(tmp_path, code, D="5") == ["10", "15"]


STATEFUL = """
import os
from persistmemo import memo

def seen(x, _cache={}):
    _cache[x] = True              # written, never read back: state
    return 1

class Registry:
    known = []
    def add(self, item):
        self.known.append(item)

for i in range(int(os.environ.get("N", "0"))):   # state filled before the first call
    seen(i)
    Registry().add(i)

@memo
def uses_state(x):
    return x + (seen(-1) > 0) + len(Registry.known) * 0
"""


def test_defaults_and_class_attributes_the_code_mutates_are_state_not_version(
    tmp_path: Path,
) -> None:
    (tmp_path / "stateful.py").write_text(STATEFUL)
    code = "import stateful as s; print(s.uses_state.version())"
    assert _result(tmp_path, code, N="0") == _result(tmp_path, code, N="3")


def test_python_with_O_is_not_served_results_computed_without_it(tmp_path: Path) -> None:
    (tmp_path / "mode.py").write_text(
        "from persistmemo import memo\n\n@memo\ndef mode(x):\n"
        "    if __debug__:\n        return 'debug'\n    return 'optimized'\n"
    )
    code = "import mode; print(mode.mode(1), mode.mode.version())"
    plain = _result(tmp_path, code)
    optimized = _result(tmp_path, code, PYTHONOPTIMIZE="1")
    assert plain[0] == "debug"
    assert optimized[0] == "optimized"
    assert plain[1] != optimized[1]
    assert _result(tmp_path, code) == plain  # and -O's entries are not served back


def test_a_class_run_with_exec_under_its_modules_name_is_versioned_by_the_code_it_runs(
    tmp_path: Path,
) -> None:
    (tmp_path / "shapes.py").write_text(
        "class Square:\n    def area(self, x):\n        return x * x\n"
    )
    (tmp_path / "tool.py").write_text(
        "from persistmemo import memo\nimport shapes\n\n"
        "@memo(name='tool.f')\ndef f(x):\n    return shapes.Square().area(x)\n"
    )
    # The class's code exec'd, edited, into the imported module's namespace.
    exec_variant = (
        OLD_FILES + "import shapes, tool\n"
        "source = open('shapes.py').read().replace('x * x', 'x * x + 1')\n"
        "exec(compile(source, shapes.__file__, 'exec'), {'__name__': 'shapes'}, ns := {})\n"
        "shapes.Square = ns['Square']\n"
        "print(tool.f(3))\n"
    )
    assert _result(tmp_path, exec_variant) == ["10"]
    assert _result(tmp_path, OLD_FILES + "import tool; print(tool.f(3))") == ["9"]


DISPATCH = """
import os
from persistmemo import memo

def one(x):
    return x + 1

def two(x):
    return x + 2

class Handlers:
    table = {"a": one}
if os.environ.get("H") == "two":
    Handlers.table["a"] = two        # a dispatch table filled at import

@memo
def handle(x):
    return Handlers.table["a"](x)
"""


def test_a_class_attribute_dispatch_table_filled_at_import_is_in_the_version(
    tmp_path: Path,
) -> None:
    (tmp_path / "dispatch.py").write_text(DISPATCH)
    code = OLD_FILES + "import dispatch; print(dispatch.handle(10))"
    assert _result(tmp_path, code) == ["11"]
    assert _result(tmp_path, code, H="two") == ["12"]
    assert _result(tmp_path, code) == ["11"]


def test_decorating_does_not_run_or_fail_on_a_lazily_loaded_module(tmp_path: Path) -> None:
    (tmp_path / "heavy.py").write_text("print('heavy ran')\nraise ImportError('deferred')\n")
    code = f"""
        import importlib.util, sys
        sys.path.insert(0, {str(tmp_path)!r})
        spec = importlib.util.find_spec("heavy")
        loader = importlib.util.LazyLoader(spec.loader)
        spec.loader = loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["heavy"] = module
        loader.exec_module(module)
        from persistmemo import Store, memo

        @memo(store=Store({str(tmp_path / "store")!r}))
        def f(x):
            return x + 1

        print(f(1))
    """
    assert run_python(code).stdout.split() == ["2"]
