"""Canonical, type-tagged bytes for argument values, and the key strings built from them.

Every supported value maps to exactly one msgpack document (the spec is ``docs/keys.md``):
equal values give equal bytes in every process whatever ``PYTHONHASHSEED`` or insertion
order, and values of different types give different bytes. A call's key is

    pm2:<function identity>:<version>:<blake2b-128 of identity, version and arguments>

(``pm1`` keys, before, ended in blake2b-256; see docs/keys.md)

Keys are never built from ``hash()``, ``repr()`` of arbitrary objects or pickle. Changing
anything here that changes a key is a format change: bump ``KEY_FORMAT`` and the golden
vectors in ``tests/golden_keys.json`` together.
"""

from __future__ import annotations

import math
import struct
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any, cast

import msgpack

from persistmemo._hashing import blake2b, hashing_threads
from persistmemo._naming import qualified_name
from persistmemo.errors import UnsupportedNesting, UnsupportedType, type_label

KEY_FORMAT = "pm2"
"""Version of the argument encoding and key layout; part of every key. ``pm2`` keys end in
a 128-bit digest (32 hex digits): a store keeps each key twice (its row and its index), and
``pm1``'s 256-bit digest made a small entry cost 2.3 times diskcache's own."""

RESULT_FORMATS = ("pm1", KEY_FORMAT)
"""Key formats of stored results. Entries of an older format are never read again (their
keys are not built any more) but are still counted, listed, cleared and pruned."""

KEY_DIGEST_SIZE = 16

HOOK_NAME = "__persistmemo_key__"
"""Method a type may define to say what its instances are keyed by."""

LARGE_BUFFER = 64 * 1024
"""bytes, bytearray and str of at least this many bytes/characters are keyed by digest."""

DIGEST_SIZE = 32

MAX_NESTING = 100
"""Nesting depth always keyed. A value nested deeper is keyed while Python's recursion limit
allows, and refused with UnsupportedNesting when encoding it runs out of stack."""

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
EXT_ARRAY_SUBCLASS = 25
EXT_PANDAS_TIMESTAMP = 26
EXT_PANDAS_TIMEDELTA = 27
EXT_PANDAS = 28
EXT_ARROW = 29
EXT_POLARS = 30

# One NaN for all NaNs: every NaN argument is the same key (NaN != NaN would otherwise make
# f(nan) a permanent miss). -0.0 keeps its own bytes: it is a different value from 0.0
# (math.copysign, atan2 and 1/x tell them apart).
_CANONICAL_NAN = struct.pack(">Bd", 0xCB, math.nan)

# No `default=` hook, so packing never calls back into Python and one packer can serve
# every thread.
_pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True, strict_types=True).pack


def digest(buffer: bytes | bytearray | memoryview) -> bytes:
    """BLAKE3-256 of a buffer keyed by digest (str and bytes of 64 KiB and more, arrays).

    BLAKE3 hashes a 100 MB array in a few milliseconds on all cores (BLAKE2b takes ~70 ms,
    joblib.hash ~120 ms); the digest is the same however many threads computed it.
    """
    import blake3  # only large arguments need it

    size = buffer.nbytes if isinstance(buffer, memoryview) else len(buffer)
    return blake3.blake3(buffer, max_threads=hashing_threads(size)).digest(DIGEST_SIZE)


def encode(value: object) -> bytes:
    """Return the canonical bytes of ``value``.

    Raises UnsupportedType for a value (or a value inside it) that has no key encoding, and
    UnsupportedNesting (a kind of UnsupportedType) for one that contains itself or is nested
    deeper than ``MAX_NESTING`` levels.

    >>> encode(1) != encode(1.0) != encode(True) != encode("1")
    True
    >>> encode({"a": 1, "b": 2}) == encode({"b": 2, "a": 1})
    True
    """
    try:
        encoder = _ENCODERS.get(type(value))
        if encoder is None:
            encoder = _encoder_for(type(value))
        return encoder(value)
    except RecursionError:
        # Diagnosed here, once, rather than by counting depth on every call: the common
        # path pays nothing (a try block costs nothing until it catches). Without a fault
        # in the value, the caller's own stack was exhausted: its RecursionError stands.
        fault = _nesting_fault(value)
        if fault is None:
            raise
        raise fault from None


def encode_arguments(values: Sequence[object]) -> bytes:
    """Canonical bytes of a call's bound argument values (a msgpack array of them)."""
    try:
        if len(values) == 1:  # the commonest call, spared a list and a join
            value = values[0]
            encoder = _ENCODERS.get(type(value)) or _encoder_for(type(value))
            return b"\x91" + encoder(value)
        return _array_header(len(values)) + b"".join([_encode(value) for value in values])
    except RecursionError:
        fault = _nesting_fault(values)
        if fault is None:
            raise
        raise fault from None


def _encode(value: object) -> bytes:
    """``encode`` without the RecursionError diagnosis, for the encoders' own recursion."""
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        encoder = _encoder_for(type(value))
    return encoder(value)


class KeyBuilder:
    """Builds the key strings of one function identity and version.

    What does not depend on the arguments (the prefix, the hasher's state after the
    identity and version) is computed once here, so a call pays only for its arguments.
    """

    __slots__ = ("_seeded", "prefix")

    def __init__(self, identity: str, version: str) -> None:
        self.prefix = f"{KEY_FORMAT}:{identity}:{version}:"
        self._seeded = blake2b(digest_size=KEY_DIGEST_SIZE)
        # Identity and version are hashed as a length-prefixed array, so the digest alone
        # separates functions and versions, whatever characters their names contain.
        self._seeded.update(encode_arguments([KEY_FORMAT, identity, version]))

    def key(self, canonical_arguments: bytes) -> str:
        """The key of a call whose arguments encode to ``canonical_arguments``."""
        hasher = self._seeded.copy()
        hasher.update(canonical_arguments)
        return self.prefix + hasher.hexdigest()


