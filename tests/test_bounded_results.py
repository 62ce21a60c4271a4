"""Results hold bounded resources (issue 23).

- A live ``memo(mmap=True)`` result holds no file descriptor (stores/read_only_maps.py): a
  process keeping thousands of them still opens files, so the store is still used.
- A small array kept from a hit does not keep the hit's whole buffer alive: small parts are
  copied out of it (out_of_band.COPY_OUT_PART); large ones stay views.
- ``memo(mmap=True)`` returns read-only arrays on every path: a local, remote (tiered) or
  Redis hit, a miss, ``f.map``'s hits and its workers' results.
"""

from __future__ import annotations

import gc
import mmap
import os
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from array_roots import memory_root
from conftest import run_python
from persistmemo import PersistmemoWarning, RedisStore, Store, TieredStore, memo
from persistmemo._codec.decoding import decode_value
from persistmemo._codec.encoding import encode_result
from persistmemo._codec.out_of_band import COPY_OUT_BUDGET, COPY_OUT_PART
from persistmemo.stores import read_only_maps
from persistmemo.stores.base import MISSING

LINUX = sys.platform.startswith("linux")
KEY = "pm1:tests.f:v:0123"


_root = memory_root


def _maps_of(directory: Path) -> int:
    """How many of this process's memory maps are of files under ``directory``."""
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if str(directory) in line)


# --- 1. a mapped result holds no file descriptor ----------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="counts descriptors in /proc/self/fd")
def test_thousands_of_live_mapped_results_hold_no_descriptors_and_hits_go_on(
    tmp_path: Path,
) -> None:
    # Each live map used to hold a duplicate of its file's descriptor: with 128 allowed,
    # the store was bypassed after ~120 results (every open failed), and the map's hits
    # were 0. Now the descriptors stay as few as the store's own.
    code = f"""
        import os, resource
        import numpy as np
        from persistmemo import Store, memo

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))

        @memo(store=Store({str(tmp_path / "s")!r}), mmap=True)
        def make(i):
            return np.full(5_000, float(i))

        def descriptors():
            return len(os.listdir("/proc/self/fd"))

        kept = [make(i) for i in range(1_500)]  # misses: each returns the stored map
        most = descriptors()
        hits = make.cache_info().hits
        kept += make.map(range(1_500))
        right = all(kept[i][0] == i == kept[1_500 + i][-1] for i in range(1_500))
        read_only = not any(array.flags.writeable for array in kept)
        print(make.cache_info().hits - hits, most, descriptors(), int(right), int(read_only))
    """
    out = run_python(code, timeout=300).stdout.split()
    hits, after_misses, after_hits, right, read_only = map(int, out)
    assert max(after_misses, after_hits) < 32
    assert hits == 1_500
    assert right
    assert read_only


