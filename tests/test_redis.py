"""RedisStore and TieredStore against a real redis-server on loopback: same keys and values as
the disk store, shared between processes, and fail-open when the server dies or hangs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, run_python
from persistmemo import PersistmemoWarning, RedisStore, Store, TieredStore, memo
from persistmemo._codec.encoding import encode_value
from redis_server import RedisServer

SECRET = "team passphrase"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test's own, for the tests that kill, pause or restart it."""
    own = RedisServer(tmp_path / "redis")
    own.start()
    yield own
    own.kill()


def counting(store: Any, **options: Any) -> tuple[Any, list[int]]:
    calls: list[int] = []

    @memo(store=store, name="tests.redis.square", version="1", **options)
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    return square, calls


def test_hits_and_misses_through_redis(redis_url: str) -> None:
    square, calls = counting(RedisStore(redis_url, secret=SECRET))
    assert [square(3), square(3), square(4)] == [9, 9, 16]
    assert calls == [3, 4]
    assert square.cache_info().hits == 1


def test_keys_are_the_same_as_on_disk(redis_url: str, store: Store) -> None:
    on_redis, _ = counting(RedisStore(redis_url, secret=SECRET))
    on_disk, _ = counting(store)
    assert on_redis.key(7) == on_disk.key(7)


def test_machines_share_results_through_the_server(redis_url: str, tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        from persistmemo import RedisStore, memo
        calls = []
        @memo(store=RedisStore({redis_url!r}), name="tests.redis.shared", version="1")
        def load(day):
            calls.append(day)
            return {{"day": day, "rows": [1.5, 2.5]}}
        print(load("2026-11-25"), len(calls))
        """
    )
    env = {"PERSISTMEMO_SECRET": SECRET, "XDG_CONFIG_HOME": str(tmp_path / "a")}
    first = run_python(code, env=env).stdout.split()
    env_other_machine = {"PERSISTMEMO_SECRET": SECRET, "XDG_CONFIG_HOME": str(tmp_path / "b")}
    second = run_python(code, env=env_other_machine).stdout.split()
    assert first[-1] == "1"
    assert second[-1] == "0"  # the other "machine" computed nothing
    assert first[:-1] == second[:-1]


def test_a_different_secret_is_a_miss_never_a_wrong_value(redis_url: str) -> None:
    square, _calls = counting(RedisStore(redis_url, secret="ours"))
    assert square(5) == 25
    intruder, intruder_calls = counting(RedisStore(redis_url, secret="theirs"))
    with pytest.warns(PersistmemoWarning, match="corrupt entry"):
        assert intruder(5) == 25
    assert intruder_calls == [5]


def test_ttl_uses_redis_expiry(redis_url: str) -> None:
    square, calls = counting(RedisStore(redis_url, secret=SECRET), ttl=0.3)
    square(2)
    square(2)
    time.sleep(0.4)
    square(2)
    assert calls == [2, 2]


def test_cache_clear_and_invalidate_are_scoped(redis_url: str) -> None:
    store = RedisStore(redis_url, secret=SECRET)
    square, _calls = counting(store)

    @memo(store=store, name="tests.redis.other", version="1")
    def other(x: int) -> int:
        return -x

    for x in range(30):
        square(x)
        other(x)
    assert square.invalidate(3) is True
    assert square.invalidate(3) is False
    assert square.cache_clear() == 29
    assert len(store) == 30
    other(1)
    assert other.cache_info().hits == 1


def test_one_computation_across_processes(redis_url: str, tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import os, time
        from persistmemo import RedisStore, memo
        @memo(store=RedisStore({redis_url!r}, lease=2), name="tests.redis.slow", version="1")
        def slow(x):
            with open({str(tmp_path / "calls.log")!r}, "a") as log:
                log.write("call\\n")
            time.sleep(1)
            return x + 1
        print(slow(1))
        """
    )
    env = {**os.environ, "PERSISTMEMO_SECRET": SECRET, "PYTHONPATH": str(REPO / "src")}
    processes = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    assert [process.communicate(timeout=60)[0].strip() for process in processes] == ["2"] * 4
    assert (tmp_path / "calls.log").read_text().count("call") == 1


