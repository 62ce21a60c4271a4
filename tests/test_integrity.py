"""Every stored value is sealed to its key: any change on disk is detected and recomputed."""

from __future__ import annotations

import contextlib
import os
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from persistmemo import PersistmemoWarning, Store, memo
from persistmemo._codec.decoding import decode_value
from persistmemo._codec.formats import FORMAT_MSGPACK, FORMAT_PICKLE
from persistmemo._sealing import HEADER_SIZE, seal, unseal
from persistmemo.errors import CorruptEntry

SECRET = b"s" * 32


def rows(store: Store) -> dict[str, tuple[int, str | None, bytes | None]]:
    with sqlite3.connect(store.directory / "cache.db") as connection:
        found = connection.execute("SELECT key, mode, filename, value FROM Cache").fetchall()
    return {key: (mode, filename, value) for key, mode, filename, value in found}


def set_raw_value(store: Store, key: str, value: bytes) -> None:
    with sqlite3.connect(store.directory / "cache.db") as connection:
        connection.execute("UPDATE Cache SET value = ? WHERE key = ?", (value, key))


def counting_function(store: Store) -> tuple[Any, list[int]]:
    calls: list[int] = []

    @memo(store=store)
    def compute(x: int) -> dict[str, int]:
        calls.append(x)
        return {"x": x, "square": x * x}

    return compute, calls


def tamper_and_call(store: Store, change: Any) -> list[int]:
    compute, calls = counting_function(store)
    assert compute(3) == {"x": 3, "square": 9}
    key = compute.key(3)
    stored = rows(store)[key][2]
    assert stored is not None
    set_raw_value(store, key, change(stored, store))
    with pytest.warns(PersistmemoWarning, match="corrupt entry") as caught:
        assert compute(3) == {"x": 3, "square": 9}
    assert len([w for w in caught if "corrupt entry" in str(w.message)]) == 1
    # Recomputed and rewritten: the next call is a clean hit (the caller checks the calls).
    assert compute(3) == {"x": 3, "square": 9}
    assert rows(store)[key][2] != change(stored, store)
    return calls


def flip_a_bit(stored: bytes, store: Store) -> bytes:
    return stored[:-1] + bytes([stored[-1] ^ 0x01])


