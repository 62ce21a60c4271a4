"""A function memoized in a script (``__main__``) goes to the workers of joblib, Dask and
``ProcessPoolExecutor``: by value where it must (cloudpickle), rebuilt there from its settings,
and every process shares the script's entries. Real scripts, real worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import run_python
from persistmemo import Store
from persistmemo._secret import secret_from_text

SCRIPT = """
    import contextlib, dataclasses, json, os, sys
    from persistmemo import Store, memo

    STORE = Store(os.environ["JOB_STORE"])
    LOG = os.environ["CALL_LOG"]  # read here: a cluster's workers have their own environment

    def logged(x, tag):
        with open(LOG, "a") as log:
            log.write(f"{tag}{x}\\n")

    @memo(store=STORE)
    def scaled(x):
        logged(x, "")
        return x * 10

    @dataclasses.dataclass(frozen=True)
    class Point:  # keyed by its name, which the workers must spell as the script does
        x: int
        y: int

    @memo(store=STORE)
    def summed(point):
        logged(point.x, "p")
        return point.x + point.y

    @contextlib.contextmanager
    def workers(how):
        \"\"\"send(func, items): func(x) for each item, in two worker processes.\"\"\"
        if how == "loky":
            from joblib import Parallel, delayed

            yield lambda func, items: Parallel(n_jobs=2, backend="loky")(
                delayed(func)(x) for x in items
            )
        elif how in ("spawn", "dask"):
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(2, mp_context=context) as pool:
                if how == "spawn":
                    yield lambda func, items: list(pool.map(func, items))
                else:
                    import dask

                    yield lambda func, items: list(dask.compute(
                        *[dask.delayed(func)(x) for x in items], scheduler="processes", pool=pool
                    ))
        elif how == "distributed":
            from distributed import Client

            with Client(os.environ["DASK_SCHEDULER"]) as client:
                yield lambda func, items: client.gather(client.map(func, items, pure=False))

    if __name__ == "__main__":
        how = sys.argv[1]
        {guarded}
        with workers(how) as send:
            first = scaled(0)  # the script computes one key itself
            sent = send(scaled, [0, 1, 2, 3, 1])
            before = scaled.cache_info().hits
            again = [scaled(x) for x in [0, 1, 2, 3]]
            hits = scaled.cache_info().hits - before
            report = {"sent": sent, "again": again, "hits": hits, **extra(send)}
            report["second"] = send(scaled, [3, 2, 1, 0])  # the second run: only hits
            report["points"] = send(summed, [Point(1, 2), Point(3, 4)]) + [summed(Point(3, 4))]
        print(json.dumps(report))
"""

# Under the __main__ guard: a spawn worker that runs the script again does not define it, so
# only a pickle by value (cloudpickle, here joblib's wrapper for executors) can send it.
GUARDED = """
        @memo(store=STORE)
        def guarded(x):
            logged(x, "g")
            return x * 100

        def extra(send):
            if how != "spawn":
                return {}
            from joblib import wrap_non_picklable_objects

            return {"guarded": send(wrap_non_picklable_objects(guarded), [1, 2, 1])}
