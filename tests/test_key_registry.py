"""Keys for types you do not own: register_key, and the scikit-learn and scipy.sparse entries."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.feature_selection import SelectKBest, f_classif, f_regression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC

from conftest import run_python
from golden_estimators import Chain, Scale
from persistmemo import Store, memo, register_key
from persistmemo._keys.canonical import encode
from persistmemo.errors import UnsupportedArgument, UnsupportedType


class Reading:
    """A type "from another library": no hook, no encoding of its own."""

    def __init__(self, value: float, unit: str = "C") -> None:
        self.value = value
        self.unit = unit


class Other:
    def __init__(self, value: float) -> None:
        self.value = value


class Hooked(Reading):
    def __persistmemo_key__(self) -> object:
        return "hooked"


@pytest.fixture
def registered() -> Iterator[list[type | str]]:
    """Registrations made by a test, removed after it (the registry is global)."""
    made: list[type | str] = []
    yield made
    for target in made:
        register_key(target, None)


def register(made: list[type | str], target: type | str, function: Any) -> None:
    register_key(target, function)
    made.append(target)


# --- register_key ---------------------------------------------------------------------------


def test_a_registered_type_is_keyed_by_what_its_function_returns(registered: list[Any]) -> None:
    register(registered, Reading, lambda reading: (reading.value, reading.unit))
    assert encode(Reading(1.5)) == encode(Reading(1.5))
    assert encode(Reading(1.5)) != encode(Reading(1.5, "F"))
    assert encode(Reading(1.5)) != encode(Reading(2.0))


def test_two_types_answering_the_same_value_never_share_a_key(registered: list[Any]) -> None:
    register(registered, Reading, lambda reading: reading.value)
    register(registered, Other, lambda other: other.value)
    assert encode(Reading(1.0)) != encode(Other(1.0))


def test_a_type_registered_by_its_qualified_name_is_keyed(registered: list[Any]) -> None:
    register(registered, f"{__name__}.Other", lambda other: other.value)
    assert encode(Other(1.0)) == encode(Other(1.0)) != encode(Other(2.0))


def test_a_public_path_names_a_class_defined_in_a_private_module(registered: list[Any]) -> None:
    # SVC is defined in sklearn.svm._classes; users write the path they import it from. The
    # registration wins over the built-in estimator entry.
    register(registered, "sklearn.svm.SVC", lambda model: "every SVC is one")
    assert encode(SVC(C=1.0)) == encode(SVC(C=2.0))


def test_a_registration_by_name_imports_nothing_and_applies_once_loaded(tmp_path: Path) -> None:
    result = run_python(
        """
        import sys
        from persistmemo import register_key
        from persistmemo._keys.canonical import encode
        register_key("sklearn.svm.SVC", lambda model: model.C)
        encode([1, "x"])
        assert "sklearn" not in sys.modules and "scipy" not in sys.modules
        from sklearn.svm import SVC
        assert encode(SVC(C=1.0, kernel="rbf")) == encode(SVC(C=1.0, kernel="linear"))
        assert encode(SVC(C=1.0)) != encode(SVC(C=2.0))
        print("ok")
        """
    )
    assert result.stdout.strip() == "ok"


def test_a_registration_covers_subclasses(registered: list[Any]) -> None:
    class Fahrenheit(Reading):
        pass

    register(registered, Reading, lambda reading: reading.value)
    assert encode(Fahrenheit(1.0)) != encode(Reading(1.0))  # the class is in the key
    assert encode(Fahrenheit(1.0)) == encode(Fahrenheit(1.0)) != encode(Fahrenheit(2.0))


def test_the_hook_still_wins_for_your_own_types(registered: list[Any]) -> None:
    register(registered, Reading, lambda reading: reading.value)
    assert encode(Hooked(1.0)) == encode(Hooked(2.0))  # keyed by its hook: "hooked"

    class HookedScaler(StandardScaler):
        def __persistmemo_key__(self) -> object:
            return "mine"

    assert encode(HookedScaler(with_mean=True)) == encode(HookedScaler(with_mean=False))


def test_a_type_met_before_its_registration_is_keyed_by_it_after(registered: list[Any]) -> None:
    with pytest.raises(UnsupportedType):
        encode(Other(1.0))
    register(registered, Other, lambda other: other.value)
    assert encode(Other(1.0)) != encode(Other(2.0))
    register_key(Other, None)
    with pytest.raises(UnsupportedType):
        encode(Other(1.0))


def test_a_registered_function_that_raises_names_the_parameter(
    registered: list[Any], store: Store
) -> None:
    def broken(reading: Reading) -> object:
        raise ValueError("no reading")

    register(registered, Reading, broken)

    @memo(store=store)
    def convert(sample: Reading) -> float:
        return sample.value

    with pytest.raises(UnsupportedArgument) as raised:
        convert(Reading(1.0))
    message = str(raised.value)
    assert "argument 'sample' of" in message
    assert "convert()" in message
    assert "broken() raised ValueError: no reading" in message
    assert isinstance(raised.value, TypeError)


def test_register_key_refuses_what_it_cannot_take() -> None:
    for exact in (int, dict, np.ndarray, pd.DataFrame, __import__("datetime").date):
        with pytest.raises(ValueError, match="has a key encoding of persistmemo's own"):
            register_key(exact, str)
    with pytest.raises(TypeError, match="callable"):
        register_key(Reading, "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"module\.QualName"):
        register_key("Reading", str)
    with pytest.raises(TypeError, match=r"module\.QualName"):
        register_key(Reading(1.0), str)  # type: ignore[arg-type]


def test_a_type_without_an_encoding_can_be_registered_replaced_and_removed_after_use() -> None:
    with pytest.raises(UnsupportedType):
        encode(range(3))
    register_key(range, lambda r: [r.start, r.stop, r.step])
    try:
        first = encode(range(3))
        register_key(range, list)  # replaced: keyed by the new function
        assert encode(range(3)) != first
    finally:
        register_key(range, None)
    with pytest.raises(UnsupportedType):
        encode(range(3))


def test_editing_a_key_function_changes_the_keys_it_makes(registered: list[Any]) -> None:
    register(registered, Reading, lambda r: r.value)
    before = encode(Reading(1.0))
    register(registered, Reading, lambda r: -r.value)  # another function: another key
    assert encode(Reading(1.0)) != before
    register(registered, Reading, lambda r: r.value)
    assert encode(Reading(1.0)) == before


def test_numpys_no_value_default_is_keyed() -> None:
    assert encode(np._NoValue) == encode(np._NoValue) != encode(None)


def test_the_built_in_entries_import_neither_scikit_learn_nor_scipy() -> None:
    result = run_python(
        """
        import sys, datetime
        import numpy
        from persistmemo._keys.canonical import encode
        encode([numpy.arange(3), datetime.date(2026, 1, 1), {"a": (1, 2.0)}])
        print("sklearn" in sys.modules, "scipy" in sys.modules)
        """
    )
    assert result.stdout.split() == ["False", "False"]


# --- scikit-learn estimators ----------------------------------------------------------------


def test_estimators_with_equal_parameters_share_a_key_and_others_do_not() -> None:
    assert encode(StandardScaler()) == encode(StandardScaler())
    assert encode(StandardScaler()) != encode(StandardScaler(with_mean=False))
    assert encode(Scale(factor=1.0)) != encode(StandardScaler())


def test_estimators_inside_parameters_are_keyed_by_their_own_parameters() -> None:
    first = Chain(first=Scale(factor=1.0), second=Pipeline([("pca", PCA(2))]))
    same = Chain(first=Scale(factor=1.0), second=Pipeline([("pca", PCA(2))]))
    other = Chain(first=Scale(factor=1.0), second=Pipeline([("pca", PCA(3))]))
    assert encode(first) == encode(same)
    assert encode(first) != encode(other)


def test_a_fitted_estimator_is_keyed_by_what_it_learned() -> None:
    data = np.arange(6.0).reshape(3, 2)
    unfitted = Scale()
    assert encode(Scale().fit(data)) == encode(Scale().fit(data.copy()))
    assert encode(Scale().fit(data)) != encode(Scale().fit(data + 1))
    assert encode(Scale().fit(data)) != encode(unfitted)


class Lookup(Scale):
    """Keeps what it learned in a private attribute, as TfidfVectorizer (``_tfidf``) and the
    neighbour models (``_fit_X``) do."""

    def fit(self, X: Any, y: Any = None) -> Lookup:
        self._table = {str(row): index for index, row in enumerate(np.asarray(X).tolist())}
        return self


def test_private_learned_state_is_part_of_a_fitted_estimators_key() -> None:
    first, second = Lookup().fit([[1.0], [2.0]]), Lookup().fit([[2.0], [1.0]])
    assert encode(first) != encode(second)
    assert encode(first) == encode(Lookup().fit([[1.0], [2.0]]))


def test_sklearn_models_with_private_learned_state_are_keyed_apart() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.neighbors import KNeighborsClassifier

    X = [[0.0], [1.0], [2.0]]
    assert encode(KNeighborsClassifier(1).fit(X, [0, 1, 0])) != encode(
        KNeighborsClassifier(1).fit(X, [1, 0, 1])
    )
    vocabulary = {"apple": 0, "pear": 1}
    a = TfidfVectorizer(vocabulary=vocabulary).fit(["apple pear", "apple"])
    b = TfidfVectorizer(vocabulary=vocabulary).fit(["apple pear", "pear"])
    assert encode(a) != encode(b)  # the weights (idf_) live in the private _tfidf
    assert encode(a) == encode(TfidfVectorizer(vocabulary=vocabulary).fit(["apple pear", "apple"]))


class Helper:
    def __init__(self, weights: list[float]) -> None:
        self.weights = weights


class WithHelper(Scale):
    def fit(self, X: Any, y: Any = None) -> WithHelper:
        self._helper = Helper([float(len(X))])
        return self


class WithLock(Scale):
    def fit(self, X: Any, y: Any = None) -> WithLock:
        import threading

        self._guard = threading.Lock()
        return self


def test_state_without_a_key_encoding_is_keyed_by_its_pickle_or_refused() -> None:
    assert encode(WithHelper().fit([1])) == encode(WithHelper().fit([2]))  # same pickle
    assert encode(WithHelper().fit([1])) != encode(WithHelper().fit([1, 2]))
    with pytest.raises(UnsupportedType, match=r"attribute '_guard'.*neither keyed nor pickled"):
        encode(WithLock().fit([1]))


TRANSFORMER = """
from golden_estimators import Scale

