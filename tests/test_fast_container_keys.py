"""Containers of plain scalars are packed by msgpack in one call, into the very bytes the
item-by-item encoding gives."""

from __future__ import annotations

import builtins
import enum
import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persistmemo._keys import packed, standard_types
from persistmemo._keys.canonical import encode
from persistmemo._keys.digests import LARGE_BUFFER
from persistmemo._keys.framing import ext, pack
from persistmemo.errors import UnsupportedType

PACKED = ("packed_dict", "packed_items", "packed_payload", "packed_set_payload")


@contextmanager
def item_by_item() -> Iterator[None]:
    """The general encoder alone: every packing answers None, at every level of nesting."""
    saved = {name: getattr(standard_types, name) for name in PACKED}
    for name in PACKED:
        setattr(standard_types, name, lambda value: None)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(standard_types, name, function)


def general(value: object) -> bytes | type[Exception]:
    with item_by_item():
        return outcome(value)


def outcome(value: object) -> bytes | type[Exception]:
    try:
        return encode(value)
    except UnsupportedType as error:
        return type(error)


class Text(str):
    pass


class Count(enum.IntEnum):
    ONE = 1


class Ratio(float):
    pass


def float_from_bits(bits: int) -> float:
    return float(struct.unpack(">d", bits.to_bytes(8, "big"))[0])