def test_an_unreachable_server_costs_one_timeout_then_nothing(tmp_path: Path) -> None:
    from redis_server import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", secret=SECRET, timeout=0.3)
    square, calls = counting(store)
    start = time.monotonic()
    with pytest.warns(PersistmemoWarning, match="server unavailable") as caught:
        results = [square(x) for x in range(50)]
    elapsed = time.monotonic() - start
    assert results == [x * x for x in range(50)]
    assert calls == list(range(50))
    assert len(caught) == 1
    assert elapsed < 3  # not 50 timeouts


def test_a_killed_and_restarted_server_is_survived(server: RedisServer) -> None:
    store = RedisStore(server.url, secret=SECRET, timeout=0.3, backoff=0.3)
    square, calls = counting(store)
    assert square(2) == 4
    server.kill()
    with pytest.warns(PersistmemoWarning, match="server unavailable"):
        assert square(2) == 4  # computed again: the server is gone
        assert square(3) == 9
    server.start()  # back, and empty
    time.sleep(0.35)  # past the backoff
    assert square(2) == 4
    assert square(2) == 4
    assert calls == [2, 2, 3, 2]
    assert square.cache_info().hits == 1


def test_a_hung_server_costs_at_most_the_timeout(server: RedisServer) -> None:
    store = RedisStore(server.url, secret=SECRET, timeout=0.3, backoff=60)
    square, _calls = counting(store)
    square(1)
    server.pause()
    try:
        start = time.monotonic()
        with pytest.warns(PersistmemoWarning, match="server unavailable"):
            assert [square(x) for x in range(20)] == [x * x for x in range(20)]
        elapsed = time.monotonic() - start
    finally:
        server.resume()
    print(f"hung server: 20 calls in {elapsed:.2f} s with timeout=0.3")
    assert elapsed < 2  # one timeout, then the breaker keeps callers away


def test_values_over_the_limit_are_not_sent(redis_url: str) -> None:
    store = RedisStore(redis_url, secret=SECRET, max_value_bytes=10_000)

    @memo(store=store, name="tests.redis.blob", version="1")
    def blob(n: int) -> bytes:
        return b"x" * n

    with pytest.warns(PersistmemoWarning, match="value too large"):
        assert blob(50_000) == b"x" * 50_000
    assert len(store) == 0


def test_tiered_local_hits_never_touch_the_network(server: RedisServer, tmp_path: Path) -> None:
    tiered = TieredStore(tmp_path / "local", RedisStore(server.url, secret=SECRET, timeout=0.3))
    square, calls = counting(tiered)
    square(6)
    server.pause()  # any network use would now cost a timeout and a warning
    try:
        start = time.monotonic()
        assert [square(6) for _ in range(100)] == [36] * 100
        elapsed = time.monotonic() - start
    finally:
        server.resume()
    assert calls == [6]
    assert elapsed < 0.25  # 100 local hits, no 0.3 s timeout among them


def test_tiered_miss_reads_remote_and_fills_local(redis_url: str, tmp_path: Path) -> None:
    remote = RedisStore(redis_url, secret=SECRET)
    writer, _ = counting(TieredStore(tmp_path / "machine-a", remote))
    writer(8)
    reader_local = Store(tmp_path / "machine-b")
    reader, calls = counting(TieredStore(reader_local, remote))
    assert reader(8) == 64
    assert calls == []
    local_only, local_calls = counting(reader_local)
    assert local_only(8) == 64  # filled from the remote
    assert local_calls == []


def test_tiered_keeps_too_large_values_locally(redis_url: str, tmp_path: Path) -> None:
    remote = RedisStore(redis_url, secret=SECRET, max_value_bytes=10_000)
    tiered = TieredStore(tmp_path / "local", remote)

    @memo(store=tiered, name="tests.redis.big", version="1")
    def big(n: int) -> bytes:
        return b"y" * n

    with pytest.warns(PersistmemoWarning, match="value too large"):
        big(50_000)
    assert len(remote) == 0
    assert big(50_000) == b"y" * 50_000
    assert big.cache_info().hits == 1


def test_tiered_invalidate_and_ttl_reach_both_tiers(redis_url: str, tmp_path: Path) -> None:
    remote = RedisStore(redis_url, secret=SECRET)
    tiered = TieredStore(tmp_path / "local", remote)
    square, calls = counting(tiered, ttl=0.5)
    square(2)
    assert square.invalidate(2)
    square(2)
    assert calls == [2, 2]
    time.sleep(0.6)
    square(2)
    assert calls == [2, 2, 2]


