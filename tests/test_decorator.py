"""The decorator: hits and misses, the controls, async, methods, TTL and option checks."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from persistmemo import CacheInfo, PersistmemoWarning, Store, UnstorableValue, memo


def test_second_call_is_a_hit_that_does_not_run_the_function(store: Store) -> None:
    calls: list[int] = []

    @memo(store=store)
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert square(4) == 16
    assert square(4) == 16
    assert calls == [4]
    assert square.cache_info() == CacheInfo(hits=1, misses=1)


def test_bare_and_called_forms_both_work(tmp_path: Any) -> None:
    @memo
    def bare(x: int) -> int:
        return x

    @memo()
    def called(x: int) -> int:
        return x

    assert bare(1) == called(1) == 1
    assert bare(1) == 1
    assert bare.cache_info().hits == 1


def test_none_results_are_cached(store: Store) -> None:
    calls = []

    @memo(store=store)
    def nothing(x: int) -> None:
        calls.append(x)

    assert nothing(1) is None
    assert nothing(1) is None
    assert calls == [1]


def test_exceptions_are_not_cached(store: Store) -> None:
    attempts = []

    # attempts is read back (len), so it would be keyed: ignore= declares it state.
    @memo(store=store, ignore=["attempts"])
    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return x

    with pytest.raises(RuntimeError):
        flaky(1)
    assert flaky(1) == 1
    assert flaky(1) == 1
    assert len(attempts) == 2


def test_invalidate_removes_one_call_and_reports_whether_it_was_there(store: Store) -> None:
    calls = []

    @memo(store=store)
    def f(x: int) -> int:
        calls.append(x)
        return x

    f(1)
    f(2)
    assert f.invalidate(1) is True
    assert f.invalidate(1) is False
    f(1)
    f(2)
    assert calls == [1, 2, 1]


def test_refresh_recomputes_and_overwrites(store: Store) -> None:
    source = {"value": 1}

    @memo(store=store, ignore=["source"])  # changing data read, not an input
    def read(name: str) -> int:
        return source[name]

    assert read("value") == 1
    source["value"] = 2
    assert read("value") == 1
    assert read.refresh("value") == 2
    assert read("value") == 2


def test_cache_clear_removes_only_this_functions_entries(store: Store) -> None:
    @memo(store=store)
    def first(x: int) -> int:
        return x

    @memo(store=store)
    def second(x: int) -> int:
        return -x

    for i in range(5):
        first(i)
        second(i)
    assert len(store) == 10
    assert first.cache_clear() == 5
    assert len(store) == 5
    assert first.cache_info() == CacheInfo(0, 0)
    second(3)
    assert second.cache_info().hits == 1


def test_decorated_function_keeps_name_doc_signature_and_wrapped(store: Store) -> None:
    def load(path: str, *, columns: tuple[str, ...] = ()) -> dict[str, int]:
        """Load a table."""
        return {}

    memoized = memo(store=store)(load)
    assert memoized.__name__ == "load"
    assert memoized.__doc__ == "Load a table."
    assert memoized.__wrapped__ is load
    assert inspect.signature(memoized) == inspect.signature(load)
    assert memoized.store is store


def test_async_functions_store_the_awaited_result(store: Store) -> None:
    calls = []

    @memo(store=store)
    async def fetch(url: str) -> dict[str, str]:
        calls.append(url)
        await asyncio.sleep(0)
        return {"url": url}

    assert inspect.iscoroutinefunction(fetch)

    async def main() -> None:
        assert await fetch("a") == {"url": "a"}
        assert await fetch("a") == {"url": "a"}
        assert await fetch.refresh("a") == {"url": "a"}

    asyncio.run(main())
    assert calls == ["a", "a"]
    assert fetch.cache_info() == CacheInfo(hits=1, misses=1)


def test_async_exceptions_are_not_cached(store: Store) -> None:
    attempts = []

    @memo(store=store, ignore=["attempts"])  # read back (len): state declared, not keyed
    async def flaky() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("no")
        return 7

    async def main() -> None:
        with pytest.raises(ValueError, match="no"):
            await flaky()
        assert await flaky() == 7
        assert await flaky() == 7

    asyncio.run(main())
    assert len(attempts) == 2


class Dataset:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def __persistmemo_key__(self) -> str:
        return self.name


def test_methods_key_self_through_the_hook(store: Store) -> None:
    class Model:
        def __init__(self, name: str) -> None:
            self.name = name
            self.calls = 0

        def __persistmemo_key__(self) -> str:
            return self.name

        @memo(store=store)
        def predict(self, x: int) -> str:
            self.calls += 1
            return f"{self.name}:{x}"

    small, big, small_again = Model("small"), Model("big"), Model("small")
    assert small.predict(1) == "small:1"
    assert big.predict(1) == "big:1"
    assert small_again.predict(1) == "small:1"
    assert (small.calls, big.calls, small_again.calls) == (1, 1, 0)


def test_methods_with_an_unkeyable_self_raise_naming_self(store: Store) -> None:
    class Service:
        @memo(store=store)
        def get(self, x: int) -> int:
            return x

    with pytest.raises(TypeError, match=r"argument 'self'.*ignore=\['self'\]"):
        Service().get(1)


def test_methods_can_ignore_self_explicitly(store: Store) -> None:
    calls = []

    class Service:
        @memo(store=store, ignore=["self"])
        def get(self, x: int) -> int:
            calls.append(x)
            return x

    assert Service().get(1) == Service().get(1) == 1
    assert calls == [1]


def test_staticmethods_and_classmethods(store: Store) -> None:
    calls = []

    class Tools:
        @staticmethod
        @memo(store=store)
        def double(x: int) -> int:
            calls.append(("double", x))
            return 2 * x

        @memo(store=store)
        @staticmethod
        def triple(x: int) -> int:
            calls.append(("triple", x))
            return 3 * x

        @classmethod
        @memo(store=store)
        def named(cls, x: int) -> str:
            calls.append(("named", x))
            return f"{cls.__name__}{x}"

    for _ in range(2):
        assert Tools.double(2) == Tools().double(2) == 4
        assert Tools.triple(2) == 6
        assert Tools.named(1) == "Tools1"
    assert calls == [("double", 2), ("triple", 2), ("named", 1)]


def test_ttl_expires_entries(store: Store) -> None:
    calls = []

    @memo(store=store, ttl=dt.timedelta(seconds=0.3), ignore=["calls"])
    def now(x: int) -> int:
        calls.append(x)
        return len(calls)

    assert now(1) == 1
    assert now(1) == 1
    time.sleep(0.4)
    assert now(1) == 2
    assert calls == [1, 1]


def test_explicit_version_separates_entries(store: Store) -> None:
    def make(version: str) -> Any:
        @memo(store=store, version=version, name="tests.versioned")
        def f(x: int) -> str:
            return version

        return f

    assert make("1")(0) == "1"
    assert make("2")(0) == "2"
    assert make("1")(0) == "1"
    assert make("1").key(0) != make("2").key(0)


def test_name_overrides_the_identity(store: Store) -> None:
    @memo(store=store, name="shared.identity", version=1)
    def first(x: int) -> str:
        return "first"

    assert first(1) == "first"
    assert first.key(1).startswith("pm3:shared.identity:1:")


def test_two_functions_under_one_name_and_pinned_version_are_refused(store: Store) -> None:
    @memo(store=store, name="shared.identity", version=1)
    def first(x: int) -> str:
        return "first"

    with pytest.raises(ValueError, match="would return each other's results"):

        @memo(store=store, name="shared.identity", version=1)
        def second(x: int) -> str:
            return "second"


def test_the_same_name_and_version_on_other_stores_is_no_collision(tmp_path: Path) -> None:
    @memo(store=tmp_path / "a", name="shared.identity", version=1)
    def first(x: int) -> str:
        return "first"

    @memo(store=tmp_path / "b", name="shared.identity", version=1)
    def second(x: int) -> str:
        return "second"

    assert (first(1), second(1)) == ("first", "second")


def test_redefining_a_function_with_a_pinned_version_warns_that_it_is_stale(
    store: Store,
) -> None:
    def define(factor: int) -> Any:
        namespace: dict[str, Any] = {"memo": memo, "store": store}
        exec(
            f"@memo(store=store, version='1')\ndef cell(x):\n    return x * {factor}\n",
            namespace,
        )
        return namespace["cell"]

    define(2)
    with pytest.warns(PersistmemoWarning, match="pinned version"):
        define(3)
    define(3)  # the same code again: a re-run cell, nothing to say


def test_default_identity_is_module_and_qualname(store: Store) -> None:
    @memo(store=store)
    def local(x: int) -> int:
        return x

    identity = local.key(1).split(":")[1]
    assert identity == f"{__name__}.{local.__qualname__}"


def test_fib_500_recursion_on_a_persistent_store(store: Store) -> None:
    @memo(store=store)
    def fib(n: int) -> int:
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    def plain_fib(n: int) -> int:
        a, b = 0, 1
        for _ in range(n):
            a, b = b, a + b
        return a

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        assert fib(500) == plain_fib(500)
    finally:
        sys.setrecursionlimit(limit)
    assert fib.cache_info().misses == 501
    assert len(store) == 501


def test_strict_store_refuses_pickle_fallback_results(tmp_path: Any) -> None:
    import collections

    strict = Store(tmp_path / "strict", strict=True)

    @memo(store=strict)
    def ordered() -> collections.OrderedDict[str, int]:
        return collections.OrderedDict(a=1)

    with pytest.raises(UnstorableValue, match=r"ordered\(\).*strict"):
        ordered()


def test_pickle_fallback_results_are_stored_and_returned(store: Store) -> None:
    import collections

    calls = []

    @memo(store=store)
    def counts(text: str) -> collections.Counter[str]:
        calls.append(text)
        return collections.Counter(text)

    assert counts("aab") == collections.Counter("aab")
    result = counts("aab")
    assert type(result) is collections.Counter
    assert calls == ["aab"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ttl": -1}, "positive"),
        ({"ttl": "1h"}, "seconds or a timedelta"),
        ({"version": 1.5}, "str or an int"),
        ({"store": 42}, "Store, a directory path"),
        ({"name": ""}, "non-empty"),
        ({"key": "x"}, "callable"),
    ],
)
def test_bad_options_raise_clear_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        memo(**options)


def test_a_hit_writes_nothing_to_the_store(store: Store) -> None:
    @memo(store=store)
    def square(x: int) -> int:
        return x * x

    square(3)
    files = {path: path.stat() for path in store.directory.iterdir() if path.is_file()}
    import sqlite3

    with sqlite3.connect(store.directory / "cache.db") as connection:
        before = connection.execute("SELECT access_time, access_count FROM Cache").fetchall()
    for _ in range(200):
        assert square(3) == 9
    with sqlite3.connect(store.directory / "cache.db") as connection:
        after = connection.execute("SELECT access_time, access_count FROM Cache").fetchall()
    assert after == before
    for path, stat in files.items():
        now = path.stat()
        assert (now.st_size, now.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns), path.name


def test_classmethod_controls_take_the_call_arguments_without_the_class(store: Store) -> None:
    calls = []

    class Model:
        @memo(store=store)
        @classmethod
        def build(cls, x: int) -> str:
            calls.append(x)
            return f"{cls.__name__}{x}"

    class Child(Model):
        pass

    assert Model.build(1) == "Model1"
    assert Model().build(1) == "Model1"
    assert Model.build.key(1) == Model.build.key(x=1)
    assert Model.build.info(1) is not None
    assert Child.build.key(1) != Model.build.key(1)  # the class is part of the call
    assert Model.build.invalidate(1)
    assert Model.build(1) == "Model1"
    assert calls == [1, 1]
    assert Model.build.refresh(2) == "Model2"
    assert Model.build.cache_info().misses == 2


def test_a_partial_is_memoized_with_its_bound_arguments_in_the_key(store: Store) -> None:
    import functools

    calls = []

    def power(base: int, exponent: int) -> int:
        calls.append((base, exponent))
        return base**exponent

    square = memo(store=store)(functools.partial(power, exponent=2))
    cube = memo(store=store)(functools.partial(power, exponent=3))
    assert (square(3), cube(3), square(3), cube(3)) == (9, 27, 9, 27)
    assert calls == [(3, 2), (3, 3)]
    assert square.key(3) != cube.key(3)
    assert (
        square.__qualname__
        == "test_a_partial_is_memoized_with_its_bound_arguments_in_the_key.<locals>.power"
    )


def test_an_unnameable_callable_gets_an_error_with_the_remedy(store: Store) -> None:
    class Scorer:
        def __call__(self, x: int) -> int:
            return x

    with pytest.raises(TypeError, match=r"pass name=.*and version="):
        memo(store=store)(Scorer())
    scorer = memo(store=store, name="tests.scorer", version="1")(Scorer())
    assert scorer(3) == 3


@pytest.mark.parametrize("option", ["version", "name"])
@pytest.mark.parametrize("text", ["1\n2", "a\tb", "x\x00"])
def test_control_characters_in_names_and_versions_are_refused(option: str, text: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        memo(**{option: text})


def test_an_infinite_ttl_means_no_expiry(store: Store) -> None:
    @memo(store=store, ttl=float("inf"))
    def forever(x: int) -> int:
        return x

    assert forever(1) == 1
    info = forever.info(1)
    assert info is not None
    assert info.expires_at is None


class Scaled:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __persistmemo_key__(self) -> int:
        return self.factor

    def compute(self, x: int) -> int:
        return x * self.factor


class Opaque:
    def compute(self, x: int) -> int:
        return x


def test_a_bound_methods_object_is_part_of_its_key(store: Store) -> None:
    by_two = memo(store=store)(Scaled(2).compute)
    by_three = memo(store=store)(Scaled(3).compute)
    assert (by_two(10), by_three(10)) == (20, 30)
    assert by_two.key(10) != by_three.key(10)
    assert memo(store=store)(Scaled(2).compute)(10) == 20


def test_a_bound_method_of_an_unkeyable_object_names_self(store: Store) -> None:
    compute = memo(store=store)(Opaque().compute)
    with pytest.raises(TypeError, match=r"'self'.*ignore=\['self'\]"):
        compute(1)
    assert memo(store=store, ignore=["self"])(Opaque().compute)(1) == 1


class Built:
    @memo(version="1")
    @classmethod
    def build(cls, k: int) -> str:
        return f"{cls.__name__}:{k}"


def test_a_memoized_classmethod_maps_and_pickles_bound_to_its_class() -> None:
    import pickle

    cloudpickle = pytest.importorskip("cloudpickle")
    assert Built.build.map([1, 2]) == ["Built:1", "Built:2"]
    assert pickle.loads(pickle.dumps(Built.build))(3) == "Built:3"
    with pytest.raises(TypeError, match="at least one iterable"):
        Built.build.map()
    namespace: dict[str, object] = {"__name__": "notebook_like", "memo": memo}
    exec(  # a class of a notebook cell: sent by value, its memoized classmethod with it
        "class Cell:\n    @memo(version='1')\n    @classmethod\n    def make(cls, k):\n"
        "        return k * 2\n",
        namespace,
    )
    sent = cloudpickle.loads(cloudpickle.dumps(namespace["Cell"]))
    assert sent.make(4) == 8
