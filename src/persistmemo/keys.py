"""Canonical, type-tagged bytes for argument values, and the key strings built from them.

Every supported value maps to exactly one msgpack document (the spec is ``docs/keys.md``):
equal values give equal bytes in every process whatever ``PYTHONHASHSEED`` or insertion
order, and values of different types give different bytes. A call's key is

    pm1:<function identity>:<version>:<blake2b-256 of identity, version and arguments>

Keys are never built from ``hash()``, ``repr()`` of arbitrary objects or pickle. Changing
anything here that changes a key is a format change: bump ``KEY_FORMAT`` and the golden
vectors in ``tests/golden_keys.json`` together.
"""

from __future__ import annotations

import hashlib
import math
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from persistmemo.naming import qualified_name

KEY_FORMAT = "pm1"
"""Version of the argument encoding and key layout; part of every key."""

HOOK_NAME = "__persistmemo_key__"
"""Method a type may define to say what its instances are keyed by."""

LARGE_BUFFER = 64 * 1024
"""bytes, bytearray and str of at least this many bytes/characters are keyed by digest."""

DIGEST_SIZE = 32

# Extension codes of the key encoding. Never renumber: they are in stored keys.
EXT_BIGINT = 1
EXT_STR_SURROGATES = 2
EXT_LARGE_STR = 3
EXT_LARGE_BYTES = 4
EXT_BYTEARRAY = 5
EXT_TUPLE = 6
EXT_SET = 7
EXT_FROZENSET = 8
EXT_DATETIME = 9
EXT_DATE = 10
EXT_TIME = 11
EXT_TIMEDELTA = 12
EXT_DECIMAL = 13
EXT_UUID = 14
EXT_COMPLEX = 15
EXT_PATH = 16
EXT_ENUM = 17
EXT_DATACLASS = 18
EXT_NAMEDTUPLE = 19
EXT_TYPE = 20
EXT_NDARRAY = 21
EXT_NUMPY_SCALAR = 22
EXT_HOOK = 23
EXT_SUBCLASS = 24

# One NaN for all NaNs: every NaN argument is the same key (NaN != NaN would otherwise make
# f(nan) a permanent miss). -0.0 keeps its own bytes: it is a different value from 0.0
# (math.copysign, atan2 and 1/x tell them apart).
_CANONICAL_NAN = struct.pack(">Bd", 0xCB, math.nan)

# No `default=` hook, so packing never calls back into Python and one packer can serve
# every thread.
_pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True, strict_types=True).pack


class UnsupportedType(TypeError):
    """Raised when a value of a type with no defined key encoding is met."""

    def __init__(self, unsupported: type, reason: str = "") -> None:
        self.unsupported = unsupported
        self.reason = reason
        super().__init__(f"type {type_label(unsupported)} is not supported{reason}")


def type_label(cls: type) -> str:
    """Name a type for error messages: ``sqlite3.Connection``, ``int``."""
    module = getattr(cls, "__module__", "")
    name = getattr(cls, "__qualname__", cls.__name__)
    return name if module == "builtins" else f"{module}.{name}"


def digest(buffer: bytes | bytearray | memoryview) -> bytes:
    """BLAKE3-256 of a buffer keyed by digest (str and bytes of 64 KiB and more, arrays).

    BLAKE3 hashes a 100 MB array in a few milliseconds on all cores (BLAKE2b takes ~70 ms,
    joblib.hash ~120 ms); the digest is the same however many threads computed it.
    """
    import blake3  # only large arguments need it

    return blake3.blake3(buffer, max_threads=blake3.blake3.AUTO).digest(DIGEST_SIZE)


def encode(value: object) -> bytes:
    """Return the canonical bytes of ``value``.

    Raises UnsupportedType for a value (or a value inside it) that has no key encoding.

    >>> encode(1) != encode(1.0) != encode(True) != encode("1")
    True
    >>> encode({"a": 1, "b": 2}) == encode({"b": 2, "a": 1})
    True
    """
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        encoder = _encoder_for(type(value))
    return encoder(value)


def encode_arguments(values: Sequence[object]) -> bytes:
    """Canonical bytes of a call's bound argument values (a msgpack array of them)."""
    if len(values) == 1:  # the commonest call, spared a list and a join
        value = values[0]
        encoder = _ENCODERS.get(type(value)) or _encoder_for(type(value))
        return b"\x91" + encoder(value)
    return _array_header(len(values)) + b"".join([encode(value) for value in values])


