"""Shared stores against a co-writer: nothing outside the store is ever written, whatever
links are planted in it, and a shared store works for every member of its group."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from conftest import skip_unless_user_can_run_python
from persistmemo import PersistmemoWarning, Store, memo

np = pytest.importorskip("numpy")

PRECIOUS = b"precious, outside the store\n" * 1000


def victims(tmp_path: Path) -> tuple[Path, Path]:
    """A directory and a file outside the store that a co-writer wants overwritten."""
    directory = tmp_path / "victim-dir"
    directory.mkdir()
    file = tmp_path / "victim.txt"
    file.write_bytes(PRECIOUS)
    return directory, file


def test_planted_directory_links_are_never_written_through(tmp_path: Path) -> None:
    victim_dir, _ = victims(tmp_path)
    with Store(tmp_path / "store") as store:

        @memo(store=store)
        def blob(n: int) -> bytes:
            return bytes([n]) * 100_000  # stored in a value file of its own

        assert blob(0) == bytes(100_000)  # the store exists: plant the links now
        for prefix in range(256):  # every first-level directory a value file can go into
            link = tmp_path / "store" / f"{prefix:02x}"
            if not link.exists():
                link.symlink_to(victim_dir, target_is_directory=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PersistmemoWarning)  # the writes fail: reported
            assert [blob(n)[:1] for n in range(1, 6)] == [bytes([n]) for n in range(1, 6)]
    assert list(victim_dir.iterdir()) == []


def test_a_value_file_swapped_for_a_link_while_written_is_not_written_through(
    tmp_path: Path,
) -> None:
    # A large value's header is written last, after its area was hashed on another thread:
    # reopened by its path then, a file swapped meanwhile for a link sent the header to the
    # link's target.
    _, victim = victims(tmp_path)
    root = tmp_path / "store"
    done = threading.Event()

    def swap_new_value_files() -> None:
        seen: set[Path] = set()
        while not done.is_set():
            for path in root.glob("*/*/*.val"):
                if path in seen or path.is_symlink():
                    continue
                seen.add(path)
                with_link = path.with_suffix(".link")
                with_link.symlink_to(victim)
                os.replace(with_link, path)
            time.sleep(0.0005)

    with Store(root) as store:

        @memo(store=store)
        def big(n: int) -> object:
            return np.full(3 << 20, float(n))  # 24 MiB: hashed while it is written

        assert big(0)[0] == 0.0
        swapper = threading.Thread(target=swap_new_value_files, daemon=True)
        swapper.start()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PersistmemoWarning)
                for n in range(1, 4):
                    assert big(n)[-1] == float(n)
        finally:
            done.set()
            swapper.join()
    assert victim.read_bytes() == PRECIOUS


MEMBER = """
import json, os, sys, warnings
os.umask(0o022)  # a typical member's: the store must not depend on it
from persistmemo import Store, memo
store = Store(sys.argv[1], shared=True)

@memo(store=store)
def square(x):
    return x * x

seen = []
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for x in json.loads(sys.argv[2]):
        square(x)
    seen = [square.cache_info().hits, square.cache_info().misses]
messages = [str(w.message) for w in caught]
print(json.dumps({"hits": seen[0], "misses": seen[1], "warnings": messages}))
"""


@pytest.fixture
def team(tmp_path: Path) -> object:
    """Two throwaway users in a throwaway group, removed afterwards (root only)."""
    import shutil
    import tempfile

    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("useradd")):
        pytest.skip("needs root and useradd(8) to make two users")
    tag = os.urandom(3).hex()
    group, users = f"pmteam{tag}", [f"pma{tag}", f"pmb{tag}"]
    made: list[list[str]] = []
    home = Path(tempfile.mkdtemp(prefix="persistmemo-team-"))  # other users can reach it
    try:
        subprocess.run(["groupadd", group], check=True, capture_output=True)
        made.append(["groupdel", group])
        for user in users:
            subprocess.run(
                ["useradd", "-M", "-N", "-g", group, "-s", "/bin/sh", user],
                check=True,
                capture_output=True,
            )
            made.append(["userdel", user])
        import grp
        import pwd

        gid = grp.getgrnam(group).gr_gid
        home.chmod(0o755)
        shared = home / "team"
        shared.mkdir()
        os.chown(shared, -1, gid)
        shared.chmod(0o2770)
        for user in users:
            config = home / f"config-{user}"
            config.mkdir(mode=0o700)
            os.chown(config, pwd.getpwnam(user).pw_uid, gid)
        members = [(u, pwd.getpwnam(u).pw_uid, gid) for u in users]
        skip_unless_user_can_run_python(members[0][1], gid)
        yield home, shared, members
    finally:
        for command in reversed(made):
            subprocess.run(command, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def as_member_process(
    home: Path, member: tuple[str, int, int], code: str, *args: str, **options: Any
) -> subprocess.Popen[str]:
    """``python -c code *args`` run as ``member`` of the team, with the team's secret."""
    name, uid, gid = member
    command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={gid}"]
    return subprocess.Popen(
        [*command, sys.executable, "-c", code, *args],
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src"),
            "PERSISTMEMO_SECRET": "the team's shared secret",
            "XDG_CONFIG_HOME": str(home / f"config-{name}"),
            "HOME": str(home / f"config-{name}"),
        },
        text=True,
        **options,
    )


