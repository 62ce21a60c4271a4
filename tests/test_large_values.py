"""Large values at disk speed: arrays and DataFrames kept out of the document, read in place.

Arrays (and a pickle's large buffers: a DataFrame's blocks) are written once, straight from
their memory, to the entry's value file, each as a ``.npy`` image; a hit reads the file once
and builds the arrays as views of that one buffer; ``memo(mmap=True)`` maps the file instead.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.conftest import run_python

from persistmemo import PersistmemoWarning, Store, memo
from persistmemo._codec.decoding import decode_value
from persistmemo._codec.encoding import encode_result
from persistmemo._codec.out_of_band import FramedValue, OutOfBand
from persistmemo._sealing import FRAME_AREA, SealedParts, Sealer
from persistmemo.errors import CorruptEntry
from persistmemo.stores.base import MISSING

pd = pytest.importorskip("pandas")

KEY = "pm1:tests.f:v:0123"


def _round_trip(store: Store, value: object, *, threshold: int = 0, mapped: bool = False) -> Any:
    encoded = encode_result(value, out_of_band_from=threshold)
    assert store.write(KEY, encoded, ttl=None, tag="tests.f")
    found = store.read_with_expiry(KEY, mapped=mapped)
    assert found is not MISSING
    return decode_value(found[0])  # type: ignore[index]


def _value_file(store: Store) -> Path:
    files = list(Path(store.directory).rglob("*.val"))
    assert len(files) == 1, files
    return files[0]


ARRAYS = {
    "float64": np.random.default_rng(1).random(50_000),
    "int8 3-d": np.arange(120_000, dtype=np.int8).reshape(40, 50, 60),
    "fortran": np.asfortranarray(np.random.default_rng(2).random((300, 200))),
    "strided": np.arange(400_000, dtype=np.int32).reshape(400, 1000)[::3, ::7],
    "bool": np.random.default_rng(3).random(70_000) > 0.5,
    "complex": np.arange(10_000) * (1 + 2j),
    "datetime64[ns]": np.arange(10_000).astype("datetime64[ns]"),
    "timedelta64[ms]": np.arange(10_000).astype("timedelta64[ms]"),
    "fixed unicode": np.array(["a", "bé", "cde"] * 5_000),
    "fixed bytes": np.array([b"a", b"bc"] * 5_000),
    "big-endian": np.arange(20_000, dtype=">i4"),
    "structured": np.zeros(5_000, dtype=[("x", "<f8"), ("n", "<i2"), ("s", "U3")]),
    "empty": np.zeros((0, 3)),
    "0-d": np.array(3.5),
    "float16": np.arange(40_000, dtype=np.float16),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_arrays_of_every_layout_round_trip_exactly_and_writable(store: Store, name: str) -> None:
    array = ARRAYS[name]
    back = _round_trip(store, array)
    assert type(back) is np.ndarray
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    assert np.array_equal(back, array)
    assert back.flags.f_contiguous == array.flags.f_contiguous or array.ndim < 2
    assert back.flags.writeable
    back[...] = back  # writable without error (its own buffer, not the stored file)


def test_arrays_nested_in_containers_and_dataclasses_come_back_in_place(store: Store) -> None:
    big = np.random.default_rng(4).random(100_000)
    value = {"a": [big, (big[:10], 7)], "b": {"c": big * 2}, "s": "text"}
    back = _round_trip(store, value, threshold=64 * 1024)
    assert np.array_equal(back["a"][0], big)
    assert np.array_equal(back["b"]["c"], big * 2)
    assert type(back["a"][1]) is tuple
    assert back["a"][1][1] == 7
    assert back["s"] == "text"


def test_a_large_array_is_not_copied_into_the_document(store: Store) -> None:
    big = np.random.default_rng(5).random(1_000_000)
    encoded = encode_result(big, out_of_band_from=64 * 1024)
    assert isinstance(encoded, OutOfBand)
    assert len(encoded.document) < 200  # a reference and the .npy header, not 8 MB
    (offset, _view), *_ = encoded.segments
    # The segment's data is the array's own memory: written to the file without a copy.
    assert np.shares_memory(np.frombuffer(encoded.segments[-1][1], np.uint8), big)
    assert offset % 64 == 0


def test_each_array_segment_is_an_npy_image_numpy_itself_reads(store: Store) -> None:
    array = np.arange(30_000, dtype=np.float32).reshape(100, 300)
    encoded = encode_result([array], out_of_band_from=0)
    assert isinstance(encoded, OutOfBand)
    import io

    assert np.array_equal(np.load(io.BytesIO(encoded.joined())), array)


def test_small_arrays_stay_in_the_document_with_their_old_encoding() -> None:
    small = np.arange(10)
    assert type(encode_result(small, out_of_band_from=64 * 1024)) is bytes


def test_the_value_file_of_a_large_result_is_written_once_from_the_parts(store: Store) -> None:
    big = np.random.default_rng(6).random(200_000)
    sealed = Sealer(b"k" * 32).seal(KEY, encode_result(big, out_of_band_from=0))
    assert isinstance(sealed, SealedParts)
    store.write(KEY, encode_result(big, out_of_band_from=0), ttl=None, tag="tests.f")
    data = _value_file(store).read_bytes()
    assert data[:1] == FRAME_AREA  # an area of 1.6 MB: Poly1305
    assert len(data) == sealed.size


DATAFRAMES = {
    "numeric and str": lambda n: pd.DataFrame(
        {
            "f": np.random.default_rng(7).random(n),
            "i": np.arange(n),
            "s": [f"s{i % 97}" for i in range(n)],
            "o": pd.Series([f"o{i}" for i in range(n)], dtype=object),
        }
    ),
    "datetimes": lambda n: pd.DataFrame(
        {
            "naive": pd.date_range("2020-01-01", periods=n, freq="s"),
            "tz": pd.date_range("2020-01-01", periods=n, freq="min", tz="Europe/Paris"),
            "delta": pd.to_timedelta(np.arange(n), unit="ms"),
        }
    ),
    "nullable": lambda n: pd.DataFrame(
        {
            "Int64": pd.array([None if i % 5 == 0 else i for i in range(n)], dtype="Int64"),
            "boolean": pd.array([None if i % 7 == 0 else i % 2 == 0 for i in range(n)]),
            "string": pd.array([None if i % 3 == 0 else str(i) for i in range(n)], "string"),
        }
    ),
    "categorical and named index": lambda n: pd.DataFrame(
        {"c": pd.Categorical(["a", "b", "c"] * (n // 3), ordered=True)},
        index=pd.Index(np.arange(n // 3 * 3) * 2, name="row"),
    ),
    "multiindex": lambda n: pd.DataFrame(
        {"v": np.arange(n, dtype=float)},
        index=pd.MultiIndex.from_arrays(
            [np.arange(n) % 10, [f"k{i}" for i in range(n)]], names=["a", "b"]
        ),
    ).rename_axis(columns="cols"),
}


@pytest.mark.parametrize("name", list(DATAFRAMES))
def test_dataframes_round_trip_exactly(store: Store, name: str) -> None:
    frame = DATAFRAMES[name](30_000)
    back = _round_trip(store, frame, threshold=64 * 1024)
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert list(back.dtypes) == list(frame.dtypes)
    back.iloc[0, 0] = back.iloc[1, 0]  # writable like any fresh frame


def test_a_dataframes_blocks_are_kept_out_of_the_pickle_stream(store: Store) -> None:
    frame = pd.DataFrame({"f": np.random.default_rng(8).random(500_000), "i": np.arange(500_000)})
    encoded = encode_result(frame, out_of_band_from=64 * 1024)
    assert isinstance(encoded, OutOfBand)
    assert len(encoded.document) < 50_000 < encoded.area_size


def test_datetime_columns_are_kept_out_of_the_pickle_stream_and_come_back_exactly(
    store: Store,
) -> None:
    # numpy pickles datetime64 and timedelta64 arrays in band even with protocol 5: each
    # such column would be copied out of the pickle stream on every hit.
    frame = DATAFRAMES["datetimes"](200_000)
    encoded = encode_result(frame, out_of_band_from=64 * 1024)
    assert isinstance(encoded, OutOfBand)
    assert len(encoded.document) < 50_000 < 3 * 1_600_000 <= encoded.area_size
    back = _round_trip(store, frame, threshold=64 * 1024)
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert list(back.dtypes) == list(frame.dtypes)
    for name in frame:
        column = back[name].array._ndarray  # a view of the hit's buffer, writable
        assert not column.flags.owndata
        assert column.flags.writeable


def test_datetime_arrays_of_every_layout_in_a_pickle_round_trip_exactly(store: Store) -> None:
    from collections import OrderedDict  # no msgpack encoding: the value is pickled

    base = np.arange(120_000).astype("datetime64[s]").reshape(300, 400)
    arrays = {
        "c": base,
        "fortran": np.asfortranarray(base),
        "big-endian": base.astype(">M8[ns]"),
        "timedelta": (base - base[0, 0]).astype("timedelta64[ms]"),
        "days": np.arange(100_000).astype("datetime64[D]"),
        "strided": base[::2, ::3],
        "0-d": np.datetime64("2020-01-01T00:00:00", "ns"),
        "small": base[:2, :2].copy(),
        "nat": np.array(["NaT"] * 20_000, dtype="datetime64[us]"),
    }
    value = OrderedDict(arrays)
    encoded = encode_result(value, out_of_band_from=64 * 1024)
    assert isinstance(encoded, OutOfBand)
    assert len(encoded.document) < arrays["strided"].nbytes + 10_000  # only it in band
    for mapped in (False, True):
        back = _round_trip(store, value, threshold=64 * 1024, mapped=mapped)
        assert type(back) is OrderedDict
        assert list(back) == list(arrays)
        for name, array in arrays.items():
            got = back[name]
            assert got.dtype == array.dtype, name
            assert got.shape == array.shape, name
            assert np.array_equal(got, array, equal_nan=True), name
            assert got.flags.f_contiguous == array.flags.f_contiguous, name
            if name not in ("strided", "0-d", "small"):  # views of the area
                assert got.flags.writeable != mapped, name


def test_a_large_hit_reads_into_a_buffer_no_earlier_result_still_views(store: Store) -> None:
    frame = DATAFRAMES["numeric and str"](200_000)  # a few MB: read into a buffer
    store.write(KEY, encode_result(frame, out_of_band_from=64 * 1024), ttl=None, tag="t")

    def hit() -> Any:
        found = store.read_with_expiry(KEY)
        assert found is not MISSING
        return decode_value(found[0])  # type: ignore[index]

    def address(back: Any) -> int:
        return int(back["f"].to_numpy().__array_interface__["data"][0])

    first, second = hit(), hit()
    assert address(first) != address(second)
    second.loc[:, "f"] = -1.0
    pd.testing.assert_frame_equal(first, frame, check_exact=True)
    held = first["i"].to_numpy()  # one column of the first result
    addresses = {address(first), address(second)}
    del first, second
    third = hit()  # the second's buffer: nothing views it any more
    assert address(third) in addresses
    pd.testing.assert_frame_equal(third, frame, check_exact=True)
    assert np.array_equal(held, frame["i"].to_numpy())
    fourth = hit()  # the first's is still viewed, through the column held
    assert address(fourth) not in addresses
    assert np.array_equal(held, frame["i"].to_numpy())


def test_read_buffers_are_lent_only_when_idle_and_kept_within_their_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from persistmemo.stores.entry_reader import _ReadBuffers

    monkeypatch.setattr(_ReadBuffers, "KEPT_BYTES", 10_000)
    buffers = _ReadBuffers()
    first, _ = buffers.lend(4_000)
    second, _ = buffers.lend(4_000)
    assert first.obj is not second.obj
    kept = id(first.obj)  # the pool's own reference keeps it: its id stays its own
    del first
    again, _ = buffers.lend(3_500)
    assert id(again.obj) == kept
    assert id(buffers.lend(1_000)[0].obj) != kept  # never a much larger buffer
    assert id(buffers.lend(4_001)[0].obj) != kept  # nor a smaller one
    del again
    held = buffers.lend(5_000)[0]  # made room for: the idle ones dropped
    assert id(held.obj) != kept
    assert all(id(raw) != kept for raw in buffers._kept)
    assert sum(map(len, buffers._kept)) <= 10_000
    large, _ = buffers.lend(20_000)
    assert all(raw is not large.obj for raw in buffers._kept)  # over the budget: not kept


def test_concurrent_large_hits_each_get_a_buffer_of_their_own(store: Store) -> None:
    import threading

    big = np.random.default_rng(12).random(300_000)
    store.write(KEY, encode_result([big], out_of_band_from=0), ttl=None, tag="t")
    results: list[Any] = []
    errors: list[BaseException] = []

    def hits() -> None:
        try:
            for _ in range(10):
                found = store.read_with_expiry(KEY)
                assert found is not MISSING
                value = decode_value(found[0])[0]  # type: ignore[index]
                if len(results) % 3 == 0:
                    results.append(value)  # some kept, some dropped at once
                value[:] = np.random.default_rng().random(1)  # written, to catch sharing
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=hits) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results
    for value in results:
        assert value.min() == value.max()  # each filled by its own thread only


def test_series_and_index_round_trip_exactly(store: Store) -> None:
    series = pd.Series(np.arange(100_000, dtype=float), name="x", index=np.arange(100_000) * 3)
    pd.testing.assert_series_equal(_round_trip(store, series), series, check_exact=True)
    index = pd.DatetimeIndex(pd.date_range("2021", periods=100_000, freq="h", tz="UTC"))
    pd.testing.assert_index_equal(_round_trip(store, index), index, exact=True)


def test_a_changed_byte_in_a_large_array_is_a_miss_with_one_warning(store: Store) -> None:
    big = np.random.default_rng(9).random(100_000)
    store.write(KEY, encode_result(big, out_of_band_from=0), ttl=None, tag="tests.f")
    path = _value_file(store)
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(data)
    with pytest.warns(PersistmemoWarning, match="integrity"):
        assert store.read(KEY) is MISSING


@pytest.mark.parametrize("where", ["header", "document", "length"])
def test_a_mapped_read_checks_the_header_and_document(store: Store, where: str) -> None:
    big = np.random.default_rng(10).random(100_000)
    store.write(KEY, encode_result([big], out_of_band_from=0), ttl=None, tag="tests.f")
    path = _value_file(store)
    data = bytearray(path.read_bytes())
    if where == "header":
        data[40] ^= 1  # the metadata
    elif where == "document":
        data[70] ^= 1
    else:
        data += b"\0" * 64
    path.chmod(0o600)
    path.write_bytes(data)
    with pytest.warns(PersistmemoWarning):
        assert store.read_with_expiry(KEY, mapped=True) is MISSING


def test_a_mapped_read_does_not_read_the_area_and_check_still_finds_damage(store: Store) -> None:
    big = np.random.default_rng(11).random(100_000)
    store.write(KEY, encode_result([big], out_of_band_from=0), ttl=None, tag="tests.f")
    path = _value_file(store)
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF
    path.write_bytes(data)
    found = store.read_with_expiry(KEY, mapped=True)
    mapped = decode_value(found[0])  # type: ignore[index]
    assert not np.array_equal(mapped[0], big)  # the documented limit of a mapped hit
    report = store.check()
    assert KEY in report.corrupt


def test_strict_decoding_refuses_a_dataframe_pickle(store: Store) -> None:
    frame = pd.DataFrame({"f": np.arange(100_000.0)})
    encoded = encode_result(frame, out_of_band_from=0)
    sealed = Sealer(b"s" * 32)
    parts = sealed.seal(KEY, encoded)
    assert isinstance(parts, SealedParts)
    framed = sealed.unseal(KEY, parts.joined())
    assert isinstance(framed, FramedValue)
    with pytest.raises(CorruptEntry, match="pickle"):
        decode_value(framed, allow_pickle=False)
    pd.testing.assert_frame_equal(decode_value(framed), frame)


def test_a_framed_value_read_from_bytes_gives_writable_arrays() -> None:
    sealer = Sealer(b"s" * 32)
    big = np.arange(100_000.0)
    parts = sealer.seal(KEY, encode_result(big, out_of_band_from=0))
    assert isinstance(parts, SealedParts)
    back = decode_value(sealer.unseal(KEY, parts.joined()))
    assert np.array_equal(back, big)
    assert back.flags.writeable


def test_a_sealed_area_moved_to_another_key_fails(store: Store) -> None:
    sealer = Sealer(b"s" * 32)
    parts = sealer.seal(KEY, encode_result(np.arange(100_000.0), out_of_band_from=0))
    assert isinstance(parts, SealedParts)
    with pytest.raises(CorruptEntry):
        sealer.unseal(KEY + "x", parts.joined())
    with pytest.raises(CorruptEntry):
        sealer.unseal(KEY + "x", parts.joined(), mapped=True)


# --- through memo ------------------------------------------------------------------------


def test_a_memoized_array_result_is_read_back_in_a_fresh_interpreter(tmp_path: Path) -> None:
    code = f"""
        import numpy as np
        from persistmemo import memo, Store
        calls = []

        @memo(store=Store({str(tmp_path / "s")!r}))
        def make(n):
            calls.append(n)
            return {{"a": np.arange(n, dtype=np.float64).reshape(-1, 10), "n": n}}

        value = make(1_000_000)
        assert value["a"].shape == (100_000, 10) and value["a"][-1, -1] == 999_999
        print(len(calls))
    """
    assert run_python(code).stdout.strip() == "1"
    assert run_python(code).stdout.strip() == "0"


def test_mmap_results_are_read_only_maps_of_the_stored_file(tmp_path: Path) -> None:
    calls: list[int] = []

    @memo(store=Store(tmp_path / "s"), mmap=True)
    def make(n: int) -> dict[str, Any]:
        calls.append(n)
        return {"a": np.arange(n, dtype=np.float64), "small": np.arange(3), "n": n}

    first = make(200_000)
    hit = make(200_000)
    assert calls == [200_000]
    assert np.array_equal(hit["a"], first["a"])
    assert hit["n"] == 200_000
    for array in (hit["a"], hit["small"]):
        assert not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 1
    import mmap

    base = hit["a"]
    while not isinstance(base, mmap.mmap) and getattr(base, "base", None) is not None:
        base = base.base
        if isinstance(base, memoryview):
            base = base.obj
    assert isinstance(base, mmap.mmap)


def test_a_map_does_not_change_when_the_entry_is_overwritten_or_cleared(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    version = [1.0]

    @memo(store=store, mmap=True, key=lambda: "same")
    def make() -> np.ndarray:
        return np.full(100_000, version[0])

    make()
    mapped = make()
    assert mapped[0] == 1.0
    make.cache_clear()
    version[0] = 2.0
    assert make()[0] == 2.0  # a new entry, a new file
    assert mapped[0] == 1.0
    assert mapped[-1] == 1.0
    store.clear()
    assert mapped.sum() == 100_000.0


def test_mmap_is_checked_like_the_other_flags() -> None:
    with pytest.raises(TypeError, match="mmap"):
        memo(mmap="yes")  # type: ignore[arg-type]


def test_a_large_result_in_a_tiered_store_is_kept_locally_when_redis_refuses_it(
    tmp_path: Path,
) -> None:
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        from persistmemo import RedisStore, TieredStore

        remote = RedisStore(server.url, secret="shared", max_value_bytes=100_000)
        tiered = TieredStore(Store(tmp_path / "local"), remote)
        big = np.arange(100_000.0)
        with pytest.warns(PersistmemoWarning, match="too large"):
            tiered.write(KEY, encode_result(big, out_of_band_from=0), ttl=None, tag="tests.f")
        found = tiered.read(KEY)
        assert np.array_equal(decode_value(found), big)  # type: ignore[arg-type]
        assert remote.read(KEY) is not None
        small = np.arange(1_000.0)
        tiered.write(KEY + "s", encode_result(small, out_of_band_from=0), ttl=None, tag="t.f")
        assert np.array_equal(decode_value(remote.read(KEY + "s")), small)  # type: ignore[arg-type]
    finally:
        server.kill()


def test_an_array_result_from_redis_fills_the_local_tier_and_reads_back(tmp_path: Path) -> None:
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        from persistmemo import RedisStore, TieredStore

        remote = RedisStore(server.url, secret="shared")
        big = np.arange(300_000.0)
        remote.write(KEY, encode_result(big, out_of_band_from=0), ttl=None, tag="tests.f")
        local = Store(tmp_path / "local")
        tiered = TieredStore(local, remote)
        assert np.array_equal(decode_value(tiered.read(KEY)), big)  # type: ignore[arg-type]
        assert np.array_equal(decode_value(local.read(KEY)), big)  # type: ignore[arg-type]
        mapped = decode_value(tiered.read_with_expiry(KEY, mapped=True)[0])  # type: ignore[index]
        assert not mapped.flags.writeable
        assert np.array_equal(mapped, big)
    finally:
        server.kill()


# --- found by review -----------------------------------------------------------------------


def test_forked_workers_hit_a_large_entry_after_the_parent_hashed_one(tmp_path: Path) -> None:
    # blake3's own thread pool does not survive a fork: a forked child hashes on one thread.
    code = f"""
        import multiprocessing, numpy as np
        from persistmemo import memo, Store

        @memo(store=Store({str(tmp_path / "s")!r}))
        def make(n):
            return np.arange(n, dtype=np.float64)

        def worker(n):
            return float(make(n).sum())

        if __name__ == "__main__":
            make(1_000_000)  # 8 MB: stored, and hashed on every core
            make(1_000_000)  # a hit, hashed on every core
            with multiprocessing.get_context("fork").Pool(2) as pool:
                result = pool.map_async(worker, [1_000_000, 2_000_000])
                print(result.get(timeout=60))
    """
    script = tmp_path / "forking.py"
    script.write_text(textwrap.dedent(code))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([499999500000.0, 1999999000000.0])


def test_a_mapped_hit_refuses_an_array_header_changed_in_the_file(store: Store) -> None:
    array = np.arange(100_000, dtype=np.float64)
    store.write(KEY, encode_result([array], out_of_band_from=0), ttl=None, tag="tests.f")
    path = _value_file(store)
    data = path.read_bytes()
    forged = data.replace(b"'<f8'", b"'<i8'").replace(b"(100000,)", b"(50000, 2)")
    assert forged != data
    path.write_bytes(forged)
    with pytest.warns(PersistmemoWarning):
        found = store.read_with_expiry(KEY, mapped=True)
        assert found is MISSING or decode_value(found[0]) is None  # type: ignore[index]


def test_a_record_array_with_a_header_over_64_kib_round_trips(store: Store) -> None:
    dtype = np.dtype([(f"field_{index:05d}", "<f4") for index in range(4000)])
    array = np.zeros(20, dtype=dtype)
    array["field_00007"] = np.arange(20)
    back = _round_trip(store, array)
    assert back.dtype == dtype
    assert np.array_equal(back, array)


def test_dtype_metadata_and_aligned_records_come_back_exactly(store: Store) -> None:
    with_metadata = np.arange(100_000, dtype=np.dtype(np.float64, metadata={"unit": "m"}))
    aligned = np.zeros(10_000, dtype=np.dtype([("a", "u1"), ("b", "<f8")], align=True))
    for array in (with_metadata, with_metadata[:10], aligned):
        back = _round_trip(store, array)
        assert back.dtype.metadata == array.dtype.metadata
        assert back.dtype.isalignedstruct == array.dtype.isalignedstruct
        assert np.array_equal(back, array)


def test_a_failed_large_write_leaves_no_partial_file(tmp_path: Path) -> None:
    code = f"""
        import resource, warnings, numpy as np
        from persistmemo import memo, Store
        resource.setrlimit(resource.RLIMIT_FSIZE, (5_000_000, 5_000_000))
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead

        @memo(store=Store({str(tmp_path / "s")!r}))
        def make(n):
            return {{"array": np.ones(n), "text": b"x" * n}}

        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            assert make(2_000_000)["array"].sum() == 2_000_000
    """
    run_python(code)
    left = [path.stat().st_size for path in (tmp_path / "s").rglob("*.val")]
    assert left == []


def test_a_changed_padding_byte_is_detected_too(store: Store) -> None:
    store.write(KEY, encode_result([np.arange(100_000.0)], out_of_band_from=0), ttl=None, tag="t")
    path = _value_file(store)
    data = bytearray(path.read_bytes())
    document_size = int.from_bytes(data[49:53], "big")
    padding_at = 61 + document_size  # the first byte between the document and the area
    assert padding_at % 64 != 0
    data[padding_at] ^= 1
    path.write_bytes(data)
    with pytest.warns(PersistmemoWarning, match="integrity"):
        assert store.read(KEY) is MISSING


def test_with_mmap_a_miss_returns_the_same_read_only_maps_as_a_hit(tmp_path: Path) -> None:
    @memo(store=Store(tmp_path / "s"), mmap=True)
    def make(n: int) -> np.ndarray:
        return np.arange(n, dtype=np.float64)

    miss = make(100_000)
    assert not miss.flags.writeable
    assert np.array_equal(miss, np.arange(100_000.0))
    assert not make.refresh(100_000).flags.writeable
