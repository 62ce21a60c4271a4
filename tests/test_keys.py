"""Keys: canonical, type-tagged, stable across processes and fixed by golden vectors."""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime as dt
import decimal
import functools
import json
import math
import pathlib
import random
import sqlite3
import string
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from conftest import run_python
from golden_cases import GOLDEN_IDENTITY, GOLDEN_VERSION, namespace
from golden_types import Color, Keyed, Labelled, Pair, Point, Stamp
from persistmemo import KEY_FORMAT, Store, memo
from persistmemo._keys.canonical import encode, encode_arguments
from persistmemo._keys.layout import KeyBuilder
from persistmemo.errors import UnsupportedType

GOLDEN = json.loads((Path(__file__).parent / "golden_keys.json").read_text())
PANDAS_MAJOR = int(pd.__version__.split(".")[0])


def golden_key(value: object) -> str:
    return KeyBuilder(GOLDEN_IDENTITY, GOLDEN_VERSION).key(encode_arguments([value]))


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("vector", GOLDEN["vectors"], ids=lambda v: v["expression"][:40])
def test_golden_vectors_hold_fixed(vector: dict[str, Any]) -> None:
    # A failure here means the key encoding changed: every stored entry would be orphaned.
    # If that is deliberate, bump KEY_FORMAT and regenerate the vectors.
    assert GOLDEN["key_format"] == KEY_FORMAT
    value = eval(vector["expression"], namespace())
    # Some expressions build another value under pandas 2 (a string parsed to seconds, not
    # microseconds; labels of object dtype, not str): those have that value's vector too.
    vector = vector.get(f"pandas {PANDAS_MAJOR}", vector)
    # An estimator class of your own is keyed by its methods' bytecode, which each Python
    # minor version compiles differently: those vectors hold one variant per version.
    vector = vector.get(f"python {sys.version_info[0]}.{sys.version_info[1]}", vector)
    if vector["canonical"] is not None:
        assert encode(value).hex() == vector["canonical"]
    assert golden_key(value) == vector["key"]


def test_key_layout_names_format_function_and_version() -> None:
    key = KeyBuilder("pkg.mod.load", "abc123").key(encode_arguments([1]))
    fmt, identity, version, digest = key.split(":")
    assert (fmt, identity, version) == ("pm3", "pkg.mod.load", "abc123")
    # 128 bits in URL-safe base64, without its padding.
    assert len(digest) == 22
    assert len(base64.urlsafe_b64decode(digest + "==")) == 16
    assert set(digest) <= set(string.ascii_letters + string.digits + "-_")


def test_identity_and_version_are_inside_the_digest() -> None:
    arguments = encode_arguments([1])
    # Same text once joined with ':' but different identity/version pairs.
    first = KeyBuilder("a:b", "c").key(arguments)
    second = KeyBuilder("a", "b:c").key(arguments)
    assert first.rsplit(":", 1)[1] != second.rsplit(":", 1)[1]


DISTINCT_VALUES = [
    1, 1.0, True, "1", b"1", [1], (1,), {1}, frozenset({1}), {1: None}, decimal.Decimal(1),
    complex(1, 0), 0, 0.0, -0.0, False, None, "", b"", [], (), set(), frozenset(), {},
    bytearray(b"1"), [1, 2], (1, 2), "a", b"a", 2**64, float(2**64), dt.date(2020, 1, 1),
    dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
    dt.timedelta(0), dt.time(0), pathlib.PurePosixPath("a"), pathlib.PureWindowsPath("a"),
    Color.RED, Point(1, 2), (1, 2, 3), Pair(1, "2"), (1, "2"), Keyed("a"), int, str,
    np.float64(1.0), np.int64(1), np.array([1]), np.array([1.0]), np.array([[1]]),
    uuid.UUID(int=1),
]  # fmt: skip


def test_values_of_different_types_never_share_bytes() -> None:
    encodings = [encode(value) for value in DISTINCT_VALUES]
    assert len(set(encodings)) == len(encodings)


def test_dict_argument_order_does_not_change_key() -> None:
    forward = {str(i): i for i in range(50)}
    backward = dict(reversed(list(forward.items())))
    assert list(forward) != list(backward)
    assert encode(forward) == encode(backward)