def result_key_ranges(function: str | None = None) -> list[tuple[str, str]]:
    """``[low, high)`` key ranges holding the stored results (of one function, if given),
    one per format in RESULT_FORMATS. A function's range also holds the functions whose
    identity extends it past a ':'; callers check each key's identity."""
    ranges = []
    for form in RESULT_FORMATS:
        prefix = f"{form}:" + (f"{function}:" if function else "")
        ranges.append((prefix, prefix[:-1] + ";"))
    return ranges


def is_result_key(key: object) -> bool:
    """Whether ``key`` is a stored result's key, of any format in RESULT_FORMATS."""
    return isinstance(key, str) and key[3:4] == ":" and key[:3] in RESULT_FORMATS


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
    return b"".join([_encode(value) for value in values])


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
    entries = sorted((_encode(key), _encode(item)) for key, item in value.items())
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
    return _ext(EXT_SET, b"".join(sorted([_encode(item) for item in value])))


def _encode_frozenset(value: frozenset[Any]) -> bytes:
    return _ext(EXT_FROZENSET, b"".join(sorted([_encode(item) for item in value])))


def _encode_tzinfo(tz: Any) -> bytes:
    if tz is None:
        return _pack(None)
    if type(tz) is sys.modules["datetime"].timezone:
        offset = tz.utcoffset(None)
        return _encode(["fixed", offset, tz.tzname(None)])
    zone_key = getattr(tz, "key", None) or getattr(tz, "zone", None)  # zoneinfo, pytz
    if isinstance(zone_key, str):
        return _encode(["zone", zone_key])
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

# How an instance of a subclass is turned into an instance of its supported base through the
# base's own C code, never through methods the subclass may override (__iter__, __str__,
# a `year` property...): the key is built from the state, not from what the subclass shows.
_AS_BASE: dict[type, Callable[[Any], Any]] = {
    int: int.__int__,
    float: float.__float__,
    str: str.__str__,
    bytes: lambda value: bytes.__getnewargs__(value)[0],
    complex: lambda value: complex(*complex.__getnewargs__(value)),  # type: ignore[attr-defined]
    bytearray: bytearray.copy,
    list: list.copy,
    tuple: lambda value: tuple.__getitem__(value, slice(None)),
    dict: lambda value: dict(dict.items(value)),
    set: set.copy,
    frozenset: frozenset.copy,
}


def _rebuilt(base: Any) -> Callable[[Any], Any]:
    """Rebuild a datetime-family value from its pickle state, read by the base's C code."""
    return lambda value: base(*base.__reduce_ex__(value, 4)[1])


def _library_encoders() -> list[tuple[type, Callable[[Any], bytes]]]:
    """Encoders of the standard library's (and pandas' and numpy's) value types, for the
    modules already loaded.

    A value of a type can only exist once its module is imported, so these need not be
    imported with persistmemo (which keeps ``import persistmemo`` light). Listed subclasses
    first: a pandas Timestamp is also a datetime, and a datetime is also a date.
    """
    found: list[tuple[type, Callable[[Any], bytes]]] = []
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        found += [
            (pandas.Timestamp, _encode_pandas_timestamp),
            (type(pandas.NaT), _encode_pandas_nat),
            (pandas.Timedelta, _encode_pandas_timedelta),
        ]
    datetime = sys.modules.get("datetime")
    if datetime is not None:
        found += [
            (datetime.datetime, _encode_datetime),
            (datetime.date, _encode_date),
            (datetime.time, _encode_time),
            (datetime.timedelta, _encode_timedelta),
        ]
        for base in (datetime.datetime, datetime.date, datetime.time, datetime.timedelta):
            _AS_BASE.setdefault(base, _rebuilt(base))
    decimal = sys.modules.get("decimal")
    if decimal is not None:
        found.append((decimal.Decimal, _encode_decimal))
        as_decimal = decimal.Decimal
        _AS_BASE.setdefault(as_decimal, lambda value: as_decimal(as_decimal.__str__(value)))
    uuid = sys.modules.get("uuid")
    if uuid is not None:
        found.append((uuid.UUID, _encode_uuid))
        as_uuid, uuid_int = uuid.UUID, uuid.UUID.__dict__["int"]
        _AS_BASE.setdefault(as_uuid, lambda value: as_uuid(int=uuid_int.__get__(value)))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        found.append((numpy.ndarray, _encode_ndarray))
    if pandas is not None:
        found += [(pandas.DataFrame, _encode_pandas_frame), (pandas.Series, _encode_pandas_series)]
        found += [(index, _encode_pandas_index) for index in _pandas_index_types(pandas)]
        found.append((type(pandas.NA), _encode_pandas_na))
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        found += [
            (pyarrow.Table, _encode_arrow_table),
            (pyarrow.RecordBatch, _encode_arrow_table),
            (pyarrow.ChunkedArray, _encode_arrow_array),
        ]
    polars = sys.modules.get("polars")
    if polars is not None:
        found += [(polars.DataFrame, _encode_polars_frame), (polars.Series, _encode_polars_series)]
    return found


def _pandas_index_types(pandas: Any) -> list[type]:
    names = ["Index", "RangeIndex", "MultiIndex", "CategoricalIndex", "DatetimeIndex"]
    names += ["TimedeltaIndex", "PeriodIndex", "IntervalIndex"]
    return [getattr(pandas, name) for name in names]


# --- encoders chosen by what a type is, not which it is -----------------------------------


def _encode_with_hook(value: Any) -> bytes:
    keyed_on = getattr(value, HOOK_NAME)()
    return _ext(EXT_HOOK, _pack(qualified_name(type(value))) + _encode(keyed_on))


