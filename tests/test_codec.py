"""Values: exact round trips through msgpack, a marked pickle fallback, corrupt bytes refused."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import decimal
import math
import pathlib
import uuid
import zoneinfo
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from golden_types import Color, Pair, Point
from persistmemo.codec import (
    FORMAT_MSGPACK,
    CorruptEntry,
    UnstorableValue,
    decode_value,
    encode_value,
    is_pickled,
)


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
def test_values_round_trip_exactly(value: Any) -> None:
    assert _typed(round_trip(value)) == _typed(value)


@given(st.binary(max_size=200))
def test_random_bytes_decode_to_a_value_or_corrupt_entry_only(data: bytes) -> None:
    with contextlib.suppress(CorruptEntry):
        decode_value(FORMAT_MSGPACK + data)