def test_set_order_does_not_change_key() -> None:
    items = [f"item-{i}" for i in range(100)]
    assert encode(set(items)) == encode(set(items))
    assert encode(frozenset(items)) == encode(frozenset(reversed(items)))


def test_every_nan_is_one_key_and_negative_zero_is_its_own() -> None:
    quiet_nan = float("nan")
    negative_nan = -math.inf + math.inf  # sign bit set on x86
    assert encode(quiet_nan) == encode(negative_nan) == encode(math.nan)
    assert encode(-0.0) != encode(0.0)
    assert encode(complex(math.nan, 0)) == encode(complex(-math.nan, 0))


def test_ints_of_any_size_are_keyed_exactly() -> None:
    assert encode(2**64 - 1) != encode(2**64)
    assert encode(-(2**63)) != encode(-(2**63) - 1)
    assert encode(10**100) != encode(10**100 + 1)
    assert encode(-(10**100)) != encode(10**100)


def test_large_buffers_are_reduced_to_a_fixed_size_digest() -> None:
    big = b"x" * 10_000_000
    assert len(encode(big)) < 100
    assert encode(big) != encode(big[:-1] + b"y")
    assert encode("x" * 100_000) != encode(b"x" * 100_000)
    assert len(encode("é" * 1_000_000)) < 100


def test_numpy_arrays_are_keyed_by_dtype_shape_and_contents() -> None:
    base = np.arange(12, dtype=np.float64)
    assert encode(base) == encode(base.copy())
    assert encode(base) != encode(base.astype(np.float32))
    assert encode(base) != encode(base.reshape(3, 4))
    changed = base.copy()
    changed[5] = -1
    assert encode(base) != encode(changed)
    matrix = base.reshape(3, 4)
    # A transposed (Fortran-ordered) view is keyed by its logical contents.
    assert encode(matrix.T) == encode(np.ascontiguousarray(matrix.T))
    assert encode(matrix[:, ::2]) == encode(matrix[:, ::2].copy())


def test_a_100_mb_array_key_is_small() -> None:
    array = np.zeros(100 * 1024 * 1024 // 8)
    assert len(encode(array)) < 100


def test_numpy_object_arrays_are_refused() -> None:
    with pytest.raises(UnsupportedType, match="dtype=object"):
        encode(np.array([object()], dtype=object))


def test_dataclasses_and_namedtuples_are_keyed_by_type_name_and_fields() -> None:
    @dataclasses.dataclass
    class Other:
        x: int
        y: int

    assert encode(Point(1, 2)) == encode(Point(1, 2))
    assert encode(Point(1, 2)) != encode(Point(2, 1))
    assert encode(Point(1, 2)) != encode(Other(1, 2))
    assert encode(Pair(1, "a")) != encode((1, "a"))


def test_hook_decides_what_an_object_is_keyed_by() -> None:
    first, second = Keyed("same"), Keyed("same")
    second.cache["noise"] = 1
    assert encode(first) == encode(second)
    assert encode(first) != encode(Keyed("other"))
    assert encode(Keyed("same")) != encode("same")


def test_subclasses_of_builtins_are_tagged_with_their_type() -> None:
    class Celsius(float):
        pass

    assert encode(Celsius(1.5)) != encode(1.5)
    assert encode(Celsius(1.5)) == encode(Celsius(1.5))


def test_unsupported_argument_raises_type_error_naming_parameter_and_remedies(
    store: Store,
) -> None:
    @memo(store=store)
    def load(path: str, conn: sqlite3.Connection) -> int:
        return 1

    with pytest.raises(TypeError) as raised:
        load("x", sqlite3.connect(":memory:"))
    message = str(raised.value)
    assert "argument 'conn' of" in message
    assert "load()" in message
    assert "sqlite3.Connection" in message
    assert "ignore=['conn']" in message
    assert "key=" in message
    assert "__persistmemo_key__" in message


def test_unsupported_value_nested_in_an_argument_is_reported(store: Store) -> None:
    @memo(store=store)
    def total(rows: list[object]) -> int:
        return len(rows)

    with pytest.raises(TypeError, match=r"argument 'rows'.*object.*inside the argument"):
        total([1, object()])


def test_objects_are_never_keyed_by_address_or_repr() -> None:
    class Plain:
        def __repr__(self) -> str:
            return "Plain()"

    with pytest.raises(UnsupportedType):
        encode(Plain())


def test_key_is_the_same_in_fresh_interpreters_with_other_hash_seeds(tmp_path: Path) -> None:
    code = """
        import datetime, decimal
        from golden_types import Point, Color
        from persistmemo._keys.canonical import encode_arguments
        from persistmemo._keys.layout import KeyBuilder
        value = [{"b": {3, 2, 1}, "a": frozenset("xyz")}, Point(1, 2), Color.GREEN,
                 {("t", 1): decimal.Decimal("2.5"), "s": {"q", "r", "s"}},
                 datetime.datetime(2026, 1, 1, 12)]
        print(KeyBuilder("m.f", "v").key(encode_arguments(value)))
    """
    keys = {
        run_python(code, env={"PYTHONHASHSEED": seed}).stdout.strip()
        for seed in ("0", "1", "12345", "random")
    }
    assert len(keys) == 1


# --- property tests ------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=30)
    | st.binary(max_size=30)
    | st.decimals(allow_nan=False)
    | st.datetimes()
    | st.dates()
    | st.timedeltas()
    | st.uuids()
    | st.complex_numbers()
)
hashables = st.recursive(scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner))
values = st.recursive(
    hashables,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(hashables, inner, max_size=5)
        | st.sets(hashables, max_size=5)
    ),
    max_leaves=20,
)


