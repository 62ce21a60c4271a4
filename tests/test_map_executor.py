"""f.map(executor=...): misses computed in the caller's executor, stored here as they arrive."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import run_python
from persistmemo import Store, memo


class CountingPool(ThreadPoolExecutor):
    """A thread pool that remembers what was submitted to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def test_a_thread_pool_computes_only_the_misses_and_the_caller_stores_them(store: Store) -> None:
    computed: list[int] = []
    threads: set[str] = set()

    @memo(store=store)
    def square(x: int) -> int:
        computed.append(x)
        threads.add(threading.current_thread().name)
        return x * x

    square(1)
    with CountingPool() as pool:
        assert square.map([1, 2, 3, 2, 4], executor=pool) == [1, 4, 9, 4, 16]
        assert pool.submitted == 3  # 2, 3, 4: the hit and the repeat were not sent
        assert square.map([4, 3, 2, 1], executor=pool) == [16, 9, 4, 1]
        assert pool.submitted == 3
    assert sorted(computed) == [1, 2, 3, 4]
    assert threading.current_thread().name in threads  # the first call, here
    assert len(threads) > 1  # the misses, in the pool
    assert square.cache_info() == (5, 4)
    assert [entry.compute_seconds is not None for entry in square.entries()] == [True] * 4


def test_a_process_pool_computes_misses_that_this_process_stores(tmp_path: Path) -> None:
    # The workers are spawned with MAP_STORE naming another directory: had they stored the
    # results themselves, the store the caller uses would not hold them.
    elsewhere = tmp_path / "workers-store"
    env = {"MAP_STORE": str(tmp_path / "store"), "MAP_LOG": str(tmp_path / "calls.log")}
    code = f"""
        import multiprocessing, os
        from concurrent.futures import ProcessPoolExecutor
        import mapped

        os.environ["MAP_STORE"] = {str(elsewhere)!r}
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(2, mp_context=context) as pool:
            print(mapped.power.map([1, 2, 3, 2], executor=pool))
            print(mapped.power.map([3, 4], executor=pool))
        print(os.getpid())
    """
    out = run_python(code, env=env)
    first, second, caller = out.stdout.split("\n")[:3]
    assert (first, second) == ("[1, 4, 9, 4]", "[9, 16]")
    log = Path(env["MAP_LOG"]).read_text().splitlines()
    assert sorted(line.split()[1] for line in log) == ["1", "2", "3", "4"]  # power x 2 pid t
    assert caller not in {line.split()[3] for line in log}  # computed in the workers
    again = run_python("import mapped; print(mapped.power.map([4, 3, 2, 1]))", env=env)
    assert again.stdout.split("\n")[0] == "[16, 9, 4, 1]"
    assert len(Path(env["MAP_LOG"]).read_text().splitlines()) == 4  # hits: the caller stored
    elsewhere_env = {**env, "MAP_STORE": str(elsewhere)}
    run_python("import mapped; mapped.power.map([1, 2])", env=elsewhere_env)
    assert len(Path(env["MAP_LOG"]).read_text().splitlines()) == 6  # nothing stored there


EDITED_MODULE = """
from persistmemo import Store, memo

def helper(x):
    return x + {offset}

@memo(store=Store({store!r}))
def shifted(x):
    return helper(x)
"""


def test_workers_running_code_older_than_the_callers_store_nothing_of_it(tmp_path: Path) -> None:
    # Workers forked before the module was edited and reloaded (what %autoreload does) still
    # run its old code: their results would be stored under the new version.
    module = tmp_path / "edited.py"
    module.write_text(EDITED_MODULE.format(offset=1, store=str(tmp_path / "store")))
    code = f"""
        import importlib, multiprocessing, os, time, warnings
        from concurrent.futures import ProcessPoolExecutor
        import edited

        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
        print(edited.shifted.map([0, 1], executor=pool))
        source = {str(module)!r}
        with open(source) as file:
            text = file.read()
        with open(source, "w") as file:
            file.write(text.replace("x + 1", "x + 100"))
        os.utime(source, (time.time() + 5, time.time() + 5))  # newer than the cached bytecode
        importlib.reload(edited)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print(edited.shifted.map([5, 6], executor=pool))
        print(edited.shifted(5), edited.shifted.cache_info().hits)
        print(sum("computed in this process" in str(w.message) for w in caught))
        pool.shutdown()
    """
    out = run_python(code, cwd=tmp_path).stdout.splitlines()
    assert out == ["[1, 2]", "[105, 106]", "105 1", "1"]


def test_an_item_that_fails_is_raised_after_the_others_are_stored(store: Store) -> None:
    computed: list[int] = []

    @memo(store=store)
    def fragile(x: int) -> int:
        computed.append(x)
        if x == 3:
            raise ValueError("three is not allowed")
        return x

    with ThreadPoolExecutor(2) as pool:
        with pytest.raises(ValueError, match="three"):
            fragile.map([1, 2, 3, 4], executor=pool)
        assert fragile.map([1, 2, 4], executor=pool) == [1, 2, 4]
    assert sorted(computed) == [1, 2, 3, 4]  # the others were stored before the raise


def test_workers_and_executor_together_are_refused(store: Store) -> None:
    @memo(store=store)
    def double(x: int) -> int:
        return 2 * x

    with ThreadPoolExecutor(1) as pool, pytest.raises(TypeError, match=r"workers=.*executor="):
        double.map([1], workers=2, executor=pool)
    with pytest.raises(TypeError, match=r"concurrent\.futures\.Executor"):
        double.map([1], executor=object())  # type: ignore[arg-type]


def test_an_async_function_refuses_an_executor(store: Store) -> None:
    @memo(store=store)
    async def double(x: int) -> int:
        return 2 * x

    with ThreadPoolExecutor(1) as pool, pytest.raises(TypeError, match="executor="):
        asyncio.run(double.map([1], executor=pool))
