"""f.map's hits, read in bulk (a scan of a function's key range, or IN lists): the same
results as a loop of calls, and the same checks: a row that expired, or whose seal fails,
is a miss (one warning), never a value."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import persistmemo.stores.entry_reader as entry_reader
from persistmemo import PersistmemoWarning, Store, memo
from persistmemo._codec.decoding import decode_many, decode_value
from persistmemo._codec.encoding import encode_value
from persistmemo._sealing import HEADER_SIZE, LARGE_BODY, Sealer
from persistmemo.errors import CorruptEntry


@dataclasses.dataclass
class Point:
    x: int
    y: float


VALUES: list[Any] = [
    0,
    -7,
    2**80,
    1.5,
    float("inf"),
    "text",
    "ünïcode",
    b"bytes",
    None,
    True,
    [1, [2, 3]],
    (1, "two"),
    {"a": 1, "b": [1.0, None]},
    {1, 2, 3},
    Point(1, 2.5),
    "x" * 50_000,  # a value file (over diskcache's 32 KB)
]


def database(store: Store) -> sqlite3.Connection:
    return sqlite3.connect(store.directory / "cache.db")


def stored_value(store: Store, key: str) -> bytes:
    with database(store) as db:
        ((value,),) = db.execute("SELECT value FROM Cache WHERE key = ?", (key,)).fetchall()
    assert isinstance(value, bytes)
    return value


def set_value(store: Store, key: str, value: bytes) -> None:
    with database(store) as db:
        db.execute("UPDATE Cache SET value = ? WHERE key = ?", (value, key))


def corrupt_entry_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "corrupt entry" in str(w.message)]


def counted(store: Store, **options: Any) -> tuple[Any, list[int]]:
    calls: list[int] = []

    @memo(store=store, **options)
    def square(x: int) -> dict[str, int]:
        calls.append(x)
        return {"x": x, "square": x * x}

    return square, calls


@pytest.mark.parametrize("count", [3, 100, 1500])
def test_map_hits_equal_a_loop_of_calls(store: Store, count: int) -> None:
    """Few keys (IN lists), many (one scan of the function's range): the same hits."""

    @memo(store=store)
    def pick(i: int) -> Any:
        return VALUES[i % len(VALUES)]

    items = list(range(count))
    first = pick.map(items)
    assert pick.cache_info().misses == count
    assert pick.map(items) == first == [pick(i) for i in items]
    assert pick.cache_info().misses == count  # every later read was a hit
    assert pick.cache_info().hits == 2 * count


def test_bulk_keys_are_the_keys_of_single_calls(store: Store) -> None:
    @memo(store=store, ignore=["verbose"])
    def combine(a: Any, b: Any = 10, *, verbose: bool = False) -> Any:
        return [a, b]

    @memo(store=store)
    def pair(a: Any, b: Any = 10) -> Any:
        return [a, b]

    items = [1, "a", 2.5, (1, 2), None, [3], {"k": 1}, 2**70]
    for function in (combine, pair):
        target = function.map.__self__
        assert target.keys_of([(x,) for x in items]) == [function.key(x) for x in items]
        assert target.keys_of([(x, 3) for x in items]) == [function.key(x, 3) for x in items]
        assert function.map(items, items) == [function(x, x) for x in items]


PLANS = {
    "in lists": {"SCAN_FROM": 10**9},
    "index scan": {"_TABLE_ROWS": "SELECT 1 << 60"},  # the range is never half the table
    "table scan": {"_TABLE_ROWS": "SELECT 0"},  # always half the table or more
}


@pytest.fixture(params=list(PLANS))
def plan(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way read_keys reads many keys, forced."""
    for name, value in PLANS[request.param].items():
        monkeypatch.setattr(entry_reader, name, value)
    return str(request.param)


def recorded_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    statements: list[str] = []
    run = entry_reader._ThreadConnection.run

    def recorded(self: Any, statement: str, parameters: tuple[object, ...] = ()) -> list[Any]:
        statements.append(statement)
        return run(self, statement, parameters)

    monkeypatch.setattr(entry_reader._ThreadConnection, "run", recorded)
    return statements


def test_each_plan_reads_the_rows_of_the_keys_asked_for(
    store: Store, plan: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    square, _ = counted(store)
    square.map(range(0, 600, 2))  # stored: the even ones; asked: all
    other, _ = counted(store, name="tests.square_other")
    other.map(range(300))  # another function's rows, one of them asked for
    keys = [square.key(x) for x in range(600)] + [other.key(1)]
    statements = recorded_statements(monkeypatch)
    found, others = store.backend._ready_reader().read_keys(keys, time.time())
    assert others == {}
    assert {key for key, _ in found} == {square.key(x) for x in range(0, 600, 2)} | {other.key(1)}
    assert all(value == stored_value(store, key) for key, value in found)
    used = {
        "in lists": entry_reader._SELECT_KEYS_IN.format(",".join("?" * 500)),
        "index scan": entry_reader._SELECT_BETWEEN,
        "table scan": entry_reader._SELECT_BETWEEN_BY_TABLE,
    }
    assert used[plan] in statements
    assert not (set(used.values()) - {used[plan]}) & set(statements)


def test_the_plan_follows_the_rows_in_the_range(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    square, _ = counted(store)
    square.map(range(400))
    other, _ = counted(store, name="tests.square_other")
    other.map(range(1000))
    reader = store.backend._ready_reader()
    statements = recorded_statements(monkeypatch)
    # All of one function's rows, under half the table's: its range, by the index.
    reader.read_keys([square.key(x) for x in range(400)], time.time())
    assert entry_reader._SELECT_BETWEEN in statements
    # Most of the table: the table, in rowid order.
    statements.clear()
    reader.read_keys([other.key(x) for x in range(1000)], time.time())
    assert entry_reader._SELECT_BETWEEN_BY_TABLE in statements
    # A few keys of a function with many rows (a sparse range): IN lists.
    monkeypatch.setattr(entry_reader, "SCAN_FROM", 2)
    statements.clear()
    few = [other.key(0), other.key(500), other.key(999)]
    found, _ = reader.read_keys(few, time.time())
    assert {key for key, _ in found} == set(few)
    assert entry_reader._COUNT_BETWEEN in statements
    assert entry_reader._SELECT_BETWEEN not in statements
    assert entry_reader._SELECT_BETWEEN_BY_TABLE not in statements


@pytest.mark.parametrize("count", [5, 200])
def test_expired_rows_in_a_bulk_read_are_misses(store: Store, plan: str, count: int) -> None:
    square, calls = counted(store)
    square.map(range(count))
    expired = {1, 3, count - 1}
    with database(store) as db:
        db.executemany(
            "UPDATE Cache SET expire_time = ? WHERE key = ?",
            [(time.time() - 1, square.key(x)) for x in expired],
        )
    calls.clear()
    assert square.map(range(count)) == [{"x": x, "square": x * x} for x in range(count)]
    assert sorted(calls) == sorted(expired)  # computed again, the others served


@pytest.mark.parametrize("count", [5, 200])
def test_tampered_rows_in_a_bulk_read_are_misses_with_one_warning(
    store: Store, plan: str, count: int
) -> None:
    square, calls = counted(store)
    square.map(range(count))
    flipped = stored_value(store, square.key(0))
    set_value(store, square.key(0), flipped[:-1] + bytes([flipped[-1] ^ 1]))  # a bit
    set_value(store, square.key(1), stored_value(store, square.key(2)))  # another key's
    set_value(store, square.key(3), stored_value(store, square.key(3))[: HEADER_SIZE - 2])
    set_value(store, square.key(4), b"")  # and one emptied
    calls.clear()
    with pytest.warns(PersistmemoWarning, match="corrupt entry") as caught:
        results = square.map(range(count))
    assert results == [{"x": x, "square": x * x} for x in range(count)]
    assert len(corrupt_entry_warnings(caught)) == 1  # one per store, however many rows
    assert sorted(calls) == [0, 1, 3, 4]  # the damaged ones, computed again and stored
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert square.map(range(count)) == results
    assert calls == []


def test_rows_planted_in_the_scanned_range_are_not_served(store: Store, plan: str) -> None:
    square, calls = counted(store)
    square.map(range(100))
    keys = sorted(square.key(x) for x in range(100))
    planted = keys[10][:-1] + ("0" if keys[10][-1] != "0" else "1")  # between its neighbours
    with database(store) as db:
        db.execute(
            "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, mode, value)"
            " VALUES (?, 1, 0, NULL, 0, 1, ?)",
            (planted, stored_value(store, keys[10])),
        )
        # A row naming a file beside a value, and one whose value is not bytes.
        db.execute("UPDATE Cache SET filename = 'elsewhere.val' WHERE key = ?", (keys[20],))
        db.execute("UPDATE Cache SET value = 'text' WHERE key = ?", (keys[30],))
    calls.clear()
    with pytest.warns(PersistmemoWarning, match="corrupt entry"):  # the text value
        assert square.map(range(100)) == [{"x": x, "square": x * x} for x in range(100)]
    assert [square.key(x) for x in calls] == [keys[30]]
    # The planted key was not asked for, and is not served when asked: its seal is another
    # key's. The row naming a file beside its value is served the value, which verifies.
    found = store.read_many([*keys, planted])
    assert planted not in found
    assert set(found) == set(keys)


def test_value_files_in_a_bulk_read_are_checked(store: Store, plan: str) -> None:
    calls: list[int] = []

    @memo(store=store)
    def big(x: int) -> bytes:
        calls.append(x)
        return bytes([x]) * 100_000  # a value file each

    assert big.map(range(80)) == [bytes([x]) * 100_000 for x in range(80)]
    with database(store) as db:
        ((name,),) = db.execute(
            "SELECT filename FROM Cache WHERE key = ?", (big.key(7),)
        ).fetchall()
    path = store.directory / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    calls.clear()
    with pytest.warns(PersistmemoWarning, match="corrupt entry") as caught:
        assert big.map(range(80)) == [bytes([x]) * 100_000 for x in range(80)]
    assert len(corrupt_entry_warnings(caught)) == 1
    assert calls == [7]


def test_map_with_ttl_serves_live_hits_only(store: Store) -> None:
    square, calls = counted(store, ttl=0.5)
    square.map(range(100))
    calls.clear()
    square.map(range(100))
    assert calls == []
    time.sleep(0.6)
    square.map(range(100))
    assert sorted(calls) == list(range(100))


def test_unseal_many_checks_as_unseal_does() -> None:
    sealer = Sealer(b"k" * 32)
    small = sealer.seal("pm2:f:1:a", encode_value([1, 2]))
    large = sealer.seal("pm2:f:1:b", encode_value("y" * (2 * LARGE_BODY)))
    entries = [
        ("pm2:f:1:a", small),
        ("pm2:f:1:b", large),
        ("pm2:f:1:c", small),  # sealed for another key
        ("pm2:f:1:d", small[:-1] + bytes([small[-1] ^ 1])),
        ("pm2:f:1:e", small[:HEADER_SIZE]),
        ("pm2:f:1:f", b""),
        ("pm2:f:1:g", b"\x07" + small[1:]),
    ]
    found, failed = sealer.unseal_many(entries)
    assert found == {
        "pm2:f:1:a": sealer.unseal("pm2:f:1:a", small),
        "pm2:f:1:b": sealer.unseal("pm2:f:1:b", large),
    }
    assert len(failed) == 5
    assert all(isinstance(error, CorruptEntry) for error in failed)
    # With a prefix (a Redis namespace), each key is sealed as prefix + key.
    prefixed = sealer.seal("ns:pm2:f:1:a", encode_value(3))
    found, failed = sealer.unseal_many([("pm2:f:1:a", prefixed)], "ns:")
    assert decode_value(found["pm2:f:1:a"]) == 3
    assert failed == []
    assert sealer.unseal_many([("pm2:f:1:a", prefixed)])[0] == {}


def test_decode_many_decodes_as_decode_value_does() -> None:
    import pickle

    from persistmemo._codec.formats import FORMAT_PICKLE

    encoded = {
        "a": encode_value({"k": [1, 2.5, None]}),
        "b": encode_value(Point(1, 2.0)),
        "c": memoryview(encode_value((1, 2))),
        "d": FORMAT_PICKLE + pickle.dumps(object()),  # refused without allow_pickle
        "e": b"\xff",
        "f": encode_value([1])[:-1],
    }
    values, failed = decode_many(encoded, allow_pickle=False)
    assert values == {"a": {"k": [1, 2.5, None]}, "b": Point(1, 2.0), "c": (1, 2)}
    assert len(failed) == 3
    for key in "def":
        with pytest.raises(CorruptEntry) as raised:
            decode_value(encoded[key], allow_pickle=False)
        assert any(type(error) is type(raised.value) for error in failed)


def test_map_of_a_store_written_without_persistmemo_rows_is_all_misses(
    tmp_path: Path,
) -> None:
    """A store sealed with another secret: every bulk row fails its seal, one warning."""
    square, _ = counted(Store(tmp_path / "one", secret=b"a" * 32))
    square.map(range(100))
    again, calls = counted(Store(tmp_path / "one", secret=b"b" * 32))
    with pytest.warns(PersistmemoWarning, match="corrupt entry") as caught:
        assert again.map(range(100)) == [{"x": x, "square": x * x} for x in range(100)]
    assert len(corrupt_entry_warnings(caught)) == 1
    assert sorted(calls) == list(range(100))


def test_bookkeeping_keys_read_in_bulk_are_not_values(store: Store) -> None:
    """A lease's token or a hit count asked for among results: never served as a value."""
    square, _ = counted(store)
    square.map(range(100))
    lease = "pm-lease:" + square.key(1)
    assert store.try_lease(square.key(1), "token")
    store.record_hits("tests.square", 5)
    keys = [square.key(x) for x in range(100)]
    with pytest.warns(PersistmemoWarning, match="not a sealed value"):
        found = store.read_many([lease, "pm-hits:tests.square", *keys])
    assert set(found) == set(keys)


def test_map_hits_with_mmap_are_what_single_hits_are(store: Store) -> None:
    numpy = pytest.importorskip("numpy")

    @memo(store=store, mmap=True)
    def ramp(n: int) -> Any:
        return numpy.arange(n, dtype=numpy.float64)

    sizes = [1, 10, 1000, 300_000] * 20
    sizes = [size + i for i, size in enumerate(sizes)]  # distinct calls
    ramp.map(sizes)
    mapped = ramp.map(sizes)
    single = [ramp(size) for size in sizes]
    for one, other in zip(mapped, single, strict=True):
        assert numpy.array_equal(one, other)
        assert one.flags.writeable == other.flags.writeable
    assert ramp.cache_info().misses == len(sizes)
