"""Everything read from a store is untrusted: planted rows, foreign directories, key files.

The attacks are made real: rows inserted into cache.db naming files outside the store, FIFOs,
symlinks and /dev/zero; a second user (`setpriv`, as root); directories others can write;
key files that are empty, shared, linked or FIFOs; 12 processes making the key at once;
`ulimit -n` in a subprocess; a Redis server that is not there.
"""

from __future__ import annotations

import gc
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, run_python
from persistmemo import PersistmemoWarning, Store, memo
from persistmemo._codec.encoding import encode_value
from persistmemo._codec.formats import FORMAT_MSGPACK

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
ENV = {"PYTHONPATH": str(REPO / "src")}


def plant_row(store: Store, key: str, filename: str, size: int = 100) -> None:
    """Insert a value-file row the way a co-user with write access to cache.db could."""
    now = time.time()
    with sqlite3.connect(store.directory / "cache.db") as connection:
        connection.execute(
            "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count,"
            " tag, size, mode, filename, value) VALUES (?, 1, ?, NULL, ?, 0, ?, ?, 2, ?, NULL)",
            (key, now, now, key.split(":")[1], size, filename),
        )


def point_row_at(store: Store, key: str, filename: str, size: int | None = None) -> None:
    with sqlite3.connect(store.directory / "cache.db") as connection:
        if size is None:
            connection.execute("UPDATE Cache SET filename = ? WHERE key = ?", (filename, key))
        else:
            connection.execute(
                "UPDATE Cache SET filename = ?, size = ? WHERE key = ?", (filename, size, key)
            )


def blob_function(store: Store) -> tuple[Any, list[int]]:
    calls: list[int] = []

    @memo(store=store, name="sec.blob", version="1")
    def blob(n: int) -> bytes:
        calls.append(n)
        return bytes(range(256)) * n

    return blob, calls


# --- 1. value-file paths in cache.db are untrusted ------------------------------------------


@pytest.mark.parametrize("form", ["absolute", "dot-dot", "symlink"])
def test_clearing_a_store_never_deletes_a_file_outside_it(tmp_path: Path, form: str) -> None:
    victim = tmp_path / "home" / "thesis" / "thesis.tex"
    victim.parent.mkdir(parents=True)
    victim.write_text("years of work")
    store = Store(tmp_path / "store")
    blob, _ = blob_function(store)
    blob(1000)
    if form == "absolute":
        filename = str(victim)
    elif form == "dot-dot":
        filename = os.path.relpath(victim, store.directory)
    else:
        (store.directory / "ab" / "cd").mkdir(parents=True)
        (store.directory / "ab" / "cd" / "0123.val").symlink_to(victim)
        filename = "ab/cd/0123.val"
    for n in range(3):
        plant_row(store, f"pm1:sec.blob:1:planted{n}", filename)
    store.delete_tagged("sec.blob")
    for n in range(3):
        plant_row(store, f"pm1:sec.blob:1:planted{n}", filename)
    store.clear()
    assert victim.read_text() == "years of work"
    assert victim.parent.is_dir()  # diskcache's removedirs would take the emptied parent
    assert not list(store.entries())


def test_a_value_file_that_is_a_fifo_is_a_miss_not_a_hang(tmp_path: Path) -> None:
    code = """
        import os, sqlite3, sys, warnings
        from persistmemo import Store, memo
        def blob_in(store):
            @memo(store=store, name="sec.blob", version="1")
            def blob(n): return bytes(range(256)) * n
            return blob
        blob = blob_in(Store(sys.argv[1]))
        blob(1000)
        os.makedirs(os.path.join(sys.argv[1], "ab", "cd"), exist_ok=True)
        os.mkfifo(os.path.join(sys.argv[1], "ab", "cd", "fifo.val"))
        with sqlite3.connect(os.path.join(sys.argv[1], "cache.db")) as connection:
            connection.execute(
                "UPDATE Cache SET filename = 'ab/cd/fifo.val' WHERE key = ?", (blob.key(1000),)
            )
        store = Store(sys.argv[1])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print(sorted(store.functions()), len(list(store.entries())))  # persistmemo ls
            assert blob_in(store)(1000) == bytes(range(256)) * 1000
        print([str(w.message) for w in caught if "corrupt entry" in str(w.message)])
    """
    done = run_python(code, env=ENV, args=(str(tmp_path / "store"),), timeout=20)
    assert done.stdout.splitlines()[0] == "['sec.blob'] 1"
    assert "not a regular file" in done.stdout.splitlines()[1]