def _encode_enum(value: Any) -> bytes:
    # Flag combinations have no name on older Pythons: their value names them then. A named
    # member is keyed with its value too: editing `FAST = 2` to `FAST = 3` is another input.
    name = value.name
    if name is None:
        tail = _encode(value.value)
    else:
        try:
            tail = _pack(name) + _encode(value.value)
        except UnsupportedType:
            tail = _pack(name)  # a value without a key encoding: the name alone, as before
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
    name = qualified_name(value)
    if "<locals>" not in name:
        return _ext(EXT_TYPE, _pack(name))
    # A class made in a function (a factory) shares its qualified name with every class that
    # function makes: its plain attributes tell them apart (`class M: K = k`).
    attributes = {
        attribute: item
        for attribute, item in vars(value).items()
        if not attribute.startswith("__") and _has_encoding(item)
    }
    return _ext(EXT_TYPE, _pack(name) + _encode(attributes))


def _has_encoding(value: object) -> bool:
    if callable(value) or isinstance(value, (staticmethod, classmethod, property)):
        return False
    try:
        _encode(value)
    except (UnsupportedType, RecursionError):
        return False
    return True


def _encode_path(value: Any) -> bytes:
    # Keyed by flavour, not class: Path("a") and PurePosixPath("a") name the same file.
    flavour = "windows" if isinstance(value, sys.modules["pathlib"].PureWindowsPath) else "posix"
    return _ext(EXT_PATH, _pack(flavour) + _pack(str(value)))


# --- numpy ----------------------------------------------------------------------------------


def _encode_ndarray(value: Any) -> bytes:
    if value.dtype.hasobject:
        raise UnsupportedType(
            type(value), f" with dtype={value.dtype} (its items are Python objects)"
        )
    contiguous = value if value.flags.c_contiguous else _numpy().ascontiguousarray(value)
    # The buffer is hashed in place: a 100 MB array is never copied into the key.
    data = _bytes_of(contiguous) if contiguous.size else b""
    header = _encode(_dtype_descriptor(value.dtype)) + _encode(list(value.shape))
    return _ext(EXT_NDARRAY, header + _pack(digest(data)))


def _bytes_of(contiguous: Any) -> memoryview:
    try:
        return memoryview(contiguous).cast("B")
    except ValueError:
        # The buffer protocol refuses structured dtypes with out-of-order or overlapping
        # fields; the same bytes, seen as uint8, are what is hashed for them.
        return memoryview(contiguous.reshape(-1).view(_numpy().uint8))


def _encode_numpy_scalar(value: Any) -> bytes:
    if value.dtype.hasobject:
        raise UnsupportedType(type(value))
    return _ext(EXT_NUMPY_SCALAR, _encode(_dtype_descriptor(value.dtype)) + value.tobytes())


def _dtype_descriptor(dtype: Any) -> object:
    if dtype.fields is None:
        return dtype.str
    # dtype.str alone loses a structured dtype's field names; descr keeps them, but only
    # when it describes the dtype exactly: it cannot express overlapping or out-of-order
    # fields, and it drops the aligned-struct flag.
    try:
        descr = dtype.descr
    except ValueError:
        return _exact_struct(dtype)
    return descr if _numpy().dtype(descr) == dtype else _exact_struct(dtype)


def _exact_struct(dtype: Any) -> object:
    """Every field of a structured dtype with its dtype, offset and title (a msgpack map,
    so it never equals a ``descr`` list)."""
    formats, offsets, titles = [], [], []
    for name in dtype.names:
        field, offset, *title = dtype.fields[name]
        formats.append(_field_descriptor(field))
        offsets.append(offset)
        titles.append(title[0] if title else None)
    return {
        "names": list(dtype.names),
        "formats": formats,
        "offsets": offsets,
        "titles": titles,
        "itemsize": dtype.itemsize,
        "aligned": bool(dtype.isalignedstruct),
    }


def _field_descriptor(dtype: Any) -> object:
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return [_field_descriptor(base), list(shape)]
    return _exact_struct(dtype) if dtype.fields is not None else dtype.str


def _encode_array_subclass_by_type(value: Any) -> bytes:
    # numpy.matrix and numpy.recarray hold nothing beyond the array: their type is their
    # only difference from an equal ndarray (and it changes what `*` and indexing do).
    array = value.view(_numpy().ndarray)
    return _ext(EXT_ARRAY_SUBCLASS, _pack(qualified_name(type(value))) + _encode_ndarray(array))


def _encode_masked_array(value: Any) -> bytes:
    ma = _numpy().ma
    state = [ma.getmaskarray(value), value.fill_value, bool(value.hardmask)]
    # .data is the array under the mask, as its base class (a masked matrix stays a matrix).
    payload = _encode(value.data) + _encode(state)
    return _ext(EXT_ARRAY_SUBCLASS, _pack(qualified_name(type(value))) + payload)


def _array_subclass_encoder(cls: type) -> Callable[[Any], bytes]:
    numpy = _numpy()
    if cls is numpy.ma.MaskedArray:
        return _encode_masked_array
    if cls is numpy.matrix or cls is numpy.recarray:
        return _encode_array_subclass_by_type
    return _refusal(
        cls,
        " (a numpy.ndarray subclass whose extra state a key cannot see: pass "
        "numpy.asarray(value), or define __persistmemo_key__ on the type)",
    )


def _numpy() -> Any:
    numpy = sys.modules.get("numpy")
    if numpy is None:  # an Arrow value without numpy loaded (pyarrow does not need it)
        import numpy
    return numpy


# --- pandas ---------------------------------------------------------------------------------