def _value_file(tmp_path: Path, data: bytes, name: str = "value.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _map_closed(path: Path, size: int) -> memoryview:
    """A read-only map of ``path``'s first ``size`` bytes, its descriptor closed at once."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        return read_only_maps.map_read_only(descriptor, size)
    finally:
        os.close(descriptor)


def test_a_read_only_map_outlives_its_descriptor_and_refuses_writes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    path = _value_file(tmp_path, data)
    view = _map_closed(path, len(data))
    path.unlink()  # the pages stay
    assert view.readonly
    assert view == data
    assert isinstance(_root(view), mmap.mmap)  # the object whose end unmaps the pages
    with pytest.raises(TypeError):
        view[0] = 1
    with pytest.raises(TypeError):
        _root(view)[0:1] = b"x"
    array = np.frombuffer(view, dtype=np.uint8)
    with pytest.raises(ValueError, match="WRITEABLE"):
        array.flags.writeable = True
    assert int(array[-1]) == 255


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="the libc path is for Python < 3.13")
def test_a_large_map_starts_at_a_huge_page_boundary_and_reads_whole(tmp_path: Path) -> None:
    # As the kernel places a map of a large file: its page cache is then mapped in huge
    # pages (reading 100 MB through an unaligned map took 13 ms instead of 8).
    data = np.arange(1_000_000, dtype=np.float64).tobytes()  # 8 MB, not a multiple of 2 MB
    data += b"tail"
    path = _value_file(tmp_path, data)
    view = _map_closed(path, len(data))
    address = np.frombuffer(view, dtype=np.uint8).__array_interface__["data"][0]
    assert address % (2 << 20) == 0
    assert len(view) == len(data)
    assert view[-4:] == b"tail"
    assert view == data
    small = _value_file(tmp_path, b"z" * 5_000, "small.bin")
    descriptor = os.open(small, os.O_RDONLY)
    try:
        assert read_only_maps.map_read_only(descriptor, 5_000) == b"z" * 5_000
    finally:
        os.close(descriptor)


@pytest.mark.skipif(not LINUX, reason="reads /proc/self/maps")
def test_a_read_only_map_is_unmapped_when_its_last_view_is_gone(tmp_path: Path) -> None:
    path = _value_file(tmp_path, b"x" * 100_000)
    view = _map_closed(path, 100_000)
    array = np.frombuffer(view, dtype=np.uint8)[10:20]
    del view
    gc.collect()
    assert _maps_of(tmp_path) == 1  # the slice holds it
    assert bytes(array) == b"x" * 10
    del array
    gc.collect()
    assert _maps_of(tmp_path) == 0


def test_without_the_libc_call_a_map_still_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where the libc call cannot be made (Windows, no ctypes), mmap.mmap maps as before.
    monkeypatch.setattr(read_only_maps, "_overlay", [None])
    monkeypatch.setattr(read_only_maps, "_TRACKFD", False)
    path = _value_file(tmp_path, b"abc" * 5_000)
    with open(path, "rb") as file:
        view = read_only_maps.map_read_only(file.fileno(), 15_000)
    assert view.readonly
    assert view[:6] == b"abcabc"


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="the libc path is for Python < 3.13")
def test_a_failed_libc_map_raises_and_leaves_no_zeros_behind(tmp_path: Path) -> None:
    path = _value_file(tmp_path, b"y" * 10_000)
    descriptor = os.open(path, os.O_WRONLY)  # PROT_READ of a write-only descriptor: EACCES
    try:
        with pytest.raises(OSError, match="mapping a value file failed"):
            read_only_maps.map_read_only(descriptor, 10_000)
    finally:
        os.close(descriptor)


# --- 2. a small array kept from a hit does not pin the hit's buffer ---------------------------


def _big_and_small() -> dict[str, Any]:
    return {
        "big": np.arange(2_500_000, dtype=np.float64),  # 20 MB
        "small": [np.full(10_000, float(k)) for k in range(4)],  # 80 KB each
    }


def assert_let_go(buffer: weakref.ref[Any], root_of_next_hit: Callable[[], Any]) -> None:
    """Nothing views ``buffer`` any more: it is freed, or kept idle by the read buffers
    (entry_reader._ReadBuffers), which lend it again only when nothing views it, so that
    the next hit reads into it (were it still viewed, the hit would take a fresh one)."""
    gc.collect()
    if buffer() is not None:
        address = id(buffer())
        assert id(root_of_next_hit()) == address


def test_a_small_array_kept_from_a_hit_lets_the_large_buffer_go(tmp_path: Path) -> None:
    @memo(store=Store(tmp_path / "s"))
    def make() -> dict[str, Any]:
        return _big_and_small()

    make()
    value = make()  # a hit: the file read into one buffer
    buffer = weakref.ref(_root(value["big"]))
    assert _root(value["big"]).nbytes >= 20_000_000
    kept = value["small"][2]
    del value
    gc.collect()
    assert_let_go(buffer, lambda: _root(make()["big"]))
    assert kept.flags.writeable
    assert np.array_equal(kept, np.full(10_000, 2.0))
    assert _root(kept).nbytes == 80_000


def test_large_arrays_stay_views_of_the_hit_buffer(tmp_path: Path) -> None:
    @memo(store=Store(tmp_path / "s"))
    def make() -> dict[str, Any]:
        return _big_and_small()

    make()
    value = make()
    assert value["big"].base is not None  # a view of the buffer the file was read into
    assert _root(value["big"]).nbytes > value["big"].nbytes
    assert all(_root(small) is not _root(value["big"]) for small in value["small"])


def test_a_value_of_many_like_parts_copies_at_most_its_budget(store: Store) -> None:
    # A list of chunks (each a small part of the whole) is kept together: copying every
    # chunk would double what the hit costs, so at most 1/COPY_OUT_BUDGET is copied.
    chunks = [np.full(12_500, float(k)) for k in range(2 * COPY_OUT_PART)]  # 100 KB each
    encoded = encode_result(chunks, out_of_band_from=0)
    assert store.write(KEY, encoded, ttl=None, tag="tests.f")
    found = store.read_with_expiry(KEY)
    assert found is not MISSING
    back = decode_value(found[0])  # type: ignore[index]
    assert all(np.array_equal(a, b) for a, b in zip(back, chunks, strict=True))
    area = _root(back[-1]).nbytes
    copied = sum(a.nbytes for a in back if _root(a).nbytes == a.nbytes)
    assert 0 < copied <= area // COPY_OUT_BUDGET
    assert sum(1 for a in back if _root(a).nbytes == area) > len(back) // 2


def test_small_pickle_buffers_are_copied_out_too(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")

    @memo(store=Store(tmp_path / "s"))
    def make() -> tuple[Any, Any]:
        return pd.Series(np.arange(2_500_000.0)), pd.Series(np.arange(10_000))

    make()
    big, small = make()  # a pickle: its buffers come from the area
    buffer = weakref.ref(_root(big.to_numpy()))
    assert _root(big.to_numpy()).nbytes >= 20_000_000
    del big
    assert_let_go(buffer, lambda: _root(make()[0].to_numpy()))
    assert small.iloc[-1] == 9_999
    small.iloc[0] = 7  # its own memory, writable


@pytest.mark.skipif(not LINUX, reason="reads /proc/self/maps")
def test_parts_of_a_map_are_never_copied(tmp_path: Path) -> None:
    @memo(store=Store(tmp_path / "s"), mmap=True)
    def make() -> dict[str, Any]:
        return _big_and_small()

    make()
    value = make()
    assert isinstance(_root(value["small"][0]), mmap.mmap)
    kept = value["small"][0]
    del value
    gc.collect()
    assert _maps_of(tmp_path / "s") >= 1  # the map stays, as documented
    del kept
    gc.collect()


# --- 3. mmap=True results are read-only on every path -----------------------------------------


def _read_only(value: dict[str, Any]) -> bool:
    return not value["values"].flags.writeable and not value["small"].flags.writeable


def _result(x: int) -> dict[str, Any]:
    return {"values": np.arange(50_000, dtype=np.float64) + x, "small": np.arange(3), "x": x}


def test_redis_results_with_mmap_are_read_only_on_a_miss_and_a_hit(redis_url: str) -> None:
    calls: list[int] = []

    @memo(store=RedisStore(redis_url, secret="s"), mmap=True)
    def make(x: int) -> dict[str, Any]:
        calls.append(x)
        return _result(x)

    miss = make(1)
    hit = make(1)
    assert calls == [1]
    assert _read_only(miss)
    assert _read_only(hit)
    assert np.array_equal(hit["values"], _result(1)["values"])
    with pytest.raises(ValueError, match="read-only"):
        hit["values"][0] = 5.0
    mapped = make.map([1, 2])
    assert calls == [1, 2]
    assert all(_read_only(each) for each in mapped)
    assert all(_read_only(each) for each in make.map([1, 2]))


def test_redis_results_without_mmap_stay_writable(redis_url: str) -> None:
    @memo(store=RedisStore(redis_url, secret="s"))
    def make(x: int) -> dict[str, Any]:
        return _result(x)

    make(1)
    hit = make(1)
    assert hit["values"].flags.writeable
    hit["values"][0] = 5.0


def test_tiered_results_with_mmap_are_read_only_from_the_remote_and_then_locally(
    redis_url: str, tmp_path: Path
) -> None:
    def tiered(local: str) -> Any:
        store = TieredStore(Store(tmp_path / local), RedisStore(redis_url, secret="s"))

        @memo(store=store, mmap=True, name="tests.bounded.tiered", version="1")
        def make(x: int) -> dict[str, Any]:
            return _result(x)

        return make

    here = tiered("here")
    assert _read_only(here(3))  # a miss
    assert _read_only(here(3))  # a local hit
    there = tiered("there")  # another machine: its local tier is empty
    remote_hit = there(3)
    assert _read_only(remote_hit)
    assert np.array_equal(remote_hit["values"], _result(3)["values"])
    assert _read_only(there(3))  # now a local hit: the same kind of arrays
    assert isinstance(_root(there(3)["values"]), mmap.mmap)
    elsewhere = tiered("elsewhere")
    assert all(_read_only(each) for each in elsewhere.map([3, 4]))  # remote hit, miss


def test_results_in_a_store_others_write_are_read_whole_and_still_read_only(
    tmp_path: Path,
) -> None:
    team_dir = tmp_path / "team"
    team_dir.mkdir()
    team_dir.chmod(0o2770)  # group-writable: results are read and checked, not mapped
    with (
        pytest.warns(PersistmemoWarning, match="mapped results"),
        Store(team_dir, shared=True, secret="team") as store,
    ):

        @memo(store=store, mmap=True)
        def make(x: int) -> dict[str, Any]:
            return _result(x)

        miss, hit = make(5), make(5)
    assert _read_only(miss)
    assert _read_only(hit)
    assert not isinstance(_root(hit["values"]), mmap.mmap)
    assert np.array_equal(hit["values"], _result(5)["values"])


def test_arrays_stored_without_mmap_come_back_read_only_with_it(store: Store) -> None:
    # The same function with mmap=True reads the same entries (the option is not in the
    # key): arrays small enough to be stored in the document come back read-only too.
    calls: list[int] = []

    def make() -> dict[str, Any]:
        calls.append(0)
        return _result(0)

    plain = memo(store=store)(make)
    mapped = memo(store=store, mmap=True)(make)
    assert plain()["small"].flags.writeable
    assert _read_only(mapped())
    assert plain()["small"].flags.writeable  # without mmap, still the caller's to change
    assert calls == [0]


def test_map_workers_results_with_mmap_are_read_only(tmp_path: Path) -> None:
    env = {"MAP_STORE": str(tmp_path / "store"), "MAP_LOG": str(tmp_path / "calls.log")}
    code = """
        import mmap
        import mapped

        from array_roots import memory_root as root

        computed = mapped.ramp.map(range(4), workers=2)  # in worker processes
        hits = mapped.ramp.map(range(4), workers=2)
        for results in (computed, hits):
            assert [each["x"] for each in results] == [0, 1, 2, 3]
            assert [each["values"][0] for each in results] == [0.0, 1.0, 2.0, 3.0]
            assert not any(each["values"].flags.writeable for each in results)
            assert all(isinstance(root(each["values"]), mmap.mmap) for each in results)
        print(mapped.ramp.cache_info())
    """
    out = run_python(code, env=env).stdout.strip()
    assert out == "CacheInfo(hits=4, misses=0)"  # the misses were the workers'
    log = (tmp_path / "calls.log").read_text().splitlines()
    assert len(log) == 4


def test_repeated_inputs_of_a_map_with_mmap_get_read_only_results_too(store: Store) -> None:
    @memo(store=store, mmap=True)
    def make(x: int) -> dict[str, Any]:
        return _result(x)

    for results in (make.map([5, 5]), make.map([5, 5])):  # misses, then hits
        assert all(_read_only(each) for each in results)
        assert results[0] is not results[1]
