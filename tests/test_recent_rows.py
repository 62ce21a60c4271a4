"""A repeated hit is served without a query while the store is unchanged, and never after
another process (or this one) changed it: every commit rewrites the header it is kept by."""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

import pytest

from conftest import run_python
from persistmemo import Store, memo
from persistmemo.stores import recent_rows

# What the functions computed (a module global, not a closure: a closure's values are part
# of its key).
CALLS: list[int] = []
RESULT: list[str] = []


@pytest.fixture(autouse=True)
def _no_calls_yet() -> None:
    CALLS.clear()


def _queries_of(store: Store) -> list[str]:
    """The statements this thread's reading connection runs from now on."""
    store.backend.get("pm2:warm:1:0")  # the thread's connection is made and watched
    connection = store.backend._reader._local.held.connection
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    return statements


def _writer(store_directory: Path, result: str) -> str:
    """Code that stores ``result`` for ``t.f(1)`` in another process (refresh computes and
    writes, whatever is stored)."""
    return f"""
        from persistmemo import Store, memo
        f = memo(store=Store({str(store_directory)!r}), name="t.f", version="1")(
            lambda x: {result!r}
        )
        f.refresh(1)
    """


def test_a_repeated_hit_runs_no_query_while_the_store_is_unchanged(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    f = memo(store=store, name="t.f", version="1")(lambda x: x * 2)
    f(1)
    statements = _queries_of(store)
    assert f(1) == 2  # read once
    assert f(1) == 2
    assert f(1) == 2
    selects = [s for s in statements if s.startswith("SELECT")]
    assert len(selects) == 1, statements
    assert f.cache_info().hits == 3


def test_a_value_another_process_stored_since_is_served_at_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    f = memo(store=store, name="t.f", version="1")(lambda x: "mine")
    assert f(1) == "mine"
    assert f(1) == "mine"  # kept
    run_python(_writer(tmp_path / "store", "theirs"))
    assert f(1) == "theirs"
    assert f(1) == "theirs"


def test_an_entry_another_process_invalidated_is_computed_again(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    f = memo(store=store, name="t.f", version="1")(lambda x: CALLS.append(x) or x)
    f(1)
    f(1)
    run_python(
        f"""
        from persistmemo import Store, memo
        f = memo(store=Store({str(tmp_path / "store")!r}), name="t.f", version="1")(lambda x: x)
        f.invalidate(1)
        """
    )
    f(1)
    assert CALLS == [1, 1]


def test_an_entry_this_process_cleared_is_computed_again(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    f = memo(store=store, name="t.f", version="1")(lambda x: CALLS.append(x) or x)
    f(1)
    f(1)
    f.cache_clear()
    f(1)
    assert CALLS == [1, 1]


def test_a_kept_row_is_not_served_past_its_expiry(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    f = memo(store=store, name="t.f", version="1", ttl=0.3)(lambda x: CALLS.append(x) or x)
    f(1)
    f(1)
    f(1)
    assert CALLS == [1]
    time.sleep(0.4)
    f(1)
    assert CALLS == [1, 1]


def test_threads_keep_rows_apart_and_see_other_threads_writes(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    f = memo(store=store, name="t.f", version="1")(lambda x: RESULT[0])
    RESULT[:] = ["first"]
    assert f(1) == "first"
    assert f(1) == "first"  # kept by this thread's connection
    RESULT[:] = ["second"]
    done = threading.Event()

    def other_thread() -> None:
        f.refresh(1)  # computes and stores "second" on the other thread's connections
        done.set()

    threading.Thread(target=other_thread).start()
    assert done.wait(10)
    assert f(1) == "second"


def test_kept_rows_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recent_rows, "ROWS_KEPT", 5)
    store = Store(tmp_path / "store")
    f = memo(store=store, name="t.f", version="1")(lambda x: x)
    for x in range(20):
        f(x)
    for x in range(20):
        assert f(x) == x
    kept = store.backend._reader._local.held.recent.rows
    assert 0 < len(kept) <= 5


def test_large_rows_are_read_every_time(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    f = memo(store=store, name="t.f", version="1")(lambda x: "x" * (recent_rows.ROW_BYTES_KEPT + 1))
    f(1)
    statements = _queries_of(store)
    f(1)
    f(1)
    assert len([s for s in statements if s.startswith("SELECT")]) == 2


def test_a_short_torn_or_unset_index_header_is_never_trusted(tmp_path: Path) -> None:
    """What a co-writer's truncation or scribbling leaves is never taken for a header, so
    nothing kept is served against it."""
    header = bytearray(48)
    header[12] = 1  # isInit
    header[8:12] = (7).to_bytes(4, "little")
    (tmp_path / "cache.db").write_bytes(b"")
    index = tmp_path / "cache.db-shm"
    cases = {
        "valid": bytes(header) * 2 + b"\0" * 40,
        "torn": bytes(header) + bytes(header[:8]) + b"\1" * 40,
        "short": bytes(header) + bytes(header[:20]),
        "unset": bytes(48) * 2,
        "empty": b"",
    }
    seen = {}
    for name, contents in cases.items():
        index.write_bytes(contents)
        rows = recent_rows.recent_rows_of(str(tmp_path / "cache.db"))
        assert rows is not None
        seen[name] = rows.header()
    assert seen.pop("valid") == bytes(header) * 2
    assert seen == dict.fromkeys(seen)


def test_no_index_file_or_one_that_is_not_a_file_keeps_nothing(tmp_path: Path) -> None:
    (tmp_path / "cache.db").write_bytes(b"")
    assert recent_rows.recent_rows_of(str(tmp_path / "cache.db")) is None
    (tmp_path / "cache.db-shm").mkdir()
    assert recent_rows.recent_rows_of(str(tmp_path / "cache.db")) is None


def test_a_store_others_can_write_keeps_no_rows_and_maps_no_database(tmp_path: Path) -> None:
    """Another member could replace the index file at its path, or truncate a mapped
    database (which would crash the process reading it through the map)."""
    team = tmp_path / "team"
    team.mkdir()
    team.chmod(0o2770)
    store = Store(team / "store", shared=True, secret="team")
    f = memo(store=store, name="t.f", version="1")(lambda x: x * 2)
    f(1)
    assert f(1) == 2
    held = store.backend._reader._local.held
    assert held.recent is None
    assert held.connection.execute("PRAGMA mmap_size").fetchone() == (0,)
    assert store.backend._cache._con.execute("PRAGMA mmap_size").fetchone() == (0,)


def test_a_connection_made_after_the_index_file_was_replaced_serves_nothing_kept(
    tmp_path: Path,
) -> None:
    """Replaced at its path under a running process, the index file is no longer the one
    SQLite uses here: a thread's new connection reads every time, and sees new values."""
    store = Store(tmp_path / "store")
    f = memo(store=store, name="t.f", version="1")(lambda x: RESULT[0])
    RESULT[:] = ["old"]
    assert f(1) == "old"
    index = tmp_path / "store" / "cache.db-shm"
    frozen = index.read_bytes()
    index.unlink()
    index.write_bytes(frozen)
    found: list[str] = []
    go, ready = threading.Event(), threading.Event()

    def worker() -> None:
        found.append(f(1))
        found.append(f(1))
        ready.set()
        go.wait(10)
        found.append(f(1))

    thread = threading.Thread(target=worker)
    thread.start()
    assert ready.wait(10)
    RESULT[:] = ["new"]
    f.refresh(1)
    go.set()
    thread.join()
    assert found == ["old", "old", "new"]


def _locks_held_on(path: Path, pid: int) -> list[str]:
    """The POSIX record locks process ``pid`` holds on ``path`` (from /proc/locks)."""
    inode = path.stat().st_ino
    held = []
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if "POSIX" not in parts:
            continue
        at = parts.index("POSIX")
        if int(parts[at + 3]) == pid and int(parts[at + 4].split(":")[2]) == inode:
            held.append(" ".join(parts[at + 2 : at + 3] + parts[at + 5 :]))
    return held


linux_only = pytest.mark.skipif(
    not Path("/proc/locks").exists(), reason="reads the locks held in /proc/locks"
)


@linux_only
def test_a_thread_that_hit_and_ended_leaves_the_processs_index_locks_in_place(
    tmp_path: Path,
) -> None:
    """Closing any descriptor of a file drops every POSIX lock the process holds on it,
    SQLite's included: the index file's descriptor is never closed."""
    store = Store(tmp_path / "store")
    f = memo(store=store, name="t.f", version="1")(lambda x: x * 2)
    f(1)
    f(1)
    index = tmp_path / "store" / "cache.db-shm"
    before = _locks_held_on(index, os.getpid())
    assert before  # SQLite's: the index is in use
    for _ in range(3):
        thread = threading.Thread(target=lambda: f(1))
        thread.start()
        thread.join()
    gc.collect()
    assert _locks_held_on(index, os.getpid()) == before
    assert f(1) == 2


@linux_only
def test_a_forked_child_keeps_its_index_locks_after_its_first_hit(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    f = memo(store=store, name="t.f", version="1")(lambda x: x * 2)
    f(1)
    f(1)
    index = tmp_path / "store" / "cache.db-shm"
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            value = f(1)
            gc.collect()
            held = bool(_locks_held_on(index, os.getpid()))
            os.write(write, f"{value} {held}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        reported = answer.read()
    os.waitpid(child, 0)
    assert reported == "2 True"


def test_reads_of_more_keys_than_are_kept_in_turn_stop_watching_and_stay_current(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "store")
    f = memo(store=store, name="t.f", version="1")(lambda x: RESULT[0])
    RESULT[:] = ["first"]
    count = recent_rows.ROWS_KEPT + 200
    for x in range(count):
        f(x)
    for _ in range(2):
        for x in range(count):
            assert f(x) == "first"
    recent = store.backend._reader._local.held.recent
    assert recent.paused > 0  # cycling past the kept rows: nothing was served from them
    run_python(_writer(tmp_path / "store", "theirs"))
    assert f(1) == "theirs"


def test_a_miss_reads_its_key_once_while_nothing_commits(tmp_path: Path) -> None:
    """The read a miss makes again once it holds the key's claim runs no query when nothing
    committed since its first read (nothing can have stored the key)."""
    store = Store(tmp_path / "store")
    f = memo(store=store, name="t.f", version="1")(lambda x: x * 2)
    f(0)
    statements = _queries_of(store)
    assert f(1) == 2  # a miss: claimed, computed, stored
    reads = [s for s in statements if s.startswith("SELECT") and "Cache WHERE key" in s]
    assert len(reads) == 1, statements


def test_a_key_found_absent_is_read_again_after_another_process_stored_it(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "store")
    f = memo(store=store, name="t.f", version="1")(lambda x: "mine")
    f(0)
    key = f.key(1)
    reader = store.backend._reader
    assert reader.read_small(key, time.time()) is None  # absent, and remembered so
    run_python(_writer(tmp_path / "store", "theirs"))
    assert reader.read_small(f.key(0), time.time()) is not None  # sees the commit first
    assert reader.read_small(key, time.time()) is not None
    assert f(1) == "theirs"
