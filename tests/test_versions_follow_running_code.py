"""The version follows the code that runs: reloads, %autoreload, stale bytecode, imports in
the body, methods of config instances, read-and-mutated values. Fresh interpreters for every
step that crosses a restart; a store poisoned by a wrong version is checked from a process
that runs the old code."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from persistmemo import Store, memo
from persistmemo._versioning.sources import _normalized_dump


def write(directory: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


def python(directory: Path, code: str, *, bytecode: bool = False) -> list[str]:
    """Run ``code`` in a fresh interpreter in ``directory`` (which it imports from); its
    output lines. ``bytecode``: write .pyc files as users' machines do (a same-size edit
    within a second then runs the old code: the stale .pyc test wants that, no other)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = str(directory)
    env["PERSISTMEMO_DIR"] = str(directory / "store")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


HELPERS = """
def transform(x):
    return x + {n}
"""

APP = """
import helpers
from helpers import transform
from persistmemo import memo

@memo
def through_module(x):
    return helpers.transform(x)

@memo
def through_name(x):
    return transform(x)
"""


def test_a_reloaded_helper_module_changes_the_version_at_the_next_call(tmp_path: Path) -> None:
    write(tmp_path, {"helpers.py": HELPERS.format(n=100), "app.py": APP})
    out = python(
        tmp_path,
        """
        import importlib, app, helpers
        print(app.through_module(1))
        with open("helpers.py", "w") as f:
            f.write("def transform(x):\\n    return x + 200\\n")
        importlib.reload(helpers)
        print(app.through_module(1), app.through_name(1))
        """,
    )
    # After the reload, helpers.transform is the new code; `from helpers import transform`
    # still holds the old function, which is what through_name runs.
    assert out == ["101", "201", "101"]
    # A process that runs the new code is served what it computes, and one that runs the
    # old code too: nothing was stored under the other's version.
    assert python(tmp_path, "import app; print(app.through_module(1))") == ["201"]
    write(tmp_path, {"helpers.py": HELPERS.format(n=100)})
    assert python(tmp_path, "import app; print(app.through_module(1))") == ["101"]


def test_code_swapped_in_place_as_autoreload_does_changes_the_version(tmp_path: Path) -> None:
    write(tmp_path, {"helpers.py": HELPERS.format(n=100), "app.py": APP})
    out = python(
        tmp_path,
        """
        import app, helpers
        print(app.through_name(1))
        # IPython's %autoreload 2 updates existing functions in place: new __code__, same
        # object, so `from helpers import transform` runs the new code too.
        namespace = {}
        exec("def transform(x):\\n    return x + 300\\n", namespace)
        helpers.transform.__code__ = namespace["transform"].__code__
        print(app.through_name(1), app.through_name.cache_info().misses)
        """,
    )
    assert out == ["101", "301", "2"]


def test_a_result_computed_while_the_code_changed_is_not_stored(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "helpers.py": HELPERS.format(n=100),
            "app.py": """
                import importlib, helpers
                from persistmemo import memo

                @memo
                def reloads_midway(x):
                    before = helpers.transform(x)
                    with open("helpers.py", "w") as f:
                        f.write("def transform(x):\\n    return x + 500\\n")
                    importlib.reload(helpers)  # the version it was keyed under is gone
                    return before
            """,
        },
    )
    assert python(tmp_path, "import app; print(app.reloads_midway(1))") == ["101"]
    # Keyed under the old helper's version, it would be served to the old code's processes
    # and, worse, to nobody correctly: it was not stored at all.
    write(tmp_path, {"helpers.py": HELPERS.format(n=100)})
    out = python(
        tmp_path,
        """
        import app
        from persistmemo.stores.base import MISSING
        print(app.reloads_midway.store.read(app.reloads_midway.key(1)) is MISSING)
        """,
    )
    assert out == ["True"]


def test_a_stale_pyc_is_versioned_by_the_code_it_runs(tmp_path: Path) -> None:
    write(tmp_path, {"helpers.py": HELPERS.format(n=100), "app.py": APP})
    check = "import app, helpers; print(app.through_module(1), helpers.transform(1))"
    assert python(tmp_path, check, bytecode=True) == ["101", "101"]
    before = os.stat(tmp_path / "helpers.py")
    write(tmp_path, {"helpers.py": HELPERS.format(n=300)})  # the same size
    os.utime(tmp_path / "helpers.py", ns=(before.st_atime_ns, before.st_mtime_ns))
    # Python checks the .pyc against the source's size and mtime only: it runs the old code.
    assert python(tmp_path, check, bytecode=True) == ["101", "101"]
    for cached in (tmp_path / "__pycache__").glob("helpers.*"):
        cached.unlink()
    # The new code runs now: it must not be served what the stale bytecode stored.
    assert python(tmp_path, check, bytecode=True) == ["301", "301"]