class KeyBuilder:
    """Builds the key strings of one function identity and version.

    What does not depend on the arguments (the prefix, the hasher's state after the
    identity and version) is computed once here, so a call pays only for its arguments.
    """

    __slots__ = ("_seeded", "prefix")

    def __init__(self, identity: str, version: str) -> None:
        self.prefix = f"{KEY_FORMAT}:{identity}:{version}:"
        self._seeded = hashlib.blake2b(digest_size=DIGEST_SIZE)
        # Identity and version are hashed as a length-prefixed array, so the digest alone
        # separates functions and versions, whatever characters their names contain.
        self._seeded.update(encode_arguments([KEY_FORMAT, identity, version]))

    def key(self, canonical_arguments: bytes) -> str:
        """The key of a call whose arguments encode to ``canonical_arguments``."""
        hasher = self._seeded.copy()
        hasher.update(canonical_arguments)
        return self.prefix + hasher.hexdigest()


def identity_of(key: str) -> str:
    """The function identity inside a key (versions never contain ':', identities may)."""
    return key[len(KEY_FORMAT) + 1 :].rsplit(":", 2)[0]


# --- msgpack framing -------------------------------------------------------------------


def _array_header(length: int) -> bytes:
    if length < 16:
        return bytes((0x90 | length,))
    if length < 0x10000:
        return struct.pack(">BH", 0xDC, length)
    return struct.pack(">BI", 0xDD, length)


def _map_header(length: int) -> bytes:
    if length < 16:
        return bytes((0x80 | length,))
    if length < 0x10000:
        return struct.pack(">BH", 0xDE, length)
    return struct.pack(">BI", 0xDF, length)


def _ext(code: int, payload: bytes) -> bytes:
    return _pack(msgpack.ExtType(code, payload))


def _concat(values: Sequence[object] | Any) -> bytes:
    """Each element's encoding, back to back: msgpack documents delimit themselves."""
    return b"".join([encode(value) for value in values])


# --- encoders of the built-in types ------------------------------------------------------


def _encode_int(value: int) -> bytes:
    try:
        return _pack(value)
    except OverflowError:
        length = (value.bit_length() + 8) // 8
        return _ext(EXT_BIGINT, value.to_bytes(length, "big", signed=True))


def _encode_float(value: float) -> bytes:
    if value != value:
        return _CANONICAL_NAN
    return _pack(value)


def _encode_str(value: str) -> bytes:
    if len(value) >= LARGE_BUFFER:
        data = value.encode("utf-8", "surrogatepass")
        return _ext(EXT_LARGE_STR, _pack(len(data)) + digest(data))
    try:
        return _pack(value)
    except UnicodeEncodeError:
        return _ext(EXT_STR_SURROGATES, value.encode("utf-8", "surrogatepass"))


def _encode_bytes(value: bytes) -> bytes:
    if len(value) >= LARGE_BUFFER:
        return _ext(EXT_LARGE_BYTES, _pack(len(value)) + digest(value))
    return _pack(value)


def _encode_bytearray(value: bytearray) -> bytes:
    return _ext(EXT_BYTEARRAY, _encode_bytes(bytes(value)))


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
        return _pack(items if type(items) is list else list(items))
    except (OverflowError, UnicodeEncodeError):
        return None


def _encode_list(value: list[Any]) -> bytes:
    if len(value) >= _FLAT_MINIMUM and (packed := _packed_flat(value)) is not None:
        return packed
    return _array_header(len(value)) + _concat(value)


def _encode_tuple(value: tuple[Any, ...]) -> bytes:
    if len(value) >= _FLAT_MINIMUM and (packed := _packed_flat(value)) is not None:
        return _ext(EXT_TUPLE, packed[len(_array_header(len(value))) :])
    return _ext(EXT_TUPLE, _concat(value))


def _encode_dict(value: dict[Any, Any]) -> bytes:
    # Entries sorted by the bytes of their keys: independent of insertion order, and
    # total because distinct keys never share bytes.
    if len(value) >= _FLAT_MINIMUM:
        flat = _packed_flat_entries(value)
        if flat is not None:
            return flat
    entries = sorted((encode(key), encode(item)) for key, item in value.items())
    return _map_header(len(entries)) + b"".join([key + item for key, item in entries])


