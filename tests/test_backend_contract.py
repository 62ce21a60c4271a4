"""The backend contract: the ten operations every backend (stores/api.py) provides.

The sealed layer (stores/sealed.py) builds seals, leases, counts and listings on these and
nothing else; a new backend that passes this file and tests/test_store_contract.py is done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memory_backend import MemoryBackend
from persistmemo.stores.api import Backend


@pytest.fixture(params=["memory", "disk", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made: Any
    if request.param == "memory":
        made = MemoryBackend()
    elif request.param == "disk":
        from persistmemo import Store

        store = Store(tmp_path / "store", secret="backend contract")
        store.open()
        made = store.backend
    else:
        from persistmemo import RedisStore

        store = RedisStore(request.getfixturevalue("redis_url"), namespace="backend-contract")
        store.clear()
        made = store.backend
    yield made
    made.close()


def test_put_then_get_returns_the_value_and_its_expiry(backend: Backend) -> None:
    assert backend.get("pm2:app.f:1:a") is None
    assert backend.put("pm2:app.f:1:a", b"value", ttl=60)
    found = backend.get("pm2:app.f:1:a")
    assert found is not None
    assert bytes(found[0]) == b"value"  # type: ignore[arg-type]
    assert found[1] is not None
    assert 50 < found[1] - time.time() <= 60
    assert backend.put("pm2:app.f:1:b", b"forever")
    found = backend.get("pm2:app.f:1:b")
    assert found is not None
    assert found[1] is None


def test_an_expired_value_reads_as_absent(backend: Backend) -> None:
    backend.put("pm2:app.f:1:c", b"soon gone", ttl=0.2)
    time.sleep(0.3)
    assert backend.get("pm2:app.f:1:c") is None
    assert backend.get_many(["pm2:app.f:1:c"]) == {}


def test_get_many_returns_present_keys_only(backend: Backend) -> None:
    for name in ("a", "b"):
        backend.put(f"pm2:app.m:1:{name}", name.encode())
    found = backend.get_many(["pm2:app.m:1:a", "pm2:app.m:1:b", "pm2:app.m:1:z"])
    assert {key: bytes(each[0]) for key, each in found.items()} == {  # type: ignore[arg-type]
        "pm2:app.m:1:a": b"a",
        "pm2:app.m:1:b": b"b",
    }


def test_add_stores_only_when_absent(backend: Backend) -> None:
    assert backend.add("pm-lease:k", "first", 5)
    assert not backend.add("pm-lease:k", "second", 5)
    found = backend.get("pm-lease:k")
    assert found is not None
    assert found[0] == "first"


def test_add_is_atomic_between_threads(backend: Backend) -> None:
    winners = []
    start = threading.Barrier(8)

    def contend(token: str) -> None:
        start.wait()
        if backend.add("pm-lease:race", token, 5):
            winners.append(token)

    threads = [threading.Thread(target=contend, args=(str(n),)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1


def test_delete_if_and_expire_if_act_only_on_the_value_held(backend: Backend) -> None:
    backend.add("pm-lease:c", "mine", 5)
    assert not backend.delete_if("pm-lease:c", "theirs")
    assert not backend.expire_if("pm-lease:c", "theirs", 60)
    assert backend.expire_if("pm-lease:c", "mine", 60)
    found = backend.get("pm-lease:c")
    assert found is not None
    assert found[1] is not None
    assert found[1] - time.time() > 30
    assert backend.delete_if("pm-lease:c", "mine")
    assert backend.get("pm-lease:c") is None


def test_put_releases_the_lease_it_is_given_in_the_same_step(backend: Backend) -> None:
    backend.add("pm-lease:pm2:app.r:1:a", "token", 5)
    assert backend.put("pm2:app.r:1:a", b"v", release=("pm-lease:pm2:app.r:1:a", "token"))
    assert backend.get("pm-lease:pm2:app.r:1:a") is None
    backend.add("pm-lease:pm2:app.r:1:b", "other", 5)
    backend.put("pm2:app.r:1:b", b"v", release=("pm-lease:pm2:app.r:1:b", "token"))
    found = backend.get("pm-lease:pm2:app.r:1:b")
    assert found is not None
    assert found[0] == "other"


def test_delete_removes_a_key_and_says_whether_it_was_there(backend: Backend) -> None:
    backend.put("pm2:app.d:1:a", b"v")
    assert backend.delete("pm2:app.d:1:a")
    assert not backend.delete("pm2:app.d:1:a")
    assert backend.get("pm2:app.d:1:a") is None


def test_scan_lists_the_keys_under_a_prefix_with_their_sizes(backend: Backend) -> None:
    backend.put("pm2:app.s:1:a", b"x" * 100, ttl=60)
    backend.put("pm2:app.s:1:b", b"y" * 10)
    backend.put("pm2:app.t:1:a", b"z")
    rows = {row.key: row for row in backend.scan("pm2:app.s:")}
    assert set(rows) == {"pm2:app.s:1:a", "pm2:app.s:1:b"}
    assert rows["pm2:app.s:1:a"].size == 100
    assert rows["pm2:app.s:1:a"].head == b"x" * len(rows["pm2:app.s:1:a"].head)
    assert rows["pm2:app.s:1:a"].expires_at is not None
    assert rows["pm2:app.s:1:b"].expires_at is None


def test_incr_adds_to_a_count(backend: Backend) -> None:
    backend.incr("pm-hits:app.h", 3)
    backend.incr("pm-hits:app.h", 4)
    found = backend.get("pm-hits:app.h")
    assert found is not None
    assert found[0] == 7


def test_a_closed_backend_reopens_when_used(backend: Backend) -> None:
    backend.put("pm2:app.o:1:a", b"kept")
    backend.close()
    found = backend.get("pm2:app.o:1:a")
    assert found is not None
    assert bytes(found[0]) == b"kept"  # type: ignore[arg-type]


def test_a_large_value_put_in_parts_reads_back_whole(backend: Backend) -> None:
    import numpy as np

    from persistmemo._codec.encoding import encode_result
    from persistmemo._sealing import Sealer

    key = "pm2:app.big:1:a"
    # A backend that checks a value file's header as it reads (the disk's) does it with
    # the store's own secret.
    sealer = getattr(backend, "opened_sealer", lambda: Sealer(b"k" * 32))()
    parts = sealer.seal(key, encode_result(np.arange(100_000.0), out_of_band_from=0))
    assert type(parts).__name__ == "SealedParts"
    assert backend.put(key, parts)
    found = backend.get(key)
    assert found is not None
    value, _, area_check = found
    assert len(bytes(value)) == parts.size  # type: ignore[arg-type,union-attr]
    assert sealer.unseal(key, value, area_check=area_check)  # type: ignore[arg-type]


def test_an_expired_key_is_gone_once_purged_and_a_live_one_stays(backend: Backend) -> None:
    backend.put("pm2:app.e:1:a", b"x" * 100, ttl=0.2)
    backend.put("pm2:app.e:1:b", b"y" * 100)
    time.sleep(0.3)
    # Listed until purged (Redis removes expired keys itself: then never listed).
    assert {row.key for row in backend.scan("pm2:app.e:")} <= {"pm2:app.e:1:a", "pm2:app.e:1:b"}
    backend.purge_expired()
    assert [row.key for row in backend.scan("pm2:app.e:")] == ["pm2:app.e:1:b"]


def test_a_row_head_holds_the_sealed_header(backend: Backend) -> None:
    from persistmemo._sealing import HEADER_READ

    backend.put("pm2:app.h:1:a", bytes(range(200)))
    (row,) = backend.scan("pm2:app.h:")
    assert row.head[:HEADER_READ] == bytes(range(HEADER_READ))


def test_expire_if_never_takes_a_lease_another_caller_holds_now(backend: Backend) -> None:
    backend.add("pm-lease:gone", "mine", 0.2)
    time.sleep(0.3)
    assert backend.add("pm-lease:gone", "theirs", 60)  # expired: free to claim
    assert not backend.expire_if("pm-lease:gone", "mine", 60)
    found = backend.get("pm-lease:gone")
    assert found is not None
    assert found[0] == "theirs"


def test_counts_add_up_from_many_threads(backend: Backend) -> None:
    start = threading.Barrier(8)

    def count() -> None:
        start.wait()
        for _ in range(25):
            backend.incr("pm-hits:app.t", 1)

    threads = [threading.Thread(target=count) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = backend.get("pm-hits:app.t")
    assert found is not None
    assert found[0] == 200


def test_every_thread_can_read_and_write(backend: Backend) -> None:
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            backend.put(f"pm2:app.w:1:{n}", str(n).encode())
            found = backend.get(f"pm2:app.w:1:{n}")
            assert found is not None
            assert bytes(found[0]) == str(n).encode()  # type: ignore[arg-type]
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