BODY_IMPORTS = {
    "scaling.py": "FACTOR = {factor}\n\ndef scale(x):\n    return x * FACTOR\n",
    "pkg/__init__.py": "",
    "pkg/sub.py": "def shift(x):\n    return x + {shift}\n",
    "app.py": """
        from persistmemo import memo

        @memo
        def module_import(x):
            import scaling
            return scaling.scale(x)

        @memo
        def name_import(x):
            from scaling import scale
            return scale(x)

        @memo
        def dotted_import(x):
            import pkg.sub
            return pkg.sub.shift(x)
    """,
}


def body_imports(factor: int, shift: int) -> dict[str, str]:
    return {
        name: source.format(factor=factor, shift=shift) if "{" in source else source
        for name, source in BODY_IMPORTS.items()
    }


def test_modules_imported_inside_the_body_are_in_the_version(tmp_path: Path) -> None:
    call = "import app; print(app.module_import(2), app.name_import(2), app.dotted_import(2))"
    write(tmp_path, body_imports(factor=10, shift=1))
    assert python(tmp_path, call) == ["20", "20", "3"]
    write(tmp_path, body_imports(factor=30, shift=5))
    assert python(tmp_path, call) == ["60", "60", "7"]


CONFIGS = """
import dataclasses, enum, typing

@dataclasses.dataclass(frozen=True)
class Settings:
    scale: int = 2
    def apply(self, x):
        return x * self.scale + {offset}

class Mode(enum.Enum):
    FAST = 1
    def apply(self, x):
        return x + {offset}

class Pair(typing.NamedTuple):
    a: int
    def apply(self, x):
        return x - {offset}

SETTINGS = Settings()
"""

CONFIG_APP = """
import configs
from configs import SETTINGS, Mode, Pair
from persistmemo import memo

PAIR = Pair(1)

@memo
def through_global(x):
    return SETTINGS.apply(x)

@memo
def through_enum(x):
    return Mode.FAST.apply(x)

@memo
def through_namedtuple(x):
    return PAIR.apply(x)

def make(settings):
    @memo
    def captured(x):
        return settings.apply(x)
    return captured

through_closure = make(configs.Settings(scale=3))

@memo
def through_default(x, settings=configs.Settings(scale=4)):
    return settings.apply(x)
"""


def test_methods_of_config_instances_are_in_the_version(tmp_path: Path) -> None:
    call = """
        import app
        print(app.through_global(1), app.through_enum(1), app.through_namedtuple(1),
              app.through_closure(1), app.through_default(1))
    """
    write(tmp_path, {"configs.py": CONFIGS.format(offset=0), "app.py": CONFIG_APP})
    assert python(tmp_path, call) == ["2", "1", "1", "3", "4"]
    write(tmp_path, {"configs.py": CONFIGS.format(offset=10)})
    assert python(tmp_path, call) == ["12", "11", "-9", "13", "14"]


def test_a_captured_dict_read_and_mutated_is_keyed_by_its_content(store: Store) -> None:
    def make(opts: dict[str, int]) -> object:
        @memo(store=store)
        def scaled(x: int) -> int:
            opts.setdefault("scale", 2)
            return x * opts["scale"]

        return scaled

    assert make({"scale": 2})(10) == 20  # type: ignore[operator]
    assert make({"scale": 3})(10) == 30  # type: ignore[operator]
    assert make({})(10) == 20  # type: ignore[operator]


def test_a_captured_list_only_appended_to_stays_out_of_the_key(store: Store) -> None:
    calls: list[int] = []

    @memo(store=store)
    def logged(x: int) -> int:
        calls.append(x)
        return x * 2

    assert [logged(1), logged(1)] == [2, 2]
    assert calls == [1]


def test_a_class_in_a_file_written_moments_ago_keeps_its_version_later(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "shapes.py": "class Square:\n    def area(self, side):\n        return side * side\n",
            "app.py": """
                from shapes import Square
                from persistmemo import memo

                @memo
                def area(side):
                    return Square().area(side)
            """,
        },
    )
    call = "import app; print(app.area.version())"
    fresh = python(tmp_path, call)  # the files are under 2 s old
    # Past the 2 s a file's stamp needs to be trusted, and the second of boot time's rounding
    time.sleep(3.5)
    assert python(tmp_path, call) == fresh


def test_the_normalized_source_leaves_out_fields_newer_pythons_add() -> None:
    # 3.12 added type_params to every FunctionDef: the same source must keep its version.
    node = ast.parse("def f(x):\n    return x + 1\n").body[0]
    without = _normalized_dump(node, drop_decorators=True)
    fields = ast.FunctionDef._fields
    if "type_params" not in fields:
        fields = (*fields, "type_params")
    newer = type("FunctionDef", (ast.FunctionDef,), {"_fields": fields})
    copy = newer(**{name: getattr(node, name, None) for name in ast.FunctionDef._fields})
    copy.type_params = []
    assert _normalized_dump(copy, drop_decorators=True) == without


