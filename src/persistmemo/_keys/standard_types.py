"""The encoders of Python's own value types: builtins, datetimes, Decimal, UUID, paths.

The builtins are the encodings the hit path runs most: a list, tuple, dict or set of plain
scalars is packed by msgpack's C code in one call when that gives the same bytes as the
item-by-item encoding (packed.py), NaN is one canonical NaN, and containers without an order
(dict, set) are sorted by the bytes of their items. The standard library's types are keyed by the
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
from persistmemo._keys.packed import packed_dict, packed_items, packed_payload, packed_set_payload
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


def _encode_list(value: list[Any]) -> bytes:
    packed = packed_items(value)
    if packed is not None:
        return packed
    return array_header(len(value)) + concat(value)


def _encode_tuple(value: tuple[Any, ...]) -> bytes:
    payload = packed_payload(list(value))
    if payload is not None:
        return ext(KeyExtension.TUPLE, payload)
    return ext(KeyExtension.TUPLE, concat(value))


def _encode_dict(value: dict[Any, Any]) -> bytes:
    packed = packed_dict(value)
    if packed is not None:
        return packed
    # Entries sorted by the bytes of their keys: independent of insertion order, and
    # total because distinct keys never share bytes.
    entries = sorted((encode_item(key), encode_item(item)) for key, item in value.items())
    return map_header(len(entries)) + b"".join([key + item for key, item in entries])


def _encode_set(value: set[Any]) -> bytes:
    return ext(KeyExtension.SET, _sorted_encodings(list(value)))


def _encode_frozenset(value: frozenset[Any]) -> bytes:
    return ext(KeyExtension.FROZENSET, _sorted_encodings(list(value)))


def _sorted_encodings(items: list[Any]) -> bytes:
    payload = packed_set_payload(items)
    if payload is not None:
        return payload
    return b"".join(sorted([encode_item(item) for item in items]))


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
