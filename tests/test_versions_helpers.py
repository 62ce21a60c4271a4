"""Helpers in other modules of the user's code are in the version; libraries are not followed."""

from __future__ import annotations

import importlib
import itertools
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from persistmemo._versioning.versions import code_version, explain_version

_counter = itertools.count()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def load_package(root: Path, files: dict[str, str]) -> ModuleType:
    """Write ``files`` as a fresh package (a new name each time) and import its ``main``."""
    name = f"userpkg_{next(_counter)}"
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    for filename, source in files.items():
        (root / name / filename).write_text(textwrap.dedent(source))
    importlib.invalidate_caches()
    return importlib.import_module(f"{name}.main")


FEATURES = """
import math

FACTOR = {factor}
DATA_DIR = "/data/{data}"

def clean(x):
    # strip the noise
    return math.floor(x * FACTOR) + {offset}

class Scaler:
    def scale(self, x):
        return x * {scale}
"""

MAIN_FROM_IMPORT = """
from .features import clean

def f(x):
    return clean(x)
"""

MAIN_MODULE_ATTRIBUTE = """
from . import features

def f(x):
    return features.clean(x), features.DATA_DIR
"""

MAIN_CLASS = """
from .features import Scaler

def f(x):
    return Scaler().scale(x)
"""


def version(project: Path, main: str, **features: object) -> str:
    values = {"factor": 2, "data": "a", "offset": 1, "scale": 3, **features}
    module = load_package(project, {"features.py": FEATURES.format(**values), "main.py": main})
    return code_version(module.f)


@pytest.mark.parametrize("main", [MAIN_FROM_IMPORT, MAIN_MODULE_ATTRIBUTE])
def test_a_helper_in_another_user_module_is_in_the_version(project: Path, main: str) -> None:
    original = version(project, main)
    assert version(project, main, offset=5) != original
    assert version(project, main) == original


def test_a_constant_of_another_module_read_by_a_helper_is_in_the_version(project: Path) -> None:
    original = version(project, MAIN_FROM_IMPORT)
    assert version(project, MAIN_FROM_IMPORT, factor=3) != original


def test_a_constant_read_through_a_module_attribute_is_in_the_version(project: Path) -> None:
    original = version(project, MAIN_MODULE_ATTRIBUTE)
    assert version(project, MAIN_MODULE_ATTRIBUTE, data="b") != original


def test_a_method_of_a_class_from_another_module_is_in_the_version(project: Path) -> None:
    original = version(project, MAIN_CLASS)
    assert version(project, MAIN_CLASS, scale=4) != original
    assert version(project, MAIN_CLASS, offset=9) == original  # clean() is not used


def test_a_reformatted_or_commented_helper_keeps_the_version(project: Path) -> None:
    original = version(project, MAIN_FROM_IMPORT)
    reformatted = FEATURES.replace("# strip the noise", '"""Docstring."""  # a comment').replace(
        "return math.floor(x * FACTOR) + {offset}",
        "return (math.floor(x*FACTOR)\n            + {offset})",
    )
    module = load_package(
        project,
        {
            "features.py": reformatted.format(factor=2, data="a", offset=1, scale=3),
            "main.py": MAIN_FROM_IMPORT,
        },
    )
    assert code_version(module.f) == original


def test_the_module_constants_a_function_reads_are_in_the_version_by_default(
    project: Path,
) -> None:
    main = "FACTOR = {}\n\ndef f(x):\n    return x * FACTOR\n"
    two = load_package(project, {"main.py": main.format(2)}).f
    three = load_package(project, {"main.py": main.format(3)}).f
    assert code_version(two) != code_version(three)
    assert code_version(two, include_globals=False) == code_version(three, include_globals=False)


def test_helpers_that_call_each_other_across_modules_are_followed_once(project: Path) -> None:
    files = {
        "a.py": "from . import b\n\ndef ping(n):\n    return b.pong(n - 1) if n else {}\n",
        "b.py": "from . import a\n\ndef pong(n):\n    return a.ping(n - 1) if n else 0\n",
        "main.py": "from .a import ping\n\ndef f(n):\n    return ping(n)\n",
    }
    first = load_package(project, {**files, "a.py": files["a.py"].format(1)})
    second = load_package(project, {**files, "a.py": files["a.py"].format(2)})
    assert first.f(3) == 0
    assert code_version(first.f) != code_version(second.f)
    helpers = [entry["qualname"] for entry in explain_version(first.f)["helpers"]]
    assert sorted(helpers) == ["ping", "pong"]


