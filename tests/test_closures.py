"""A closure's captured variables are inputs: keyed at each call, unless they are its state."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import run_python
from persistmemo import Store, memo


def test_factories_give_distinct_results_per_captured_value(store: Store) -> None:
    def make(k: int) -> Any:
        @memo(store=store)
        def scale(x: int) -> int:
            return x * k

        return scale

    assert make(2)(10) == 20
    assert make(3)(10) == 30
    assert make(2)(10) == 20
    assert make(2).key(10) != make(3).key(10)


def test_a_nonlocal_rebinding_by_someone_else_is_seen(store: Store) -> None:
    factor = 2

    @memo(store=store)
    def scale(x: int) -> int:
        return x * factor

    assert scale(5) == 10
    factor = 7
    assert scale(5) == 35


def test_containers_are_keyed_by_content(store: Store) -> None:
    settings = {"unit": "m", "scale": [1, 2]}
    calls = []

    @memo(store=store)
    def describe(x: int) -> str:
        calls.append(x)
        return f"{x}{settings['unit']}{settings['scale']}"

    assert describe(1) == "1m[1, 2]"
    settings["unit"] = "km"
    assert describe(1) == "1km[1, 2]"
    settings["unit"] = "m"
    assert describe(1) == "1m[1, 2]"  # back to the first content: a hit
    assert calls == [1, 1]


def test_state_the_function_changes_is_not_keyed(store: Store) -> None:
    calls: list[int] = []
    seen: set[int] = set()
    totals: dict[str, int] = {}
    count = 0

    @memo(store=store)
    def tracked(x: int) -> int:
        nonlocal count
        count += 1
        calls.append(x)
        seen.add(x)
        totals["n"] = totals.get("n", 0) + 1
        return x * 2

    assert tracked(1) == 2
    assert tracked(1) == 2
    assert calls == [1]
    assert tracked.cache_info().hits == 1


def test_a_generator_advanced_with_next_is_state(store: Store) -> None:
    ids = iter(range(100))

    @memo(store=store)
    def tagged(x: int) -> tuple[int, int]:
        return x, next(ids)

    assert tagged(1) == tagged(1) == (1, 0)


def test_captured_functions_are_followed_to_their_own_captured_values(store: Store) -> None:
    def make(k: int) -> Any:
        def helper(x: int) -> int:
            return x + k

        @memo(store=store)
        def outer(x: int) -> int:
            return helper(x) * 10

        return outer

    assert make(1)(1) == 20
    assert make(2)(1) == 30


def test_captured_memoized_functions_are_followed(store: Store) -> None:
    def make(k: int) -> Any:
        @memo(store=store)
        def inner(x: int) -> int:
            return x + k

        @memo(store=store)
        def outer(x: int) -> int:
            return inner(x) * 10

        return outer

    assert make(1)(1) == 20
    assert make(2)(1) == 30


def test_decorator_arguments_below_memo_are_keyed(store: Store) -> None:
    import functools

    def scaled(factor: int) -> Any:
        def decorate(func: Any) -> Any:
            @functools.wraps(func)
            def wrapper(x: int) -> int:
                return func(x) * factor

            return wrapper

        return decorate

    @memo(store=store, name="tests.closures.base", version="1")
    @scaled(10)
    def ten(x: int) -> int:
        return x

    assert ten(1) == 10

    @memo(store=Store(store.directory), name="tests.closures.base", version="1")
    @scaled(1000)
    def thousand(x: int) -> int:
        return x

    assert thousand(1) == 1000


def test_unkeyable_captured_values_raise_a_clear_error(store: Store) -> None:
    lock = threading.Lock()

    @memo(store=store)
    def guarded(x: int) -> int:
        with lock:
            return x

    with pytest.raises(
        TypeError, match=r"captured variable 'lock' of .*guarded\(\).*ignore=\['lock'\]"
    ):
        guarded(1)


def test_ignore_opts_a_captured_variable_out(store: Store) -> None:
    lock = threading.Lock()
    calls = []

    @memo(store=store, ignore=["lock"])
    def guarded(x: int) -> int:
        with lock:
            calls.append(x)
            return x

    assert guarded(1) == guarded(1) == 1
    assert calls == [1]


def test_captured_modules_classes_and_builtins_are_not_keyed(store: Store) -> None:
    import math

    class Point:
        def __init__(self, x: int) -> None:
            self.x = x

    sqrt = math.sqrt

    @memo(store=store)
    def norm(x: int) -> float:
        return sqrt(Point(x).x) + math.floor(0.5)

    assert norm(4) == norm(4) == 2.0
    assert norm.cache_info().hits == 1


def test_module_level_functions_have_no_captured_inputs(store: Store) -> None:
    assert module_level.key(1) == module_level.key(1)
    assert module_level(1) == 2


def test_factory_closures_give_correct_results_across_processes(tmp_path: Path) -> None:
    (tmp_path / "factory.py").write_text(
        "from persistmemo import memo\n"
        "def make(k):\n"
        "    @memo\n"
        "    def scale(x):\n"
        "        return x * k\n"
        "    return scale\n"
    )
    code = "import sys, factory; print(factory.make(int(sys.argv[1]))(10))"
    env = {"PERSISTMEMO_DIR": str(tmp_path / "store")}
    assert run_python(code, cwd=tmp_path, env=env, args=("2",)).stdout.split() == ["20"]
    assert run_python(code, cwd=tmp_path, env=env, args=("3",)).stdout.split() == ["30"]
    assert run_python(code, cwd=tmp_path, env=env, args=("2",)).stdout.split() == ["20"]


@memo
def module_level(x: int) -> int:
    return x + 1


def test_the_object_behind_a_captured_method_is_keyed(store: Store) -> None:
    def make(table: dict[int, str]) -> Any:
        get = table.get

        @memo(store=store)
        def lookup(x: int) -> str | None:
            return get(x)

        return lookup

    assert make({1: "a"})(1) == "a"
    assert make({1: "b"})(1) == "b"


def test_a_captured_method_of_an_unkeyable_object_is_refused_by_name(store: Store) -> None:
    class Model:
        def __init__(self, k: int) -> None:
            self.k = k

        def predict(self, x: int) -> int:
            return x * self.k

    predict = Model(2).predict

    @memo(store=store)
    def run(x: int) -> int:
        return predict(x)

    with pytest.raises(TypeError, match=r"captured variable 'predict'.*ignore=\['predict'\]"):
        run(10)


def test_a_name_read_inside_an_assignment_target_is_still_an_input(store: Store) -> None:
    def make(columns: list[str]) -> Any:
        @memo(store=store)
        def row(x: int) -> dict[str, int]:
            out: dict[str, int] = {}
            out[columns[0]] = x
            return out

        return row

    assert make(["a"])(1) == {"a": 1}
    assert make(["b"])(1) == {"b": 1}
