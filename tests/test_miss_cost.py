"""What a miss costs: one write transaction of one statement, with its key claimed (a lock
on a byte of the store's claims file, which writes nothing to the database).

Write transactions are counted on disk, in SQLite's write-ahead log: every commit ends with
a commit frame, so the commit frames appended by a call are the transactions it made.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from persistmemo import Store, memo
from persistmemo.stores.base import MISSING

WAL_HEADER = 32
FRAME_HEADER = 24


def commits(store: Store) -> int:
    """Commit frames in the store's write-ahead log since its last restart."""
    return wal_frames(store.directory)[1]


def wal_frames(directory: Path) -> tuple[int, int]:
    """(pages, commit frames) in the write-ahead log of the database in ``directory`` since
    its last restart: each page a transaction changed is one frame."""
    path = directory / "cache.db-wal"
    wal = path.read_bytes() if path.exists() else b""
    if len(wal) < WAL_HEADER:
        return 0, 0
    page_size = int.from_bytes(wal[8:12], "big")
    salts = wal[16:24]
    pages = count = 0
    offset = WAL_HEADER
    while offset + FRAME_HEADER + page_size <= len(wal):
        header = wal[offset : offset + FRAME_HEADER]
        if header[8:16] != salts:
            break  # frames of an earlier generation of the log: not this one's
        pages += 1
        if int.from_bytes(header[4:8], "big"):  # the database size, set on commit frames only
            count += 1
        offset += FRAME_HEADER + page_size
    return pages, count


# What the probing functions below read as they run: not part of their keys.
PROBING = ["store", "claimed"]


def transactions_of(store: Store, call: object) -> int:
    before = commits(store)
    call()  # type: ignore[operator]
    return commits(store) - before


def test_commit_frames_count_one_transaction_per_raw_write(store: Store) -> None:
    store.write("pm1:t:1:0", b"\x01", ttl=None, tag="t")  # opens the writer
    assert transactions_of(store, lambda: store.write("pm1:t:1:1", b"\x01", ttl=None, tag="t")) == 1
    assert transactions_of(store, lambda: store.record_hits("t", 1)) == 1
    assert transactions_of(store, lambda: store.try_lease("pm1:t:1:2", "token")) == 0


def writer_statements(store: Store, call: object) -> list[str]:
    """The SQL statements the store's writing connection ran during ``call()``."""
    connection = store.backend._cache._con  # diskcache's connection: every write runs on it
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    try:
        call()  # type: ignore[operator]
    finally:
        connection.set_trace_callback(None)
    return statements


def test_a_miss_makes_one_write_transaction_of_one_insert(store: Store) -> None:
    double = memo(store=store, name="cost.double", version="1")(lambda x: 2 * x)
    double(0)  # opens the writer
    for x in range(100, 110):
        assert transactions_of(store, lambda x=x: double(x)) == 1
    # SQLite traces a statement again for each trigger it fires (diskcache's count and size
    # accounting): one distinct statement is one statement.
    statements = set(writer_statements(store, lambda: double(200)))
    assert len(statements) == 1
    assert statements.pop().startswith("INSERT OR IGNORE INTO Cache")
    assert double(105) == 210  # stored: a hit
    assert double.cache_info().hits == 1


def test_a_miss_writes_no_more_pages_than_a_raw_diskcache_set(tmp_path: Path) -> None:
    # Every page a commit changes is written to the log (and later into the database): the
    # row and each index it is in. A raw diskcache Cache has no index on tags; a store has
    # none either, as nothing looks entries up by tag.
    import diskcache

    from persistmemo._codec.encoding import encode_value

    store = Store(tmp_path / "store")
    double = memo(store=store, name="cost.pages", version="1")(lambda x: 2 * x)
    double(0)  # opens the writer
    raw = diskcache.Cache(str(tmp_path / "raw"))
    sealed = store._sealer_ready().seal("pm2:cost.pages:1:0", encode_value(2), 0.0)
    raw.set("pm2:cost.raw:1:" + "0" * 32, sealed, tag="cost.raw")

    def pages_written(directory: Path, calls: list[object]) -> int:
        before = wal_frames(directory)[0]
        for call in calls:
            call()  # type: ignore[operator]
        return wal_frames(directory)[0] - before

    keys = [f"pm2:cost.raw:1:{x:032x}" for x in range(1, 21)]
    raw_pages = pages_written(tmp_path / "raw", [lambda k=k: raw.set(k, sealed) for k in keys])
    miss_pages = pages_written(store.directory, [lambda x=x: double(x) for x in range(1, 21)])
    raw.close()
    store.close()
    assert miss_pages <= raw_pages


def test_a_store_opened_drops_the_tag_index_an_earlier_version_made(tmp_path: Path) -> None:
    import diskcache

    from persistmemo._codec.encoding import encode_value

    directory = tmp_path / "store"
    with Store(directory) as store:
        assert store.write("pm2:t.f:1:" + "0" * 32, encode_value(7), ttl=None, tag="t.f")
    diskcache.Cache(str(directory), disk_min_file_size=2**15, tag_index=True).close()

    def indexes() -> set[str]:
        with sqlite3.connect(directory / "cache.db") as connection:
            return {row[1] for row in connection.execute("PRAGMA index_list(Cache)")}

    assert "Cache_tag_rowid" in indexes()
    with Store(directory) as store:
        assert store.read("pm2:t.f:1:" + "0" * 32) is not MISSING  # written before: still read
        assert store.write("pm2:t.f:1:" + "1" * 32, encode_value(8), ttl=None, tag="t.f")
    assert "Cache_tag_rowid" not in indexes()


