"""Containers of plain scalars, packed by msgpack's C code in one call.

A list, tuple, dict, set or frozenset whose items (and keys) are exactly str, int, float,
bool, None or bytes is encoded here without visiting its items in Python, when msgpack's
packing is byte for byte the item-by-item canonical encoding (docs/keys.md). Each function
answers None when it may not be, and the caller encodes item by item: for a NaN (the
canonical form has one NaN), an int outside msgpack's range, a str with a lone surrogate, a
str or bytes keyed by digest, and any other type, subclasses included.

The packer's ``strict_types`` refuses subclasses, tuples and every type msgpack has no form
for, without calling back into Python. So a packing that succeeded leaves only builtin types
and msgpack's own to rule out (nested lists and dicts, bytearray, memoryview, msgpack's
ExtType and Timestamp), and a sum over such items runs no code of the caller's.
"""

from __future__ import annotations

from operator import countOf

from persistmemo._keys.digests import LARGE_BUFFER
from persistmemo._keys.framing import array_header, pack

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PLAIN = frozenset((str, int, float, bool, type(None), bytes))
"""Scalar types whose canonical encoding is msgpack's own, but for the values above."""

_NUMBERS = frozenset((int, float, bool))
_REFUSED = (OverflowError, UnicodeEncodeError, TypeError, ValueError)

# Containers shorter than this are checked item by item in Python, longer ones by passes of
# C code. A long one that starts and ends with a number is packed first and checked after, by
# a sum that also finds any NaN: the packer has then admitted only types on which a sum runs
# no code of the caller's. Any other is checked first, so that the packer never copies a str
# or bytes keyed by digest.
_LONG = 16


def packed_items(items: list[Any]) -> bytes | None:
    """The canonical bytes of the list ``items`` of plain scalars (a msgpack array)."""
    if _likely_numbers(items):
        packed = _packed(items)
        if packed is None or not _plain_once_packed(items):
            return None
        return packed
    if not _plain(items):
        return None
    return _packed(items)


def packed_payload(items: list[Any]) -> bytes | None:
    """The canonical bytes of plain scalars back to back (a tuple's payload)."""
    packed = packed_items(items)
    if packed is None:
        return None
    return packed[len(array_header(len(items))) :]


def packed_set_payload(items: list[Any]) -> bytes | None:
    """The encodings of a set's plain scalars, sorted bytewise and back to back."""
    if _ascii_keys(items):
        packed = _packed(sorted(sorted(items), key=len))
        return None if packed is None else packed[len(array_header(len(items))) :]
    if not _plain(items):
        return None
    try:
        encodings = list(map(pack, items))
    except _REFUSED:
        return None
    encodings.sort()
    return b"".join(encodings)


def packed_dict(value: dict[Any, Any]) -> bytes | None:
    """The canonical bytes of a dict of plain scalars: a msgpack map, entries sorted by the
    bytes of the encoded keys."""
    keys = list(value)
    ordered = _key_order(keys)
    if ordered is None:
        return None
    items = list(value.values())
    numbers = _likely_numbers(items)
    if not numbers and not _plain(items):
        return None
    if ordered != keys:
        value = dict(zip(ordered, map(value.__getitem__, ordered), strict=True))
    packed = _packed(value)
    if packed is None or (numbers and not _plain_once_packed(items)):
        return None
    return packed


def _packed(value: Any) -> bytes | None:
    try:
        return pack(value)
    except _REFUSED:
        return None


def _likely_numbers(items: list[Any]) -> bool:
    return len(items) >= _LONG and type(items[0]) in _NUMBERS and type(items[-1]) in _NUMBERS


def _plain(items: list[Any]) -> bool:
    """Whether every item is a plain scalar, no float is a NaN and no str or bytes is keyed
    by digest."""
    if len(items) < _LONG:
        for item in items:
            cls = type(item)
            if cls is float:
                if item != item:
                    return False
            elif cls is str or cls is bytes:
                if len(item) >= LARGE_BUFFER:
                    return False
            elif cls not in PLAIN:
                return False
        return True
    types = set(map(type, items))
    if not types <= PLAIN:
        return False
    if float in types:
        total = sum(items if len(types) == 1 else filter(float.__instancecheck__, items))
        if total != total:  # a NaN (or inf - inf: refused too)
            return False
    if str in types:
        strs = items if len(types) == 1 else filter(str.__instancecheck__, items)
        if max(map(len, strs)) >= LARGE_BUFFER:
            return False
    if bytes in types:
        blobs = items if len(types) == 1 else filter(bytes.__instancecheck__, items)
        if max(map(len, blobs)) >= LARGE_BUFFER:
            return False
    return True


def _plain_once_packed(items: list[Any]) -> bool:
    """``_plain`` for items the packer has accepted, tried first as numbers."""
    try:
        total = sum(items)
    except TypeError:  # not numbers only: msgpack packs no other type that adds to an int
        return _plain(items)
    return bool(total == total)


def _key_order(keys: list[Any]) -> list[Any] | None:
    """Distinct plain scalars (dict keys) in the order of their encodings; None when one is
    not plain."""
    if _ascii_keys(keys):
        return sorted(sorted(keys), key=len)
    if not _plain(keys):
        return None
    try:
        encodings = list(map(pack, keys))
    except _REFUSED:
        return None
    return list(map(keys.__getitem__, sorted(range(len(keys)), key=encodings.__getitem__)))


def _ascii_keys(keys: list[Any]) -> bool:
    """Whether the keys are exact str of ASCII characters not keyed by digest, whose order
    is then their encodings' without encoding them: by length (which the header holds),
    then by character."""
    if countOf(map(type, keys), str) != len(keys):
        return False
    joined = "".join(keys)
    if not joined.isascii():
        return False
    return len(joined) < LARGE_BUFFER or max(map(len, keys)) < LARGE_BUFFER
