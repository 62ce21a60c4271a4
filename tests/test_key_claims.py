"""A miss claims its key with a lock on one byte of the store's claims file: exclusive across
threads, stores and processes, dropped by the system when its holder dies, never inherited."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, run_python
from persistmemo import PersistmemoWarning, Store, memo
from persistmemo.stores.claims import CLAIMS_FILE

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="record locks: POSIX only")

KEY = "pm3:claims.f:1:ABEiM0RVZneImaq7zN3u_w"


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


@contextlib.contextmanager
def holding_process(store_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """A process that holds KEY's claim (sleeping) until the block ends; then killed."""
    process = holder(store_dir, "time.sleep(60)")
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "claimed\n"
        yield process
    finally:
        process.kill()
        process.wait()


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
    (directory / CLAIMS_FILE).unlink(missing_ok=True)
    (directory / CLAIMS_FILE).symlink_to(victim)
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
    mode = stat.S_IMODE((directory / CLAIMS_FILE).stat().st_mode)
    assert mode & 0o660 == 0o660
    assert mode & 0o007 == 0


def test_a_stopped_holder_is_taken_over_after_a_lease(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", lease=0.5)
    with holding_process(tmp_path / "store") as process:
        process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        while not store.try_lease(KEY, "waiter"):
            time.sleep(0.05)
            assert time.monotonic() - started < 10
        assert time.monotonic() - started >= 0.5


def test_waiters_take_over_a_stopped_holder_once_between_them(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", lease=0.5)
    taken: list[str] = []
    with holding_process(tmp_path / "store") as process:
        process.send_signal(signal.SIGSTOP)

        def wait(token: str) -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if store.try_lease(KEY, token):
                    taken.append(token)
                    return  # holds the take-over until the test ends
                if taken:  # taken over: the others go on waiting a lease more, no more
                    deadline = min(deadline, time.monotonic() + 0.6)
                time.sleep(0.05)

        waiters = [threading.Thread(target=wait, args=(f"w{n}",)) for n in range(3)]
        for waiter in waiters:
            waiter.start()
        for waiter in waiters:
            waiter.join()
        assert len(taken) == 1  # one waiter computes; the others wait for it


def test_a_briefly_stopped_holder_is_not_taken_over(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", lease=0.5)
    with holding_process(tmp_path / "store") as process:
        started = time.monotonic()
        stopped = resumed = False
        while time.monotonic() < started + 1.5:  # three leases of waiting
            waited = time.monotonic() - started
            if waited > 0.7 and not stopped:
                process.send_signal(signal.SIGSTOP)  # stopped for 0.3 s: less than a lease
                stopped = True
            elif waited > 1.0 and not resumed:
                process.send_signal(signal.SIGCONT)
                resumed = True
            assert not store.try_lease(KEY, "waiter")
            time.sleep(0.05)


def test_diskcaches_own_check_leaves_the_claims_file_alone(tmp_path: Path) -> None:
    import diskcache

    store = Store(tmp_path / "store")
    square = memo(store=store, name="claims.sq", version="1")(lambda x: x * x)
    square(2)
    with diskcache.Cache(str(tmp_path / "store")) as cache:
        cache.check(fix=True)
    assert (tmp_path / "store" / CLAIMS_FILE).exists()


def test_short_runs_that_each_store_a_few_results_keep_the_size_limit(tmp_path: Path) -> None:
    import diskcache

    code = """
        import sys
        from persistmemo import Store, memo
        store = Store(sys.argv[1], size_limit=40_000)
        padded = memo(store=store, name="claims.pad", version="1")(lambda x: "x" * 3000 + str(x))
        for x in range(int(sys.argv[2]), int(sys.argv[2]) + 3):
            padded(x)
    """
    for run in range(12):  # 36 results of 3 KB: about three times the limit
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), str(tmp_path / "store"), str(run * 3)],
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    with diskcache.Cache(str(tmp_path / "store")) as cache:
        assert cache.volume() < 40_000 * 1.6


def test_a_keys_byte_comes_from_its_digest_and_other_keys_are_hashed() -> None:
    from persistmemo.stores.claims import offset_of

    # The digest 00 11 .. ff: its bytes 6 to 15 (characters 8 to 20) give the byte.
    result = (
        "pm3:app.f:1:"
        + base64.urlsafe_b64encode(bytes.fromhex("00112233445566778899aabbccddeeff")).decode()[:22]
    )
    expected = int.from_bytes(bytes.fromhex("66778899aabbccddee"), "little") % (1 << 62)
    assert offset_of(result) == expected  # no hashing on a miss
    others = [f"pm-lease:{n}" for n in range(200)] + ["k", "", "x" * 100]
    offsets = {offset_of(key) for key in others}
    assert len(offsets) == len(others)
    assert all(0 <= offset < 1 << 62 for offset in offsets | {offset_of(result)})


def test_a_key_missed_twice_after_the_store_was_bypassed_is_computed_both_times(
    tmp_path: Path,
) -> None:
    """A claim is released whatever the store's state: one kept after the store was
    bypassed (its database damaged) kept the next caller of the key waiting for itself."""
    code = f"""
        import os, warnings
        warnings.simplefilter("ignore")
        from persistmemo import Store, memo
        store = Store({str(tmp_path / "store")!r})
        f = memo(store=store, name="t.f", version="1")(lambda x: x * 2)
        [f(i) for i in range(5)]
        os.truncate({str(tmp_path / "store" / "cache.db")!r}, 0)
        print(f(999), f(999))
    """
    assert run_python(code, timeout=60).stdout.split() == ["1998", "1998"]