def as_member(home: Path, member: tuple[str, int, int], store: Path, calls: list[int]) -> dict:  # type: ignore[type-arg]
    import json

    process = as_member_process(
        home,
        member,
        MEMBER,
        str(store),
        json.dumps(calls),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    result: dict = json.loads(out.splitlines()[-1])  # type: ignore[type-arg]
    return result


def test_a_team_store_works_for_every_member(team: tuple[Path, Path, list]) -> None:  # type: ignore[type-arg]
    home, shared, (first, second) = team
    store = shared / "store"
    assert as_member(home, first, store, [1]) == {"hits": 0, "misses": 1, "warnings": []}
    # The second member only reads: the log files it creates must stay the team's.
    assert as_member(home, second, store, [1]) == {"hits": 1, "misses": 0, "warnings": []}
    assert as_member(home, first, store, [1, 2]) == {"hits": 1, "misses": 1, "warnings": []}
    assert as_member(home, second, store, [2, 3]) == {"hits": 1, "misses": 1, "warnings": []}
    assert as_member(home, first, store, [1, 2, 3]) == {"hits": 3, "misses": 0, "warnings": []}


def test_a_shared_store_in_a_directory_everyone_can_write_is_not_written(tmp_path: Path) -> None:
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    expected = pytest.warns(PersistmemoWarning, match="writable by every user.*chmod 2770")
    with expected, Store(open_to_all, shared=True, secret="team") as store:

        @memo(store=store)
        def triple(x: int) -> int:
            return 3 * x

        assert [triple(1), triple(1)] == [3, 3]
        assert triple.cache_info().hits == 0
    assert not (open_to_all / "cache.db").exists() or len(store) == 0


def test_a_planted_lease_row_does_not_hold_a_claim_taken_as_a_lock(tmp_path: Path) -> None:
    import diskcache

    from persistmemo.stores.base import LEASE_PREFIX

    with Store(tmp_path / "store", lease=60) as store:

        @memo(store=store)
        def slow(x: int) -> int:
            return x + 1

        assert slow(0) == 1
        planter = diskcache.Cache(str(tmp_path / "store"))
        planter.set(LEASE_PREFIX + slow.key(5), "someone|1|forever", expire=60)
        planter.close()
        started = time.monotonic()
        assert slow(5) == 6  # no wait, no warning: rows are not claims here
        assert time.monotonic() - started < 5


@pytest.mark.usefixtures("lease_rows")
def test_a_planted_lease_without_an_end_is_taken_over_not_waited_for(tmp_path: Path) -> None:
    import diskcache

    from persistmemo.stores.base import LEASE_PREFIX

    with Store(tmp_path / "store", lease=1) as store:

        @memo(store=store, lock="always")
        def slow(x: int) -> int:
            return x + 1

        assert slow(0) == 1  # the store exists
        planter = diskcache.Cache(str(tmp_path / "store"))
        planter.set(LEASE_PREFIX + slow.key(5), "someone|1|forever")  # no expiry at all
        planter.close()
        started = time.monotonic()
        with pytest.warns(PersistmemoWarning, match="planted lease"):
            assert slow(5) == 6
        assert time.monotonic() - started < 5
        assert slow(5) == 6
        assert slow.cache_info().hits == 1


def test_a_planted_redis_lease_without_an_end_is_taken_over_not_waited_for(
    redis_url: str,
) -> None:
    import redis

    from persistmemo import RedisStore

    store = RedisStore(redis_url, secret="team", lease=1)

    @memo(store=store, lock="always")
    def slow(x: int) -> int:
        return x + 1

    client = redis.Redis.from_url(redis_url)
    client.set(store._lease_name(slow.key(5)), b"someone|1|forever")  # no PX
    started = time.monotonic()
    with pytest.warns(PersistmemoWarning, match="planted lease"):
        assert slow(5) == 6
    assert time.monotonic() - started < 5
    client.close()


def test_a_mapped_result_in_a_store_others_write_is_checked_like_any_hit(tmp_path: Path) -> None:
    team_dir = tmp_path / "team"
    team_dir.mkdir()
    team_dir.chmod(0o2770)  # the group writes it: a co-writer may change any file's bytes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PersistmemoWarning)  # "mapped results": told once
        with Store(team_dir, shared=True, secret="team") as store:

            @memo(store=store, mmap=True)
            def sevens(n: int) -> object:
                return np.full(n, 7.0)

            assert float(sevens(4096)[0]) == 7.0
            (value_file,) = team_dir.glob("*/*/*.val")
            data = bytearray(value_file.read_bytes())
            data[-8:] = np.float64(666.0).tobytes()  # the last array element, chosen
            value_file.chmod(0o600)
            value_file.write_bytes(bytes(data))
            again = sevens(4096)
            assert float(again[-1]) == 7.0


def bytes_read_by_this_process() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    pytest.skip("no /proc/self/io")


@pytest.mark.parametrize("lengths", ["kept", "rewritten"])
def test_a_planted_row_naming_a_huge_sparse_file_costs_no_read_of_its_bulk(
    tmp_path: Path, lengths: str
) -> None:
    import sqlite3
    import struct

    with Store(tmp_path / "store") as store:

        @memo(store=store)
        def ones(n: int) -> object:
            return np.full(n, 1.0)

        assert float(ones(3 << 20)[0]) == 1.0  # a 24 MiB value file
        (value_file,) = (tmp_path / "store").glob("*/*/*.val")
        head = bytearray(value_file.read_bytes()[: 1 << 16])
        huge = 1 << 30
        if lengths == "rewritten":  # the lengths say 1 GiB too (the header's tag then fails)
            at = 1 + 2 * 16 + 16  # frame byte, two tags, metadata: then the two lengths
            document, area = struct.unpack_from(">IQ", head, at)
            grown = area + huge - value_file.stat().st_size
            struct.pack_into(">IQ", head, at, document, grown)
        value_file.unlink()
        with value_file.open("wb") as planted:  # sparse: 1 GiB that takes no disk
            planted.write(head)
            planted.truncate(huge)
        with sqlite3.connect(tmp_path / "store" / "cache.db") as database:
            database.execute("UPDATE Cache SET size = ? WHERE filename IS NOT NULL", (huge,))
        before = bytes_read_by_this_process()
        with pytest.warns(PersistmemoWarning, match="corrupt entry"):
            assert float(ones(3 << 20)[-1]) == 1.0  # refused, computed again
        assert bytes_read_by_this_process() - before < 256 << 20


def test_a_redis_entry_copied_to_another_namespace_does_not_verify(redis_url: str) -> None:
    import redis

    from persistmemo import RedisStore

    def pinned(store: object) -> object:
        @memo(store=store, name="team.fetch", version="1")
        def fetch(x: int) -> str:
            return f"dev's {x}"

        return fetch

    dev = RedisStore(redis_url, namespace="team:dev", secret="team")
    team = RedisStore(redis_url, namespace="team", secret="team")
    on_dev, on_team = pinned(dev), pinned(team)
    assert on_dev(1) == "dev's 1"  # type: ignore[operator]
    client = redis.Redis.from_url(redis_url)
    key = on_dev.key(1)  # type: ignore[attr-defined]
    client.set(f"team:{key}", client.get(f"team:dev:{key}"))
    client.close()
    with pytest.warns(PersistmemoWarning, match="corrupt entry"):
        assert on_team(1) == "dev's 1"  # type: ignore[operator]
    assert on_team.cache_info().hits == 0  # type: ignore[attr-defined]


def test_the_command_line_changes_a_team_store_only_when_told_it_is_shared(
    tmp_path: Path,
) -> None:

    team_dir = tmp_path / "team"
    team_dir.mkdir()
    team_dir.chmod(0o2770)
    with Store(team_dir, shared=True, secret="team") as store:

        @memo(store=store)
        def double(x: int) -> int:
            return 2 * x

        assert [double(x) for x in range(3)] == [0, 2, 4]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "persistmemo", "--store", str(team_dir), *args],
            env={**os.environ, "PERSISTMEMO_SECRET": "team"},
            capture_output=True,
            text=True,
            timeout=60,
        )

    refused = cli("clear", "--yes")
    assert refused.returncode == 2
    assert "--shared" in refused.stderr
    done = cli("--shared", "clear", "--yes")
    assert done.returncode == 0, done.stderr
    assert "removed 3 entries" in done.stdout