edge_floats = st.sampled_from(
    [
        0.0,
        -0.0,
        math.inf,
        -math.inf,
        math.nan,
        -math.nan,
        float_from_bits(0x7FF8000000000001),  # a NaN with a payload
        float_from_bits(0xFFF0000000000001),  # a signalling NaN, sign set
        5e-324,
        1.7976931348623157e308,
    ]
)
edge_ints = st.sampled_from(
    [
        0,
        127,
        128,
        255,
        256,
        -32,
        -33,
        2**31,
        2**63 - 1,
        2**63,
        2**64 - 1,
        2**64,
        2**100,
        -(2**63),
        -(2**63) - 1,
        -(2**100),
    ]
)
large = st.sampled_from(["x" * LARGE_BUFFER, "é" * (LARGE_BUFFER // 2), b"y" * LARGE_BUFFER])
odd = st.sampled_from(
    [
        Text("a"),
        Count.ONE,
        Ratio(0.5),
        bytearray(b"b"),
        1j,
        msgpack.ExtType(1, b""),
        msgpack.Timestamp(1),
        memoryview(b"m"),
    ]
)
plain_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | edge_ints
    | st.floats()
    | edge_floats
    | st.text(max_size=40)
    | st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=3)  # surrogates
    | st.binary(max_size=40)
)
scalars = plain_scalars | plain_scalars | large | odd
hashable_scalars = scalars.filter(lambda value: not isinstance(value, (bytearray, memoryview)))


def containers(items: st.SearchStrategy[Any], keys: st.SearchStrategy[Any]) -> Any:
    return (
        st.lists(items, max_size=40)
        | st.lists(items, max_size=40).map(tuple)
        | st.dictionaries(keys, items, max_size=40)
        | st.dictionaries(st.text(max_size=12), items, max_size=40)
        | st.sets(keys, max_size=40)
        | st.frozensets(keys, max_size=40)
    )


flat = containers(scalars, hashable_scalars)
# Long runs of numbers take the numbers-first packing; a non-number at either end does not.
numbers = st.lists(st.floats() | st.integers(min_value=-(2**64), max_value=2**64), min_size=16)
with_numbers = st.tuples(numbers, st.lists(scalars, max_size=3), numbers).map(
    lambda parts: [*parts[0], *parts[1], *parts[2]]
)
# Long containers that do not start with a number are checked by passes of C code first.
long_mixed = st.tuples(st.none() | st.text(max_size=3), st.lists(scalars, min_size=16, max_size=60))
long_flat = long_mixed.map(lambda parts: [parts[0], *parts[1]]) | st.builds(
    set, st.lists(hashable_scalars, min_size=16, max_size=60)
)
nested = st.recursive(
    flat | with_numbers | long_flat,
    lambda inner: containers(inner | scalars, hashable_scalars | st.frozensets(hashable_scalars)),
    max_leaves=60,
)


@settings(max_examples=400)
@given(flat | with_numbers | long_flat)
def test_packed_containers_of_scalars_are_the_item_by_item_bytes(value: Any) -> None:
    assert outcome(value) == general(value)


@given(nested)
def test_nested_containers_are_the_item_by_item_bytes(value: Any) -> None:
    assert outcome(value) == general(value)


@given(st.lists(plain_scalars, min_size=1, max_size=40))
def test_a_tuple_is_the_items_bytes_back_to_back(items: list[Any]) -> None:
    assert outcome(tuple(items)) == general(tuple(items))
    assert outcome([items, tuple(items)]) == general([items, tuple(items)])


@given(st.integers(0, 300) | st.sampled_from([0xFFFF, 0x10000, 0x12345]), st.integers(1, 127))
def test_extension_frames_are_msgpacks_own(length: int, code: int) -> None:
    payload = bytes(length)
    assert ext(code, payload) == pack(msgpack.ExtType(code, payload))


def test_dicts_order_keys_by_their_encoded_bytes() -> None:
    # By length first (the header holds it), then by UTF-8 bytes; ints by their encodings.
    words = {"bb": 1, "a": 2, "é": 3, "z": 4, "\U0001f600": 5, "ab": 6.5}
    assert outcome(words) == general(words)
    mixed = {-1: 0, 2: 1, 200: 2, -200: 3, 2.5: 4, None: 5, True: 6, b"a": 7, "a": 8}
    assert outcome(mixed) == general(mixed)
    nans = {math.nan: 1, float("nan"): 2}
    assert outcome(nans) == general(nans)


def test_every_nan_is_the_one_canonical_nan() -> None:
    nans = [math.nan, -math.nan, float_from_bits(0x7FF8000000000001)]
    for nan in nans:
        assert encode([1.0] * 20 + [nan]) == encode([1.0] * 20 + [math.nan])
        for value in (
            ["s", *[1.0] * 20, nan],
            {nan, *range(20)},
            {nan: 1, **dict.fromkeys(range(20))},
        ):
            assert outcome(value) == general(value)
        assert encode({"k": nan, **{f"k{i}": 1.0 for i in range(20)}}) == general(
            {"k": math.nan, **{f"k{i}": 1.0 for i in range(20)}}
        )
    assert encode([-0.0] * 20) != encode([0.0] * 20)
    assert encode([math.inf] * 10 + [-math.inf] * 10) == general([math.inf] * 10 + [-math.inf] * 10)


def test_subclasses_and_unsupported_items_are_not_packed() -> None:
    for odd_item in (Text("a"), Count.ONE, Ratio(0.5), bytearray(b"b"), msgpack.ExtType(1, b"")):
        for value in ([1] * 20 + [odd_item, 2], [odd_item], {"k": odd_item}, (odd_item, 1)):
            assert outcome(value) == general(value)
    with pytest.raises(UnsupportedType):
        encode([1] * 20 + [memoryview(b"m"), 2])
    with pytest.raises(UnsupportedType):
        encode({"k": memoryview(b"m")})


def test_large_str_and_bytes_are_keyed_by_digest_inside_containers() -> None:
    for big in ("x" * LARGE_BUFFER, "é" * LARGE_BUFFER, b"y" * LARGE_BUFFER):
        for value in ([big], [1] * 20 + [big, 2], {"k": big}, {big: 1}, {big}, (big,)):
            assert outcome(value) == general(value)
            assert len(encode(value)) < 100


@contextmanager
def items_never_encoded_one_by_one() -> Iterator[None]:
    def refuse(*args: object) -> bytes:
        raise AssertionError("encoded item by item")

    saved = standard_types.encode_item, standard_types.concat
    standard_types.encode_item = refuse
    standard_types.concat = refuse
    try:
        yield
    finally:
        standard_types.encode_item, standard_types.concat = saved


@pytest.mark.parametrize(
    "value",
    [
        {f"feature_{i}": i / 7 for i in range(100)},
        {f"f{99 - i}": float(i) for i in range(100)},  # inserted out of order
        {i: str(i) for i in range(50)},
        [i / 3 for i in range(1000)],
        list(range(10_000)),
        {f"tag{i}" for i in range(100)},
        frozenset(range(-50, 50)),
        (1, 2.5, "x", None, True),
        ["a", b"b", None, False, 3, -4.5],
    ],
    ids=[
        "dict-str-float",
        "dict-unordered",
        "dict-int-str",
        "floats",
        "ints",
        "set-str",
        "frozenset-int",
        "tuple-mixed",
        "list-mixed",
    ],
)
def test_containers_of_plain_scalars_take_the_packed_path(value: Any) -> None:
    expected = general(value)
    with items_never_encoded_one_by_one():
        assert encode(value) == expected


def test_the_packed_path_answers_for_a_dict_of_str_to_float() -> None:
    value = {f"feature_{i}": i / 7 for i in range(100)}
    assert packed.packed_dict(value) == general(value)
    assert packed.packed_dict({"k": math.nan}) is None
    assert packed.packed_dict({Text("k"): 1.0}) is None


str_keys = (
    st.text(max_size=12)
    | st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=3)
    | st.sampled_from(["", "a", "b", "ab", "é", "\x00", "x" * LARGE_BUFFER])
)


