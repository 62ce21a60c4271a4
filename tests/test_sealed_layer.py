"""The sealed layer over any backend: what it must decide after the backend opened, and what
``check`` and ``clear`` report when a backend faults or refuses."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from memory_backend import MemoryBackend
from persistmemo import PersistmemoWarning, RedisStore, Store, memo
from persistmemo._codec.encoding import encode_value
from persistmemo._keys.layout import KeyBuilder
from persistmemo.errors import CorruptEntry
from persistmemo.stores.sealed import SealedStore
from redis_server import free_port


def test_the_first_mapped_hit_of_a_fresh_store_others_write_checks_the_whole_value(
    tmp_path: Path,
) -> None:
    team_dir = tmp_path / "team"
    team_dir.mkdir()
    team_dir.chmod(0o2770)  # the group writes it: a co-writer may change any file's bytes

    def sevens_in(store: Store) -> object:
        @memo(store=store, mmap=True, name="team.sevens", version="1")
        def sevens(n: int) -> object:
            return np.full(n, 7.0)

        return sevens

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PersistmemoWarning)
        with Store(team_dir, shared=True, secret="team") as store:
            assert float(sevens_in(store)(4096)[0]) == 7.0  # type: ignore[operator,index]
        (value_file,) = team_dir.glob("*/*/*.val")
        data = bytearray(value_file.read_bytes())
        data[-8:] = np.float64(666.0).tobytes()  # the last array element, chosen
        value_file.write_bytes(bytes(data))
        # A new store object: it has not opened yet when the first mapped read is asked for.
        with Store(team_dir, shared=True, secret="team") as fresh:
            again = sevens_in(fresh)(4096)  # type: ignore[operator]
    assert float(again[-1]) == 7.0  # type: ignore[index]


class FailingValues(MemoryBackend):
    """A backend whose listing of whole values breaks part way."""

    def values(self, prefix: str) -> Iterator[tuple[str, bytes | memoryview | CorruptEntry]]:
        yield from list(super().values(prefix))[:1]
        raise OSError("the disk went away")


def test_check_reports_a_fault_while_reading_values_as_a_problem_not_ok() -> None:
    store = SealedStore(FailingValues(), secret="s")
    for x in range(3):
        key = KeyBuilder("app.f", "1").key(encode_value(x))
        store.write(key, encode_value(x), ttl=None, tag="app.f")
    with pytest.warns(PersistmemoWarning, match="the disk went away"):
        report = store.check()
    assert not report.ok
    assert any("could not all be read" in problem for problem in report.problems)


def test_a_redis_store_that_cannot_be_reached_checks_to_a_report() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", secret="x", timeout=0.2)
    with pytest.warns(PersistmemoWarning, match="server unavailable"):
        report = store.check()
    assert report.entries == 0


def test_a_planted_secret_record_on_redis_does_not_turn_damage_into_another_secret(
    redis_url: str,
) -> None:
    import redis

    store = RedisStore(redis_url, secret="mine", namespace="planted-secret")
    store.clear()
    keys = [KeyBuilder("app.d", "1").key(encode_value(x)) for x in range(4)]
    for x, key in enumerate(keys):
        store.write(key, encode_value(x), ttl=None, tag="app.d")
    client = redis.Redis.from_url(redis_url)
    stored = client.get(f"planted-secret:{keys[0]}")
    assert stored is not None
    client.set(f"planted-secret:{keys[0]}", stored[:-1] + bytes([stored[-1] ^ 1]))  # damage
    client.set("planted-secret:pm-secret:0123456789abcdef", b"1")
    client.close()
    report = store.check(fix=True)
    assert not report.wrong_secret
    assert report.removed == 1


def test_clear_counts_only_what_it_removed(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    with Store(foreign, secret="s") as owner:
        for x in range(3):
            owner.write(
                KeyBuilder("app.c", "1").key(encode_value(x)),
                encode_value(x),
                ttl=None,
                tag="app.c",
            )
    foreign.chmod(0o777)  # others can write it: never written unless opened shared
    with (
        warnings.catch_warnings(),
        Store(foreign, secret="s") as visitor,
    ):
        warnings.simplefilter("ignore", PersistmemoWarning)
        assert visitor.clear() == 0
        assert len(visitor) == 3