def test_the_standard_library_and_installed_packages_are_not_followed(project: Path) -> None:
    main = """
    import json
    import os.path
    import pytest
    from collections import OrderedDict

    def f(x):
        return json.dumps(OrderedDict(x=os.path.join("a", x))), pytest.approx
    """
    described = explain_version(load_package(project, {"main.py": main}).f)
    assert described["helpers"] == []
    assert described["constants"] == []
    assert described["function"]["basis"] == "source"


def test_a_global_the_function_assigns_is_state_not_a_constant(project: Path) -> None:
    main = "calls = {}\n\ndef f(x):\n    global calls\n    calls += 1\n    return x\n"
    assert code_version(load_package(project, {"main.py": main.format(0)}).f) == code_version(
        load_package(project, {"main.py": main.format(5)}).f
    )


def test_a_global_a_helper_only_writes_is_state_not_a_constant(project: Path) -> None:
    main = """
        _LOG = {}
        COLUMNS = ["a", "b"]

        def lookup(x):
            _LOG[x] = _LOG.get(x, 0) + 1
            return x * 2

        def f(x):
            return lookup(x), COLUMNS
    """
    module = load_package(project, {"main.py": main})
    before = code_version(module.f)
    module.f(3)  # fills _LOG, as a program would before the first memoized call
    module._LOG["other"] = 1
    assert code_version(module.f) == before
    constants = [c["name"] for c in explain_version(module.f)["constants"]]
    assert constants == ["COLUMNS"]  # a list nobody mutates is still a constant


def test_a_global_a_helper_reads_and_mutates_is_in_the_version(project: Path) -> None:
    # What the code reads back can change its result (`OPTS.setdefault("scale", 2)` then
    # `OPTS["scale"]`): its content at the first call is part of the version, so editing
    # OPTS = {"scale": 3} is seen; a cache filled differently before the first call costs
    # a miss, never a stale result.
    main = """
        OPTS = {{"scale": {scale}}}

        def scale():
            OPTS.setdefault("scale", 2)
            return OPTS["scale"]

        def f(x):
            return x * scale()
    """
    three = code_version(load_package(project, {"main.py": main.format(scale=3)}).f)
    assert code_version(load_package(project, {"main.py": main.format(scale=2)}).f) != three


def test_explain_version_describes_what_went_into_the_version(project: Path) -> None:
    import json

    module = load_package(
        project,
        {
            "features.py": FEATURES.format(factor=2, data="a", offset=1, scale=3),
            "main.py": MAIN_MODULE_ATTRIBUTE,
        },
    )
    described = explain_version(module.f)
    json.dumps(described)  # serializable
    assert described["version"] == code_version(module.f)
    assert described["function"]["qualname"] == "f"
    assert described["function"]["module"] == module.__name__
    assert [h["qualname"] for h in described["helpers"]] == ["clean"]
    assert {c["name"]: c["repr"] for c in described["constants"]} == {
        "DATA_DIR": "'/data/a'",
        "FACTOR": "2",
    }


def test_editing_a_helper_module_invalidates_a_memoized_function_in_a_fresh_process(
    tmp_path: Path,
) -> None:
    from conftest import run_python

    (tmp_path / "job.py").write_text(
        "from persistmemo import memo\nfrom features import clean\n\n"
        "@memo\ndef run(x):\n    return clean(x)\n"
    )
    env = {"PERSISTMEMO_DIR": str(tmp_path / "store")}

    def run(factor: int) -> str:
        source = f"FACTOR = {factor}\n\ndef clean(x):\n    return x * FACTOR\n"
        (tmp_path / "features.py").write_text(source)
        return run_python("import job; print(job.run(2))", cwd=tmp_path, env=env).stdout.strip()

    assert run(10) == "20"
    assert run(3) == "6"  # the stale 20 is not served