def test_library_decorators_captured_internals_are_not_keyed(tmp_path: Path) -> None:
    # A decorator from an installed package (scikit-learn's @validate_params captures its
    # constraint objects): its internals are its version's business (packages=), not inputs.
    site = tmp_path / "lib" / "site-packages"
    write(
        site,
        {
            "validating.py": """
                import functools, threading

                def validate(constraints):
                    lock = threading.Lock()  # not a value any key could hold
                    def decorate(func):
                        @functools.wraps(func)
                        def checked(*args, **kwargs):
                            with lock:
                                assert constraints
                            return func(*args, **kwargs)
                        return checked
                    return decorate

                @validate({"x": [int]})
                def distances(x):
                    return x * 2
            """
        },
    )
    sys.path.insert(0, str(site))
    try:
        import validating  # type: ignore[import-not-found]

        cached = memo(validating.distances, store=Store(tmp_path / "store"))
        assert [cached(3), cached(3)] == [6, 6]
        assert cached.cache_info().hits == 1
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("validating", None)


def test_version_info_says_when_a_function_is_versioned_by_its_bytecode(store: Store) -> None:
    namespace: dict[str, object] = {}
    exec(compile("def typed_in(x):\n    return x + 1\n", "<typed>", "exec"), namespace)
    typed_in = memo(namespace["typed_in"], store=store)  # type: ignore[call-overload]
    assert typed_in(1) == 2
    assert typed_in.version_info()["function"]["basis"] == "bytecode"


@pytest.mark.parametrize("points", [0, 4, 40])
def test_the_watch_sees_every_rebinding_and_code_swap(points: int) -> None:
    from persistmemo._versioning.code_watch import CodeWatch

    namespace = {f"name{i}": object() for i in range(points)}

    def function() -> None:
        pass

    watch = CodeWatch([(namespace, name, value) for name, value in namespace.items()], [function])
    assert not watch.changed()
    for name in list(namespace):
        held = namespace[name]
        namespace[name] = object()
        assert watch.changed()
        namespace[name] = held
        del namespace[name]
        assert watch.changed()
        namespace[name] = held
    assert not watch.changed()
    original = function.__code__
    function.__code__ = (lambda: None).__code__
    assert watch.changed()
    function.__code__ = original
    assert not watch.changed()


def test_the_version_of_the_same_source_is_a_golden_vector_on_every_python(
    tmp_path: Path,
) -> None:
    # The same on 3.10 to 3.13 (3.12 added type_params to every definition): a change here
    # makes every user's stored results miss, so it is made on purpose or not at all.
    write(
        tmp_path,
        {
            "golden_version.py": '''
                def transform(x):
                    """Doc."""
                    y = [i * 2 for i in range(x)]
                    return sum(y) + x
            '''
        },
    )
    out = python(
        tmp_path,
        """
        from persistmemo._versioning.versions import code_version
        import golden_version
        print(code_version(golden_version.transform))
        """,
    )
    assert out == ["1b1e1a60b90f69f0"]


def test_a_large_table_is_in_the_version_by_its_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Digested through marshal (a 300,000-row table costs milliseconds, not seconds): the
    # same rows give the same version in every process, one changed row another.
    write(
        tmp_path,
        {
            "tables.py": """
                import os
                from persistmemo import memo

                TABLE = [{"id": i, "name": f"n{i}", "w": i * 0.5} for i in range(5000)]
                TABLE[int(os.environ.get("ROW", "0"))]["w"] = -1.0
                WORDS = frozenset(f"w{i}" for i in range(5000))  # ordered by hash per process

                @memo
                def weight(i):
                    return TABLE[i]["w"], f"w{i}" in WORDS
            """
        },
    )
    call = "import tables; print(tables.weight.version())"
    first = python(tmp_path, call)
    assert python(tmp_path, call) == first
    monkeypatch.setenv("ROW", "4000")
    assert python(tmp_path, call) != first


def test_a_submodule_imported_by_name_in_the_body_is_in_the_version(tmp_path: Path) -> None:
    files = {
        "pkg/__init__.py": "",
        "pkg/scaling.py": "def scale(x):\n    return x * {n}\n",
        "pkg/mod.py": """
            from persistmemo import memo

            @memo
            def relative(x):
                from . import scaling
                return scaling.scale(x)

            @memo
            def absolute(x):
                from pkg import scaling as s
                return s.scale(x)
        """,
    }
    call = "import pkg.mod as m; print(m.relative(10), m.absolute(10))"
    write(tmp_path, {k: v.replace("{n}", "2") for k, v in files.items()})
    assert python(tmp_path, call) == ["20", "20"]
    write(tmp_path, {"pkg/scaling.py": files["pkg/scaling.py"].replace("{n}", "3")})
    assert python(tmp_path, call) == ["30", "30"]


