"""A store's options are checked when it is made: a clear error naming the option, never a
store that hangs or silently does nothing on its first call."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from persistmemo import Store


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"size_limit": "1GB"}, TypeError, "size_limit"),
        ({"cull_limit": "x"}, TypeError, "cull_limit"),
        ({"disk_min_file_size": -1}, TypeError, "disk_min_file_size"),
        ({"eviction_policy": "bogus"}, ValueError, "eviction_policy"),
        ({"timeout": float("inf")}, ValueError, "timeout"),
        ({"timeout": "5"}, TypeError, "timeout"),
        ({"lease": 0}, ValueError, "lease"),
        ({"secret": 5}, TypeError, "secret"),
        ({"secret": b""}, ValueError, "secret"),
    ],
)
def test_an_unusable_option_is_refused_when_the_store_is_made(
    tmp_path: Path, options: dict[str, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        Store(tmp_path / "store", **options)


def test_a_url_is_not_taken_for_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RedisStore"):
        Store("redis://localhost:6379/0")
    assert not Path("redis:").exists()


def test_a_whole_float_size_is_kept_as_an_int(tmp_path: Path) -> None:
    with Store(tmp_path / "store", size_limit=2.0**30) as store:
        assert store.backend._settings["size_limit"] == 2**30


def test_reading_threads_keep_sqlites_own_small_cache_and_map_nothing(tmp_path: Path) -> None:
    """Each thread reads on a connection of its own: the store's page cache and map (32 MiB
    and 64 MiB, for its one writer) on every reader made a few threads cost hundreds of MiB."""
    store = Store(tmp_path / "store", sqlite_cache_size=2**14, sqlite_mmap_size=2**26)
    store.backend.put("pm3:t:1:0", b"x")
    store.backend.get("pm3:t:1:0")
    connection = store.backend._reader._local.held.connection
    assert connection.execute("PRAGMA mmap_size").fetchone() == (0,)
    assert connection.execute("PRAGMA cache_size").fetchone() != (2**14,)


@pytest.mark.parametrize("name", ["sqlite_cache_size", "sqlite_mmap_size"])
@pytest.mark.parametrize("value", ["big", 1.5, None, True])
def test_a_page_cache_or_map_size_that_is_not_a_whole_number_is_refused(
    tmp_path: Path, name: str, value: object
) -> None:
    with pytest.raises(TypeError, match=re.escape(f"Store({name}=...) takes a whole number")):
        Store(tmp_path / "store", **{name: value})