@given(
    st.dictionaries(st.text(max_size=20), hashables | st.lists(scalars), max_size=8), st.integers()
)
def test_equal_dicts_built_in_any_order_give_equal_keys(mapping: dict[str, Any], seed: int) -> None:
    items = list(mapping.items())
    random.Random(seed).shuffle(items)
    assert encode(dict(items)) == encode(mapping)


@given(st.lists(hashables, max_size=12), st.integers())
def test_equal_sets_built_in_any_order_give_equal_keys(items: list[Any], seed: int) -> None:
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    # {0, False} keeps whichever came first: built in another order it is another set of
    # values (0 and False are different keys), though == calls them equal.
    assume(sorted(map(repr, set(shuffled))) == sorted(map(repr, set(items))))
    assert encode(set(shuffled)) == encode(set(items))


def _kind(value: object) -> object:
    """What a key must tell apart: the type, recursively, and the value (NaNs alike)."""
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else value.hex())
    if isinstance(value, complex):
        return ("complex", _kind(value.real), _kind(value.imag))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_kind(item) for item in value))
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, frozenset(_kind(item) for item in value))
    if isinstance(value, dict):
        return ("dict", frozenset((_kind(k), _kind(v)) for k, v in value.items()))
    if isinstance(value, decimal.Decimal):
        return ("Decimal", str(value))
    return (type(value).__name__, value)


@given(values, values)
def test_keys_are_equal_exactly_when_values_and_types_are(left: Any, right: Any) -> None:
    assert (encode(left) == encode(right)) == (_kind(left) == _kind(right))


@given(values)
def test_encoding_is_deterministic(value: Any) -> None:
    assert encode(value) == encode(value)


flat_items = st.lists(
    st.integers() | st.floats() | st.booleans() | st.text(max_size=20), min_size=0, max_size=40
)


@given(flat_items)
def test_the_c_packed_fast_path_equals_the_item_by_item_encoding(items: list[Any]) -> None:
    from persistmemo._keys.encoders import concat
    from persistmemo._keys.framing import KeyExtension, array_header, ext, map_header

    item_by_item = array_header(len(items)) + concat(items)
    assert encode(items) == item_by_item
    assert encode(tuple(items)) == ext(KeyExtension.TUPLE, concat(items))
    mapping = {f"k{i}-{item!r}": item for i, item in enumerate(items)}
    entries = sorted((encode(k), encode(v)) for k, v in mapping.items())
    expected = map_header(len(entries)) + b"".join(k + v for k, v in entries)
    assert encode(mapping) == expected


def test_flat_sequences_with_nan_or_big_ints_take_the_canonical_path() -> None:
    with_nan = [1.0] * 10 + [-math.inf + math.inf]
    assert encode(with_nan) == encode([1.0] * 10 + [math.nan])
    big = [1] * 10 + [2**70]
    assert encode(big) != encode([1] * 10 + [2**70 + 1])


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30), values)
def test_different_functions_never_share_a_key(first: str, second: str, value: Any) -> None:
    arguments = encode_arguments([value])
    same = KeyBuilder(first, "v").key(arguments) == KeyBuilder(second, "v").key(arguments)
    assert same == (first == second)