def test_deriving_a_version_never_imports_a_module_the_body_did_not(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "clitool.py": "import sys\nprint('clitool imported')\nsys.exit(2)\n",
            "app.py": """
                from persistmemo import memo
                USE_CLI = False

                @memo
                def f(x):
                    if USE_CLI:
                        import clitool
                    return x + 1
            """,
        },
    )
    assert python(tmp_path, "import app; print(app.f(1), app.f(1))") == ["2", "2"]


RACE = """
import importlib, threading, time
import helpers
from persistmemo import memo

@memo
def slow(x):
    time.sleep(0.5)
    return helpers.transform(x)
"""


def test_a_result_computed_while_another_thread_re_derived_is_not_stored(tmp_path: Path) -> None:
    write(tmp_path, {"helpers.py": HELPERS.format(n=100), "racing.py": RACE})
    out = python(
        tmp_path,
        """
        import importlib, threading, time, helpers, racing
        results = {}
        first = threading.Thread(target=lambda: results.update(a=racing.slow(1)))
        first.start()
        time.sleep(0.1)
        with open("helpers.py", "w") as f:
            f.write("def transform(x):\\n    return x + 200\\n")
        importlib.reload(helpers)
        results["b"] = racing.slow(5)  # derives the new version while the first computes
        first.join()
        print(results["a"], results["b"])
        """,
    )
    assert out == ["201", "205"]  # the first ran the new helper, keyed under the old version
    write(tmp_path, {"helpers.py": HELPERS.format(n=100)})
    # The old code's version must not hold what the thread computed with the new helper.
    out = python(
        tmp_path,
        """
        import racing
        from persistmemo.stores.base import MISSING
        print(racing.slow.store.read(racing.slow.key(1)) is MISSING)
        """,
    )
    assert out == ["True"]


def test_a_helpers_captured_variable_rebound_elsewhere_changes_the_version(
    store: Store,
) -> None:
    def make() -> tuple[object, object]:
        k = 2

        def helper(x: int) -> int:
            return x * k

        def set_k(value: int) -> None:
            nonlocal k
            k = value

        return helper, set_k

    helper, set_k = make()

    @memo(store=store)
    def f(x: int) -> int:
        return helper(x)  # type: ignore[operator,no-any-return]

    assert f(10) == 20
    set_k(3)  # type: ignore[operator]
    assert f(10) == 30


def test_a_rebound_special_method_changes_the_version(store: Store) -> None:
    class Scaler:
        def __call__(self, x: int) -> int:
            return x * 2

    scaler = Scaler()

    @memo(store=store, ignore=["scaler"])  # not keyed; its class is in the version
    def f(x: int) -> int:
        return scaler(x)

    assert f(10) == 20
    Scaler.__call__ = lambda self, x: x * 3  # type: ignore[method-assign,assignment,misc]
    assert f(10) == 30


def test_a_global_helpers_captured_variable_rebound_changes_the_version(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "cells.py": """
                from persistmemo import memo

                def make():
                    k = 2
                    calls = 0
                    def helper(x):
                        nonlocal calls
                        calls += 1          # state it keeps: never re-derives the version
                        return x * k
                    def set_k(value):
                        nonlocal k
                        k = value
                    return helper, set_k

                helper, set_k = make()

                @memo
                def f(x):
                    return helper(x)
            """
        },
    )
    out = python(
        tmp_path,
        """
        import cells
        first = [cells.f(10), cells.f(10)]
        cells.set_k(3)
        print(*first, cells.f(10), cells.f(10), cells.f.cache_info().misses)
        """,
    )
    assert out == ["20", "20", "30", "30", "2"]


def test_the_methods_of_a_config_held_by_a_config_are_in_the_version(tmp_path: Path) -> None:
    files = {
        "nested.py": """
            import dataclasses

            @dataclasses.dataclass
            class Inner:
                k: int = 2
                @property
                def kk(self):
                    return self.k * {factor}

            @dataclasses.dataclass
            class Outer:
                inner: Inner = dataclasses.field(default_factory=Inner)
        """,
        "app.py": """
            import nested
            from persistmemo import memo

            CFG = nested.Outer()

            @memo
            def f(x):
                return x * CFG.inner.kk
        """,
    }
    write(tmp_path, {k: v.replace("{factor}", "3") for k, v in files.items()})
    assert python(tmp_path, "import app; print(app.f(2))") == ["12"]
    write(tmp_path, {"nested.py": files["nested.py"].replace("{factor}", "5")})
    assert python(tmp_path, "import app; print(app.f(2))") == ["20"]
