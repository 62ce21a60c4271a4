"""persistmemo.Memory stands in for joblib.Memory: scikit-learn's pipelines and clustering
cache through it, and its controls behave as joblib's."""

from __future__ import annotations

import copy
import datetime as dt
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.cluster import AgglomerativeClustering, FeatureAgglomeration
from sklearn.cluster._agglomerative import ward_tree
from sklearn.datasets import load_iris
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import kneighbors_graph
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_memory

from conftest import run_python
from counted_estimators import CountedScale
from persistmemo import Memory, RedisStore, Store

# --- the controls ---------------------------------------------------------------------------


def test_a_cached_function_computes_once_per_arguments(tmp_path: Path) -> None:
    calls = []

    def square(x: int, verbose: bool = False) -> int:
        calls.append(x)
        return x * x

    memory = Memory(tmp_path / "cache")
    cached = memory.cache(square, ignore=["verbose"])
    assert [cached(3), cached(3, verbose=True), cached(4)] == [9, 9, 16]
    assert calls == [3, 4]
    assert cached.__name__ == "square"
    assert cached.func is square
    assert memory.cache(square, ignore=["verbose"]) is cached  # Pipeline asks on every fit


def test_cache_without_a_function_is_a_decorator(tmp_path: Path) -> None:
    memory = Memory(str(tmp_path / "cache"), verbose=10)

    @memory.cache(ignore=["label"], verbose=0)
    def double(x: int, label: str = "") -> int:
        return 2 * x

    assert double(2, label="a") == double(2, label="b") == 4
    assert double.ignore == ["label"]
    assert double.check_call_in_cache(2)
    assert not double.check_call_in_cache(3)


def test_call_and_shelve_returns_a_picklable_reference(tmp_path: Path) -> None:
    calls = []

    def triple(x: int) -> list[int]:
        calls.append(x)
        return [x] * 3

    cached = Memory(tmp_path / "cache").cache(triple)
    shelved = cached.call_and_shelve(2)
    assert shelved.get() == [2, 2, 2]
    again = pickle.loads(pickle.dumps(shelved))
    assert again.get() == [2, 2, 2]
    assert cached.call_and_shelve(2).get() == [2, 2, 2]
    assert calls == [2]
    shelved.clear()
    with pytest.raises(KeyError):
        shelved.get()
    assert "CachedResult" in repr(shelved)


def test_call_runs_the_function_again_and_stores_the_new_result(tmp_path: Path) -> None:
    calls = []

    def count(x: int) -> int:
        calls.append(x)
        return len(calls)

    # `calls` is read by the function: ignored, or its content would be part of the key.
    cached = Memory(tmp_path / "cache").cache(count, ignore=["calls"])
    assert cached(1) == 1
    result, metadata = cached.call(1)
    assert (result, metadata, cached(1)) == (2, {}, 2)


def test_clear_removes_a_functions_results_and_memory_clear_every_result(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "cache")
    first = memory.cache(lambda x: x + 1)
    second = memory.cache(abs)
    third = memory.cache(np.square)
    first(1), second(-1), second(-2), third(3)
    assert third(3) == 9
    assert len(memory.store) == 4
    third.clear()
    assert len(memory.store) == 3  # type: ignore[arg-type]
    second.clear(warn=False)
    assert len(memory.store) == 1  # type: ignore[arg-type]
    memory.clear(warn=False)
    assert len(memory.store) == 0  # type: ignore[arg-type]


def test_reduce_size_keeps_the_newest_entries_within_the_limits(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "cache")
    cached = memory.cache(lambda n: b"x" * n)
    for size in (3000, 3001, 3002, 3003):
        cached(size)
    memory.reduce_size()  # no limit: nothing to do
    assert len(memory.store) == 4  # type: ignore[arg-type]
    memory.reduce_size(items_limit=3)
    assert len(memory.store) == 3  # type: ignore[arg-type]
    memory.reduce_size(bytes_limit="7K")
    assert len(memory.store) == 2  # type: ignore[arg-type]
    assert cached.check_call_in_cache(3003)
    memory.reduce_size(age_limit=dt.timedelta(seconds=0))
    assert len(memory.store) == 0  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        memory.reduce_size(age_limit=dt.timedelta(seconds=-1))