DEVICE_ROW = """
import os, sqlite3, sys, warnings
from persistmemo import Store, memo
store = Store(sys.argv[1])
calls = []
@memo(store=store, name="sec.blob", version="1")
def blob(n):
    calls.append(n)
    return bytes(range(256)) * n
blob(1000)
target = sys.argv[2]
if target == "link-to-dev-zero":
    os.symlink("/dev/zero", os.path.join(sys.argv[1], "zero.val"))
    target = "zero.val"
with sqlite3.connect(os.path.join(sys.argv[1], "cache.db")) as connection:
    connection.execute(
        "UPDATE Cache SET filename = ?, size = ? WHERE key = ?", (target, 2**40, blob.key(1000))
    )
print(store.check().corrupt == [blob.key(1000)])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert blob(1000) == bytes(range(256)) * 1000
print(calls, [str(w.message).split(": ")[1] for w in caught])
"""


@pytest.mark.parametrize("target", ["/dev/zero", "link-to-dev-zero"])
def test_a_value_file_naming_a_device_is_a_miss_not_a_memory_error(
    tmp_path: Path, target: str
) -> None:
    # Under a memory limit: reading /dev/zero to its end must fail here, not on the machine.
    done = subprocess.run(
        [
            "sh",
            "-c",
            'ulimit -v 2000000 && exec "$@"',
            "sh",
            sys.executable,
            "-c",
            DEVICE_ROW,
            str(tmp_path / "store"),
            target,
        ],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["True", "[1000, 1000] ['corrupt entry']"]


def test_a_value_file_whose_size_differs_from_its_row_is_a_miss(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    blob, calls = blob_function(store)
    blob(1000)
    blob(999)
    other = dict(
        sqlite3.connect(store.directory / "cache.db").execute("SELECT key, filename FROM Cache")
    )[blob.key(999)]
    point_row_at(store, blob.key(1000), other)  # another entry's file: size 999*256+header
    with pytest.warns(PersistmemoWarning, match="corrupt entry"):
        assert blob(1000) == bytes(range(256)) * 1000
    assert calls == [1000, 999, 1000]


# --- 2. a reader who cannot write the store is never served a stale value -------------------


@pytest.fixture
def world_readable_path() -> Iterator[Path]:
    """A directory a second user can reach (pytest's own temporary tree is 0700)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="persistmemo-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


OWNER = """
import sys
from persistmemo import Store, memo
store = Store(sys.argv[1])
@memo(store=store, name="sec.value", version="1")
def value(x):
    return open(sys.argv[2]).read()
print(value.refresh(1) if sys.argv[3] != "get" else value(1), flush=True)
if sys.argv[3] == "hold":
    sys.stdin.readline()  # keeps its connection, and so the write-ahead log, open
"""

READER = """
import sys, warnings
from persistmemo import Store, memo
store = Store(sys.argv[1])
@memo(store=store, name="sec.value", version="1")
def value(x):
    return "computed by the reader"
warnings.simplefilter("ignore")
for _ in range(int(sys.argv[2])):
    print(value(1), flush=True)
    sys.stdin.readline()  # the owner refreshes meanwhile
"""


@pytest.mark.usefixtures("nobody_runs_python")
def test_a_reader_who_cannot_write_the_store_never_gets_a_stale_value(
    world_readable_path: Path,
) -> None:
    directory, source = world_readable_path / "store", world_readable_path / "source"
    source.write_text("old")
    # Two users read each other's entries only with a secret they share.
    environment = {**os.environ, **ENV, "PERSISTMEMO_SECRET": "shared by owner and reader"}
    owner = [sys.executable, "-c", OWNER, str(directory), str(source)]
    subprocess.run([*owner, "get"], env=environment, check=True, timeout=60)
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)

    def reader(reads: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*NOBODY, sys.executable, "-c", READER, str(directory), str(reads)],
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    # The owner's store is closed (no write-ahead log): a reader that cannot create the
    # log's index may miss, but once the owner refreshed it must never see "old" again.
    first = reader(2)
    assert first.stdin is not None
    assert first.stdout is not None
    try:
        assert first.stdout.readline().strip() in ("old", "computed by the reader")
        source.write_text("new")
        subprocess.run([*owner, "refresh"], env=environment, check=True, timeout=60)
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.stdout.readline().strip() != "old"
    finally:
        first.kill()
        first.wait()
    # While the owner has the store open, a reader is served its latest value.
    source.write_text("newest")
    holder = subprocess.Popen(
        [*owner, "hold"], env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "newest"
        for path in directory.iterdir():
            path.chmod(0o644)
        second = reader(1)
        assert second.stdout is not None
        assert second.stdout.readline().strip() == "newest"
        second.kill()
        second.wait()
    finally:
        holder.kill()
        holder.wait()


# --- 2b. lease rows are untrusted too ---------------------------------------------------------

LEASE_PLANTED = """
import os, sqlite3, sys, time
import persistmemo.stores.disk
from persistmemo import Store, memo
persistmemo.stores.disk.DiskBackend.offers_key_claims = False  # lease rows, as on Windows
directory, mode = sys.argv[1], int(sys.argv[2])
store = Store(directory, lease=0.3)
store.open()
os.mkfifo(os.path.join(directory, "lease.fifo"))

@memo(store=store, name="sec.slow", version="1")
def slow(x):
    # A co-writer turns our lease row into a diskcache text row naming a FIFO.
    with sqlite3.connect(os.path.join(directory, "cache.db")) as db:
        planted = db.execute(
            "UPDATE Cache SET mode = ?, filename = 'lease.fifo', value = NULL"
            " WHERE key LIKE 'pm-lease:%'", (mode,)
        ).rowcount
    assert planted == 1, planted
    time.sleep(0.5)  # the lease keeper renews (every 0.1 s) meanwhile
    return x * 2
print(slow(1), slow(1), slow.cache_info().hits)
"""


@pytest.mark.parametrize("mode", [3, 2], ids=["text", "binary"])
def test_a_lease_row_planted_as_a_fifo_never_hangs_the_call(tmp_path: Path, mode: int) -> None:
    done = run_python(LEASE_PLANTED, args=(str(tmp_path / "store"), str(mode)), timeout=20)
    assert done.stdout.split() == ["2", "2", "1"]


@pytest.mark.usefixtures("lease_rows")
def test_renewing_a_lease_whose_row_was_planted_as_a_pickle_returns_false(store: Store) -> None:
    assert store.try_lease("pm1:sec.slow:1:k", "token")
    with sqlite3.connect(store.directory / "cache.db") as connection:
        connection.execute(
            "UPDATE Cache SET mode = 4, value = X'80044b012e' WHERE key LIKE 'pm-lease:%'"
        )
    assert store.renew_lease("pm1:sec.slow:1:k", "token") is False


@pytest.mark.parametrize("claims", ["locks", "rows"])
def test_renewing_our_own_lease_extends_it_and_a_taken_one_is_not_ours(
    store: Store, claims: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if claims == "rows":
        monkeypatch.setattr(type(store.backend), "offers_key_claims", False)
    assert store.try_lease("pm1:sec.slow:1:k", "ours")
    assert store.renew_lease("pm1:sec.slow:1:k", "ours")
    assert not store.renew_lease("pm1:sec.slow:1:k", "theirs")
    store.release_lease("pm1:sec.slow:1:k", "ours")
    assert not store.renew_lease("pm1:sec.slow:1:k", "ours")


RETRYING_READER = """
import sys, warnings
import persistmemo.stores.disk_opening
from persistmemo import Store, memo
persistmemo.stores.disk_opening.REOPEN_AFTER = 0.2  # the 5 s of the docs, shortened
store = Store(sys.argv[1])
@memo(store=store, name="sec.value", version="1")
def value(x):
    return "computed by the reader"
warnings.simplefilter("ignore")
while sys.stdin.readline():
    print(value(1), flush=True)
"""


@pytest.mark.usefixtures("nobody_runs_python")
def test_a_reader_who_started_before_the_owner_opened_the_store_tries_again(
    world_readable_path: Path,
) -> None:
    directory, source = world_readable_path / "store", world_readable_path / "source"
    source.write_text("old")
    environment = {**os.environ, **ENV, "PERSISTMEMO_SECRET": "shared by owner and reader"}
    owner = [sys.executable, "-c", OWNER, str(directory), str(source)]
    subprocess.run([*owner, "get"], env=environment, check=True, timeout=60)
    directory.chmod(0o755)
    reader = subprocess.Popen(
        [*NOBODY, sys.executable, "-c", RETRYING_READER, str(directory)],
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    holder = None
    assert reader.stdin is not None
    assert reader.stdout is not None
    try:
        reader.stdin.write("\n")
        reader.stdin.flush()
        # The owner's store is closed: its log's index cannot be made by this reader.
        assert reader.stdout.readline().strip() == "computed by the reader"
        source.write_text("newest")
        holder = subprocess.Popen(
            [*owner, "hold"], env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"newest"
        for path in directory.iterdir():
            path.chmod(0o644)
        time.sleep(0.3)  # past the reader's back-off
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "newest"
    finally:
        for process in (reader, holder):
            if process is not None:
                process.kill()
                process.wait()


# --- 3. the secret key file ----------------------------------------------------------------

SECRET_PRINTER = """
import os, sys, time
from persistmemo._secret import user_secret
start = float(sys.argv[1])
while time.time() < start:
    pass
print(user_secret().hex())
"""


def key_path(tmp_path: Path) -> Path:
    return tmp_path / "config" / "persistmemo" / "secret.key"


def test_twelve_processes_starting_at_once_end_with_the_same_secret(tmp_path: Path) -> None:
    environment = {**os.environ, **ENV, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    start = str(time.time() + 1.5)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SECRET_PRINTER, start],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(12)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    secrets = {out.strip() for out, _ in outputs}
    assert len(secrets) == 1
    assert key_path(tmp_path).read_bytes().hex() in secrets
    assert [p.name for p in key_path(tmp_path).parent.iterdir()] == ["secret.key"]


def pickling_function(store: Store) -> tuple[Any, list[str]]:
    calls: list[str] = []

    @memo(store=store, name="sec.counter", version="1")
    def counter(text: str) -> Any:
        import collections

        calls.append(text)
        return collections.Counter(text)

    return counter, calls


def test_an_empty_key_file_is_replaced_with_a_warning(tmp_path: Path) -> None:
    key = key_path(tmp_path)
    key.parent.mkdir(parents=True, mode=0o700)
    key.touch(mode=0o600)
    store = Store(tmp_path / "store")
    counter, calls = pickling_function(store)
    with pytest.warns(PersistmemoWarning, match="secret key repaired"):
        assert counter("ab") == {"a": 1, "b": 1}
    assert counter("ab") == {"a": 1, "b": 1}
    assert calls == ["ab"]  # the new key vouches for pickles
    assert len(key.read_bytes()) == 32


@pytest.mark.parametrize("flaw", ["group-readable", "symlink", "fifo", "open-directory"])
def test_an_unsafe_key_file_refuses_pickles_and_says_how_to_fix_it(
    tmp_path: Path, flaw: str
) -> None:
    key = key_path(tmp_path)
    key.parent.mkdir(parents=True, mode=0o700)
    if flaw == "group-readable":
        key.write_bytes(os.urandom(32))
        key.chmod(0o640)
        remedy = "remove it"
    elif flaw == "symlink":
        real = tmp_path / "elsewhere.key"
        real.write_bytes(os.urandom(32))
        real.chmod(0o600)
        key.symlink_to(real)
        remedy = "symbolic link"
    elif flaw == "fifo":
        os.mkfifo(key, 0o600)
        remedy = "not a regular file"
    else:
        key.parent.chmod(0o777)
        remedy = "chmod go-w"
    code = """
        import sys, warnings
        from persistmemo import Store, memo
        store = Store(sys.argv[1])
        calls = []
        @memo(store=store)
        def counter(text):
            import collections
            calls.append(text)
            return collections.Counter(text)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            counter("ab"); counter("ab")
        print(len(calls))
        print([str(w.message) for w in caught])
    """
    environment = {**ENV, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    done = run_python(code, env=environment, args=(str(tmp_path / "store"),), timeout=20)
    computed, messages = done.stdout.splitlines()
    assert computed == "2"  # pickles neither stored nor loaded
    assert "secret key unavailable" in messages
    assert remedy in messages
    assert "PERSISTMEMO_SECRET" in messages


# --- 4. a store directory someone else could write ------------------------------------------


def counting(store: Store) -> tuple[Any, list[int]]:
    calls: list[int] = []

    @memo(store=store, name="sec.count", version="1")
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    return square, calls


def stored_keys(directory: Path) -> list[str]:
    if not (directory / "cache.db").exists():
        return []
    with sqlite3.connect(directory / "cache.db") as connection:
        # The fingerprints of the secrets that wrote (check's bookkeeping) are not entries.
        return [
            key
            for (key,) in connection.execute("SELECT key FROM Cache")
            if not str(key).startswith("pm-secret:")
        ]


@pytest.mark.parametrize("made", ["world-writable", "group-writable", "another owner"])
def test_a_directory_others_could_write_is_not_written_without_shared(
    tmp_path: Path, made: str
) -> None:
    directory = tmp_path / "planted"
    directory.mkdir()
    if made == "another owner":
        if not (hasattr(os, "geteuid") and os.geteuid() == 0):
            pytest.skip("needs root to give a directory to another user")
        os.chown(directory, 65534, 65534)
    directory.chmod({"world-writable": 0o777, "group-writable": 0o770}.get(made, 0o755))
    square, calls = counting(Store(directory))
    with pytest.warns(PersistmemoWarning, match=r"not stored here.*shared=True"):
        assert square(3) == 9
    assert square(3) == 9
    assert calls == [3, 3]
    assert stored_keys(directory) == []


def test_a_foreign_store_still_serves_entries_sealed_with_our_secret(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    square, _ = counting(Store(directory))
    square(3)
    directory.chmod(0o777)
    square, calls = counting(Store(directory))
    with pytest.warns(PersistmemoWarning, match="untrusted store directory"):
        assert square(3) == 9  # sealed with our secret: nobody else could have made it
    assert square(4) == 16
    assert calls == [4]
    assert len(stored_keys(directory)) == 1


def test_a_shared_store_accepts_a_group_writable_directory(tmp_path: Path) -> None:
    directory = tmp_path / "team"
    directory.mkdir()
    directory.chmod(0o770)
    square, calls = counting(Store(directory, shared=True))
    with pytest.warns(PersistmemoWarning, match="shared store"):
        assert [square(3), square(3)] == [9, 9]
    assert calls == [3]
    counter, counted = pickling_function(Store(directory, shared=True, secret="team phrase"))
    assert [counter("ab"), counter("ab")] == [{"a": 1, "b": 1}] * 2
    assert counted == ["ab"]  # pickles allowed: the secret was given on purpose


def test_a_new_shared_store_is_made_group_writable(tmp_path: Path) -> None:
    store = Store(tmp_path / "team", shared=True, secret="team phrase")
    assert store.open()
    assert store.directory.stat().st_mode & 0o7777 == 0o2770


# --- 5. connections of finished threads are closed -----------------------------------------


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts /proc/self/fd")
def test_finished_threads_leave_no_connections_open(store: Store) -> None:
    square, _ = counting(store)
    square(3)
    square(4)
    gc.collect()
    gc.disable()  # the leak hid in reference cycles that only the collector would free
    try:
        before = open_descriptors()
        for _ in range(40):
            threads = [threading.Thread(target=lambda x=x: square(x % 2 + 3)) for x in range(10)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        threading.Thread(target=lambda: square(5)).start()  # a miss: a writer connection too
        time.sleep(0.3)
        after = open_descriptors()
    finally:
        gc.enable()
    # SQLite defers closing a descriptor while another connection of the process holds a
    # lock on the file, and reuses it later: a few stay open, not one per thread (400).
    assert after - before <= 20


LOW_FD_LIMIT = """
import sys, tempfile, threading, warnings
from persistmemo import Store, memo
warnings.simplefilter("error")
store = Store(sys.argv[1])
@memo(store=store)
def square(x):
    return x * x
errors = []
def call(x):
    try:
        assert square(x % 7) == (x % 7) ** 2
    except BaseException as error:
        errors.append(repr(error))
for batch in range(40):
    threads = [threading.Thread(target=call, args=(batch * 10 + i,)) for i in range(10)]
    for thread in threads: thread.start()
    for thread in threads: thread.join()
print(errors[:3], len(errors))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="ulimit")
def test_four_hundred_threads_under_a_low_descriptor_limit_all_get_their_results(
    tmp_path: Path,
) -> None:
    environment = {**os.environ, **ENV}
    done = subprocess.run(
        [
            "sh",
            "-c",
            'ulimit -n 128 && exec "$@"',
            "sh",
            sys.executable,
            "-c",
            LOW_FD_LIMIT,
            str(tmp_path / "store"),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] 0"


def test_a_fault_report_never_raises_even_with_a_broken_log_handler(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    class Broken(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise OSError("no space left on the log disk")

        def handleError(self, record: logging.LogRecord) -> None:
            raise OSError("and no way to say so")

    logger = logging.getLogger("persistmemo")
    handler = Broken()
    logger.addHandler(handler)
    try:
        with pytest.warns(PersistmemoWarning, match="boom"):
            store.report_fault("test fault", RuntimeError("boom"))
    finally:
        logger.removeHandler(handler)


# --- 6. check and prune ---------------------------------------------------------------------


def test_check_on_a_garbage_database_reports_it_and_its_orphaned_files(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    blob, _ = blob_function(Store(directory))
    blob(1000)
    (directory / "cache.db").write_bytes(os.urandom(8192))
    for suffix in ("-wal", "-shm"):
        (directory / f"cache.db{suffix}").unlink(missing_ok=True)
    with pytest.warns(PersistmemoWarning, match="corrupt database"):
        report = Store(directory).check()
    assert not report.ok
    assert "moved aside" in report.problems[0]
    assert "1 value files are orphaned" in (report.problems[0])


def test_listing_a_garbage_database_says_what_to_do_without_a_traceback(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    directory.mkdir(mode=0o700)
    (directory / "cache.db").write_bytes(os.urandom(8192))
    done = subprocess.run(
        [sys.executable, "-m", "persistmemo", "ls", "--store", str(directory)],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "persistmemo check" in done.stderr


def expire_now(store: Store, key: str, stored_ago: float = 0.0) -> None:
    with sqlite3.connect(store.directory / "cache.db") as connection:
        connection.execute(
            "UPDATE Cache SET expire_time = ?, store_time = store_time - ? WHERE key = ?",
            (time.time() - 1, stored_ago, key),
        )


def test_check_fix_removes_a_damaged_expired_entry(store: Store) -> None:
    square, _ = counting(store)
    square(3)
    with sqlite3.connect(store.directory / "cache.db") as connection:
        connection.execute("UPDATE Cache SET value = X'0102' WHERE key = ?", (square.key(3),))
    expire_now(store, square.key(3))
    report = store.check(fix=True)
    assert not report.ok
    assert report.removed == 1
    assert stored_keys(store.directory) == []


def test_prune_older_than_reaches_expired_entries(store: Store) -> None:
    square, _ = counting(store)
    square(3)
    square(4)
    expire_now(store, square.key(3), stored_ago=3600)
    assert store.prune(expired=False, older_than=60) == 1
    assert stored_keys(store.directory) == [square.key(4)]


def test_check_fix_with_a_different_secret_removes_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    square, _ = counting(Store(directory, secret="ours"))
    for x in range(5):
        square(x)
    report = Store(directory, secret="not ours").check(fix=True)
    assert report.wrong_secret
    assert report.removed == 0
    assert "sealed with a different secret" in report.problems[0]
    assert "PERSISTMEMO_SECRET" in report.problems[0]
    assert len(stored_keys(directory)) == 5


def plant_raw_rows(directory: Path, count: int, value: bytes = b"junk") -> None:
    """Rows a co-writer could add: raw values in persistmemo's key space."""
    now = time.time()
    with sqlite3.connect(directory / "cache.db") as connection:
        for n in range(count):
            connection.execute(
                "INSERT INTO Cache (key, raw, store_time, expire_time, access_time,"
                " access_count, tag, size, mode, filename, value)"
                " VALUES (?, 1, ?, NULL, ?, 0, 'sec.junk', 0, 1, NULL, ?)",
                (f"pm1:sec.junk:v:{n}", now, now, value),
            )


@pytest.mark.parametrize("entries", [1, 2])
def test_check_fix_with_a_different_secret_removes_nothing_from_a_small_store(
    tmp_path: Path, entries: int
) -> None:
    directory = tmp_path / "store"
    square, _ = counting(Store(directory, secret="ours"))
    for x in range(entries):
        square(x)
    report = Store(directory, secret="not ours").check(fix=True)
    assert report.wrong_secret
    assert report.removed == 0
    assert len(stored_keys(directory)) == entries


def test_planted_junk_rows_do_not_tip_check_fix_into_deleting_good_entries(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "store"
    square, _ = counting(Store(directory, secret="ours"))
    for x in range(10):
        square(x)
    plant_raw_rows(directory, 11)
    report = Store(directory, secret="not ours").check(fix=True)
    assert report.wrong_secret
    assert report.removed == 0
    assert len(stored_keys(directory)) == 21


def test_a_passphrase_given_as_key_bytes_is_a_wrong_secret_not_damage(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    square, _ = counting(Store(directory, secret="our team passphrase"))
    square(1)
    square(2)
    report = Store(directory, secret=b"our team passphrase\n").check(fix=True)
    assert report.wrong_secret
    assert report.removed == 0


def test_check_fix_with_the_right_secret_removes_damaged_entries_and_junk(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "store"
    store = Store(directory, secret="ours")
    square, _ = counting(store)
    for x in range(3):
        square(x)
    with sqlite3.connect(directory / "cache.db") as connection:
        (stored,) = connection.execute(
            "SELECT value FROM Cache WHERE key = ?", (square.key(0),)
        ).fetchone()
        connection.execute(
            "UPDATE Cache SET value = ? WHERE key = ?",
            (stored[:-1] + bytes([stored[-1] ^ 1]), square.key(0)),
        )
    plant_raw_rows(directory, 5)
    report = Store(directory, secret="ours").check(fix=True)
    assert not report.wrong_secret
    assert report.removed == 6
    assert sorted(stored_keys(directory)) == sorted([square.key(1), square.key(2)])


def test_the_wrong_secret_rule_weighs_well_formed_failures_against_verified_entries() -> None:
    from persistmemo.stores.base import looks_sealed_with_another_secret as rule

    assert rule(verified=0, well_formed_failures=1)
    assert rule(verified=3, well_formed_failures=4)
    assert not rule(verified=4, well_formed_failures=4)
    assert not rule(verified=0, well_formed_failures=0)
    assert not rule(verified=10, well_formed_failures=2)


PLANTED_COLUMNS = {
    "an int value": {"value": 12345},
    "a text value": {"value": "a string"},
    "no store time": {"store_time": None},
    "a text store time": {"store_time": "yesterday"},
    "a text expiry": {"expire_time": "never"},
    "a text size": {"mode": 2, "filename": "nope.val", "size": "big", "value": None},
    "no tag": {"tag": None},
    "a tag the key disagrees with": {"tag": "sec.other"},
    "an absurd header": {"value": b"\x01" + bytes(16) + struct.pack(">dd", 1e300, -1.0) + b"\x01"},
    "a nan header": {
        "value": b"\x01" + bytes(16) + struct.pack(">dd", float("nan"), 0.0) + b"\x01"
    },
}


@pytest.mark.parametrize("planted", PLANTED_COLUMNS.values(), ids=PLANTED_COLUMNS.keys())
def test_looking_inside_a_store_survives_rows_of_any_type(
    store: Store, planted: dict[str, object]
) -> None:
    import math

    square, _ = counting(store)
    square(2)
    now = time.time()
    row: dict[str, object] = {
        "key": "pm1:sec.count:1:planted",
        "raw": 1,
        "store_time": now,
        "expire_time": None,
        "access_time": now,
        "access_count": 0,
        "tag": "sec.count",
        "size": 0,
        "mode": 1,
        "filename": None,
        "value": b"\x01" + bytes(40),
        **planted,
    }
    with sqlite3.connect(store.directory / "cache.db") as connection:
        connection.execute(
            f"INSERT INTO Cache ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
        connection.execute(
            "INSERT INTO Cache (key, raw, store_time, mode, value, size) VALUES"
            " ('pm-hits:sec.count', 1, 0, 1, ?, 0)",
            (planted.get("value", 3),),
        )
    entries = list(store.entries())
    assert len(entries) == 2
    for entry in entries:
        assert entry.function == "sec.count"
        assert isinstance(entry.stored_at, float)
        assert math.isfinite(entry.stored_at)
        assert entry.expires_at is None or math.isfinite(entry.expires_at)
        assert isinstance(entry.size, int)
        assert entry.size >= 0
        assert entry.compute_seconds is None or 0 <= entry.compute_seconds < 1e9
    assert store.entry_info("pm1:sec.count:1:planted") is not None
    assert store.functions()["sec.count"].entries == 2
    assert all(isinstance(hits, int) for hits in store.recorded_hits().values())
    assert store.check().corrupt == ["pm1:sec.count:1:planted"]
    store.prune(older_than=3600)
    assert square.key(2) in stored_keys(store.directory)


def test_check_reports_a_sealed_value_the_codec_cannot_decode(store: Store) -> None:
    store.write("pm1:sec.bad:1:d", FORMAT_MSGPACK + b"\xc1", ttl=None, tag="sec.bad")
    report = store.check(fix=True)
    assert report.undecodable == ["pm1:sec.bad:1:d"]
    assert report.corrupt == []
    assert "does not decode (codec)" in report.problems[0]
    assert report.removed == 0


# --- 7. TieredStore: local leases when the remote is down -----------------------------------

TIERED_WORKER = """
import os, sys, time
from persistmemo import RedisStore, TieredStore, memo
remote = RedisStore("redis://127.0.0.1:9/0", timeout=0.2, connect_timeout=0.2)
store = TieredStore(local=sys.argv[1], remote=remote)
@memo(store=store, name="sec.slow", version="1")
def slow(x):
    with open(sys.argv[2], "a") as log:
        log.write(f"{os.getpid()}\\n")
    time.sleep(1)
    return x * 2
start = float(sys.argv[3])
while time.time() < start:
    time.sleep(0.005)
print(slow(21))
"""


def test_tiered_store_takes_local_leases_when_the_remote_is_down(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    log = tmp_path / "calls.log"
    store = tmp_path / "local"
    Store(store).open()  # made before the race: six first openings would race too
    start = str(time.time() + 2)
    environment = {**os.environ, **ENV}
    processes = [
        subprocess.Popen(
            [sys.executable, "-W", "ignore", "-c", TIERED_WORKER, str(store), str(log), start],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [out.strip() for out, _ in outputs] == ["42"] * 6, outputs
    assert len(log.read_text().splitlines()) == 1


# --- 8, 9. where a store is -----------------------------------------------------------------


def test_a_relative_store_directory_is_resolved_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = Store("relative/dir")
    square, _ = counting(store)
    square(3)
    assert store.directory == tmp_path / "relative" / "dir"
    assert list(store.functions()) == ["sec.count"]
    assert [entry.key for entry in square.entries()] == [square.key(3)]
    assert store.check().ok
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(square(3)))
    thread.start()
    thread.join()
    assert seen == [9]
    assert square.cache_info().hits == 1
    assert not (elsewhere / "relative").exists()


def test_memo_takes_a_redis_url_as_store_and_makes_no_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("redis")
    from persistmemo import RedisStore
    from persistmemo.stores.registry import store_at

    monkeypatch.chdir(tmp_path)
    for url in ("redis://127.0.0.1:9/0", "rediss://127.0.0.1:9/0", "unix:///tmp/no.sock"):
        assert isinstance(store_at(url), RedisStore)
    assert store_at("redis://127.0.0.1:9/0") is store_at("redis://127.0.0.1:9/0")

    @memo(store="redis://127.0.0.1:9/0")
    def f(x: int) -> int:
        return x

    assert isinstance(f.store, RedisStore)
    assert list(tmp_path.iterdir()) == []


def test_other_url_schemes_are_refused_as_stores() -> None:
    from persistmemo.stores.registry import store_at

    with pytest.raises(ValueError, match=r"scheme 'http' is not supported"):
        store_at("http://example.com/cache")
    with pytest.raises(ValueError, match="redis://"):
        memo(store="s3://bucket/prefix")


def test_check_fix_removes_a_planted_row_but_not_the_file_it_names(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"  # never a real system file: a regression would delete it
    victim.write_text("keep me")
    store = Store(tmp_path / "store")
    blob, _ = blob_function(store)
    blob(1000)
    plant_row(store, "pm1:sec.blob:1:planted", str(victim))
    report = store.check(fix=True)
    assert report.corrupt == ["pm1:sec.blob:1:planted"]
    assert report.removed == 1
    assert victim.read_text() == "keep me"
    assert "not a path inside the store" in report.problems[0]


def test_a_store_made_with_float_limits_or_custom_pragmas_is_written_by_every_opener(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "store"
    for settings in ({"size_limit": 1e9}, {"sqlite_mmap_size": 2**28}, {}):
        store = Store(directory, **settings)
        assert store.write(
            f"pm1:app.f:1:{len(settings)}", encode_value(1), ttl=None, tag="app.f"
        ), f"a store opened with {settings} was not written"
        store.close()
    with pytest.raises(ValueError, match="whole number"):
        Store(directory, size_limit=1.5)


def test_check_never_unpickles_what_it_checks(tmp_path: Path) -> None:
    (tmp_path / "sidefx.py").write_text(
        "import os\n\n"
        "class Marker:\n"
        "    def __setstate__(self, state):\n"
        "        open(os.environ['MARK'], 'w').write('unpickled')\n\n"
        "    def __reduce__(self):\n"
        "        return (Marker, (), {'x': 1})\n"
    )
    mark = tmp_path / "MARK"
    env = {"PERSISTMEMO_DIR": str(tmp_path / "store"), "MARK": str(mark)}
    run_python(
        "import sidefx\nfrom persistmemo import memo\n\n"
        "@memo\ndef make(x):\n    return sidefx.Marker()\n\nmake(1)\n",
        cwd=tmp_path,
        env=env,
    )
    mark.unlink(missing_ok=True)  # the computation itself made one: only check counts
    checked = subprocess.run(
        [sys.executable, "-m", "persistmemo", "check"],
        env={**os.environ, **env, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not mark.exists()