def _encode_pandas_timestamp(value: Any) -> bytes:
    # asm8 is the numpy datetime64 of the instant in the Timestamp's own unit: every
    # nanosecond and the unit itself are in the key, which a datetime's fields would drop.
    exact = _encode_numpy_scalar(value.asm8) + _pack(value.fold)
    return _ext(EXT_PANDAS_TIMESTAMP, exact + _encode_tzinfo(value.tzinfo))


def _encode_pandas_nat(value: Any) -> bytes:
    return _ext(EXT_PANDAS_TIMESTAMP, _pack(None))


def _encode_pandas_timedelta(value: Any) -> bytes:
    return _ext(EXT_PANDAS_TIMEDELTA, _encode_numpy_scalar(value.asm8))


def _encode_pandas_na(value: Any) -> bytes:
    return _ext(EXT_PANDAS, _pack("NA"))


# --- frames and columns: pandas, pyarrow, polars ------------------------------------------
#
# A frame is keyed by its logical content: every column's values (their buffers hashed in
# place with BLAKE3, never pickled), dtype, name and position, and the index with its names.
# A column's digests are streams that do not depend on how its values are laid out in
# memory: Arrow chunks and slices, polars rechunking, and pandas' Arrow or Python storage of
# strings all give the same streams for the same values.


def _new_hasher() -> Any:
    import blake3

    return blake3.blake3(max_threads=hashing_threads())


class _Streams:
    """The digests of one column: which rows are null, and the values of the rows (fixed-width
    bytes; or the UTF-8 bytes of strings, binary, and each row's length in bytes)."""

    __slots__ = ("children", "data", "lengths", "nulls", "rows")

    def __init__(self) -> None:
        self.rows = 0
        self.nulls: Any = None  # a hasher of the null rows' positions, from the first null
        self.lengths: list[Any] | None = None  # of each chunk, hashed once all are known
        self.data = _new_hasher()
        self.children: list[_Streams] = []  # a list's values, a struct's fields

    def child(self, index: int) -> _Streams:
        while len(self.children) <= index:
            self.children.append(_Streams())
        return self.children[index]

    def add_nulls(self, positions: Any) -> None:
        """Record the null rows (an int64 array of positions within the current chunk)."""
        if len(positions):
            if self.nulls is None:
                self.nulls = _new_hasher()
            self.nulls.update(_le_int64(positions + self.rows))

    def add_variable(self, lengths: Any, data: bytes | memoryview = b"") -> None:
        """Add rows of bytes: ``data`` cut into rows of ``lengths`` bytes (or, for lists,
        rows of ``lengths`` values of the child)."""
        if self.lengths is None:
            self.lengths = []
        self.lengths.append(lengths)
        self.data.update(data)

    def parts(self) -> list[object]:
        nulls = None if self.nulls is None else self.nulls.digest(DIGEST_SIZE)
        parts = [self.rows, nulls, self._lengths_digest(), self.data.digest(DIGEST_SIZE)]
        return parts + [child.parts() for child in self.children]

    def _lengths_digest(self) -> bytes | None:
        if self.lengths is None:
            return None
        # Lengths as unsigned ints of the narrowest width that holds the longest row (a
        # property of the values, not of their chunks): 1 byte a row for short strings
        # instead of 8 is most of the cost of keying a string column saved.
        longest = max((int(part.max()) for part in self.lengths if len(part)), default=0)
        width = next(width for width in (1, 2, 4, 8) if longest < 1 << (8 * width))
        hasher = _new_hasher()
        hasher.update(_pack(width))
        for part in self.lengths:
            narrow = _numpy().ascontiguousarray(part, dtype=f"<u{width}")
            hasher.update(memoryview(narrow).cast("B"))
        return bytes(hasher.digest(DIGEST_SIZE))


def _document(*parts: bytes) -> bytes:
    """Encodings that belong together, as one msgpack array (one document)."""
    return _array_header(len(parts)) + b"".join(parts)


def _le_int64(values: Any) -> memoryview:
    numpy = _numpy()
    return memoryview(numpy.ascontiguousarray(values, dtype="<i8")).cast("B")


def _canonical_floats(values: Any) -> Any:
    """The array with every NaN as the one canonical NaN (as float scalars are keyed)."""
    numpy = _numpy()
    # The sum is NaN when any item is (or for inf - inf): a fast test before the exact one.
    if values.dtype.kind == "f" and values.size and numpy.isnan(values.sum()):
        nans = numpy.isnan(values)
        if nans.any():
            values = values.copy()
            values[nans] = numpy.nan
    return values


def _encode_values_array(values: Any) -> bytes:
    """A 1-d numpy array of column values: ext 21 for fixed-width dtypes (NaNs made
    canonical), and for object arrays the strings' streams or every item's encoding."""
    if not values.dtype.hasobject:
        return _encode_ndarray(_canonical_floats(values))
    items = values.tolist()
    strings = _str_objects(values, items)
    if strings is not None:
        return _encode(strings)
    # Mixed or other objects: each item keyed as an argument of its own type would be, or
    # the column is refused as that item would be.
    return _encode(["objects", items])


def _str_objects(values: Any, items: list[Any]) -> list[object] | None:
    """``["str-objects", rows, None rows, lengths, data, NaN rows]`` for items that are all
    exactly str (not a subclass: numpy.str_, a str with a __dict__ are keyed apart), None or
    NaN, the usual object column of text; None for any other items."""
    present = set(map(type, items))
    if str not in present or not present <= {str, type(None), float}:
        return None
    streams = _Streams()
    nans: bytes | None = None
    if len(present) > 1:
        numpy = _numpy()
        # isna is one pass in C; it finds None and NaN, and no float that is a number.
        others = numpy.flatnonzero(sys.modules["pandas"].isna(values))
        if len(others) != len(items) - list(map(type, items)).count(str):
            return None  # a float that is not NaN
        is_none = numpy.array([items[position] is None for position in others.tolist()])
        streams.add_nulls(others[is_none])
        if not is_none.all():
            nans = digest(_le_int64(others[~is_none]))
        items = items.copy()
        for position in others.tolist():
            items[position] = ""
    _add_str_objects(streams, items)
    return ["str-objects", *streams.parts(), nans]