def _packed_flat_entries(value: dict[Any, Any]) -> bytes | None:
    """``_encode_dict`` for str keys and flat values, with each item packed in C."""
    if set(map(type, value)) != {str} or _packed_flat(list(value.values())) is None:
        return None
    try:
        keys = list(map(_pack, value))
    except UnicodeEncodeError:
        return None
    if max(map(len, keys)) >= LARGE_BUFFER:
        return None
    entries = sorted(zip(keys, map(_pack, value.values()), strict=True))
    return _map_header(len(entries)) + b"".join([key + item for key, item in entries])


def _encode_set(value: set[Any]) -> bytes:
    return _ext(EXT_SET, b"".join(sorted([encode(item) for item in value])))


def _encode_frozenset(value: frozenset[Any]) -> bytes:
    return _ext(EXT_FROZENSET, b"".join(sorted([encode(item) for item in value])))


def _encode_tzinfo(tz: Any) -> bytes:
    if tz is None:
        return _pack(None)
    if type(tz) is sys.modules["datetime"].timezone:
        offset = tz.utcoffset(None)
        return encode(["fixed", offset, tz.tzname(None)])
    zone_key = getattr(tz, "key", None) or getattr(tz, "zone", None)  # zoneinfo, pytz
    if isinstance(zone_key, str):
        return encode(["zone", zone_key])
    raise UnsupportedType(type(tz), " as a tzinfo (use datetime.timezone or zoneinfo)")


def _encode_datetime(value: Any) -> bytes:
    fields = [value.year, value.month, value.day, value.hour, value.minute, value.second]
    fields += [value.microsecond, value.fold]
    return _ext(EXT_DATETIME, _concat(fields) + _encode_tzinfo(value.tzinfo))


def _encode_date(value: Any) -> bytes:
    return _ext(EXT_DATE, _concat([value.year, value.month, value.day]))


def _encode_time(value: Any) -> bytes:
    fields = [value.hour, value.minute, value.second, value.microsecond, value.fold]
    return _ext(EXT_TIME, _concat(fields) + _encode_tzinfo(value.tzinfo))


def _encode_timedelta(value: Any) -> bytes:
    return _ext(EXT_TIMEDELTA, _concat([value.days, value.seconds, value.microseconds]))


def _encode_decimal(value: Any) -> bytes:
    # str() keeps what equality forgets and a function may see: 1.0 vs 1.00, -0, sNaN.
    return _ext(EXT_DECIMAL, _pack(str(value)))


def _encode_uuid(value: Any) -> bytes:
    return _ext(EXT_UUID, value.bytes)


def _encode_complex(value: complex) -> bytes:
    return _ext(EXT_COMPLEX, _encode_float(value.real) + _encode_float(value.imag))


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    type(None): _pack,
    bool: _pack,
    int: _encode_int,
    float: _encode_float,
    str: _encode_str,
    bytes: _encode_bytes,
    bytearray: _encode_bytearray,
    list: _encode_list,
    tuple: _encode_tuple,
    dict: _encode_dict,
    set: _encode_set,
    frozenset: _encode_frozenset,
    complex: _encode_complex,
}
_BUILTINS: tuple[tuple[type, Callable[[Any], bytes]], ...] = tuple(_ENCODERS.items())


def _stdlib_encoders() -> list[tuple[type, Callable[[Any], bytes]]]:
    """Encoders of the standard library's value types, for the modules already loaded.

    A value of a type can only exist once its module is imported, so these need not be
    imported with persistmemo (which keeps ``import persistmemo`` light). Listed subclasses
    first: a datetime is also a date.
    """
    found: list[tuple[type, Callable[[Any], bytes]]] = []
    datetime = sys.modules.get("datetime")
    if datetime is not None:
        found += [
            (datetime.datetime, _encode_datetime),
            (datetime.date, _encode_date),
            (datetime.time, _encode_time),
            (datetime.timedelta, _encode_timedelta),
        ]
    decimal = sys.modules.get("decimal")
    if decimal is not None:
        found.append((decimal.Decimal, _encode_decimal))
    uuid = sys.modules.get("uuid")
    if uuid is not None:
        found.append((uuid.UUID, _encode_uuid))
    return found


# --- encoders chosen by what a type is, not which it is -----------------------------------


def _encode_with_hook(value: Any) -> bytes:
    keyed_on = getattr(value, HOOK_NAME)()
    return _ext(EXT_HOOK, _pack(qualified_name(type(value))) + encode(keyed_on))