# --- subclasses: keyed with all their state, or refused ------------------------------------


def test_masked_arrays_with_different_masks_have_different_keys() -> None:
    data = np.arange(4.0)
    masked = np.ma.MaskedArray(data, mask=[False, True, False, False])
    assert encode(masked) != encode(np.ma.MaskedArray(data, mask=[False, False, True, False]))
    assert encode(masked) == encode(np.ma.MaskedArray(data.copy(), mask=[0, 1, 0, 0]))
    assert encode(masked) != encode(data)
    assert encode(np.ma.MaskedArray(data, fill_value=1.0)) != encode(
        np.ma.MaskedArray(data, fill_value=2.0)
    )
    assert encode(np.ma.MaskedArray(data, hard_mask=True)) != encode(np.ma.MaskedArray(data))


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_a_matrix_and_the_equal_ndarray_have_different_keys() -> None:
    array = np.array([[1, 2], [3, 4]])
    assert encode(np.matrix(array)) != encode(array)
    assert encode(np.matrix(array)) == encode(np.matrix(array.copy()))
    records = np.rec.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")])
    assert encode(records) != encode(records.view(np.ndarray))


def test_ndarray_subclasses_with_unknown_state_are_refused(tmp_path: Path) -> None:
    mapped = np.memmap(tmp_path / "m", dtype="u1", mode="w+", shape=(4,))
    with pytest.raises(UnsupportedType, match=r"numpy.memmap .*numpy.asarray\(value\)"):
        encode(mapped)
    encode(np.asarray(mapped))


def test_numpy_scalar_subclasses_are_tagged_with_their_type() -> None:
    class Meters(np.float64):
        pass

    assert encode(Meters(1.5)) != encode(np.float64(1.5))
    assert encode(Meters(1.5)) == encode(Meters(1.5))
    assert encode(Meters(1.5)) != encode(Meters(2.5))


def test_structured_arrays_are_keyed_by_their_exact_dtype() -> None:
    in_order = np.dtype([("a", "<i4"), ("b", "<i4")])
    swapped = np.dtype({"names": ["b", "a"], "formats": ["<i4", "<i4"], "offsets": [4, 0]})
    # The same bytes and offsets, but field order is part of the value (tuples, printing).
    assert encode(np.zeros(2, swapped)) != encode(np.zeros(2, in_order))
    aligned = np.dtype([("a", "u1"), ("b", "<i4")], align=True)
    assert encode(np.zeros(2, aligned)) != encode(np.zeros(2, np.dtype(aligned.descr)))
    assert encode(np.zeros(2, aligned)[0]) != encode(np.zeros(2, np.dtype(aligned.descr))[0])
    titled = np.dtype([(("title", "a"), "<i4")])
    assert encode(np.zeros(1, titled)) != encode(np.zeros(1, np.dtype([("a", "<i4")])))


def test_pandas_timestamps_one_nanosecond_apart_have_different_keys() -> None:
    first = pd.Timestamp("2026-01-01 00:00:00.000000001")
    assert encode(first) != encode(first + pd.Timedelta(1))
    assert encode(first) == encode(pd.Timestamp("2026-01-01 00:00:00.000000001"))
    midnight = pd.Timestamp("2026-01-01")
    assert encode(midnight) != encode(dt.datetime(2026, 1, 1))
    assert encode(midnight.as_unit("s")) != encode(midnight.as_unit("ns"))
    assert encode(midnight.tz_localize("UTC")) != encode(midnight)
    assert encode(pd.Timedelta(1)) != encode(pd.Timedelta(2))
    assert encode(pd.Timedelta(1)) != encode(dt.timedelta(0))
    assert encode(pd.NaT) == encode(pd.NaT) != encode(None)


def test_subclasses_with_c_level_state_are_refused() -> None:
    # OrderedDict keeps its order and defaultdict its factory in C fields that a dict's
    # key would drop: OrderedDict(a=1, b=2) != OrderedDict(b=2, a=1).
    for value in (collections.OrderedDict(a=1), collections.defaultdict(list, a=[1])):
        with pytest.raises(UnsupportedType, match=r"keeps state outside __dict__ and __slots__"):
            encode(value)

    class Counted(collections.OrderedDict[str, int]):
        pass

    with pytest.raises(UnsupportedType, match="subclasses dict"):
        encode(Counted(a=1))