def _add_str_objects(streams: _Streams, strings: Any) -> None:
    """Add Python strings (none missing) as UTF-8 lengths and bytes, as Arrow holds them."""
    if not len(strings):
        return  # as an empty Arrow chunk adds nothing
    numpy = _numpy()
    # Joined with NUL, the strings' UTF-8 bytes show where each ends (a NUL byte is only
    # ever U+0000): the lengths come from C loops, not a len() call per string.
    joined = "\0".join(strings).encode("utf-8", "surrogatepass")
    raw = numpy.frombuffer(joined, dtype=numpy.uint8)
    separators = numpy.flatnonzero(raw == 0)
    if len(separators) == len(strings) - 1:
        ends = numpy.append(separators, len(raw))
        lengths = numpy.diff(ends, prepend=-1) - 1
        data: bytes | memoryview = memoryview(raw[raw != 0]) if len(separators) else joined
    else:  # some string holds U+0000
        data = "".join(strings).encode("utf-8", "surrogatepass")
        lengths = numpy.fromiter(
            (len(item.encode("utf-8", "surrogatepass")) for item in strings),
            numpy.int64,
            count=len(strings),
        )
    streams.add_variable(lengths, data)
    streams.rows += len(strings)


# --- pandas objects ---


def _encode_pandas_frame(value: Any) -> bytes:
    # items() goes by position (duplicate names too), and costs a tenth of iloc per column.
    columns = [_pandas_column(column.array) for _, column in value.items()]
    parts = _encode(value.columns) + _encode(value.index) + _array_header(len(columns))
    parts += b"".join(columns) + _pandas_attributes(value)
    return _ext(EXT_PANDAS, _pack("DataFrame") + parts)


def _encode_pandas_series(value: Any) -> bytes:
    parts = _encode(value.name) + _encode(value.index) + _pandas_column(value.array)
    return _ext(EXT_PANDAS, _pack("Series") + parts + _pandas_attributes(value))


def _pandas_attributes(value: Any) -> bytes:
    # attrs (user metadata) and the duplicate-labels flag are state a function may read.
    return _encode(dict(value.attrs)) + _pack(bool(value.flags.allows_duplicate_labels))


def _encode_pandas_index(value: Any) -> bytes:
    pandas = sys.modules["pandas"]
    kind = type(value).__name__
    names = _encode(list(value.names))
    if type(value) is pandas.RangeIndex:
        body = _encode([value.start, value.stop, value.step])
    elif type(value) is pandas.MultiIndex:
        # Level by level as values, not as levels and codes: equal MultiIndexes may keep
        # different unused level values.
        levels = [value.get_level_values(level).array for level in range(value.nlevels)]
        body = _array_header(len(levels)) + b"".join(map(_pandas_column, levels))
    else:
        body = _pandas_column(value.array)
        if type(value) in (pandas.DatetimeIndex, pandas.TimedeltaIndex):
            body += _pack(value.freqstr)  # shift() and friends follow it
    return _ext(EXT_PANDAS, _pack(kind) + names + body)


def _pandas_column(array: Any) -> bytes:
    """The encoding of one pandas array (a column, a Series' values, an Index's values)."""
    numpy = _numpy()
    pandas = sys.modules["pandas"]
    dtype = array.dtype
    label = str(dtype)
    # Before numpy arrays: the Python-backed string array is a NumpyExtensionArray too.
    if isinstance(dtype, pandas.StringDtype):
        streams = _Streams()
        if dtype.storage == "python":
            strings = numpy.asarray(array, dtype=object)
            missing = pandas.isna(strings)
            if missing.any():
                # Null slots as empty strings, as Arrow's are here: both storages agree.
                streams.add_nulls(numpy.flatnonzero(missing))
                strings = strings.copy()
                strings[missing] = ""
            _add_str_objects(streams, strings)
        else:
            _add_arrow_chunks(streams, array.__arrow_array__())
        return _encode(["string", label, *streams.parts()])
    if isinstance(dtype, numpy.dtype) or isinstance(array, pandas.arrays.NumpyExtensionArray):
        return _document(_pack("numpy"), _encode_values_array(numpy.asarray(array)))
    if isinstance(dtype, pandas.CategoricalDtype):
        codes = _encode_values_array(numpy.asarray(array.codes))
        head = _concat(["category", label, dtype.ordered])
        return _document(head, _encode(dtype.categories), codes)
    if isinstance(dtype, pandas.DatetimeTZDtype):
        instants = _encode_values_array(numpy.asarray(array.asi8))
        return _document(_concat(["datetime-tz", label]), _encode_tzinfo(dtype.tz), instants)
    if isinstance(dtype, pandas.PeriodDtype):
        instants = _encode_values_array(numpy.asarray(array.asi8))
        return _document(_concat(["period", label]), instants)
    if isinstance(dtype, pandas.IntervalDtype):
        missing = _encode_values_array(numpy.asarray(array.isna()))
        head = _concat(["interval", label, array.closed])
        return _document(head, _encode(array.left), _encode(array.right), missing)
    if isinstance(dtype, pandas.SparseDtype):
        dense = _encode_values_array(numpy.asarray(array.to_dense()))
        return _document(_concat(["sparse", label]), _encode(dtype.fill_value), dense)
    if hasattr(array, "_mask") and hasattr(array, "_data"):
        return _document(_concat(["masked", label]), *_masked_values(array))
    if isinstance(dtype, pandas.ArrowDtype):
        streams = _Streams()
        _add_arrow_chunks(streams, array.__arrow_array__())
        return _encode(["arrow", label, *streams.parts()])
    raise UnsupportedType(
        type(array), f" with dtype={label} (this pandas dtype has no key encoding)"
    )