"""


def run_job(
    tmp_path: Path, how: str, env: dict[str, str] | None = None, script: str = SCRIPT
) -> dict[str, object]:
    job = tmp_path / "job.py"
    job.write_text(textwrap.dedent(script.replace("{guarded}", GUARDED.strip())))
    result = subprocess.run(
        [sys.executable, str(job), how],
        env={
            **os.environ,
            "JOB_STORE": str(tmp_path / "store"),
            "CALL_LOG": str(tmp_path / "calls.log"),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def calls(tmp_path: Path) -> list[str]:
    return sorted((tmp_path / "calls.log").read_text().split())


def check_shared(tmp_path: Path, how: str, env: dict[str, str] | None = None) -> None:
    """Each key computed once across the script and its workers, the script hits what the
    workers stored, and a second run in the workers computes nothing."""
    report = run_job(tmp_path, how, env)
    assert report["sent"] == [0, 10, 20, 30, 10]
    assert report["again"] == [0, 10, 20, 30]
    assert report["hits"] == 4  # the workers' results are the script's entries
    assert report["second"] == [30, 20, 10, 0]
    assert report["points"] == [3, 7, 7]
    by_value = ["g1", "g2"] if how == "spawn" else []
    if how == "spawn":
        assert report["guarded"] == [100, 200, 100]
    assert calls(tmp_path) == sorted(["0", "1", "2", "3", "p1", "p3", *by_value])
    with Store(tmp_path / "store", **_secret_of(env)) as store:
        named = {entry.function for entry in store.entries()}
    assert named == {"job.scaled", "job.summed", *(["job.guarded"] if how == "spawn" else [])}


def _secret_of(env: dict[str, str] | None) -> dict[str, str]:
    secret = (env or {}).get("PERSISTMEMO_SECRET")
    return {} if secret is None else {"secret": secret}


@pytest.mark.slow
def test_joblib_loky_workers_share_a_scripts_entries(tmp_path: Path) -> None:
    pytest.importorskip("joblib")
    check_shared(tmp_path, "loky")


def test_process_pool_workers_share_a_scripts_entries_by_reference_and_by_value(
    tmp_path: Path,
) -> None:
    pytest.importorskip("joblib")  # its wrapper sends the guarded function by value
    check_shared(tmp_path, "spawn")


@pytest.mark.slow
def test_dask_process_workers_share_a_scripts_entries(tmp_path: Path) -> None:
    pytest.importorskip("dask")
    pytest.importorskip("cloudpickle")
    check_shared(tmp_path, "dask")


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """One LocalCluster of two worker processes for the module: (address, secret). The
    workers share the scripts' secret through the environment, as a real cluster's would."""
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    home = tmp_path_factory.mktemp("cluster")
    secret = "cluster passphrase"
    environment = {
        "PERSISTMEMO_SECRET": secret,
        "XDG_CONFIG_HOME": str(home / "config"),
        "PERSISTMEMO_DIR": str(home / "default-store"),
    }
    with pytest.MonkeyPatch.context() as patch:  # inherited by the spawned workers
        for name, value in environment.items():
            patch.setenv(name, value)
        cluster = LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            local_directory=str(home / "scratch"),
        )
    with cluster:
        yield cluster.scheduler_address, secret


@pytest.mark.slow
def test_distributed_workers_share_a_scripts_entries(
    tmp_path: Path, dask_cluster: tuple[str, str]
) -> None:
    address, secret = dask_cluster
    check_shared(tmp_path, "distributed", {"DASK_SCHEDULER": address, "PERSISTMEMO_SECRET": secret})


# A notebook cell: code whose source only the kernel holds (linecache), so a worker cannot
# derive the version; the one the script derived travels with the function.
NOTEBOOK = """
    import json, linecache, os, sys
    from persistmemo import Store, memo

    CELL = '''
    @memo(store=Store(os.environ["JOB_STORE"]))
    def cell(x):
        with open(os.environ["CALL_LOG"], "a") as log:
            log.write(f"{x}\\\\n")
        return x + 0.5
    '''
    NAME = "<ipython-input-7-1a2b3c>"
    linecache.cache[NAME] = (len(CELL), None, CELL.splitlines(True), NAME)
    exec(compile(CELL, NAME, "exec"), globals())

    if __name__ == "__main__":
        from joblib import Parallel, delayed

        sent = Parallel(n_jobs=2, backend="loky")(delayed(cell)(x) for x in [1, 2])
        before = cell.cache_info().hits
        print(json.dumps({"sent": sent, "again": [cell(1), cell(2)],
                          "hits": cell.cache_info().hits - before}))
"""


def test_a_notebook_cells_function_keeps_its_version_in_the_workers(tmp_path: Path) -> None:
    pytest.importorskip("joblib")
    report = run_job(tmp_path, "loky", script=NOTEBOOK)
    assert report == {"sent": [1.5, 2.5], "again": [1.5, 2.5], "hits": 2}
    assert calls(tmp_path) == ["1", "2"]


# --- what a memoized function pickles as, in this process and a fresh one -------------------

MODULE = """
from persistmemo import memo

def make(store, log, **options):
    @memo(store=store, **options)
    def triple(x):
        with open(log, "a") as file:
            file.write(f"{x}\\n")
        return x * 3

    return triple