class Doubler(Scale):
    def transform(self, X):
        return [x * {factor} for x in X]
"""


def test_editing_your_own_estimators_code_changes_its_key() -> None:
    def defined(factor: int) -> Any:
        namespace: dict[str, Any] = {"__name__": "notebook_cell"}
        exec(TRANSFORMER.format(factor=factor), namespace)
        return namespace["Doubler"]()

    assert encode(defined(2)) == encode(defined(2))
    assert encode(defined(2)) != encode(defined(10))
    # Installed classes are keyed by their parameters: their release is in the version.
    assert encode(StandardScaler()) == encode(StandardScaler())


def test_an_estimator_fitted_on_a_frame_keys_its_feature_names() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    renamed = frame.rename(columns={"b": "c"})
    assert encode(StandardScaler().fit(frame)) == encode(StandardScaler().fit(frame.copy()))
    assert encode(StandardScaler().fit(frame)) != encode(StandardScaler().fit(renamed))


def test_set_output_is_part_of_an_estimators_key() -> None:
    # It changes what transform returns (a DataFrame), and a Pipeline's clone keeps it.
    assert encode(StandardScaler().set_output(transform="pandas")) != encode(StandardScaler())


def test_function_parameters_are_keyed_by_name_code_and_captured_values() -> None:
    assert encode(SelectKBest(f_classif)) == encode(SelectKBest(f_classif))
    assert encode(SelectKBest(f_classif)) != encode(SelectKBest(f_regression))

    def scaled_by(factor: float) -> Any:
        return lambda x: x * factor

    assert encode(FunctionTransformer(scaled_by(2))) == encode(FunctionTransformer(scaled_by(2)))
    assert encode(FunctionTransformer(scaled_by(2))) != encode(FunctionTransformer(scaled_by(3)))
    assert encode(FunctionTransformer(np.log1p)) != encode(FunctionTransformer(np.expm1))
    rounding = functools.partial(np.round, decimals=2)
    assert encode(FunctionTransformer(rounding)) != encode(
        FunctionTransformer(functools.partial(np.round, decimals=3))
    )


def test_random_states_are_keyed_by_their_state() -> None:
    def seeded(seed: int) -> PCA:
        return PCA(2, random_state=np.random.RandomState(seed))

    assert encode(seeded(0)) == encode(seeded(0)) != encode(seeded(1))
    generator = PCA(2, random_state=np.random.default_rng(0))
    assert encode(generator) != encode(PCA(2, random_state=np.random.default_rng(1)))


# --- scipy.sparse ---------------------------------------------------------------------------

DENSE = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])


@pytest.mark.parametrize("build", [sp.csr_matrix, sp.csc_matrix, sp.coo_matrix, sp.csr_array])
def test_sparse_matrices_of_equal_content_share_a_key(build: Any) -> None:
    assert encode(build(DENSE)) == encode(build(DENSE.copy()))
    changed = DENSE.copy()
    changed[2, 2] = 4.0
    assert encode(build(DENSE)) != encode(build(changed))
    moved = DENSE.copy()
    moved[2, 2], moved[2, 1] = 0.0, 3.0
    assert encode(build(DENSE)) != encode(build(moved))
    assert encode(build(DENSE)) != encode(build(DENSE.astype(np.float32)))


def test_sparse_formats_shapes_and_kinds_are_keyed_apart() -> None:
    keys = [
        encode(sp.csr_matrix(DENSE)),
        encode(sp.csc_matrix(DENSE)),
        encode(sp.coo_matrix(DENSE)),
        encode(sp.csr_array(DENSE)),
        encode(sp.csr_matrix(np.vstack([DENSE, np.zeros(3)]))),
        encode(sp.bsr_matrix(DENSE)),
        encode(sp.dia_matrix(DENSE)),
        encode(DENSE),
    ]
    assert len(set(keys)) == len(keys)


def test_a_dok_matrix_is_keyed_whatever_order_it_was_filled_in() -> None:
    forward = sp.dok_array((3, 3))
    backward = sp.dok_array((3, 3))
    for row, column in [(0, 1), (1, 0), (2, 2)]:
        forward[row, column] = DENSE[row, column]
    for row, column in [(2, 2), (1, 0), (0, 1)]:
        backward[row, column] = DENSE[row, column]
    assert encode(forward) == encode(backward) == encode(sp.dok_array(DENSE))
    assert encode(sp.lil_matrix(DENSE)) == encode(sp.lil_matrix(DENSE))


def test_a_large_sparse_matrix_is_keyed_by_digests_not_copied() -> None:
    big = sp.random(2000, 2000, density=0.05, format="csr", random_state=0)
    assert len(encode(big)) < 400
    tweaked = big.copy()
    tweaked.data[-1] += 1
    assert encode(big) != encode(tweaked)


def test_a_sparse_subclass_from_outside_scipy_is_refused() -> None:
    class Tagged(sp.csr_matrix):
        pass

    with pytest.raises(UnsupportedType, match="Tagged"):
        encode(Tagged(DENSE))


def test_sparse_arguments_are_keyed_in_a_memoized_call(store: Store) -> None:
    calls = []

    @memo(store=store)
    def total(matrix: Any) -> float:
        calls.append(1)
        return float(matrix.sum())

    assert total(sp.csr_matrix(DENSE)) == total(sp.csr_matrix(DENSE.copy())) == 6.5
    assert total(sp.coo_matrix(DENSE)) == 6.5
    assert len(calls) == 2


def test_a_key_function_returning_an_unkeyable_value_is_named_in_the_error(
    tmp_path: Path,
) -> None:
    class Opaque:
        pass

    def opaque_key(value: Opaque) -> object:
        return object()

    register_key(Opaque, opaque_key)
    try:

        @memo(store=Store(tmp_path / "store"))
        def use(thing: Opaque) -> int:
            return 1

        with pytest.raises(TypeError, match=r"Opaque.*opaque_key\(\) returned a value"):
            use(Opaque())
    finally:
        register_key(Opaque, None)


class Vocabulary:
    """A fitted helper with no key encoding of its own, holding a set of strings."""

    def __init__(self, words: list[str]) -> None:
        self.words = set(words)


class WithVocabulary(Scale):
    def fit(self, X: Any, y: Any = None) -> WithVocabulary:
        self._vocabulary = Vocabulary([str(x) for x in X])
        return self


@pytest.mark.slow
def test_a_helper_object_in_an_estimators_state_is_keyed_the_same_in_every_process() -> None:
    code = """
        import sys
        sys.path.insert(0, sys.argv[1])
        from test_key_registry import WithVocabulary
        from persistmemo._keys.canonical import encode
        print(encode(WithVocabulary().fit([f"word{n}" for n in range(40)])).hex())
    """
    tests = str(Path(__file__).parent)
    keys = {
        run_python(code, args=(tests,), env={"PYTHONHASHSEED": str(seed)}).stdout.strip()
        for seed in (1, 2)
    }
    assert len(keys) == 1  # the set is keyed by its content, not a pickle's order


STATIC_TRANSFORMER = """
from golden_estimators import Scale

