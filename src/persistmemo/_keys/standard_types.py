"""The encoders of Python's own value types: builtins, datetimes, Decimal, UUID, paths.

The builtins are the encodings the hit path runs most: a flat list, tuple or dict of numbers
and short strings is packed by msgpack's C code in one call when that gives the same bytes as
the item-by-item encoding, NaN is one canonical NaN, and containers without an order (dict,
set) are sorted by the bytes of their items. The standard library's types are keyed by the
fields that make their value, tzinfo included, and their modules are never imported here: a
value of a type exists only once its module is loaded (see dispatch.py).
"""

from __future__ import annotations

import math
import struct
import sys

from persistmemo._keys.digests import LARGE_BUFFER, digest
from persistmemo._keys.encoders import concat, encode_item
from persistmemo._keys.framing import KeyExtension, array_header, ext, map_header, pack
from persistmemo.errors import UnsupportedType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from persistmemo._keys.encoders import Encoder

# One NaN for all NaNs: every NaN argument is the same key (NaN != NaN would otherwise make
# f(nan) a permanent miss). -0.0 keeps its own bytes: it is a different value from 0.0
# (math.copysign, atan2 and 1/x tell them apart).
_CANONICAL_NAN = struct.pack(">Bd", 0xCB, math.nan)


def _encode_int(value: int) -> bytes:
    try:
        return pack(value)
    except OverflowError:
        length = (value.bit_length() + 8) // 8
        return ext(KeyExtension.BIGINT, value.to_bytes(length, "big", signed=True))


def _encode_float(value: float) -> bytes:
    if value != value:
        return _CANONICAL_NAN
    return pack(value)


def _encode_str(value: str) -> bytes:
    if len(value) >= LARGE_BUFFER:
        data = value.encode("utf-8", "surrogatepass")
        return ext(KeyExtension.LARGE_STR, pack(len(data)) + digest(data))
    try:
        return pack(value)
    except UnicodeEncodeError:
        return ext(KeyExtension.STR_SURROGATES, value.encode("utf-8", "surrogatepass"))


def _encode_bytes(value: bytes) -> bytes:
    if len(value) >= LARGE_BUFFER:
        return ext(KeyExtension.LARGE_BYTES, pack(len(value)) + digest(value))
    return pack(value)


def _encode_bytearray(value: bytearray) -> bytes:
    return ext(KeyExtension.BYTEARRAY, _encode_bytes(bytes(value)))


# Sequences of at least this many items try msgpack's own packing first (below).
_FLAT_MINIMUM = 8
_NUMBERS = frozenset((int, float, bool))


def _packed_flat(items: list[Any] | tuple[Any, ...] | Any) -> bytes | None:
    """msgpack's packing of a flat sequence of numbers or short strings, done in C, when it
    is byte for byte the item-by-item canonical encoding; None when it may not be.

    It is when no float is a NaN (which the canonical form rewrites), every int fits
    msgpack's range and every str is short and has no lone surrogate: the packer raises
    for the last two, and ``sum`` turns any NaN into a NaN total.
    """
    types = set(map(type, items))
    if types <= _NUMBERS:
        if float in types:
            try:
                total = sum(items)
            except OverflowError:
                return None
            if total != total:
                return None
    elif types == {str}:
        if max(map(len, items)) >= LARGE_BUFFER:
            return None
    else:
        return None
    try:
        return pack(items if type(items) is list else list(items))
    except (OverflowError, UnicodeEncodeError):
        return None


def _encode_list(value: list[Any]) -> bytes:
    if len(value) >= _FLAT_MINIMUM and (packed := _packed_flat(value)) is not None:
        return packed
    return array_header(len(value)) + concat(value)


def _encode_tuple(value: tuple[Any, ...]) -> bytes:
    if len(value) >= _FLAT_MINIMUM and (packed := _packed_flat(value)) is not None:
        return ext(KeyExtension.TUPLE, packed[len(array_header(len(value))) :])
    return ext(KeyExtension.TUPLE, concat(value))