def test_persistmemo_url_selects_a_redis_default_store(redis_url: str, tmp_path: Path) -> None:
    code = (
        "from persistmemo import memo\n"
        "@memo(name='tests.redis.default', version='1')\n"
        "def f(x): return x\n"
        "f(1); print(type(f.store).__name__)"
    )
    env = {"PERSISTMEMO_URL": redis_url, "PERSISTMEMO_SECRET": SECRET, "PERSISTMEMO_DIR": ""}
    assert run_python(code, env=env).stdout.strip() == "RedisStore"
    env["PERSISTMEMO_DIR"] = str(tmp_path / "local")
    assert run_python(code, env=env).stdout.strip() == "TieredStore"


def test_the_command_line_reads_and_clears_a_redis_store(redis_url: str) -> None:
    store = RedisStore(redis_url, secret=SECRET)
    square, _ = counting(store)
    for x in range(5):
        square(x)
    env = {**os.environ, "PERSISTMEMO_SECRET": SECRET}
    script = [sys.executable, "-m", "persistmemo"]
    listed = subprocess.run(
        [*script, "ls", "--store", redis_url], env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert "tests.redis.square" in listed.stdout
    checked = subprocess.run(
        [*script, "check", "--store", redis_url], env=env, capture_output=True, text=True
    )
    assert "checked 5 entries: ok" in checked.stdout
    cleared = subprocess.run(
        [*script, "clear", "tests.redis.square", "--store", redis_url],
        env=env,
        capture_output=True,
        text=True,
    )
    assert "removed 5 entries" in cleared.stdout
    assert len(store) == 0


def _fill(store: RedisStore, name: str, count: int = 3) -> Any:
    @memo(store=store, name=name, version="1")
    def function(x: int) -> int:
        return x

    for x in range(count):
        function(x)
    return function


def test_cache_clear_escapes_glob_characters_in_namespace_and_identity(redis_url: str) -> None:
    stores = {
        namespace: RedisStore(redis_url, namespace=namespace, secret=SECRET)
        for namespace in ("team", "te*", "proj[1]", "proj1", "a?c", "abc")
    }
    functions = {namespace: _fill(store, "app.l[o]ad*") for namespace, store in stores.items()}
    _fill(stores["team"], "app.load")
    assert functions["te*"].cache_clear() == 3
    assert functions["proj[1]"].cache_clear() == 3
    assert functions["a?c"].cache_clear() == 3
    for namespace in ("team", "proj1", "abc"):
        assert len(list(stores[namespace].entries("app.l[o]ad*"))) == 3, namespace
    assert len(list(stores["team"].entries("app.load"))) == 3


def test_cache_clear_of_a_function_spares_identities_that_extend_it(redis_url: str) -> None:
    store = RedisStore(redis_url, secret=SECRET)
    load = _fill(store, "app.load")
    _fill(store, "app.load:v2", 4)
    assert {entry.function for entry in store.entries("app.load")} == {"app.load"}
    assert len(list(store.entries("app.load"))) == 3
    assert len(load.entries()) == 3
    assert load.cache_clear() == 3
    assert len(list(store.entries("app.load:v2"))) == 4
    assert len(store) == 4


def test_hit_counts_stay_with_their_namespace_and_function(redis_url: str) -> None:
    wild = RedisStore(redis_url, namespace="te*", secret=SECRET)
    team = RedisStore(redis_url, namespace="team", secret=SECRET)
    wild.record_hits("app.load", 2)
    team.record_hits("app.load", 5)
    team.record_hits("app.load:v2", 7)
    assert wild.recorded_hits() == {"app.load": 2}
    team.forget_hits("app.load")
    assert team.recorded_hits() == {"app.load:v2": 7}
    assert wild.recorded_hits() == {"app.load": 2}


def _cli(*args: str, secret: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "persistmemo", *args],
        env={**os.environ, "PERSISTMEMO_SECRET": secret},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_fix_with_another_secret_removes_nothing(redis_url: str) -> None:
    store = RedisStore(redis_url, secret=SECRET)
    _fill(store, "app.load", 5)
    checked = _cli("check", "--fix", "--store", redis_url, secret="not the team's passphrase")
    assert checked.returncode == 1
    assert (
        "5 of 5 entries are sealed with a different secret "
        "(set $PERSISTMEMO_SECRET or --secret-file)" in checked.stdout
    )
    assert "removed 0" in checked.stdout
    assert len(store) == 5
    assert "checked 5 entries: ok" in _cli("check", "--store", redis_url, secret=SECRET).stdout


def test_check_fix_still_removes_a_few_damaged_entries(redis_url: str) -> None:
    import redis

    store = RedisStore(redis_url, secret=SECRET)
    load = _fill(store, "app.load", 6)
    client = redis.Redis.from_url(redis_url)
    for x in (0, 1):  # tampered: the frame is intact, the tag no longer matches
        name = "persistmemo:" + load.key(x)
        stored = client.get(name)
        client.set(name, stored[:-1] + bytes([stored[-1] ^ 1]))
    report = store.check()
    assert len(report.problems) == 2
    fixed = store.check(fix=True)
    assert fixed.removed == 2
    assert len(store) == 4
    assert store.check().ok


def test_check_with_another_secret_is_reported_by_the_python_api_too(redis_url: str) -> None:
    _fill(RedisStore(redis_url, secret=SECRET), "app.load", 3)
    other = RedisStore(redis_url, secret="another")
    report = other.check(fix=True)
    assert report.removed == 0
    assert report.problems == [
        "3 of 3 entries are sealed with a different secret "
        "(set $PERSISTMEMO_SECRET or --secret-file); nothing was removed"
    ]
    assert len(other) == 3


def _fill_server_memory(url: str) -> None:
    """Junk until the server refuses writes (maxmemory under noeviction)."""
    import redis

    client = redis.Redis.from_url(url)
    with pytest.raises(redis.ResponseError, match="maxmemory"):  # noqa: PT012
        for index in range(100_000):
            client.set(f"junk:{index}", b"j" * 4096)
    # Right at the limit, freed buffers can let a small write through: move the limit well
    # below what is used, so that every write is refused.
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used - 256 * 1024)