@settings(max_examples=300)
@given(st.dictionaries(str_keys, plain_scalars, max_size=40), st.randoms(use_true_random=False))
def test_dicts_of_str_keys_in_any_order_are_the_item_by_item_bytes(
    value: dict[str, Any], random: Any
) -> None:
    # The first dict of these keys puts them in order, the others (same keys, inserted in
    # another order, or one of them a str subclass equal to it) reuse or refuse that order.
    entries = list(value.items())
    random.shuffle(entries)
    shuffled = dict(entries)
    expected = general(value)
    assert outcome(value) == expected
    assert outcome(shuffled) == expected
    assert outcome(value) == expected
    assert outcome(set(value)) == general(set(value))
    assert outcome(frozenset(shuffled)) == general(frozenset(shuffled))
    if entries:
        key, item = entries[0]
        subclassed = {Text(key): item, **dict(entries[1:])}
        assert outcome(subclassed) == general(subclassed)


@settings(max_examples=300)
@given(
    st.dictionaries(st.integers() | edge_ints | st.sampled_from([0, 1, -1]), plain_scalars),
    st.randoms(use_true_random=False),
)
def test_dicts_of_int_keys_in_any_order_are_the_item_by_item_bytes(
    value: dict[int, Any], random: Any
) -> None:
    # Keys equal to remembered ones but of another type (True == 1, an IntEnum, 1.0) are
    # not put in the remembered order: they encode differently.
    entries = list(value.items())
    random.shuffle(entries)
    expected = general(value)
    assert outcome(value) == expected
    assert outcome(dict(entries)) == expected
    assert outcome(frozenset(value)) == general(frozenset(value))
    for key, other in ((1, True), (0, False), (1, Count.ONE), (1, 1.0)):
        if key in value:
            changed = {other if k == key else k: v for k, v in entries}
            assert outcome(changed) == general(changed)
            assert outcome(set(changed)) == general(set(changed))


def test_dicts_out_of_order_get_the_map_header_of_their_size() -> None:
    # An out-of-order dict is packed as an array of twice its entries under a map header:
    # the two headers have different sizes at 8, 16 and 32,768 entries.
    for size in (2, 7, 8, 15, 16, 17, 32_767, 32_768, 40_000):
        value = {f"k{i}": i for i in reversed(range(size))}
        assert outcome(value) == general(value), size


def counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[object]:
    """The calls packed.py makes to ``name`` (one of its names, or a builtin it uses)."""
    calls: list[object] = []
    original = packed.__dict__.get(name) or getattr(builtins, name)

    def count(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(packed, name, count, raising=False)
    return calls


def test_the_order_of_str_keys_is_worked_out_once_per_set_of_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ascii_keys = [f"name_{i}" for i in range(40, 0, -1)]
    expected = [general(dict.fromkeys(ascii_keys, float(n))) for n in range(3)]
    sorts = counting(monkeypatch, "sorted")
    assert [encode(dict.fromkeys(ascii_keys, float(n))) for n in range(3)] == expected
    assert len(sorts) <= 2  # by character, then by length: the first time only
    other_keys = [f"clé_{i}" for i in range(40, 0, -1)]
    expected = [general(dict.fromkeys(other_keys, n)) for n in range(2)]
    assert encode(dict.fromkeys(other_keys, 0)) == expected[0]
    packs = counting(monkeypatch, "pack")
    assert encode(dict.fromkeys(other_keys, 1)) == expected[1]
    assert len(packs) == 1  # the whole dict, its keys not one by one again


def test_remembered_orders_are_bounded_and_keep_no_large_strings() -> None:
    for n in range(3 * packed._REMEMBERED_ORDERS):
        encode({f"k{n}": 1, "a": 2})
    assert len(packed._ORDERS) <= packed._REMEMBERED_ORDERS
    long_keys = tuple(f"{i:05d}" + "x" * 1000 for i in range(20))
    value = dict.fromkeys(reversed(long_keys), 1)
    assert encode(value) == general(value)
    assert tuple(value) not in packed._ORDERS