def _encode_enum(value: Any) -> bytes:
    # Flag combinations have no name on older Pythons: their value names them then.
    name = value.name
    tail = _pack(name) if name is not None else encode(value.value)
    return _ext(EXT_ENUM, _pack(qualified_name(type(value))) + tail)


def _encode_namedtuple(value: Any) -> bytes:
    fields = [item for pair in zip(value._fields, value, strict=True) for item in pair]
    return _ext(EXT_NAMEDTUPLE, _pack(qualified_name(type(value))) + _concat(fields))


def _encode_dataclass(value: Any) -> bytes:
    fields = []
    for field in sys.modules["dataclasses"].fields(value):
        fields += [field.name, getattr(value, field.name)]
    return _ext(EXT_DATACLASS, _pack(qualified_name(type(value))) + _concat(fields))


def _encode_type(value: type) -> bytes:
    return _ext(EXT_TYPE, _pack(qualified_name(value)))


def _encode_path(value: Any) -> bytes:
    # Keyed by flavour, not class: Path("a") and PurePosixPath("a") name the same file.
    flavour = "windows" if isinstance(value, sys.modules["pathlib"].PureWindowsPath) else "posix"
    return _ext(EXT_PATH, _pack(flavour) + _pack(str(value)))


def _encode_ndarray(value: Any) -> bytes:
    if value.dtype.hasobject:
        raise UnsupportedType(type(value), " with dtype=object (its items are Python objects)")
    contiguous = value if value.flags.c_contiguous else _numpy().ascontiguousarray(value)
    # The buffer is hashed in place: a 100 MB array is never copied into the key.
    data = memoryview(contiguous).cast("B") if contiguous.size else b""
    header = encode(_dtype_descriptor(value.dtype)) + encode(list(value.shape))
    return _ext(EXT_NDARRAY, header + _pack(digest(data)))


def _encode_numpy_scalar(value: Any) -> bytes:
    if value.dtype.hasobject:
        raise UnsupportedType(type(value))
    return _ext(EXT_NUMPY_SCALAR, encode(_dtype_descriptor(value.dtype)) + value.tobytes())


def _dtype_descriptor(dtype: Any) -> object:
    # dtype.str alone loses a structured dtype's field names; descr keeps them.
    return dtype.descr if dtype.fields is not None else dtype.str


def _numpy() -> Any:
    return sys.modules["numpy"]


def _subclass_encoder(base: type, base_encoder: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    # msgpack packs only exact scalar types: those are converted to their base first.
    as_base: Callable[[Any], Any] = base if base in (int, float, str, bytes) else lambda v: v

    def encode_subclass(value: Any) -> bytes:
        state = getattr(value, "__dict__", None)
        extra = encode(state) if state else _pack(None)
        payload = _pack(qualified_name(type(value))) + base_encoder(as_base(value)) + extra
        return _ext(EXT_SUBCLASS, payload)

    return encode_subclass


def _encoder_for(cls: type) -> Callable[[Any], bytes]:
    """Choose (and remember) the encoder of a type that is not in the table yet."""
    encoder = _choose_encoder(cls)
    _ENCODERS[cls] = encoder
    return encoder


def _choose_encoder(cls: type) -> Callable[[Any], bytes]:
    known = [*_BUILTINS, *_stdlib_encoders()]
    for base, encoder in known:
        if cls is base:
            return encoder
    if callable(getattr(cls, HOOK_NAME, None)):
        return _encode_with_hook
    enum = sys.modules.get("enum")
    if enum is not None and issubclass(cls, enum.Enum):
        return _encode_enum
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return _encode_namedtuple
    dataclasses = sys.modules.get("dataclasses")
    if dataclasses is not None and dataclasses.is_dataclass(cls):
        return _encode_dataclass
    if issubclass(cls, type):
        return _encode_type
    pathlib = sys.modules.get("pathlib")
    if pathlib is not None and issubclass(cls, pathlib.PurePath):
        return _encode_path
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if issubclass(cls, numpy.ndarray):
            return _encode_ndarray
        if issubclass(cls, numpy.generic):
            return _encode_numpy_scalar
    for base, encoder in known:
        if issubclass(cls, base):
            return _subclass_encoder(base, encoder)
    return _raise_unsupported


def _raise_unsupported(value: object) -> bytes:
    raise UnsupportedType(type(value))