def test_plain_python_subclasses_are_keyed_by_their_state_not_their_overrides() -> None:
    class Hidden(list[int]):
        def __iter__(self) -> Iterator[int]:
            return iter(())

    class Shown(str):
        def __str__(self) -> str:
            return "same"

    class Year(dt.date):
        @property
        def year(self) -> int:
            return 1

    assert encode(Hidden([1])) != encode(Hidden([2]))
    assert encode(Shown("a")) != encode(Shown("b"))
    assert encode(Year(2020, 1, 1)) != encode(Year(2021, 1, 1))
    assert encode(Stamp(2026, 1, 1)) != encode(Stamp(2026, 1, 2))
    assert encode(collections.Counter("aab")) != encode(collections.Counter("abb"))


def test_slots_of_a_subclass_are_part_of_its_key() -> None:
    assert encode(Labelled(2026, 1, 1, "a")) != encode(Labelled(2026, 1, 1, "b"))
    assert encode(Labelled(2026, 1, 1, "a")) == encode(Labelled(2026, 1, 1, "a"))
    stamp = Stamp(2026, 1, 1)
    stamp.note = "x"  # type: ignore[attr-defined]
    assert encode(stamp) != encode(Stamp(2026, 1, 1))


# --- values that contain themselves or nest too deep ---------------------------------------


def test_cyclic_arguments_are_refused_naming_the_parameter(store: Store) -> None:
    @memo(store=store)
    def count(items: object) -> int:
        return 1

    looped: list[object] = [1]
    looped.append(looped)
    with pytest.raises(TypeError) as raised:
        count(looped)
    message = str(raised.value)
    assert "argument 'items' of" in message
    assert "list value is not supported (it contains itself)" in message
    assert "ignore=['items']" in message
    mapping: dict[str, object] = {}
    mapping["self"] = mapping
    with pytest.raises(TypeError, match=r"'items'.*dict value .*\(it contains itself\)"):
        count({"outer": [mapping]})


def test_deeply_nested_arguments_are_refused_naming_the_parameter(store: Store) -> None:
    @memo(store=store)
    def depth(tree: object) -> int:
        return 1

    nested: object = 0
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(TypeError, match=r"'tree'.*nested deeper than 100 levels.*ignore="):
        depth(nested)
    shallow: object = 0
    for _ in range(100):
        shallow = [shallow]
    assert depth(shallow) == 1


def test_a_hook_returning_its_own_object_is_refused() -> None:
    class Itself:
        def __persistmemo_key__(self) -> object:
            return [self]

    with pytest.raises(UnsupportedType, match=r"it contains itself"):
        encode(Itself())


def test_a_deep_caller_stack_still_raises_recursion_error() -> None:
    # A RecursionError that comes from the caller's stack, not from the value, is not
    # disguised as an unsupported argument.
    def descend(levels: int) -> bytes:
        return encode([[1], {"a": (2,)}]) if levels == 0 else descend(levels - 1)

    with pytest.raises(RecursionError):
        descend(sys.getrecursionlimit())


# --- functions ------------------------------------------------------------------------------


def test_functions_and_partials_are_refused_with_what_to_pass_instead(store: Store) -> None:
    @memo(store=store)
    def apply(transform: object, value: int) -> int:
        return 1

    for transform in (functools.partial(int, base=2), len, str.upper, lambda x: x, "".join):
        with pytest.raises(TypeError) as raised:
            apply(transform, 1)
        message = str(raised.value)
        assert "argument 'transform' of" in message
        assert "pass the function's name or the parameters it was built from" in message
        assert "ignore=['transform']" in message


def test_an_enum_members_value_is_part_of_its_key() -> None:
    import enum

    def make(value: int) -> Any:
        class Rate(enum.Enum):
            FAST = value

        return Rate.FAST

    assert encode(make(2)) != encode(make(3))
    assert encode(make(2)) == encode(make(2))


def test_classes_made_by_one_factory_are_told_apart_by_their_attributes() -> None:
    def make(k: int) -> type:
        class Model:
            K = k

            def run(self) -> int:
                return self.K

        return Model

    assert encode(make(2)) != encode(make(3))
    assert encode(make(2)) == encode(make(2))