def _masked_values(array: Any) -> tuple[bytes, bytes]:
    # Nullable Int64, Float64, boolean: the values under the mask are whatever was there
    # before, so they are zeroed: equal arrays give equal bytes.
    data, mask = array._data, array._mask
    if mask.any():
        data = data.copy()
        data[mask] = 0
    return _encode_values_array(data), _encode_values_array(mask)


# --- pyarrow and polars ---


def _add_arrow_chunks(streams: _Streams, column: Any) -> None:
    """Feed an Arrow Array or ChunkedArray's values into ``streams``, chunk by chunk."""
    chunks = column.chunks if hasattr(column, "chunks") else [column]
    for chunk in chunks:
        _add_arrow_chunk(streams, chunk)


def _add_arrow_chunk(streams: _Streams, chunk: Any) -> None:
    pyarrow = sys.modules["pyarrow"]  # loaded: the value is an Arrow array
    numpy = _numpy()
    types = pyarrow.types
    kind = chunk.type
    if not len(chunk):
        return  # no values (and the buffers of an empty array may be missing)
    if types.is_dictionary(kind):
        # Logical values: chunks with different dictionaries for the same values agree.
        _add_arrow_chunk(streams, chunk.dictionary_decode())
        return
    if types.is_string_view(kind) or types.is_binary_view(kind):
        large = pyarrow.large_string() if types.is_string_view(kind) else pyarrow.large_binary()
        chunk = chunk.cast(large)
        kind = chunk.type
    if chunk.null_count:
        streams.add_nulls(numpy.flatnonzero(chunk.is_null().to_numpy(zero_copy_only=False)))
    if types.is_null(kind):
        pass
    elif types.is_boolean(kind):
        filled = chunk.fill_null(False) if chunk.null_count else chunk
        streams.data.update(filled.to_numpy(zero_copy_only=False).tobytes())
    elif (
        types.is_string(kind)
        or types.is_large_string(kind)
        or types.is_binary(kind)
        or types.is_large_binary(kind)
    ):
        _add_arrow_binary(streams, chunk)
    elif _arrow_fixed_width(kind):
        _add_arrow_fixed(streams, chunk)
    elif types.is_list(kind) or types.is_large_list(kind):
        lengths = numpy.diff(chunk.offsets.to_numpy())  # offsets of this slice, not rebased
        if chunk.null_count:
            # A null row may still span values: it is emptied, and flatten() skips them.
            lengths[chunk.is_null().to_numpy(zero_copy_only=False)] = 0
        streams.add_variable(lengths)
        _add_arrow_chunk(streams.child(0), chunk.flatten())
    elif types.is_struct(kind):
        # flatten() slices each field as the struct is sliced, and marks its null rows.
        for index, field in enumerate(chunk.flatten()):
            _add_arrow_chunk(streams.child(index), field)
    else:
        raise UnsupportedType(
            type(chunk),
            f" (its Arrow type {kind} has no key encoding: maps, unions, fixed-size lists, "
            "run-end encoded arrays and extension types not stored as fixed-width values "
            "are not keyed)",
        )
    streams.rows += len(chunk)


def _arrow_fixed_width(kind: Any) -> bool:
    try:
        return bool(kind.bit_width % 8 == 0 and kind.num_fields == 0)
    except ValueError:  # "Non-fixed width type"
        return False


def _add_arrow_binary(streams: _Streams, chunk: Any) -> None:
    numpy = _numpy()
    if chunk.null_count:
        # A null slot's bytes are undefined: emptied, the null positions say which they were.
        chunk = chunk.fill_null(b"" if "binary" in str(chunk.type) else "")
    width = "<i8" if "large" in str(chunk.type) else "<i4"
    offsets_buffer, data_buffer = chunk.buffers()[1:3]
    offsets = numpy.frombuffer(
        offsets_buffer, dtype=width, count=len(chunk) + 1, offset=chunk.offset * int(width[-1])
    )
    start, end = int(offsets[0]), int(offsets[-1])
    data = memoryview(data_buffer)[start:end] if data_buffer else b""
    streams.add_variable(numpy.diff(offsets), data)


def _add_arrow_fixed(streams: _Streams, chunk: Any) -> None:
    numpy = _numpy()
    width = chunk.type.bit_width // 8
    buffer = chunk.buffers()[1]
    raw = numpy.frombuffer(
        buffer, dtype=numpy.uint8, count=len(chunk) * width, offset=chunk.offset * width
    )
    values = raw.reshape(len(chunk), width) if width else raw
    if chunk.null_count:
        values = values.copy()
        values[chunk.is_null().to_numpy(zero_copy_only=False)] = 0
    if sys.modules["pyarrow"].types.is_floating(chunk.type) and width in (4, 8):
        values = _canonical_floats(values.reshape(-1).view(f"<f{width}"))
    streams.data.update(memoryview(numpy.ascontiguousarray(values)).cast("B"))


def _arrow_column(column: Any) -> bytes:
    streams = _Streams()
    _add_arrow_chunks(streams, column)
    return _encode([str(column.type), *streams.parts()])


def _arrow_metadata(metadata: Any) -> bytes:
    return _encode(dict(metadata) if metadata else None)


def _encode_arrow_array(value: Any) -> bytes:
    kind = "ChunkedArray" if hasattr(value, "chunks") else "Array"
    return _ext(EXT_ARROW, _pack(kind) + _arrow_column(value))


