"""The opt-in memory tier: hot hits from memory, TTL and this process's invalidations kept."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from persistmemo import Store, memo


def drop_store_rows(store: Store) -> None:
    with sqlite3.connect(store.directory / "cache.db") as connection:
        connection.execute("DELETE FROM Cache WHERE key LIKE 'pm3:%'")


def test_memory_hits_do_not_read_the_store(store: Store) -> None:
    calls = []

    @memo(store=store, memory=10)
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    assert double(3) == 6
    drop_store_rows(store)  # only the memory tier can answer now
    assert double(3) == 6
    assert calls == [3]
    assert double.cache_info().hits == 1


def test_a_fresh_process_would_still_find_the_store_entry(store: Store) -> None:
    @memo(store=store, memory=10, name="tests.memory.shared", version=1)
    def first(x: int) -> int:
        return x + 1

    # Another Store object on the same directory stands in for another process.
    @memo(store=Store(store.directory), name="tests.memory.shared", version=1)
    def second(x: int) -> int:
        raise AssertionError("must be answered from the store")

    assert first(1) == 2
    assert second(1) == 2


def test_memory_entries_keep_the_ttl(store: Store) -> None:
    calls = []

    @memo(store=store, memory=10, ttl=0.3, ignore=["calls"])  # read back: declared state
    def stamp(x: int) -> int:
        calls.append(x)
        return len(calls)

    assert stamp(1) == 1
    assert stamp(1) == 1
    time.sleep(0.35)
    assert stamp(1) == 2


def test_invalidate_refresh_and_clear_reach_the_memory_tier(store: Store) -> None:
    source = {"v": 1}

    @memo(store=store, memory=10, ignore=["source"])  # changing data read, not an input
    def read(name: str) -> int:
        return source[name]

    assert read("v") == 1
    source["v"] = 2
    assert read("v") == 1
    assert read.refresh("v") == 2
    assert read("v") == 2
    source["v"] = 3
    assert read.invalidate("v")
    assert read("v") == 3
    source["v"] = 4
    read.cache_clear()
    assert read("v") == 4


def test_the_memory_tier_is_bounded(store: Store) -> None:
    calls = []

    @memo(store=store, memory=3)
    def ident(x: int) -> int:
        calls.append(x)
        return x

    for x in range(5):
        ident(x)
    drop_store_rows(store)
    for x in reversed(range(5)):
        ident(x)
    # 4, 3, 2 stayed in memory; 1 and 0 were evicted and, with the store emptied, recomputed.
    assert calls == [0, 1, 2, 3, 4, 1, 0]


def test_equal_values_of_different_types_stay_apart(store: Store) -> None:
    @memo(store=store, memory=10)
    def kind(x: object) -> str:
        return type(x).__name__

    assert kind(1) == "int"
    assert kind(True) == "bool"
    assert kind(1.0) == "float"
    assert kind((1,)) == "tuple"
    assert kind((True,)) == "tuple"
    assert kind([1]) == "list"
    assert [kind(1), kind(True), kind(1.0)] == ["int", "bool", "float"]


def test_keyword_and_unhashable_arguments_use_the_store_key(store: Store) -> None:
    calls = []

    @memo(store=store, memory=10)
    def total(values: list[int], *, scale: int = 1) -> int:
        calls.append(1)
        return sum(values) * scale

    assert total([1, 2], scale=2) == 6
    drop_store_rows(store)
    assert total([1, 2], scale=2) == 6
    assert total(values=[1, 2], scale=2) == 6
    assert len(calls) == 1


def test_memory_is_refused_for_async_functions(store: Store) -> None:
    async def fetch(url: str) -> str:
        await asyncio.sleep(0)
        return url

    with pytest.raises(TypeError, match="plain functions"):
        memo(store=store, memory=10)(fetch)


def test_bad_memory_sizes_are_refused(store: Store) -> None:
    with pytest.raises(TypeError, match="positive number"):
        memo(store=store, memory=0)(lambda x: x)


def test_the_memory_tier_keys_through_the_key_function(store: Store, tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("first")

    @memo(store=store, memory=10, key=lambda path: (path, os.stat(path).st_mtime_ns))
    def load(path: str) -> str:
        return Path(path).read_text()

    assert load(str(data)) == "first"
    data.write_text("second, edited")
    os.utime(data, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert load(str(data)) == "second, edited"


def test_the_memory_tier_keys_captured_variables(store: Store) -> None:
    def make(factor: int) -> Any:
        @memo(store=store, memory=10)
        def scale(x: int) -> int:
            return x * factor

        return scale

    assert make(2)(10) == 20
    assert make(3)(10) == 30
