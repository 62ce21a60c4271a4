"""The store contract: what every store (disk, Redis, tiered, and a toy backend under the
sealed layer) promises the decorator and tools.

A new store plugs in by passing this suite: add it to the ``any_store`` fixture (a new
backend also passes tests/test_backend_contract.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memory_backend import MemoryBackend
from persistmemo import Store, memo
from persistmemo._codec.encoding import encode_value
from persistmemo._keys.layout import KeyBuilder, identity_of
from persistmemo.stores.base import MISSING
from persistmemo.stores.sealed import SealedStore

SECRET = "contract suite secret"


@pytest.fixture(params=["disk", "redis", "tiered", "memory"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "disk":
        store: Any = Store(tmp_path / "store", secret=SECRET, lease=0.5)
    elif request.param == "memory":
        store = SealedStore(MemoryBackend(), secret=SECRET, lease=0.5)
    else:
        from persistmemo import RedisStore, TieredStore

        url = request.getfixturevalue("redis_url")
        remote = RedisStore(url, secret=SECRET, namespace="contract", lease=0.5)
        if request.param == "redis":
            store = remote
        else:
            store = TieredStore(local=Store(tmp_path / "local", secret=SECRET), remote=remote)
    yield store
    store.close()


def key_of(identity: str, x: int, version: str = "1") -> str:
    return KeyBuilder(identity, version).key(encode_value(x))


def put(store: Any, key: str, value: object, *, ttl: float | None = None) -> None:
    assert store.write(key, encode_value(value), ttl=ttl, tag=identity_of(key), seconds=0.25)


def test_a_written_value_reads_back_and_an_absent_one_is_missing(any_store: Any) -> None:
    key = key_of("app.f", 1)
    assert any_store.read(key) is MISSING
    put(any_store, key, [1, 2])
    assert bytes(any_store.read(key)) == encode_value([1, 2])
    value, expires_at = any_store.read_with_expiry(key)
    assert bytes(value) == encode_value([1, 2])
    assert expires_at is None


def test_an_entry_expires_with_its_ttl(any_store: Any) -> None:
    key = key_of("app.f", 2)
    put(any_store, key, "soon gone", ttl=0.3)
    _, expires_at = any_store.read_with_expiry(key)
    assert expires_at is not None
    assert expires_at > time.time()
    time.sleep(0.45)
    assert any_store.read(key) is MISSING


def test_read_many_returns_the_stored_keys_only(any_store: Any) -> None:
    keys = [key_of("app.f", x) for x in range(20)]
    for key in keys[::2]:
        put(any_store, key, key)
    found = any_store.read_many(keys)
    assert set(found) == set(keys[::2])
    assert all(bytes(found[key]) == encode_value(key) for key in found)


def test_delete_removes_one_entry(any_store: Any) -> None:
    key, other = key_of("app.f", 3), key_of("app.f", 4)
    put(any_store, key, 3)
    put(any_store, other, 4)
    assert any_store.delete(key)
    assert not any_store.delete(key)
    assert any_store.read(key) is MISSING
    assert any_store.read(other) is not MISSING


def test_delete_tagged_removes_exactly_one_functions_entries(any_store: Any) -> None:
    mine = [key_of("app.load", x) for x in range(3)] + [key_of("app.load", 9, version="2")]
    others = [key_of("app.load:v2", 1), key_of("app.loader", 1), key_of("app.lo*", 1)]
    for key in mine + others:
        put(any_store, key, 1)
    assert any_store.delete_tagged("app.load") == 4
    assert all(any_store.read(key) is MISSING for key in mine)
    assert all(any_store.read(key) is not MISSING for key in others)


def test_a_lease_is_exclusive_until_released_or_expired(any_store: Any) -> None:
    key = key_of("app.f", 5)
    assert any_store.try_lease(key, "first")
    assert not any_store.try_lease(key, "second")
    any_store.release_lease(key, "second")  # not its lease: no effect
    assert not any_store.try_lease(key, "third")
    assert any_store.renew_lease(key, "first")
    any_store.release_lease(key, "first")
    assert not any_store.renew_lease(key, "first")
    assert any_store.try_lease(key, "fourth")
    time.sleep(0.7)  # a lease row (0.5 s) runs out; a lock lasts as long as its holder
    assert any_store.try_lease(key, "fifth") is any_store.leases_expire


def test_entries_describe_what_is_stored(any_store: Any) -> None:
    keys = [key_of("app.g", x) for x in range(3)]
    for key in keys:
        put(any_store, key, "value")
    entries = sorted(any_store.entries("app.g"), key=lambda entry: entry.key)
    assert [entry.key for entry in entries] == sorted(keys)
    assert {(entry.function, entry.version) for entry in entries} == {("app.g", "1")}
    assert all(entry.compute_seconds == pytest.approx(0.25) for entry in entries)
    info = any_store.entry_info(keys[0])
    assert info is not None
    assert info.function == "app.g"
    assert "app.g" in any_store.functions()
    assert any_store.functions()["app.g"].entries == 3


def test_hit_counts_add_up_and_are_forgotten(any_store: Any) -> None:
    any_store.record_hits("app.h", 3)
    any_store.record_hits("app.h", 4)
    assert any_store.recorded_hits().get("app.h") == 7
    any_store.forget_hits("app.h")
    assert "app.h" not in any_store.recorded_hits()


def test_check_passes_a_clean_store_and_prune_removes_expired_entries(any_store: Any) -> None:
    put(any_store, key_of("app.p", 1), 1)
    put(any_store, key_of("app.p", 2), 2, ttl=0.2)
    assert any_store.check().ok
    time.sleep(0.3)
    any_store.prune(expired=True)
    assert [entry.key for entry in any_store.entries("app.p")] == [key_of("app.p", 1)]


def test_clear_removes_every_result(any_store: Any) -> None:
    for x in range(3):
        put(any_store, key_of("app.c", x), x)
    any_store.clear()
    assert list(any_store.entries()) == []


def test_store_memo_memoizes_through_the_store(any_store: Any) -> None:
    calls = []

    @any_store.memo
    def triple(x: int) -> int:
        calls.append(x)
        return 3 * x

    assert triple(2) == triple(2) == 6
    assert calls == [2]
    assert triple.store is any_store

    @memo(store=any_store, ttl=60)
    def quadruple(x: int) -> int:
        return 4 * x

    assert quadruple.map([1, 2, 3]) == [4, 8, 12]
    assert quadruple.map([1, 2, 3]) == [4, 8, 12]
    assert quadruple.cache_info().hits == 3


def test_len_counts_results_only(any_store: Any) -> None:
    for x in range(3):
        put(any_store, key_of("app.n", x), x)
    any_store.record_hits("app.n", 5)
    assert any_store.try_lease(key_of("app.n", 9), "holder")
    assert len(any_store) == 3


def test_the_lease_holder_is_known_while_the_lease_lives(any_store: Any) -> None:
    key = key_of("app.l", 1)
    assert any_store.lease_holder(key) is None
    assert any_store.try_lease(key, "host|123|abc")
    assert any_store.lease_holder(key) == "host|123|abc"
    any_store.release_lease(key, "host|123|abc")
    assert any_store.lease_holder(key) is None