"""


def by_value(store: object, log: Path, **options: object) -> object:
    """A memoized function that cloudpickle sends by value: its module cannot be imported."""
    namespace: dict[str, object] = {"__name__": "notebook_like"}
    exec(MODULE, namespace)
    return namespace["make"](store, str(log), **options)  # type: ignore[operator]


LOAD = """
    import sys, cloudpickle
    from pathlib import Path

    triple = cloudpickle.loads(Path(sys.argv[1]).read_bytes())
    print(triple(4), triple.version(), triple.cache_info().hits)
"""


def test_a_function_loaded_where_it_was_pickled_is_the_same_function(tmp_path: Path) -> None:
    cloudpickle = pytest.importorskip("cloudpickle")
    store = Store(tmp_path / "store")
    triple = by_value(store, tmp_path / "calls.log", memory=8)
    assert triple(2) == 6  # type: ignore[operator]
    loaded = cloudpickle.loads(cloudpickle.dumps(triple))
    assert loaded(2) == 6
    assert loaded.store is store
    assert triple.cache_info() == loaded.cache_info() == (1, 1)  # type: ignore[attr-defined]
    # One memory tier for both: an invalidation through one is seen by the other.
    assert triple.invalidate(2)  # type: ignore[attr-defined]
    assert loaded(2) == 6
    assert calls(tmp_path) == ["2", "2"]


SCALED_MODULE = """
from persistmemo import memo

SCALE = 1

def make(store):
    @memo(store=store)
    def scaled(x):
        return x * SCALE

    return scaled
"""


def call_pickled(payload: bytes, x: int) -> object:
    """In a worker: what joblib and Dask do with a task's function, sent by value."""
    import cloudpickle

    return cloudpickle.loads(payload)(x)


def test_a_worker_runs_a_functions_new_code_when_it_is_sent_again(tmp_path: Path) -> None:
    cloudpickle = pytest.importorskip("cloudpickle")
    from concurrent.futures import ProcessPoolExecutor

    namespace: dict[str, Any] = {"__name__": "notebook_like"}
    exec(SCALED_MODULE, namespace)
    scaled = namespace["make"](Store(tmp_path / "store"))
    with ProcessPoolExecutor(max_workers=1) as worker:  # one worker, kept for every task
        assert worker.submit(call_pickled, cloudpickle.dumps(scaled), 3).result() == 3
        namespace["SCALE"] = 100  # the notebook cell defining SCALE is run again
        assert scaled(3) == 300
        assert worker.submit(call_pickled, cloudpickle.dumps(scaled), 3).result() == 300
        assert worker.submit(call_pickled, cloudpickle.dumps(scaled), 4).result() == 400


def test_a_fresh_process_hits_with_the_senders_version(tmp_path: Path) -> None:
    cloudpickle = pytest.importorskip("cloudpickle")
    triple = by_value(Store(tmp_path / "store"), tmp_path / "calls.log")
    assert triple(4) == 12  # type: ignore[operator]
    blob = tmp_path / "triple.pickle"
    blob.write_bytes(cloudpickle.dumps(triple))
    output = run_python(LOAD, args=(str(blob),)).stdout.split()
    assert output == ["12", triple.version(), "1"]  # type: ignore[attr-defined]
    assert calls(tmp_path) == ["4"]


def test_a_given_secret_travels_in_the_pickle_but_never_its_passphrase(tmp_path: Path) -> None:
    """A secret= of the script's own must reach the worker, which seals and reads with it:
    it travels as the 32-byte key (docs/security.md), not as the passphrase typed."""
    cloudpickle = pytest.importorskip("cloudpickle")
    triple = by_value(Store(tmp_path / "store", secret="team words"), tmp_path / "calls.log")
    assert triple(4) == 12  # type: ignore[operator]
    data = cloudpickle.dumps(triple)
    assert secret_from_text("team words") in data
    assert b"team words" not in data
    blob = tmp_path / "triple.pickle"
    blob.write_bytes(data)
    assert run_python(LOAD, args=(str(blob),)).stdout.split()[::2] == ["12", "1"]
    assert calls(tmp_path) == ["4"]