def test_a_memory_without_location_caches_nothing(tmp_path: Path) -> None:
    calls = []
    memory = Memory(None)
    cached = memory.cache(lambda x: calls.append(x) or x)
    assert cached(1) == cached(1) == 1
    assert calls == [1, 1]
    shelved = cached.call_and_shelve(2)
    assert shelved.get() == 2
    shelved.clear()
    with pytest.raises(KeyError):
        shelved.get()
    assert not cached.check_call_in_cache(1)
    memory.clear()
    memory.reduce_size(items_limit=1)
    assert memory.location is None
    assert repr(memory) == "Memory(location=None)"


def test_mmap_mode_r_returns_read_only_maps(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "cache", mmap_mode="r")
    cached = memory.cache(lambda n: np.arange(n, dtype=np.float64))
    cached(200_000)
    served = cached(200_000)
    assert not served.flags.writeable
    assert memory.cache(lambda n: np.ones(n), mmap_mode="c")(10).flags.writeable
    with pytest.raises(ValueError, match="mmap_mode"):
        Memory(tmp_path, mmap_mode="rw")


def test_a_memory_pickles_copies_and_keys_as_its_location(tmp_path: Path) -> None:
    memory = Memory(str(tmp_path / "cache"))
    assert copy.deepcopy(memory) is memory  # sklearn's clone() deep-copies parameters
    again = pickle.loads(pickle.dumps(memory))
    assert again.location == memory.location
    assert repr(again) == f"Memory(location={tmp_path / 'cache'})"
    # Over a store: the same store again, with its options (secret, strict), not a path.
    given = Store(tmp_path / "other", secret="pipeline secret", strict=True)
    over_store = pickle.loads(pickle.dumps(Memory(given)))
    assert over_store.store.directory == given.directory
    assert (over_store.store.secret, over_store.store.strict) == (given.secret, True)
    over_redis = pickle.loads(pickle.dumps(Memory("redis://localhost:1/0")))
    assert isinstance(over_redis.store, RedisStore)


