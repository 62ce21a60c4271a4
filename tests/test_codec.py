"""Values: exact round trips through msgpack, a marked pickle fallback, corrupt bytes refused."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import decimal
import enum
import math
import pathlib
import pickle
import uuid
import zoneinfo
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_python
from golden_types import Color, Pair, Point
from persistmemo import Store, memo
from persistmemo._codec.decoding import decode_value, is_pickled
from persistmemo._codec.encoding import encode_value
from persistmemo._codec.formats import FORMAT_MSGPACK, MAX_EXT_DEPTH, ValueExtension
from persistmemo.errors import CorruptEntry, UnstorableValue


def round_trip(value: object) -> Any:
    data = encode_value(value, allow_pickle=False)
    assert data[:1] == FORMAT_MSGPACK
    return decode_value(data)


EXACT_VALUES = [
    None, True, 0, -1, 2**64, -(2**200), 1.5, -0.0, math.inf, "", "héllo", "\udc80", b"\x00",
    [1, [2, 3]], (1, (2,)), (), {"a": (1, 2)}, {(1, 2): "tuple key", 3: None}, {1, 2},
    frozenset({"x"}), set(), dt.datetime(2026, 11, 25, 6, 30, 1, 5),
    dt.datetime(2026, 11, 25, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    dt.datetime(2026, 11, 25, tzinfo=dt.timezone(dt.timedelta(hours=-3), "BRT")),
    dt.datetime(2026, 11, 25, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    dt.datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("America/New_York")),
    dt.date(2026, 11, 25), dt.time(6, 30, tzinfo=dt.timezone.utc), dt.timedelta(-1, 5, 7),
    decimal.Decimal("1.10"), decimal.Decimal("-0"), uuid.UUID(int=7), complex(1, -2),
    pathlib.Path("/a/b"), pathlib.PurePosixPath("x"), pathlib.PureWindowsPath("C:/x"),
    Color.GREEN, Point(1, 2), Pair(3, "c"), [Point(0, 0), {"nested": Pair(1, "a")}],
]  # fmt: skip


@pytest.mark.parametrize("value", EXACT_VALUES, ids=repr)
def test_supported_values_round_trip_with_their_exact_types(value: object) -> None:
    result = round_trip(value)
    assert result == value
    assert type(result) is type(value)
    if isinstance(value, dt.datetime):
        assert result.tzinfo == value.tzinfo
        assert result.fold == value.fold
        assert str(result) == str(value)
    if isinstance(value, decimal.Decimal):
        assert str(result) == str(value)


def test_nan_and_negative_zero_round_trip_bit_for_bit() -> None:
    assert math.isnan(round_trip(math.nan))
    assert math.copysign(1.0, round_trip(-0.0)) == -1.0


def test_nested_containers_keep_their_types() -> None:
    value = {"rows": [(1, "a"), (2, "b")], "tags": {frozenset({1}), frozenset({2})}}
    result = round_trip(value)
    assert type(result["rows"][0]) is tuple
    assert type(next(iter(result["tags"]))) is frozenset


def test_numpy_arrays_round_trip_with_dtype_shape_and_order_and_are_writable() -> None:
    for array in (
        np.arange(12, dtype=np.int32).reshape(3, 4),
        np.asfortranarray(np.random.default_rng(1).random((4, 5))),
        np.array([], dtype=np.float32),
        np.array([b"ab", b"c"]),
        np.array(["x", "yz"]),
        np.arange(10)[::2],
    ):
        result = round_trip(array)
        assert result.dtype == array.dtype
        assert result.shape == array.shape
        assert np.array_equal(result, array)
        assert result.flags.writeable
        assert (
            result.flags.f_contiguous == (array.flags.f_contiguous and not array.flags.c_contiguous)
            or result.flags.c_contiguous
        )


def test_numpy_scalars_round_trip() -> None:
    for scalar in (np.float64(1.5), np.int8(-3), np.bool_(True), np.datetime64("2026-11-25")):
        result = round_trip(scalar)
        assert type(result) is type(scalar)
        assert result == scalar


def test_other_objects_use_a_marked_pickle_fallback() -> None:
    value = collections.OrderedDict(a=1, b=2)
    data = encode_value(value)
    assert is_pickled(data)
    result = decode_value(data)
    assert type(result) is collections.OrderedDict
    assert result == value


def test_strict_encoding_refuses_the_pickle_fallback_with_a_clear_error() -> None:
    with pytest.raises(UnstorableValue, match=r"OrderedDict.*refused"):
        encode_value({"inner": collections.OrderedDict()}, allow_pickle=False)


def test_unpicklable_results_are_reported_as_unstorable() -> None:
    with pytest.raises(UnstorableValue, match="cannot be pickled"):
        encode_value(lambda: 1)


def test_classes_that_cannot_be_found_by_name_fall_back_to_pickle() -> None:
    import dataclasses

    @dataclasses.dataclass
    class Local:
        x: int

    with pytest.raises(UnstorableValue):
        encode_value(Local(1), allow_pickle=False)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x07abc", FORMAT_MSGPACK, FORMAT_MSGPACK + b"\xc7\x02\x63ab", FORMAT_MSGPACK + b"\x92"],
)
def test_malformed_bytes_raise_corrupt_entry(data: bytes) -> None:
    with pytest.raises(CorruptEntry):
        decode_value(data)


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.binary(max_size=30)
    | st.decimals(allow_nan=False)
    | st.datetimes(timezones=st.none() | st.timezones())
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.uuids()
    | st.complex_numbers(allow_nan=False)
)
hashables = st.recursive(scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner))
values = st.recursive(
    hashables,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(hashables, inner, max_size=5)
        | st.sets(hashables, max_size=5)
    ),
    max_leaves=20,
)


def _typed(value: object) -> object:
    """The value with every type spelled out, to compare type by type."""
    if isinstance(value, (list, tuple)):
        return (type(value), [_typed(item) for item in value])
    if isinstance(value, (set, frozenset)):
        return (type(value), sorted(map(repr, map(_typed, value))))
    if isinstance(value, dict):
        return (dict, [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, (dt.datetime, dt.time)):
        return (type(value), value, value.tzinfo, value.fold)
    return (type(value), value)


@given(values)
@settings(suppress_health_check=[HealthCheck.too_slow])  # generated frames, on a busy machine
def test_values_round_trip_exactly(value: Any) -> None:
    assert _typed(round_trip(value)) == _typed(value)


@given(st.binary(max_size=200))
def test_random_bytes_decode_to_a_value_or_corrupt_entry_only(data: bytes) -> None:
    with contextlib.suppress(CorruptEntry):
        decode_value(FORMAT_MSGPACK + data)


# --- values msgpack cannot hold: cycles and deep nesting -------------------------------------


def nested(depth: int, make: Any = list) -> Any:
    value: Any = []
    for _ in range(depth):
        value = make([value])
    return value


def cyclic_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def cyclic_dict() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = [value]
    return value


@pytest.mark.parametrize("make", [cyclic_list, cyclic_dict])
def test_cycles_fall_back_to_pickle_and_come_back(make: Any) -> None:
    value = make()
    data = encode_value(value)
    assert is_pickled(data)
    result = decode_value(data)
    if isinstance(value, list) and value[-1] is value:
        assert result[-1] is result
    if isinstance(value, dict):
        assert result["self"][0] is result


@pytest.mark.parametrize("make", [cyclic_list, cyclic_dict, lambda: nested(3000)])
def test_cycles_and_deep_nesting_are_unstorable_where_pickles_are_refused(make: Any) -> None:
    with pytest.raises(UnstorableValue, match=r"reference cycle or is nested too deeply.*refused"):
        encode_value(make(), allow_pickle=False)


@pytest.mark.parametrize("make", [list, tuple, set, frozenset])
@pytest.mark.parametrize("allow_pickle", [True, False])
def test_nesting_too_deep_even_for_pickle_is_unstorable(make: Any, allow_pickle: bool) -> None:
    hashable = make if make in (tuple, frozenset) else (lambda items: make(items))

    def deep(depth: int) -> Any:
        value: Any = 0
        for _ in range(depth):
            value = hashable([value]) if make is not set else [value]
        return value

    # How deep pickle goes is the Python's: 3.13 pickles 3,000 levels, 3.10-3.12 do not.
    for depth in (3_000, 30_000, 300_000):
        value = deep(depth)
        try:
            pickle.dumps(value)
        except RecursionError:
            break
    else:
        pytest.skip("this Python pickles values nested 300,000 levels deep")
    with pytest.raises(UnstorableValue):
        encode_value(value, allow_pickle=allow_pickle)


def deep_document(depth: int, *, as_ext: bool) -> bytes:
    packed = msgpack.packb(0)
    for _ in range(depth):
        packed = (
            msgpack.packb(msgpack.ExtType(ValueExtension.TUPLE, b"\x91" + packed))
            if as_ext
            else b"\x91" + packed
        )
    return FORMAT_MSGPACK + packed


@pytest.mark.parametrize("as_ext", [False, True], ids=["arrays", "tuples"])
def test_documents_nested_3000_levels_deep_are_corrupt_entries(as_ext: bool) -> None:
    with pytest.raises(CorruptEntry):
        decode_value(deep_document(3000, as_ext=as_ext))


def test_extension_types_nest_up_to_the_limit_in_msgpack_and_deeper_in_pickle() -> None:
    at_limit = nested(MAX_EXT_DEPTH, tuple)
    assert round_trip(at_limit) == at_limit
    deeper = nested(MAX_EXT_DEPTH + 1, tuple)
    assert is_pickled(encode_value(deeper))
    assert decode_value(encode_value(deeper)) == deeper


def test_a_planted_deeply_nested_document_is_refused_without_crashing_a_thread() -> None:
    # Each nested unpack holds ~45 KB of C stack: 200 levels overflowed an 8 MB thread stack
    # (a segfault, not an exception). Run apart, so that a crash cannot take pytest down.
    output = run_python(
        f"""
        import threading
        from persistmemo._codec.decoding import decode_value
        from persistmemo.errors import CorruptEntry

        def read():
            try:
                decode_value(bytes.fromhex("{deep_document(200, as_ext=True).hex()}"))
            except CorruptEntry as error:
                print(error)

        threading.stack_size(1024 * 1024)
        thread = threading.Thread(target=read)
        thread.start()
        thread.join()
        """
    )
    assert "nests extension types over" in output.stdout


def test_a_function_returning_a_cyclic_result_returns_it_and_then_hits(store: Store) -> None:
    calls: list[int] = []

    @memo(store=store)
    def build(x: int) -> list[Any]:
        calls.append(x)
        return cyclic_list()

    first, second = build(1), build(1)
    assert first[1] is first
    assert second[1] is second
    assert calls == [1]


@given(
    st.recursive(st.none() | st.integers(), lambda inner: st.lists(inner, max_size=3), max_leaves=8)
)
def test_encoding_raises_nothing_but_unstorable_value(value: Any) -> None:
    # Tie a knot in the value where there is a list to tie it in.
    if isinstance(value, list):
        value.append(value)
    for allow_pickle in (False, True):
        with contextlib.suppress(UnstorableValue):
            encode_value(value, allow_pickle=allow_pickle)


# --- flags and dataclasses with builtin bases ------------------------------------------------


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


class Bits(enum.IntFlag):
    A = 1
    B = 2
    C = 16


@given(st.integers(min_value=0, max_value=7))
def test_flag_combinations_round_trip_by_value_through_msgpack(number: int) -> None:
    value = Perm(number)
    result = round_trip(value)
    assert type(result) is Perm
    assert result == value
    assert result.value == number


@given(st.integers(min_value=0, max_value=255))
def test_int_flag_combinations_round_trip_with_unnamed_bits(number: int) -> None:
    value = Bits(number)
    result = round_trip(value)
    assert type(result) is Bits
    assert result == value == number


@pytest.mark.parametrize(
    "value", [Perm.R | Perm.W, Perm(0), Bits.A | Bits.C, Bits(0), Perm.X], ids=repr
)
def test_flags_are_stored_in_strict_stores_and_come_back_identical(value: enum.Flag) -> None:
    assert round_trip(value) is type(value)(value.value)


@dataclasses.dataclass
class DictWithFields(dict):  # type: ignore[type-arg]
    label: str = ""


@dataclasses.dataclass
class ListWithFields(list):  # type: ignore[type-arg]
    label: str = ""


@dataclasses.dataclass(frozen=True)
class SetWithFields(frozenset):  # type: ignore[type-arg]
    label: str = ""


@dataclasses.dataclass
class ErrorWithFields(Exception):
    code: int = 0


def with_contents(value: Any) -> Any:
    if isinstance(value, dict):
        value.update(a=1, b=[2])
    elif isinstance(value, list):
        value.extend([1, (2, 3)])
    return value


BUILTIN_BASED = [
    lambda: with_contents(DictWithFields("d")),
    lambda: with_contents(ListWithFields("l")),
    lambda: SetWithFields("s"),
    lambda: ErrorWithFields(7),
]


@pytest.mark.parametrize("make", BUILTIN_BASED)
def test_dataclasses_with_a_builtin_base_are_pickled_and_come_back_whole(make: Any) -> None:
    value = make()
    data = encode_value(value)
    assert is_pickled(data)
    result = decode_value(data)
    assert type(result) is type(value)
    assert dataclasses.asdict(result) == dataclasses.asdict(value)
    if isinstance(value, (dict, list)):
        assert type(value).__base__(result) == type(value).__base__(value)


@pytest.mark.parametrize("make", BUILTIN_BASED)
def test_dataclasses_with_a_builtin_base_are_refused_not_stored_by_strict_stores(make: Any) -> None:
    with pytest.raises(UnstorableValue, match=r"__new__.*refused"):
        encode_value(make(), allow_pickle=False)


class PairWithNote(Pair):
    """A NamedTuple subclass without __slots__: its instances take attributes."""


def test_namedtuples_with_extra_attributes_keep_them_through_pickle() -> None:
    value = PairWithNote(1, "a")
    value.note = "kept"  # type: ignore[attr-defined]
    with pytest.raises(UnstorableValue, match="non-field attributes"):
        encode_value(value, allow_pickle=False)
    data = encode_value(value)
    assert is_pickled(data)
    assert decode_value(data).note == "kept"  # type: ignore[attr-defined]
    assert round_trip(PairWithNote(2, "b")) == (2, "b")


def test_enum_members_with_aliases_round_trip_as_the_canonical_member() -> None:
    class Aliased(enum.Enum):
        ONE = 1
        UNO = 1  # noqa: PIE796 -- the alias is the point

    globals()["Aliased"] = Aliased
    Aliased.__qualname__ = "Aliased"
    try:
        assert round_trip(Aliased.UNO) is Aliased.ONE
    finally:
        del globals()["Aliased"]