def _encode_dict(value: dict[Any, Any]) -> bytes:
    # Entries sorted by the bytes of their keys: independent of insertion order, and
    # total because distinct keys never share bytes.
    if len(value) >= _FLAT_MINIMUM:
        flat = _packed_flat_entries(value)
        if flat is not None:
            return flat
    entries = sorted((encode_item(key), encode_item(item)) for key, item in value.items())
    return map_header(len(entries)) + b"".join([key + item for key, item in entries])


def _packed_flat_entries(value: dict[Any, Any]) -> bytes | None:
    """``_encode_dict`` for str keys and flat values, with each item packed in C."""
    if set(map(type, value)) != {str} or _packed_flat(list(value.values())) is None:
        return None
    try:
        keys = list(map(pack, value))
    except UnicodeEncodeError:
        return None
    if max(map(len, keys)) >= LARGE_BUFFER:
        return None
    entries = sorted(zip(keys, map(pack, value.values()), strict=True))
    return map_header(len(entries)) + b"".join([key + item for key, item in entries])


def _encode_set(value: set[Any]) -> bytes:
    return ext(KeyExtension.SET, b"".join(sorted([encode_item(item) for item in value])))


def _encode_frozenset(value: frozenset[Any]) -> bytes:
    return ext(KeyExtension.FROZENSET, b"".join(sorted([encode_item(item) for item in value])))


def _encode_complex(value: complex) -> bytes:
    return ext(KeyExtension.COMPLEX, _encode_float(value.real) + _encode_float(value.imag))


def encode_tzinfo(tz: Any) -> bytes:
    """The canonical bytes of a datetime's tzinfo (None, a fixed offset or a named zone)."""
    if tz is None:
        return pack(None)
    if type(tz) is sys.modules["datetime"].timezone:
        offset = tz.utcoffset(None)
        return encode_item(["fixed", offset, tz.tzname(None)])
    zone_key = getattr(tz, "key", None) or getattr(tz, "zone", None)  # zoneinfo, pytz
    if isinstance(zone_key, str):
        return encode_item(["zone", zone_key])
    raise UnsupportedType(type(tz), " as a tzinfo (use datetime.timezone or zoneinfo)")


def encode_datetime(value: Any) -> bytes:
    fields = [value.year, value.month, value.day, value.hour, value.minute, value.second]
    fields += [value.microsecond, value.fold]
    return ext(KeyExtension.DATETIME, concat(fields) + encode_tzinfo(value.tzinfo))


def encode_date(value: Any) -> bytes:
    return ext(KeyExtension.DATE, concat([value.year, value.month, value.day]))


def encode_time(value: Any) -> bytes:
    fields = [value.hour, value.minute, value.second, value.microsecond, value.fold]
    return ext(KeyExtension.TIME, concat(fields) + encode_tzinfo(value.tzinfo))


def encode_timedelta(value: Any) -> bytes:
    return ext(KeyExtension.TIMEDELTA, concat([value.days, value.seconds, value.microseconds]))


def encode_decimal(value: Any) -> bytes:
    # str() keeps what equality forgets and a function may see: 1.0 vs 1.00, -0, sNaN.
    return ext(KeyExtension.DECIMAL, pack(str(value)))


def encode_uuid(value: Any) -> bytes:
    return ext(KeyExtension.UUID, value.bytes)


def encode_path(value: Any) -> bytes:
    # Keyed by flavour, not class: Path("a") and PurePosixPath("a") name the same file.
    flavour = "windows" if isinstance(value, sys.modules["pathlib"].PureWindowsPath) else "posix"
    return ext(KeyExtension.PATH, pack(flavour) + pack(str(value)))


BUILTIN_ENCODERS: tuple[tuple[type, Encoder], ...] = (
    (type(None), pack),
    (bool, pack),
    (int, _encode_int),
    (float, _encode_float),
    (str, _encode_str),
    (bytes, _encode_bytes),
    (bytearray, _encode_bytearray),
    (list, _encode_list),
    (tuple, _encode_tuple),
    (dict, _encode_dict),
    (set, _encode_set),
    (frozenset, _encode_frozenset),
    (complex, _encode_complex),
)
"""The built-in types and their encoders, in the order a subclass is matched to its base."""