def truncate(stored: bytes, store: Store) -> bytes:
    return stored[: len(stored) // 2]


def random_bytes(stored: bytes, store: Store) -> bytes:
    return os.urandom(len(stored))


def another_valid_document(stored: bytes, store: Store) -> bytes:
    # Well-formed frame and msgpack, but a value nobody sealed for this key.
    return stored[:HEADER_SIZE] + FORMAT_MSGPACK + msgpack.packb({"x": 3, "square": 10})


@pytest.mark.parametrize(
    "change", [flip_a_bit, truncate, random_bytes, another_valid_document], ids=lambda f: f.__name__
)
def test_changed_inline_values_are_detected_and_recomputed(store: Store, change: Any) -> None:
    assert tamper_and_call(store, change) == [3, 3]


def test_swapping_two_entries_is_detected(store: Store) -> None:
    compute, calls = counting_function(store)
    compute(1)
    compute(2)
    first, second = compute.key(1), compute.key(2)
    stored = rows(store)
    set_raw_value(store, first, stored[second][2] or b"")
    set_raw_value(store, second, stored[first][2] or b"")
    with pytest.warns(PersistmemoWarning, match="corrupt entry"):
        assert compute(1) == {"x": 1, "square": 1}
        assert compute(2) == {"x": 2, "square": 4}
    assert calls == [1, 2, 1, 2]


def large_value_file(store: Store) -> tuple[Any, list[int], Path]:
    calls: list[int] = []

    @memo(store=store)
    def blob(n: int) -> bytes:
        calls.append(n)
        return bytes(range(256)) * n

    assert blob(1000) == bytes(range(256)) * 1000
    _mode, filename, _ = rows(store)[blob.key(1000)]
    assert filename is not None  # over diskcache's 32 KB: kept in its own file
    return blob, calls, store.directory / filename


@pytest.mark.parametrize("damage", ["edit", "truncate", "delete"])
def test_damaged_large_value_files_are_misses(store: Store, damage: str) -> None:
    blob, calls, path = large_value_file(store)
    if damage == "edit":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        path.unlink()
    if damage == "delete":
        assert blob(1000) == bytes(range(256)) * 1000  # a plain miss, as diskcache says
    else:
        with pytest.warns(PersistmemoWarning, match="corrupt entry"):
            assert blob(1000) == bytes(range(256)) * 1000
    assert calls == [1000, 1000]
    assert blob(1000) == bytes(range(256)) * 1000
    assert calls == [1000, 1000]


class _Exploit:
    """Unpickling this creates a file: proof that planted bytes ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_planted_pickles_are_never_unpickled(store: Store, tmp_path: Path) -> None:
    marker = tmp_path / "exploited"
    calls: list[int] = []

    @memo(store=store)
    def compute(x: int) -> int:
        calls.append(x)
        return x

    compute(1)
    compute(2)
    payload = pickle.dumps(_Exploit(marker))
    # 1. Our own frame around a pickle, with a tag forged without the secret.
    set_raw_value(store, compute.key(1), b"\x01" + b"\x00" * 16 + FORMAT_PICKLE + payload)
    # 2. A diskcache pickle row (what diskcache's own pickling would load).
    with sqlite3.connect(store.directory / "cache.db") as connection:
        connection.execute(
            "UPDATE Cache SET mode = 4, value = ? WHERE key = ?", (payload, compute.key(2))
        )
    with pytest.warns(PersistmemoWarning):
        assert compute(1) == 1
        assert compute(2) == 2
    assert not marker.exists()
    assert calls == [1, 2, 1, 2]


def test_pickles_are_refused_in_a_store_others_can_write(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o777)
    directory.chmod(0o777)
    store = Store(directory)
    calls = []

    @memo(store=store)
    def counter(text: str) -> Any:
        import collections

        calls.append(text)
        return collections.Counter(text)

    with pytest.warns(PersistmemoWarning) as caught:
        assert counter("ab") == {"a": 1, "b": 1}
        assert counter("ab") == {"a": 1, "b": 1}
    assert calls == ["ab", "ab"]  # never stored, so never loaded
    messages = [str(warning.message) for warning in caught]
    assert len([m for m in messages if "writable by other users" in m]) == 1
    assert len([m for m in messages if "result not stored" in m]) == 1


def test_a_secret_key_file_others_can_write_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "config" / "persistmemo" / "secret.key"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(os.urandom(32))
    secret.chmod(0o666)
    store = Store(tmp_path / "store")
    calls = []

    @memo(store=store)
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    with pytest.warns(PersistmemoWarning, match="secret key unavailable"):
        assert double(2) == 4
    assert double(2) == 4
    assert calls == [2]  # this process still memoizes, under a one-off secret


def test_the_secret_lives_outside_the_store_and_is_private(store: Store, tmp_path: Path) -> None:
    compute, _ = counting_function(store)
    compute(1)
    secret = tmp_path / "config" / "persistmemo" / "secret.key"
    assert secret.exists()
    assert oct(secret.stat().st_mode & 0o777) == oct(0o600)
    assert not any(path.name == "secret.key" for path in store.directory.rglob("*"))


def test_seal_binds_the_value_to_its_key() -> None:
    sealed = seal(SECRET, "k1", FORMAT_MSGPACK + b"\x01")
    assert bytes(unseal(SECRET, "k1", sealed)) == FORMAT_MSGPACK + b"\x01"
    with pytest.raises(CorruptEntry):
        unseal(SECRET, "k2", sealed)
    with pytest.raises(CorruptEntry):
        unseal(b"t" * 32, "k1", sealed)


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0), st.integers(0, 255))
def test_mutated_documents_decode_or_raise_corrupt_entry_only(
    document: bytes, position: int, byte: int
) -> None:
    valid = FORMAT_MSGPACK + msgpack.packb([document, {"k": (1, 2.5)}, [None] * 3])
    mutated = bytearray(valid)
    mutated[position % len(mutated)] = byte
    with contextlib.suppress(CorruptEntry):
        decode_value(bytes(mutated), allow_pickle=False)


def test_decoding_a_tiny_hostile_document_does_not_allocate_its_claimed_size() -> None:
    # A 6-byte array header claiming 4 billion items must fail fast, not allocate.
    hostile = FORMAT_MSGPACK + b"\xdd\xff\xff\xff\xff"
    with pytest.raises(CorruptEntry):
        decode_value(hostile)
    hostile_bin = FORMAT_MSGPACK + b"\xc6\xff\xff\xff\xff"
    with pytest.raises(CorruptEntry):
        decode_value(hostile_bin)