def test_check_tells_damage_from_another_secret_by_the_recorded_fingerprints(
    tmp_path: Path,
) -> None:
    import sqlite3

    with Store(tmp_path / "store", secret="ours") as store:

        @memo(store=store)
        def name(x: int) -> str:
            return f"entry {x}"

        assert [name(1), name(2)] == ["entry 1", "entry 2"]
    with sqlite3.connect(tmp_path / "store" / "cache.db") as database:  # both damaged
        rows = database.execute("SELECT key, value FROM Cache WHERE key LIKE 'pm3:%'").fetchall()
        for key, value in rows:
            damaged = bytes(value[:-1]) + bytes([value[-1] ^ 1])  # the frame stays well formed
            database.execute("UPDATE Cache SET value = ? WHERE key = ?", (damaged, key))
    with Store(tmp_path / "store", secret="theirs") as other:
        assert other.check().wrong_secret  # nothing of theirs was ever stored here
    with Store(tmp_path / "store", secret="ours") as store:
        report = store.check(fix=True)
        assert not report.wrong_secret  # our secret wrote here: it is damage
        assert report.removed == 2
        assert store.check().problems == []


def test_members_with_their_own_secrets_keep_their_own_bookkeeping(tmp_path: Path) -> None:

    team_dir = tmp_path / "team"
    team_dir.mkdir()
    team_dir.chmod(0o2770)
    (tmp_path / "data.txt").write_text("rows")
    (tmp_path / "member.py").write_text(
        "import sys, warnings\n"
        "from persistmemo import Store, memo\n"
        "store = Store(sys.argv[1], shared=True)\n\n"
        "@memo(store=store, files=['path'])\n"
        "def load(path):\n"
        "    return open(path).read()\n\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    load(sys.argv[2])\n"
        "bookkeeping = ('pm-version:', 'pm-file:')\n"
        "print(len([w for w in caught if any(k in str(w.message) for k in bookkeeping)]))\n"
    )
    time.sleep(2.1)  # the data file's stamp is trusted, so its digest record is written

    def member(secret: str) -> str:
        done = subprocess.run(
            [
                sys.executable,
                str(tmp_path / "member.py"),
                str(team_dir),
                str(tmp_path / "data.txt"),
            ],
            env={**os.environ, "PERSISTMEMO_SECRET": secret},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    # Each reads the store after the other wrote its version and file records: a record
    # sealed with the other secret used to be read, fail its seal and be overwritten.
    assert [member("alice's"), member("bob's"), member("alice's"), member("bob's")] == ["0"] * 4


@pytest.mark.parametrize("planted", ["link", "fifo", "hard link"])
@pytest.mark.parametrize("name", ["cache.db", "cache.db-wal"])
def test_a_planted_database_file_is_neither_followed_nor_waited_on(
    tmp_path: Path, planted: str, name: str
) -> None:

    team_dir = tmp_path / "team"
    team_dir.mkdir()
    team_dir.chmod(0o2770)
    import sqlite3

    victim = tmp_path / "notes.db"  # a member's own database, outside the store
    with sqlite3.connect(victim) as notes:
        notes.execute("CREATE TABLE Notes (text)")
    notes.close()
    absent = tmp_path / "made-outside.db"
    target = team_dir / name
    if planted == "link":
        target.symlink_to(absent if name == "cache.db" else victim)
    elif planted == "fifo":
        os.mkfifo(target)  # blocks a member who can only read it (not root): guarded here
    else:
        os.link(victim, target)
    code = (
        "import sys, warnings\n"
        "from persistmemo import Store, memo\n"
        "warnings.simplefilter('ignore')\n"
        "store = Store(sys.argv[1], shared=True, secret='team')\n\n"
        "@memo(store=store)\n"
        "def double(x):\n"
        "    return 2 * x\n\n"
        "print(double(21), double(21))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(team_dir)],
        capture_output=True,
        text=True,
        timeout=30,  # a FIFO opened by SQLite blocked this for good
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["42", "42"]
    assert not absent.exists()
    with sqlite3.connect(victim) as notes:
        tables = [row[0] for row in notes.execute("SELECT name FROM sqlite_master")]
    notes.close()
    assert tables == ["Notes"]


def test_value_files_of_a_team_store_are_readable_by_the_group_whatever_the_umask(
    tmp_path: Path,
) -> None:
    team_dir = tmp_path / "team"
    team_dir.mkdir()
    team_dir.chmod(0o2770)
    before = os.umask(0o077)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PersistmemoWarning)
            with Store(team_dir, shared=True, secret="team") as store:

                @memo(store=store)
                def blob(n: int) -> bytes:
                    return bytes([n]) * 100_000

                blob(1)
    finally:
        os.umask(before)
    (value_file,) = team_dir.glob("*/*/*.val")
    assert value_file.stat().st_mode & 0o777 == 0o640
    assert value_file.parent.stat().st_mode & 0o7777 == 0o2770


@pytest.mark.usefixtures("lease_rows")
def test_a_planted_lease_with_a_text_expiry_is_taken_over(tmp_path: Path) -> None:
    import sqlite3

    from persistmemo.stores.base import LEASE_PREFIX

    with Store(tmp_path / "store", lease=1) as store:

        @memo(store=store, lock="always")
        def slow(x: int) -> int:
            return x + 1

        assert slow(0) == 1
        name = LEASE_PREFIX + slow.key(5)
        with sqlite3.connect(tmp_path / "store" / "cache.db") as database:
            database.execute(
                "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count,"
                " tag, size, mode, filename, value) VALUES (?, 1, 0, 'abc', 0, 0, NULL, 0, 1,"
                " NULL, 'someone|1|forever')",
                (name,),
            )
        database.close()
        with pytest.warns(PersistmemoWarning, match="planted lease"):
            assert slow(5) == 6
        with sqlite3.connect(tmp_path / "store" / "cache.db") as database:
            left = database.execute("SELECT count(*) FROM Cache WHERE key = ?", (name,)).fetchone()
        database.close()
        assert left == (0,)


def test_a_planted_oversized_redis_value_is_refused_by_its_length(redis_url: str) -> None:
    import redis

    from persistmemo import RedisStore

    store = RedisStore(redis_url, secret="team", max_value_bytes=1 << 20)

    @memo(store=store)
    def small(x: int) -> int:
        return x + 1

    client = redis.Redis.from_url(redis_url)
    client.set(f"persistmemo:{small.key(1)}", bytes(8 << 20))  # 8 MiB nobody sealed
    client.close()
    with pytest.warns(PersistmemoWarning, match="oversized entry"):
        assert small(1) == 2
    assert small.cache_info().misses == 1


HOLD_CLAIM = """
import sys, time
from persistmemo import Store
store = Store(sys.argv[1], shared=True, lease=0.5)
assert store.try_lease(sys.argv[2], "holder")
print("claimed", flush=True)
time.sleep(30)
"""

WAIT_FOR_CLAIM = """
import json, sys, time, warnings
from persistmemo import Store
store = Store(sys.argv[1], shared=True, lease=0.5)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    started = time.monotonic()
    while time.monotonic() - started < 1.5:
        assert not store.try_lease(sys.argv[2], "waiter")
        time.sleep(0.05)
print(json.dumps([str(w.message) for w in caught]))
"""


def test_a_claim_another_members_process_holds_past_a_lease_is_reported_once(
    team: tuple[Path, Path, list],  # type: ignore[type-arg]
) -> None:
    import json

    home, shared, members = team
    key = "pm2:team.slow:1:00112233445566778899aabbccddeeff"

    store = str(shared / "store")
    holder = as_member_process(home, members[0], HOLD_CLAIM, store, key, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "claimed\n"
        waiter = as_member_process(
            home,
            members[1],
            WAIT_FOR_CLAIM,
            store,
            key,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = waiter.communicate(timeout=60)
        assert waiter.returncode == 0, err
        messages = [m for m in json.loads(out) if "another user" in m]
        assert len(messages) == 1
        assert f"process {holder.pid}" in messages[0]
    finally:
        holder.kill()
        holder.wait()


def test_a_shared_store_opened_while_another_process_writes_keeps_its_locks(
    tmp_path: Path,
) -> None:
    # Sharing the database files must not open and close them after SQLite has: a close
    # drops every POSIX lock the process holds on the file, SQLite's own among them.
    directory = tmp_path / "team"
    directory.mkdir()
    directory.chmod(0o2770)
    with Store(directory, shared=True, secret="team") as first:
        memo(store=first)(lambda x: x)(0)  # the database exists, as a member left it
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"db = sqlite3.connect({str(directory / 'cache.db')!r}, isolation_level=None)\n"
            "db.execute('BEGIN IMMEDIATE'); print('locked', flush=True)\n"
            "time.sleep(1.0); db.execute('ROLLBACK')\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        store = Store(directory, shared=True, secret="team", timeout=10)

        @memo(store=store)
        def double(x: int) -> int:
            return 2 * x

        assert double(1) == 2  # waits for the holder, then stores
    finally:
        holder.wait(timeout=30)
    for x in range(2, 5):
        assert double(x) == 2 * x
        assert double(x) == 2 * x
    assert double.cache_info().hits == 3  # every later write stored
    store.close()