def test_a_secret_from_the_environment_travels_as_its_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloudpickle = pytest.importorskip("cloudpickle")
    monkeypatch.setenv("PERSISTMEMO_SECRET", "shared words")
    triple = by_value(Store(tmp_path / "store", secret="shared words"), tmp_path / "calls.log")
    assert triple(4) == 12  # type: ignore[operator]
    data = cloudpickle.dumps(triple)
    assert secret_from_text("shared words") not in data
    blob = tmp_path / "triple.pickle"
    blob.write_bytes(data)
    assert run_python(LOAD, args=(str(blob),)).stdout.split()[::2] == ["12", "1"]
    monkeypatch.setenv("PERSISTMEMO_SECRET", "other words")
    refused = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LOAD), str(blob)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "SecretUnavailable" in refused.stderr
    assert "PERSISTMEMO_SECRET holds another secret" in refused.stderr


def test_a_store_without_a_secret_sends_none(tmp_path: Path) -> None:
    cloudpickle = pytest.importorskip("cloudpickle")
    store = Store(tmp_path / "store")
    triple = by_value(store, tmp_path / "calls.log")
    assert triple(4) == 12  # type: ignore[operator]
    assert store.secret not in cloudpickle.dumps(triple)  # the worker reads the key file


def test_a_store_pickles_as_its_settings(tmp_path: Path) -> None:
    import pickle

    store = Store(tmp_path / "store", strict=True, lease=3.0, size_limit=2**20)
    assert pickle.loads(pickle.dumps(store)) is store  # in the process that pickled it
    settings = store.settings()
    assert settings["directory"] == str(tmp_path / "store")
    assert (settings["strict"], settings["lease"], settings["size_limit"]) == (True, 3.0, 2**20)
    code = f"""
        import pickle, sys
        store = pickle.loads(bytes.fromhex(sys.argv[1]))
        again = pickle.loads(bytes.fromhex(sys.argv[1]))
        print(store is again, store.settings() == {settings!r})
    """
    output = run_python(code, args=(pickle.dumps(store).hex(),)).stdout.split()
    assert output == ["True", "True"]  # one store per settings in the receiving process


def test_a_function_named_by_the_registry_shares_its_store_with_one_received(
    tmp_path: Path,
) -> None:
    import pickle

    path = tmp_path / "store"
    code = """
        import pickle, sys
        from persistmemo import memo

        @memo(store=sys.argv[2])
        def local(x):
            return x

        received = pickle.loads(bytes.fromhex(sys.argv[1]))
        print(received is local.store)
    """
    data = pickle.dumps(Store(path)).hex()
    assert run_python(code, args=(data, str(path))).stdout.split() == ["True"]


REDIS_SCRIPT = """
    import json, os
    from joblib import Parallel, delayed
    from persistmemo import RedisStore, memo

    @memo(store=RedisStore(os.environ["REDIS_URL"], namespace="workers"))
    def squared(x):
        with open(os.environ["CALL_LOG"], "a") as log:
            log.write(f"{x}\\n")
        return x * x

    if __name__ == "__main__":
        sent = Parallel(n_jobs=2, backend="loky")(delayed(squared)(x) for x in [1, 2, 3, 2])
        before = squared.cache_info().hits
        again = [squared(x) for x in [1, 2, 3]]
        print(json.dumps({"sent": sent, "again": again,
                          "hits": squared.cache_info().hits - before}))
"""


@pytest.mark.slow
def test_a_redis_store_function_works_in_loky_workers(tmp_path: Path, redis_url: str) -> None:
    pytest.importorskip("joblib")
    pytest.importorskip("redis")
    report = run_job(tmp_path, "loky", {"REDIS_URL": redis_url}, script=REDIS_SCRIPT)
    assert report == {"sent": [1, 4, 9, 4], "again": [1, 4, 9], "hits": 3}
    assert calls(tmp_path) == ["1", "2", "3"]


def test_a_store_without_settings_says_it_cannot_be_sent() -> None:
    import pickle

    from memory_backend import MemoryBackend
    from persistmemo.stores import SealedStore

    store = SealedStore(MemoryBackend())
    with pytest.raises(TypeError, match="cannot be sent to another process"):
        pickle.dumps(store)
