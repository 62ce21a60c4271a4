"""Results written in one statement of persistmemo's own stay diskcache's: diskcache reads
them, counts them, sizes them, expires them and evicts them as if it had written them."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import diskcache

from persistmemo import Store, memo


def diskcache_warnings(directory: Path) -> list[str]:
    """What diskcache's own check finds wrong in its accounting (files left aside)."""
    with diskcache.Cache(str(directory)) as cache, warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        cache.check()
    return [str(warning.message) for warning in found if "unknown file" not in str(warning.message)]


def test_diskcache_reads_and_counts_what_a_miss_writes(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    square = memo(store=store, name="acc.square", version="1")(lambda x: x * x)
    for x in range(50):
        square(x)
    store.close()
    with diskcache.Cache(str(tmp_path / "store")) as cache:
        assert sum(key.startswith("pm3:acc.square:") for key in cache.iterkeys()) == 50
        key = square.key(7)
        assert cache.get(key) == store.backend.get(key)[0]  # the same sealed bytes
    assert diskcache_warnings(tmp_path / "store") == []


def test_a_size_limit_is_kept_by_culling_as_results_are_written(tmp_path: Path) -> None:
    limit = 200_000
    store = Store(tmp_path / "store", size_limit=limit)
    padded = memo(store=store, name="acc.padded", version="1")(lambda x: "x" * 2_000 + str(x))
    for x in range(1_000):  # about ten times the limit
        padded(x)
    store.close()
    with diskcache.Cache(str(tmp_path / "store")) as cache:
        assert sum(key.startswith("pm3:acc.padded:") for key in cache.iterkeys()) < 300
        assert cache.volume() < limit * 1.5
    assert diskcache_warnings(tmp_path / "store") == []
    # Least recently stored first: the last results are still there.
    assert padded(999).endswith("999")
    assert padded.cache_info().hits == 1  # the latest results are kept


def test_expired_results_are_culled_by_later_writes(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    brief = memo(store=store, name="acc.brief", version="1", ttl=0.2)(lambda x: x)
    lasting = memo(store=store, name="acc.lasting", version="1")(lambda x: x)
    for x in range(40):
        brief(x)
    time.sleep(0.3)
    for x in range(40):
        lasting(x)
    store.close()
    with diskcache.Cache(str(tmp_path / "store")) as cache:
        remaining = [key for key in cache.iterkeys() if "acc.brief" in key]
    assert remaining == []


def test_an_expired_row_under_the_key_is_replaced(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    # Counted on disk: a list the function filled would be part of its version.
    log = tmp_path / "computed"

    @memo(store=store, name="acc.again", version="1", ttl=1.0)
    def again(x: int) -> int:
        with log.open("a") as computed:
            computed.write("x")
        return x + len(log.read_text())

    first = again(1)
    time.sleep(1.1)  # expired, still in the table
    second = again(1)
    assert (first, second) == (2, 3)
    assert again(1) == 3  # the new row, not the expired one
    assert log.read_text() == "xx"