def _encode_arrow_table(value: Any) -> bytes:
    fields = [[field.name, str(field.type), field.nullable] for field in value.schema]
    columns = b"".join(
        _document(_arrow_metadata(field.metadata), _arrow_column(value.column(position)))
        for position, field in enumerate(value.schema)
    )
    kind = type(value).__name__  # Table or RecordBatch
    head = _pack(kind) + _encode(fields) + _arrow_metadata(value.schema.metadata)
    head += _pack(value.num_rows)  # a table without columns still has rows
    return _ext(EXT_ARROW, head + _array_header(len(fields)) + columns)


def _polars_column(series: Any) -> bytes:
    if str(series.dtype) == "Object":
        raise UnsupportedType(type(series), " with dtype=Object (its items are Python objects)")
    streams = _Streams()
    try:
        column = series.to_arrow()
    except ImportError as missing:
        raise UnsupportedType(
            type(series),
            " without pyarrow (a polars column is keyed through its Arrow form: "
            "pip install pyarrow)",
        ) from missing
    _add_arrow_chunks(streams, column)
    return _encode([series.name, str(series.dtype), *streams.parts()])


def _encode_polars_series(value: Any) -> bytes:
    return _ext(EXT_POLARS, _pack("Series") + _polars_column(value))


def _encode_polars_frame(value: Any) -> bytes:
    columns = [_polars_column(series) for series in value.get_columns()]
    body = _array_header(len(columns)) + b"".join(columns)
    return _ext(EXT_POLARS, _pack("DataFrame") + body)


# --- subclasses -----------------------------------------------------------------------------

_POINTER = struct.calcsize("P")
_HEAPTYPE = 1 << 9
# Instances whose __dict__ (3.11+) or weakref list (3.12+) sit before the object header
# do not grow __basicsize__ for them.
_MANAGED_DICT = 1 << 4
_MANAGED_WEAKREF = 1 << 3


def _own_slots(cls: type) -> list[str] | None:
    """The (mangled) names of the value slots ``cls`` itself declares; None when what its
    ``__slots__`` names are not plain slot descriptors of the class."""
    declared = cls.__dict__.get("__slots__", ())
    if isinstance(declared, str):
        declared = (declared,)
    names = []
    for name in declared:
        if name in ("__dict__", "__weakref__"):
            continue
        if name.startswith("__") and not name.endswith("__"):
            name = f"_{cls.__name__.lstrip('_')}{name}"
        if not isinstance(cls.__dict__.get(name), types.MemberDescriptorType):
            return None
        names.append(name)
    return names


def _visible_state(cls: type, base: type) -> list[tuple[str, Any]] | None:
    """The slot descriptors of ``cls`` below ``base``; None when some class between them
    may keep state in C fields, which neither ``__dict__`` nor ``__slots__`` show.

    A class statement in Python lays an instance out as its parent's layout plus one
    pointer per slot, plus the __dict__ and weakref pointers it adds: any other growth of
    ``__basicsize__`` (a Cython ``cdef`` or C extension type, such as pandas' _Timestamp
    under datetime or OrderedDict under dict) is state the key would not see.
    """
    slots: list[tuple[str, Any]] = []
    level = cls
    while level is not base:
        parent = level.__base__
        own = _own_slots(level)
        if parent is None or own is None or not level.__flags__ & _HEAPTYPE:
            return None
        expected = parent.__basicsize__ + _POINTER * len(own)
        if level.__dictoffset__ and not parent.__dictoffset__:
            expected += 0 if level.__flags__ & _MANAGED_DICT else _POINTER
        if level.__weakrefoffset__ and not parent.__weakrefoffset__:
            expected += 0 if level.__flags__ & _MANAGED_WEAKREF else _POINTER
        if level.__basicsize__ != expected or level.__itemsize__ != parent.__itemsize__:
            return None
        slots += [(name, level.__dict__[name]) for name in own]
        level = parent
    return slots


def _subclass_encoder(
    cls: type, base: type, base_encoder: Callable[[Any], bytes]
) -> Callable[[Any], bytes]:
    slots = _visible_state(cls, base)
    if slots is None:
        return _refusal(
            cls,
            f" (it subclasses {type_label(base)} but keeps state outside __dict__ and "
            f"__slots__, in C fields a key cannot see: pass a plain {type_label(base)}, "
            "or define __persistmemo_key__ on the type)",
        )
    as_base: Callable[[Any], Any] = _AS_BASE.get(base, lambda value: value)

    def encode_subclass(value: Any) -> bytes:
        state = getattr(value, "__dict__", None)
        extra = _encode(state) if state else _pack(None)
        if slots:
            # Only classes that declare slots carry this fourth part, so the keys of
            # slot-less subclasses are what they always were.
            extra += _encode(_slot_values(value, slots))
        payload = _pack(qualified_name(type(value))) + base_encoder(as_base(value)) + extra
        return _ext(EXT_SUBCLASS, payload)

    _SUBCLASS_ENCODERS.add(encode_subclass)
    return encode_subclass


def _slot_values(value: object, slots: list[tuple[str, Any]]) -> dict[str, object]:
    values = {}
    for name, descriptor in slots:
        try:
            values[name] = descriptor.__get__(value, type(value))
        except AttributeError:  # an unset slot is left out
            continue
    return values


_SUBCLASS_ENCODERS: set[Callable[[Any], bytes]] = set()

_FUNCTION_REASON = (
    " (a function's code can change while its name stays, so functions are not keyed: pass "
    "the function's name or the parameters it was built from instead)"
)


def _is_function_like(cls: type) -> bool:
    functools = sys.modules.get("functools")
    if functools is not None and issubclass(cls, functools.partial):
        return True
    function_types = (
        types.FunctionType,
        types.BuiltinFunctionType,
        types.MethodType,
        types.MethodWrapperType,
        types.WrapperDescriptorType,
        types.MethodDescriptorType,
        types.LambdaType,
    )
    return issubclass(cls, function_types)


