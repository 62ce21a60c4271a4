"""A miss claims its key with a lock on one byte of the store's claims file: exclusive across
threads, stores and processes, dropped by the system when its holder dies, never inherited."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO
from persistmemo import PersistmemoWarning, Store, memo

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="record locks: POSIX only")

KEY = "pm2:claims.f:1:00112233445566778899aabbccddeeff"


def holder(store_dir: Path, then: str) -> subprocess.Popen[str]:
    """A process that claims KEY in the store, says so, then runs ``then``."""
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from persistmemo import Store
        store = Store({str(store_dir)!r})
        assert store.try_lease({KEY!r}, "holder")
        print("claimed", flush=True)
        """
    )
    return subprocess.Popen(
        [sys.executable, "-c", code + textwrap.dedent(then)],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_killed_holders_claim_is_free_at_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", lease=60)
    process = holder(tmp_path / "store", "time.sleep(60)")
    assert process.stdout is not None
    assert process.stdout.readline() == "claimed\n"
    assert not store.try_lease(KEY, "waiter")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert store.try_lease(KEY, "waiter")  # not after the 60 s lease: now


def test_a_forked_child_keeps_none_of_its_parents_claims(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", lease=60)
    then = """
        child = os.fork()
        if child == 0:
            time.sleep(30)
            os._exit(0)
        print(child, flush=True)
        os._exit(0)  # the parent dies holding its claim; its child lives on
    """
    process = holder(tmp_path / "store", then)
    assert process.stdout is not None
    assert process.stdout.readline() == "claimed\n"
    child = int(process.stdout.readline())
    process.wait()
    try:
        assert store.try_lease(KEY, "waiter")
    finally:
        os.kill(child, signal.SIGKILL)


def test_threads_and_stores_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    same_place = Store(tmp_path / "store")
    assert store.try_lease(KEY, "first")
    answers: list[bool] = []
    thread = threading.Thread(target=lambda: answers.append(store.try_lease(KEY, "second")))
    thread.start()
    thread.join()
    assert answers == [False]
    assert not same_place.try_lease(KEY, "third")
    store.release_lease(KEY, "first")
    assert same_place.try_lease(KEY, "third")


def test_a_claim_is_released_when_its_result_is_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    holders: list[str | None] = []

    @memo(store=store, name="claims.g", version="1", ignore=["store", "holders"])
    def g(x: int) -> int:
        holders.append(store.lease_holder(g.key(x)))
        return x

    assert [g(x) for x in range(3)] == [0, 1, 2]
    assert all(token is not None for token in holders)
    assert all(store.lease_holder(g.key(x)) is None for x in range(3))


def test_a_planted_link_as_claims_file_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    victim_mode = victim.stat().st_mode
    directory = tmp_path / "store"
    store = Store(directory)
    store.write("pm2:other:1:0", b"\x01", ttl=None, tag="other")  # opens the store
    (directory / "claims").unlink(missing_ok=True)
    (directory / "claims").symlink_to(victim)
    fresh = Store(directory)  # a process opening the store after the link was planted
    square = memo(store=fresh, name="claims.square", version="1")(lambda x: x * x)
    with pytest.warns(PersistmemoWarning, match="lease failed"):
        assert square(3) == 9
    assert square(3) == 9
    assert square.cache_info().hits == 1  # stored, computed unclaimed
    assert victim.read_text() == "precious"
    assert victim.stat().st_mode == victim_mode


def test_a_team_stores_claims_file_is_group_writable(tmp_path: Path) -> None:
    directory = tmp_path / "team"
    directory.mkdir()
    os.chmod(directory, 0o2770)
    store = Store(directory, shared=True, secret="team secret")
    memo(store=store, name="claims.team", version="1")(lambda x: x)(1)
    mode = stat.S_IMODE((directory / "claims").stat().st_mode)
    assert mode & 0o660 == 0o660
    assert mode & 0o007 == 0


def test_a_stopped_holder_is_taken_over_after_a_lease(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", lease=0.5)
    process = holder(tmp_path / "store", "time.sleep(60)")
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "claimed\n"
        process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        while not store.try_lease(KEY, "waiter"):
            time.sleep(0.05)
            assert time.monotonic() - started < 10
        assert time.monotonic() - started >= 0.5
    finally:
        process.kill()
        process.wait()