@pytest.mark.parametrize(
    ("template", "before", "after"),
    [
        (
            "import re\nPAT = re.compile({})\n\ndef f(x):\n    return PAT.fullmatch(x)\n",
            "'a+'",
            "'b+'",
        ),
        ("R = range({})\n\ndef f(x):\n    return list(R)\n", "2", "3"),
        (
            "class Config:\n    def __init__(self, k):\n        self.k = k\n\n"
            "CONFIG = Config({})\n\ndef f(x):\n    return x * CONFIG.k\n",
            "2",
            "3",
        ),
        (
            "def double(x):\n    return x * {}\n\nSTEPS = (double,)\n\n"
            "def f(x):\n    return STEPS[0](x)\n",
            "2",
            "3",
        ),
        (
            "def double(x):\n    return x * {}\n\nTABLE = {{'d': double}}\n\n"
            "def f(x):\n    return TABLE['d'](x)\n",
            "2",
            "3",
        ),
        (
            "SCALE = {}\n\nclass Model:\n    k = SCALE\n\n    def run(self, x):\n"
            "        return x * self.k\n\ndef f(x):\n    return Model().run(x)\n",
            "2",
            "3",
        ),
        (
            "import dataclasses\nK = {}\n\n@dataclasses.dataclass\nclass Model:\n"
            "    k: int = K\n\ndef f(x):\n    return x * Model().k\n",
            "2",
            "3",
        ),
        (
            "FACTOR = {}\n\ndef helper(x, k=FACTOR):\n    return x * k\n\n"
            "def f(x):\n    return helper(x)\n",
            "2",
            "3",
        ),
    ],
    ids=[
        "pattern",
        "range",
        "instance",
        "tuple-of-functions",
        "dispatch-dict",
        "class-body",
        "dataclass-default",
        "default-argument",
    ],
)
def test_values_the_key_encoding_cannot_take_still_change_the_version(
    project: Path, template: str, before: str, after: str
) -> None:
    # Memoized, as users write it: decoration stamps the file, so its source is trusted to
    # hold the values the module computed (a file edited later would not be).
    def version(value: str) -> str:
        source = "from persistmemo import memo\n" + template.format(value)
        source = source.replace("\ndef f(x):", "\n@memo\ndef f(x):")
        return str(load_package(project, {"main.py": source}).f.version())

    first, second, again = version(before), version(after), version(before)
    assert first != second
    assert first == again


def test_a_methods_class_is_in_its_version(project: Path) -> None:
    template = """
        from persistmemo import memo

        class Model:
            k = {k}

            def g(self, x):
                return x * {g}

            @memo(ignore=["self"])
            def f(self, x):
                return self.g(x) + self.k
    """

    def version(k: int, g: int) -> str:
        module = load_package(project, {"main.py": textwrap.dedent(template.format(k=k, g=g))})
        return str(module.Model.f.version())

    base = version(2, 10)
    assert version(3, 10) != base  # a class attribute read through self
    assert version(2, 20) != base  # a sibling method called through self
    assert version(2, 10) == base


def test_a_constant_imported_from_another_module_is_versioned_where_it_is_made(
    project: Path,
) -> None:
    def version(pattern: str) -> str:
        files = {
            "config.py": f"import re\nTEXT = {pattern!r}\nPAT = re.compile(TEXT)\n",
            "main.py": "from .config import PAT\n\ndef f(x):\n    return PAT.fullmatch(x)\n",
        }
        return code_version(load_package(project, files).f)

    assert version("a+") != version("b+")
    assert version("a+") == version("a+")


def test_a_decorators_argument_bound_as_a_default_is_in_the_version(project: Path) -> None:
    template = """
        import functools

        def scaled(k):
            def decorate(func):
                @functools.wraps(func)
                def wrapper(x, _k=k):
                    return func(x) * _k
                return wrapper
            return decorate

        @scaled({k})
        def f(x):
            return x
    """

    def version(k: int) -> str:
        return code_version(
            load_package(project, {"main.py": textwrap.dedent(template.format(k=k))}).f
        )

    assert version(2) != version(3)
