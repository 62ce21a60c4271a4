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

Dict keys and set items are put in the order of their encodings. For keys all of exact str or
all of exact int, that order is worked out once and remembered by the keys as given (a
function is mostly called with dicts of the same keys); a dict not in it is packed as one
array of its keys and values alternating, under the map's header.
"""

from __future__ import annotations

from operator import countOf, itemgetter

from persistmemo._keys.digests import LARGE_BUFFER
from persistmemo._keys.framing import array_header, map_header, pack

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TypeAlias

    Reorder: TypeAlias = Callable[[Sequence[Any]], Sequence[Any]]

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
    distinct = tuple(items)
    if _remembered_kind(distinct):
        reorder = _remembered_order(distinct)
        if reorder is None:
            return None
        packed = _packed(items if reorder is _IN_ORDER else list(reorder(distinct)))
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
    keys = tuple(value)
    reorder = _key_order(keys)
    if reorder is None:
        return None
    items = list(value.values())
    numbers = _likely_numbers(items)
    if not numbers and not _plain(items):
        return None
    if reorder is _IN_ORDER:
        packed = _packed(value)
    else:
        packed = _packed_entries(reorder(keys), reorder(items))
    if packed is None or (numbers and not _plain_once_packed(items)):
        return None
    return packed


def _packed_entries(keys: Sequence[Any], items: Sequence[Any]) -> bytes | None:
    """A msgpack map of ``keys`` and ``items`` in their order: packed as one array of them
    alternating, whose header is then the map's, rather than a dict built in their order."""
    entries: list[Any] = [None] * (2 * len(keys))
    entries[0::2] = keys
    entries[1::2] = items
    packed = _packed(entries)
    if packed is None:
        return None
    return map_header(len(keys)) + memoryview(packed)[len(array_header(len(entries))) :]


def _packed(value: Any) -> bytes | None:
    try:
        return pack(value)
    except _REFUSED:
        return None


def _likely_numbers(items: list[Any]) -> bool:
    return len(items) >= _LONG and type(items[0]) in _NUMBERS and type(items[-1]) in _NUMBERS


def _plain(items: Sequence[Any]) -> bool:
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


def _key_order(keys: tuple[Any, ...]) -> Reorder | None:
    """How distinct plain scalars (dict keys, set items) are put in the order of their
    encodings: ``_IN_ORDER`` when they are in it, else a function that reorders them (or
    any sequence in step with them); None when one is not plain."""
    if _remembered_kind(keys):
        return _remembered_order(keys)
    if not _plain(keys):
        return None
    return _order_of_encodings(keys)


def _remembered_kind(keys: tuple[Any, ...]) -> bool:
    """Whether the keys are all exact str or all exact int, whose order is remembered."""
    kind = type(keys[0]) if keys else str
    return (kind is str or kind is int) and countOf(map(type, keys), kind) == len(keys)


def _remembered_order(keys: tuple[Any, ...]) -> Reorder | None:
    """``_key_order`` of exact str or exact int, remembered by the keys as given: a function
    is mostly called with dicts of the same keys, which are then put in order by one lookup."""
    reorder: Reorder | None = _ORDERS.get(keys, _UNSEEN)
    if reorder is _UNSEEN:
        of_ints = bool(keys) and type(keys[0]) is int
        reorder, size = _order_of_ints(keys) if of_ints else _order_of_strs(keys)
        if size < _REMEMBERED_SIZE:
            if len(_ORDERS) >= _REMEMBERED_ORDERS:
                _ORDERS.clear()  # not least recently used: one step, safe in any thread
            _ORDERS[keys] = reorder
    return reorder


# Equal tuples of exact str (or of exact int) hold the same values, whose encodings are in the
# same order; the lookup compares exact str and int only (their types are checked first), so
# it runs no code of the caller's. At most this many orders are kept, of keys of about this
# many bytes in all, so that a large argument's keys are never kept alive.
_ORDERS: dict[tuple[Any, ...], Reorder | None] = {}
_REMEMBERED_ORDERS = 64
_REMEMBERED_SIZE = 0x4000
_UNSEEN: Any = object()


def _order_of_strs(keys: tuple[str, ...]) -> tuple[Reorder | None, int]:
    """``_key_order`` of exact str, and their characters in all."""
    joined = "".join(keys)
    if len(joined) >= LARGE_BUFFER and max(map(len, keys)) >= LARGE_BUFFER:
        return None, len(joined)  # keyed by digest
    if joined.isascii():
        # An ASCII str encodes to its characters after a header that holds their number:
        # ordered by length, then by character, without encoding them.
        ordered = sorted(sorted(keys), key=len)
        position = dict(zip(keys, range(len(keys)), strict=True))
        return _reorder(list(map(position.__getitem__, ordered))), len(joined)
    return _order_of_encodings(keys), len(joined)  # None for a lone surrogate


def _order_of_ints(keys: tuple[int, ...]) -> tuple[Reorder | None, int]:
    """``_key_order`` of exact int, and the bytes of their encodings at most (an int too
    large for msgpack, keyed by its own bytes, is never remembered)."""
    reorder = _order_of_encodings(keys)
    return reorder, _REMEMBERED_SIZE if reorder is None else 9 * len(keys)


def _order_of_encodings(keys: tuple[Any, ...]) -> Reorder | None:
    """Plain scalars put in the order of their encodings; None when one cannot be packed."""
    try:
        encodings = list(map(pack, keys))
    except _REFUSED:
        return None
    return _reorder(sorted(range(len(keys)), key=encodings.__getitem__))


def _in_order(items: Sequence[Any]) -> Sequence[Any]:
    """The reordering of items in order already (callers compare to it, to skip it)."""
    return items


_IN_ORDER: Reorder = _in_order


def _reorder(positions: list[int]) -> Reorder:
    """The function that puts a sequence's items at ``positions`` in that order."""
    if positions == list(range(len(positions))):
        return _IN_ORDER
    return itemgetter(*positions)  # C code, for two items or more (one is always in order)