class Doubler(Scale):
    FACTOR = {factor}

    @staticmethod
    def helper(x):
        return x * {factor}

    @property
    def scale(self):
        return {factor}
"""


def test_class_attributes_static_methods_and_properties_of_your_estimator_are_keyed() -> None:
    def defined(factor: int) -> Any:
        namespace: dict[str, Any] = {"__name__": "notebook_cell"}
        exec(STATIC_TRANSFORMER.format(factor=factor), namespace)
        return namespace["Doubler"]()

    assert encode(defined(2)) == encode(defined(2))
    assert encode(defined(2)) != encode(defined(3))


def test_an_estimator_holding_a_cycle_is_keyed_or_refused_not_a_recursion_error() -> None:
    holder = Lookup().fit([[1.0]])
    loop: list[object] = []
    loop.append(loop)
    holder._loop = loop  # type: ignore[attr-defined]
    assert encode(holder) == encode(holder)


def test_key_functions_without_a_name_or_bound_to_an_object_are_keyed_apart(
    registered: list[Any],
) -> None:
    import operator

    class Projection:
        def __init__(self, order: str) -> None:
            self.order = order

        def key(self, reading: Reading) -> list[float]:
            return [reading.value] if self.order == "v" else [-reading.value]

    register(registered, Reading, operator.attrgetter("value"))
    assert encode(Reading(1.0)) == encode(Reading(1.0))
    register(registered, Reading, functools.partial(lambda r, k: r.value * k, k=2))
    assert encode(Reading(1.0)) != encode(Reading(2.0))
    register(registered, Reading, Projection("v").key)
    first = encode(Reading(1.0))
    register(registered, Reading, Projection("n").key)
    assert encode(Reading(-1.0)) != first  # same answer, another function's object
