"""A repeated hit is served without a query while the store is unchanged, and never after
another process (or this one) changed it: every commit rewrites the header it is kept by."""

from __future__ import annotations

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
    assert recent_rows.recent_rows_of(str(tmp_path / "cache.db")) is None
    (tmp_path / "cache.db-shm").mkdir()
    assert recent_rows.recent_rows_of(str(tmp_path / "cache.db")) is None