def test_a_memory_takes_a_store_or_a_url(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    assert Memory(store).store is store
    assert isinstance(Memory("redis://localhost:1/0").store, RedisStore)
    with pytest.raises(ValueError, match="backend"):
        Memory(tmp_path, backend="s3")
    (tmp_path / "a file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        Memory(tmp_path / "a file")
    with pytest.raises(TypeError, match=r"Memory\(location=...\) takes a directory"):
        Memory(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ignore=\['x'\]"):
        Memory(tmp_path).cache(abs, ignore="x")
    with pytest.raises(TypeError, match="cache_validation_callback"):
        Memory(tmp_path).cache(abs, cache_validation_callback=lambda metadata: True)


def test_scikit_learn_takes_it_as_a_memory(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "cache")
    assert check_memory(memory) is memory


# --- scikit-learn ---------------------------------------------------------------------------


def counted_fits(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_pipeline_fitted_again_reads_its_transformers_from_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fits = tmp_path / "fits"
    monkeypatch.setenv("COUNTED_FITS", str(fits))
    X, y = load_iris(return_X_y=True)
    memory = Memory(tmp_path / "cache")

    def pipeline(factor: float = 2.0) -> Pipeline:
        steps = [("scale", CountedScale(factor)), ("model", LogisticRegression(max_iter=500))]
        return Pipeline(steps, memory=memory)

    fitted = pipeline().fit(X, y)
    assert counted_fits(fits) == 1
    again = pipeline().fit(X, y)
    assert counted_fits(fits) == 1
    assert np.array_equal(fitted.predict_proba(X), again.predict_proba(X))
    assert np.array_equal(fitted.named_steps["scale"].mean_, again.named_steps["scale"].mean_)
    pipeline(factor=3.0).fit(X, y)  # another parameter: computed
    pipeline().fit(X[:100], y[:100])  # other data: computed
    assert counted_fits(fits) == 3


PIPELINE_RUN = """
import json, sys, time
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from counted_estimators import CountedScale
from persistmemo import Memory

X, y = make_classification(n_samples=3000, n_features=200, random_state=0)
steps = [
    ("scale", CountedScale(2.0)),
    ("pca", PCA(40, svd_solver="full", random_state=0)),
    ("model", LogisticRegression(max_iter=300)),
]
pipeline = Pipeline(steps, memory=Memory(sys.argv[1]))
started = time.perf_counter()
pipeline.fit(X, y)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "score": pipeline.score(X, y)}))
"""


@pytest.mark.slow
def test_a_pipeline_fitted_in_a_new_process_hits(tmp_path: Path) -> None:
    fits = tmp_path / "fits"
    # One BLAS thread: on a small shared machine, threads fighting make the timing noise.
    single = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")
    environment = {"COUNTED_FITS": str(fits), **single}
    cache = str(tmp_path / "cache")
    first = json.loads(run_python(PIPELINE_RUN, args=(cache,), env=environment).stdout)
    assert counted_fits(fits) == 1
    second = json.loads(run_python(PIPELINE_RUN, args=(cache,), env=environment).stdout)
    assert counted_fits(fits) == 1  # the second process read both steps from the store
    assert second["score"] == first["score"]
    print(f"first fit {first['seconds']:.3f} s, second fit (new process) {second['seconds']:.3f} s")


def test_grid_search_clones_a_pipeline_with_its_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fits = tmp_path / "fits"
    monkeypatch.setenv("COUNTED_FITS", str(fits))
    X, y = load_iris(return_X_y=True)
    steps = [("scale", CountedScale()), ("pca", PCA(2)), ("model", LogisticRegression())]
    pipeline = Pipeline(steps, memory=Memory(tmp_path / "cache"))
    assert clone(pipeline).memory is pipeline.memory
    search = GridSearchCV(pipeline, {"model__C": [0.1, 1.0, 10.0]}, cv=3)
    search.fit(X, y)
    # One fit of the scaler per fold and one on all the data: the C values share them.
    assert counted_fits(fits) == 3 + 1


def test_agglomerative_clustering_caches_its_tree(tmp_path: Path) -> None:
    rng = np.random.RandomState(0)
    X = rng.rand(300, 3)
    connectivity = kneighbors_graph(X, 10, include_self=False)  # a csr matrix: keyed too
    memory = Memory(tmp_path / "cache")

    def cluster(memory: Memory | None) -> Any:
        model = AgglomerativeClustering(n_clusters=4, connectivity=connectivity, memory=memory)
        return model.fit(X).labels_

    plain = cluster(None)
    assert np.array_equal(cluster(memory), plain)
    assert np.array_equal(cluster(memory), plain)
    tree = memory.cache(ward_tree).memoized
    assert tree.cache_info() == (1, 1)
    reduced = FeatureAgglomeration(n_clusters=2, memory=memory).fit(X)
    assert FeatureAgglomeration(n_clusters=2, memory=memory).fit(X).labels_.tolist() == (
        reduced.labels_.tolist()
    )
    assert tree.cache_info() == (2, 2)


def test_a_librarys_function_is_versioned_by_its_release(tmp_path: Path) -> None:
    # A stored fitted transformer was made by the scikit-learn that computed it: an upgrade
    # is a miss rather than an old object served to the new code.
    memory = Memory(tmp_path / "cache")
    X, y = load_iris(return_X_y=True)
    Pipeline([("pca", PCA(2)), ("model", LogisticRegression())], memory=memory).fit(X, y)
    (entry,) = memory.store.entries()  # type: ignore[union-attr]
    assert entry.version == f"sklearn-{sklearn.__version__}"
    assert memory.cache(np.square).memoized.version() == f"numpy-{np.__version__}"
    assert memory.cache(abs).memoized.version() == "builtin"

    def mine(x: int) -> int:
        return x

    assert memory.cache(mine).memoized.version_info()["pinned"] is False


def test_builtins_and_numpy_functions_with_no_value_defaults_are_cached(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "cache")
    assert memory.cache(str.upper)("a") == "A"
    assert memory.cache(dict)() == {}
    total = memory.cache(np.sum)  # keepdims=np._NoValue by default
    assert total(np.arange(3)) == total(np.arange(3)) == 3
    assert total.call_and_shelve(np.arange(3)).get() == 3


def test_reduce_size_takes_joblibs_sizes_and_names_what_it_cannot(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "cache")
    memory.cache(abs)(-1)
    memory.reduce_size(bytes_limit="10MB")
    memory.reduce_size(bytes_limit=1.5e6)
    assert memory.cache(abs).check_call_in_cache(-1)
    with pytest.raises(ValueError, match="bytes_limit"):
        memory.reduce_size(bytes_limit="lots")
    with pytest.raises(TypeError, match="age_limit"):
        memory.reduce_size(age_limit=3600)  # type: ignore[arg-type]