def test_a_full_server_refuses_writes_but_still_serves_reads(tmp_path: Path) -> None:
    full = RedisServer(tmp_path / "redis", "--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
    full.start()
    try:
        square, calls = counting(RedisStore(full.url, secret=SECRET))
        assert [square(x) for x in range(3)] == [0, 1, 4]
        _fill_server_memory(full.url)
        with pytest.warns(PersistmemoWarning, match="store full") as caught:
            assert square(10) == 100  # computed; its result is refused
            assert square(11) == 121
            assert [square(x) for x in range(3)] == [0, 1, 4]  # still hits
        assert calls == [0, 1, 2, 10, 11]
        assert square.cache_info().hits == 3
        assert len(caught) == 1
        assert "server unavailable" not in str(caught[0].message)
    finally:
        full.kill()


def test_a_lease_that_vanishes_while_its_holder_computes_is_put_back(
    redis_url: str, tmp_path: Path
) -> None:
    """What eviction under maxmemory (allkeys-lru) does to a lease: the key vanishes while
    its holder is alive. The waiters put it back instead of each computing again."""
    import redis

    # Each process names its connections (argv[1]): earlier tests' may still be open.
    code = textwrap.dedent(
        f"""
        import sys, time
        from persistmemo import RedisStore, memo
        store = RedisStore({redis_url!r} + "?client_name=" + sys.argv[1], lease=3)
        @memo(store=store, name="tests.redis.evicted", version="1")
        def slow(x):
            with open({str(tmp_path / "calls.log")!r}, "a") as log:
                log.write("call\\n")
            time.sleep(4)
            return x + 1
        print(slow(1))
        """
    )
    env = {**os.environ, "PERSISTMEMO_SECRET": SECRET, "PYTHONPATH": str(REPO / "src")}
    run = [sys.executable, "-c", code]
    client = redis.Redis.from_url(redis_url)
    holder = subprocess.Popen([*run, "holder"], env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (tmp_path / "calls.log").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    names = [f"waiter{index}" for index in range(3)]
    waiters = [
        subprocess.Popen([*run, name], env=env, stdout=subprocess.PIPE, text=True) for name in names
    ]
    while not set(names) <= {connection["name"] for connection in client.client_list()}:
        assert time.monotonic() < deadline, "the waiters did not start"
        time.sleep(0.01)
    time.sleep(0.5)  # a few polls each: every waiter has seen the lease
    for _ in range(5):  # evicted, again and again, between the holder's renewals
        leases: list[bytes] = []
        while not leases and time.monotonic() < deadline:
            leases = client.keys("persistmemo:pm-lease:*")  # put back, or claimed anew
        if leases:
            client.delete(*leases)
        time.sleep(0.1)
    outputs = [process.communicate(timeout=60)[0].strip() for process in [holder, *waiters]]
    assert outputs == ["2"] * 4
    assert (tmp_path / "calls.log").read_text().count("call") == 1


def test_an_infinite_ttl_is_no_expiry_on_redis(redis_url: str) -> None:
    square, calls = counting(RedisStore(redis_url, secret=SECRET), ttl=float("inf"))
    assert [square(3), square(3)] == [9, 9]
    assert calls == [3]


def test_clearing_a_namespace_spares_the_namespaces_nested_in_it(redis_url: str) -> None:
    team = RedisStore(redis_url, namespace="team", secret=SECRET)
    dev = RedisStore(redis_url, namespace="team:dev", secret=SECRET)
    _fill(team, "app.load", 2)
    _fill(dev, "app.load", 3)
    dev.record_hits("app.load", 4)
    team.record_hits("app.load", 1)
    assert team.clear() == 2
    assert len(team) == 0
    assert team.recorded_hits() == {}
    assert len(dev) == 3
    assert dev.recorded_hits() == {"app.load": 4}


@pytest.mark.parametrize("namespace", ["team:pm1", "pm-hits", "a:pm-lease:b", "t:pm-failed"])
def test_a_namespace_made_of_the_key_layouts_words_is_refused(
    redis_url: str, namespace: str
) -> None:
    with pytest.raises(ValueError, match="namespace=") as refused:
        RedisStore(redis_url, namespace=namespace)
    assert "'pm1', 'pm2', 'pm3', 'pm-lease', 'pm-hits' or 'pm-failed'" in str(refused.value)


def test_planted_hit_counts_are_left_out_of_ls_not_a_crash(redis_url: str) -> None:
    import redis

    _fill(RedisStore(redis_url, secret=SECRET), "app.load", 2)
    client = redis.Redis.from_url(redis_url)
    client.set("persistmemo:pm-hits:app.load", "lots")
    client.set(b"persistmemo:pm-hits:\xff\xfe", 5)
    client.set("persistmemo:pm-hits:app.huge", "9" * 5000)
    client.set("persistmemo:pm-hits:app.counted", 7)
    listed = _cli("ls", "--json", "--store", redis_url, secret=SECRET)
    assert listed.returncode == 0, listed.stderr
    assert [(item["function"], item["hits"]) for item in json.loads(listed.stdout)] == [
        ("app.load", 0)
    ]
    assert RedisStore(redis_url, secret=SECRET).recorded_hits() == {"app.counted": 7}


def test_a_key_of_another_type_is_a_miss_not_an_outage(redis_url: str) -> None:
    import redis

    store = RedisStore(redis_url, secret=SECRET)
    square, calls = counting(store)
    assert square(1) == 1
    client = redis.Redis.from_url(redis_url)
    client.rpush("persistmemo:" + square.key(5), "planted")
    client.rpush("persistmemo:pm1:app.planted:v:1", "planted")
    with pytest.warns(PersistmemoWarning, match="key of another type") as caught:
        assert square(5) == 25  # a miss; the write replaces the list
    assert not any("server unavailable" in str(warning.message) for warning in caught)
    assert square(1) == 1  # the server is not taken for down: still a hit
    assert square(5) == 25
    assert calls == [1, 5]
    assert square.cache_info().hits == 2
    listed = _cli("ls", "--json", "--store", redis_url, secret=SECRET)
    assert listed.returncode == 0, listed.stderr
    assert [item["function"] for item in json.loads(listed.stdout)] == ["tests.redis.square"]
    fixed = _cli("check", "--fix", "--store", redis_url, secret=SECRET)
    assert "pm1:app.planted:v:1: not a persistmemo value" in fixed.stdout
    assert "removed 1" in fixed.stdout
    assert client.exists("persistmemo:pm1:app.planted:v:1") == 0


def test_check_fix_with_another_secret_removes_nothing_even_from_two_entries(
    redis_url: str,
) -> None:
    store = RedisStore(redis_url, secret=SECRET)
    _fill(store, "app.load", 2)
    checked = _cli("check", "--fix", "--store", redis_url, secret="not the team's passphrase")
    assert checked.returncode == 1
    assert "2 of 2 entries are sealed with a different secret" in checked.stdout
    assert "removed 0" in checked.stdout
    assert len(store) == 2


def test_planted_junk_neither_hides_a_wrong_secret_nor_protects_itself(redis_url: str) -> None:
    import redis

    store = RedisStore(redis_url, secret=SECRET)
    _fill(store, "app.load", 10)
    client = redis.Redis.from_url(redis_url)
    for index in range(11):
        client.set(f"persistmemo:pm1:app.junk:v:{index}", b"junk")
    wrong = RedisStore(redis_url, secret="not the team's passphrase").check(fix=True)
    assert wrong.wrong_secret
    assert wrong.removed == 0
    assert len(store) == 21
    right = store.check(fix=True)
    assert not right.wrong_secret
    assert right.removed == 11
    assert len(store) == 10
    assert store.check().ok


def test_check_removes_damage_while_verified_entries_outnumber_it(redis_url: str) -> None:
    import redis

    store = RedisStore(redis_url, secret=SECRET)
    load = _fill(store, "app.load", 3)
    client = redis.Redis.from_url(redis_url)
    name = "persistmemo:" + load.key(0)
    stored = client.get(name)
    client.set(name, stored[:-1] + bytes([stored[-1] ^ 1]))  # frame intact, tag fails
    fixed = store.check(fix=True)
    assert not fixed.wrong_secret
    assert fixed.removed == 1
    assert len(store) == 2


def test_the_command_line_reads_and_clears_the_namespace_it_is_given(
    redis_url: str, tmp_path: Path
) -> None:
    team = RedisStore(redis_url, namespace="myteam", secret=SECRET)
    _fill(team, "app.team_load", 2)
    _fill(RedisStore(redis_url, secret=SECRET), "app.default_load", 3)
    in_team = _cli("ls", "--json", "--store", redis_url, "--namespace", "myteam", secret=SECRET)
    assert in_team.returncode == 0, in_team.stderr
    assert [item["function"] for item in json.loads(in_team.stdout)] == ["app.team_load"]
    default = _cli("ls", "--json", "--store", redis_url, secret=SECRET)
    assert [item["function"] for item in json.loads(default.stdout)] == ["app.default_load"]
    before = _cli("--namespace", "myteam", "clear", "--yes", "--store", redis_url, secret=SECRET)
    assert "removed 2 entries" in before.stdout, before.stderr
    assert len(team) == 0
    assert len(RedisStore(redis_url, secret=SECRET)) == 3
    reserved = _cli("ls", "--store", redis_url, "--namespace", "team:pm1", secret=SECRET)
    assert reserved.returncode == 2
    assert reserved.stderr.startswith("persistmemo ls: --namespace: ")
    on_disk = _cli("ls", "--store", str(tmp_path), "--namespace", "myteam", secret=SECRET)
    assert on_disk.returncode == 2
    assert "redis://" in on_disk.stderr


def test_json_output_holds_null_where_a_redis_header_says_nan_or_infinity(
    redis_url: str,
) -> None:
    store = RedisStore(redis_url, secret=SECRET)
    for index, seconds in enumerate((float("nan"), float("inf"), 2.5)):
        key = f"pm1:app.planted:v1:{index:02d}"
        store.write(key, encode_value(index), ttl=None, tag="app.planted", seconds=seconds)

    def refuse(constant: str) -> object:
        raise AssertionError(f"{constant} is not JSON")

    for command in ("ls", "stats"):
        result = _cli(command, "--json", "--store", redis_url, secret=SECRET)
        assert result.returncode == 0, result.stderr
        figures = json.loads(result.stdout, parse_constant=refuse)
        summary = figures[0] if command == "ls" else figures
        # The planted NaN and infinity are left out, as the disk store leaves them out.
        assert summary["compute_seconds"] == 2.5
        assert summary["saved_seconds"] == 0  # no hits recorded: nothing saved
    shown = _cli("show", "app.planted", "--json", "--store", redis_url, secret=SECRET)
    entries = json.loads(shown.stdout, parse_constant=refuse)
    assert sorted(entry["compute_seconds"] or 0 for entry in entries) == [0, 0, 2.5]
