"""Decorators below @memo: every layer's code is in the version, and what the layers capture."""

from __future__ import annotations

import importlib.util
import itertools
import textwrap
from pathlib import Path
from types import ModuleType

from persistmemo._versioning.versions import code_version, explain_version

_counter = itertools.count()


def load_module(tmp_path: Path, source: str) -> ModuleType:
    name = f"layered_{next(_counter)}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCALED = """
import functools

def scaled(factor):
    def decorate(func):
        @functools.wraps(func)
        def wrapper(x):
            return func(x) {operator} factor
        return wrapper
    return decorate

@scaled(10)
def f(x):
    return x + {offset}
"""

UNWRAPPED = """
def logged(func):
    def wrapper(x):
        return func(x) {operator} 1
    return wrapper

@logged
def f(x):
    return x + {offset}
"""


def versions(tmp_path: Path, source: str) -> tuple[str, str, str]:
    def version(operator: str, offset: int) -> str:
        module = load_module(tmp_path, source.format(operator=operator, offset=offset))
        return code_version(module.f)

    return version("*", 1), version("+", 1), version("*", 2)


def test_the_code_of_a_decorator_below_memo_and_of_the_function_are_in_the_version(
    tmp_path: Path,
) -> None:
    original, wrapper_changed, function_changed = versions(tmp_path, SCALED)
    assert len({original, wrapper_changed, function_changed}) == 3
    assert versions(tmp_path, SCALED)[0] == original


def test_a_wrapper_without_functools_wraps_versions_the_function_it_captures(
    tmp_path: Path,
) -> None:
    original, wrapper_changed, function_changed = versions(tmp_path, UNWRAPPED)
    assert len({original, wrapper_changed, function_changed}) == 3


def test_the_layers_are_described_outermost_first(tmp_path: Path) -> None:
    module = load_module(tmp_path, SCALED.format(operator="*", offset=1))
    described = explain_version(module.f)
    assert described["function"]["qualname"] == "f"
    assert [layer["qualname"] for layer in described["layers"]] == [
        "scaled.<locals>.decorate.<locals>.wrapper"
    ]
    assert described["captured"] == [f"{module.__name__}:f"]


def test_the_value_a_decorator_captures_is_left_to_the_call_keys(tmp_path: Path) -> None:
    # factor=10 vs 20: the decorator keys captured values at each call, not the version.
    ten = load_module(tmp_path, SCALED.format(operator="*", offset=1))
    twenty = load_module(
        tmp_path, SCALED.format(operator="*", offset=1).replace("@scaled(10)", "@scaled(20)")
    )
    assert code_version(ten.f) == code_version(twenty.f)


def test_a_library_decorator_below_memo_keeps_the_version(tmp_path: Path) -> None:
    plain = load_module(tmp_path, "def f(x):\n    return x + 1\n")
    cached = load_module(
        tmp_path, "import functools\n\n@functools.lru_cache\ndef f(x):\n    return x + 1\n"
    )
    assert code_version(plain.f) == code_version(cached.f)