def test_misses_are_checkpointed_into_the_database_every_checkpoint_pages(tmp_path: Path) -> None:
    # A checkpoint syncs the log and the database to disk: SQLite's default (1000 pages)
    # made one every 200 misses. The log keeps growing past 1000 pages instead of restarting.
    store = Store(tmp_path / "store")
    double = memo(store=store, name="cost.checkpoints", version="1")(lambda x: 2 * x)
    for x in range(300):
        double(x)
    pages = wal_frames(store.directory)[0]
    store.close()
    assert pages > 1000


def test_an_async_miss_makes_one_write_transaction(store: Store) -> None:
    @memo(store=store, name="cost.adouble", version="1")
    async def double(x: int) -> int:
        return 2 * x

    asyncio.run(double(0))
    assert [transactions_of(store, lambda x=x: asyncio.run(double(x))) for x in (1, 2, 3)] == [
        1,
        1,
        1,
    ]


def test_every_miss_is_claimed_by_default(store: Store) -> None:
    claimed: list[bool] = []

    @memo(store=store, name="cost.seen", version="1", ignore=[*PROBING, "seen"])
    def seen(x: int) -> int:
        claimed.append(store.lease_holder(seen.key(x)) is not None)
        return x

    store.write("pm1:other:1:0", b"\x01", ttl=None, tag="other")  # opens the writer
    counts = [transactions_of(store, lambda x=x: seen(x)) for x in range(8)]
    assert claimed == [True] * 8
    assert counts == [1] * 8  # the claim writes nothing to the database
    assert all(store.lease_holder(seen.key(x)) is None for x in range(8))  # all released


def test_lock_always_claims_every_miss_as_true_does(store: Store) -> None:
    claimed: list[bool] = []

    @memo(store=store, name="cost.always", version="1", ignore=PROBING, lock="always")
    def always(x: int) -> int:
        claimed.append(store.lease_holder(always.key(x)) is not None)
        return x

    store.write("pm2:other:1:0", b"\x01", ttl=None, tag="other")  # opens the writer
    counts = [transactions_of(store, lambda x=x: always(x)) for x in range(6)]
    assert claimed == [True] * 6
    assert counts == [1] * 6


def test_lock_takes_true_false_or_always_and_names_itself_otherwise() -> None:
    with pytest.raises(TypeError, match=r"memo\(lock=...\) takes True, False or 'always'"):
        memo(lock="sometimes")  # type: ignore[arg-type]


def test_unlocked_functions_never_claim(store: Store) -> None:
    claimed: list[bool] = []

    @memo(store=store, name="cost.unlocked", version="1", lock=False, ignore=PROBING)
    def double(x: int) -> int:
        claimed.append(store.lease_holder(double.key(x)) is not None)
        return 2 * x

    double(0)  # opens the writer
    assert [transactions_of(store, lambda x=x: double(x)) for x in range(1, 4)] == [1, 1, 1]
    assert claimed == [False] * 4


# --- across processes ------------------------------------------------------------------------

# Each process: the function `f` of one shared store, slow (SLOW seconds) from x = 300 and
# instant below. Arguments come as rounds "1,2;3": before each round every process waits at
# a barrier (files in the test directory), so that the round's calls start at once; "w"
# waits LAG seconds first.
SLOW = 1.0
LAG = 0.3
WORKER = f"""
import os, sys, time
from pathlib import Path
from persistmemo import Store, memo

here = Path(os.environ["COST_DIR"])
store = Store(here / "store")

@memo(store=store, name="cost.f", version="1")
def f(x):
    with open(here / "computed.log", "a") as log:
        log.write(f"{{x}} {{os.getpid()}}\\n")
    if x >= 300:
        time.sleep({SLOW})
    return x * 10

me, processes = sys.argv[1], int(sys.argv[2])
for number, round_ in enumerate(sys.argv[3].split(";")):
    (here / f"ready-{{number}}-{{me}}").touch()
    while len(list(here.glob(f"ready-{{number}}-*"))) < processes:
        time.sleep(0.005)
    for x in round_.split(","):
        if x == "w":
            time.sleep({LAG})
        else:
            assert f(int(x)) == int(x) * 10
"""


def run_processes(tmp_path: Path, rounds: list[str]) -> dict[int, int]:
    """Run one worker per entry of ``rounds``; how many times each argument was computed."""
    env = {**os.environ, "COST_DIR": str(tmp_path), "PYTHONPATH": str(REPO / "src")}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(number), str(len(rounds)), worker_rounds],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for number, worker_rounds in enumerate(rounds)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
    computed: dict[int, int] = {}
    for line in (tmp_path / "computed.log").read_text().splitlines():
        x = int(line.split()[0])
        computed[x] = computed.get(x, 0) + 1
    return computed


def test_a_slow_function_computes_once_across_processes_calling_at_once(tmp_path: Path) -> None:
    computed = run_processes(tmp_path, ["300;301"] * 4)
    assert computed == {300: 1, 301: 1}


def test_six_racing_callers_whose_misses_were_fast_compute_a_new_key_once(tmp_path: Path) -> None:
    # Each process first makes five fast misses of its own, then all six call one new slow
    # key at once: however fast the function was so far, the key is computed once.
    def fast(number: int) -> str:
        return ",".join(str(10 * number + x) for x in range(5))

    computed = run_processes(tmp_path, [f"{fast(number)};300" for number in range(6)])
    assert computed[300] == 1
    assert all(computed[10 * number + x] == 1 for number in range(6) for x in range(5))