# --- choosing an encoder --------------------------------------------------------------------


def _encoder_for(cls: type) -> Callable[[Any], bytes]:
    """Choose (and remember) the encoder of a type that is not in the table yet."""
    encoder = _choose_encoder(cls)
    _ENCODERS[cls] = encoder
    return encoder


def _choose_encoder(cls: type) -> Callable[[Any], bytes]:
    known = [*_BUILTINS, *_library_encoders()]
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
    if _is_function_like(cls):
        return _refusal(cls, _FUNCTION_REASON)
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None and issubclass(cls, pyarrow.Array):
        return _encode_arrow_array  # one Cython class per Arrow type: Int64Array, StringArray...
    frames = _frame_types()
    if frames and issubclass(cls, frames):
        # Their instances' __dict__ holds the data manager, which has no key: say why here.
        return _refusal(
            cls,
            " (a subclass of a pandas or polars type, whose extra state a key cannot see: "
            "pass the plain frame, series or index, or define __persistmemo_key__ on the type)",
        )
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if issubclass(cls, numpy.ndarray):
            return _array_subclass_encoder(cls)
        if issubclass(cls, numpy.generic):
            return _numpy_scalar_encoder(cls)
    for base, encoder in known:
        if issubclass(cls, base):
            return _subclass_encoder(cls, base, encoder)
    return _raise_unsupported


def _frame_types() -> tuple[type, ...]:
    found: tuple[type, ...] = ()
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        found += (pandas.DataFrame, pandas.Series, pandas.Index)
    polars = sys.modules.get("polars")
    if polars is not None:
        found += (polars.DataFrame, polars.Series)
    return found


def _numpy_scalar_encoder(cls: type) -> Callable[[Any], bytes]:
    try:
        exact = _numpy().dtype(cls).type
    except TypeError:
        return _raise_unsupported
    if exact is cls:
        return _encode_numpy_scalar
    # A subclass of a numpy scalar type (numpy.record is one, of numpy.void).
    return _subclass_encoder(cls, exact, _encode_numpy_scalar)


def _refusal(cls: type, reason: str) -> Callable[[Any], bytes]:
    def refuse(value: object) -> bytes:
        raise UnsupportedType(cls, reason)

    return refuse


def _raise_unsupported(value: object) -> bytes:
    raise UnsupportedType(type(value))


# --- diagnosing RecursionError ----------------------------------------------------------------


def _nesting_fault(value: object) -> UnsupportedNesting | None:
    """Why encoding ``value`` recursed too deep: a value that contains itself, or one nested
    deeper than MAX_NESTING; None when neither (the caller's own stack was the deep one).

    An explicit stack of the containers on the current path, so the walk itself cannot
    recurse: a container met again on its own path is a cycle. Heights of containers
    already walked are remembered, so shared substructure is walked once.
    """
    heights: dict[int, int] = {}
    kept: list[object] = []  # ids stay valid while the objects live (hook results are new)
    root = _children(value)
    if root is None:
        return None
    path: list[list[Any]] = [[value, iter(root), 1]]
    on_path = {id(value)}
    kept.append(value)
    while path:
        frame = path[-1]
        for child in frame[1]:
            children = _children(child)
            if children is None:
                continue
            if id(child) in on_path:
                return UnsupportedNesting(type(child), " (it contains itself)")
            height = heights.get(id(child))
            if height is None and len(path) >= MAX_NESTING:
                return UnsupportedNesting(
                    type(child), f" (nested deeper than {MAX_NESTING} levels)"
                )
            if height is not None:
                if len(path) + height > MAX_NESTING:
                    return UnsupportedNesting(
                        type(child), f" (nested deeper than {MAX_NESTING} levels)"
                    )
                frame[2] = max(frame[2], height + 1)
                continue
            kept.append(child)
            on_path.add(id(child))
            path.append([child, iter(children), 1])
            break
        else:
            path.pop()
            on_path.discard(id(frame[0]))
            heights[id(frame[0])] = frame[2]
            if path:
                path[-1][2] = max(path[-1][2], frame[2] + 1)
    return None


def _children(value: object) -> list[Any] | None:
    """What encoding ``value`` recurses into; None for a value whose encoding does not."""
    cls = type(value)
    if cls is list or cls is tuple or cls is set or cls is frozenset:
        return list(cast("list[Any]", value))
    if cls is dict:
        mapping = cast("dict[Any, Any]", value)
        return [*mapping.keys(), *mapping.values()]
    try:
        encoder = _ENCODERS.get(cls) or _encoder_for(cls)
        if encoder is _encode_with_hook:
            return [getattr(value, HOOK_NAME)()]
        if encoder is _encode_dataclass:
            fields = sys.modules["dataclasses"].fields(value)
            return [getattr(value, field.name) for field in fields]
        if encoder is _encode_namedtuple:
            return list(cast("tuple[Any, ...]", value))
        if encoder is _encode_pandas_frame or encoder is _encode_pandas_series:
            # Only object columns recurse: their items are encoded one by one.
            frame = cast(Any, value)
            columns = frame.items() if encoder is _encode_pandas_frame else [(None, frame)]
            return [column.to_numpy().tolist() for _, column in columns if column.dtype == object]
        if encoder in _SUBCLASS_ENCODERS:
            found: list[Any] = []
            for base in (list, tuple, set, frozenset):
                if isinstance(value, base):
                    found += _AS_BASE[base](value)
            if isinstance(value, dict):
                found += [*dict.keys(value), *dict.values(value)]
            state = getattr(value, "__dict__", None)
            return [*found, state] if state else found
    except Exception:  # what encoding would have raised is not what is diagnosed here
        return None
    return None
