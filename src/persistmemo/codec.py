"""Results to bytes and back: msgpack with extension types, pickle only as a marked fallback.

Everything the key encoding supports round-trips exactly through msgpack: a tuple comes back
a tuple, a set a set, a datetime with its tzinfo, a big int as itself, an array with its
dtype and shape. Any other object is pickled, and the stored bytes say so in their first
byte; a strict store refuses that fallback instead. One exception to exactness: msgpack packs
bytearray and memoryview as bytes, so they come back as bytes.

Decoding never lets a malformed document escape as anything but ``CorruptEntry``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import msgpack

from persistmemo.naming import lookup, object_path

FORMAT_MSGPACK = b"\x01"
FORMAT_PICKLE = b"\x02"
_MSGPACK = FORMAT_MSGPACK[0]
_PICKLE = FORMAT_PICKLE[0]

EXT_TUPLE = 1
EXT_SET = 2
EXT_FROZENSET = 3
EXT_BIGINT = 4
EXT_DATETIME = 5
EXT_DATE = 6
EXT_TIME = 7
EXT_TIMEDELTA = 8
EXT_DECIMAL = 9
EXT_UUID = 10
EXT_COMPLEX = 11
EXT_PATH = 12
EXT_ENUM = 13
EXT_DATACLASS = 14
EXT_NAMEDTUPLE = 15
EXT_NDARRAY = 16
EXT_NUMPY_SCALAR = 17

_PATH_CLASS_NAMES = frozenset(
    ("PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath", "WindowsPath")
)


class CorruptEntry(ValueError):
    """Stored bytes that do not decode to a value: the entry is treated as a miss."""


class UnstorableValue(TypeError):
    """A result that the store cannot keep (strict store, or neither msgpack nor pickle)."""


class _NeedsPickle(Exception):
    """Raised inside msgpack's default hook: the value leaves the msgpack subset."""


def encode_value(value: object, *, allow_pickle: bool = True) -> bytes:
    """Return the stored form of ``value``.

    Raises UnstorableValue when the value needs the pickle fallback and ``allow_pickle`` is
    false, or when it cannot be pickled either.
    """
    try:
        return FORMAT_MSGPACK + _packb(value)
    except _NeedsPickle as needs:
        if not allow_pickle:
            raise UnstorableValue(
                f"the result contains a {needs.args[0]}, which has no msgpack encoding, and "
                "the pickle fallback is refused here"
            ) from None
    import pickle  # only the fallback needs it

    try:
        return FORMAT_PICKLE + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        raise UnstorableValue(f"the result cannot be pickled: {error}") from error


def decode_value(data: bytes | memoryview, *, allow_pickle: bool = True) -> object:
    """Return the value stored as ``data``; raises CorruptEntry when it is not well-formed.

    Pickle-fallback bytes are only unpickled with ``allow_pickle``: callers pass it only
    for bytes whose origin was authenticated (see integrity.py).
    """
    head = data[0] if data else -1
    try:
        if head == _MSGPACK:
            return _unpackb(data[1:])
        if head == _PICKLE:
            if not allow_pickle:
                raise CorruptEntry("a pickle-fallback value where pickles are not allowed")
            import pickle

            return pickle.loads(data[1:])
    except CorruptEntry:
        raise
    except Exception as error:
        raise CorruptEntry(f"stored value does not decode: {error!r}") from error
    raise CorruptEntry(f"stored value has an unknown format byte {head!r}")


def is_pickled(data: bytes | memoryview) -> bool:
    """Whether encoded bytes hold a pickle-fallback value."""
    return len(data) > 0 and data[0] == _PICKLE


# --- encoding ------------------------------------------------------------------------------


def _packb(value: object) -> bytes:
    packed: bytes = msgpack.packb(
        value,
        default=_encode_ext,
        strict_types=True,
        use_bin_type=True,
        unicode_errors="surrogatepass",
        datetime=False,
    )
    return packed


def _encode_ext(value: Any) -> msgpack.ExtType:
    encoder = _EXT_ENCODERS.get(type(value))
    if encoder is None:
        encoder = _ext_encoder_for(type(value))
    return encoder(value)


def _ext(code: int, payload: object) -> msgpack.ExtType:
    return msgpack.ExtType(code, _packb(payload))


def _encode_tz(tz: Any) -> object:
    if tz is None:
        return None
    dt = sys.modules["datetime"]
    if type(tz) is dt.timezone:
        offset = tz.utcoffset(None)
        name = tz.tzname(None)
        # A generated name ("UTC+01:00") is left out so that the round trip builds
        # timezone(offset) again rather than timezone(offset, name).
        explicit_name = None if name == dt.timezone(offset).tzname(None) else name
        return ["fixed", offset.days, offset.seconds, offset.microseconds, explicit_name]
    zoneinfo = sys.modules.get("zoneinfo")
    if zoneinfo is not None and type(tz) is zoneinfo.ZoneInfo and tz.key is not None:
        return ["zone", tz.key]
    raise _NeedsPickle(f"tzinfo of type {type(tz).__name__}")


def _encode_bigint(value: int) -> msgpack.ExtType:
    if type(value) is not int:
        raise _NeedsPickle(f"value of type {type(value).__qualname__}")
    length = (value.bit_length() + 8) // 8
    return msgpack.ExtType(EXT_BIGINT, value.to_bytes(length, "big", signed=True))


def _encode_datetime(value: Any) -> msgpack.ExtType:
    fields: list[object] = [value.year, value.month, value.day, value.hour, value.minute]
    fields += [value.second, value.microsecond, value.fold, _encode_tz(value.tzinfo)]
    return _ext(EXT_DATETIME, fields)


def _encode_time(value: Any) -> msgpack.ExtType:
    fields = [value.hour, value.minute, value.second, value.microsecond, value.fold]
    return _ext(EXT_TIME, [*fields, _encode_tz(value.tzinfo)])


def _class_path(cls: type) -> list[str]:
    """[module, qualname] of a class that can be found again by that name when decoding."""
    module, qualname = object_path(cls)
    try:
        found = lookup(module, qualname)
    except LookupError:
        found = None
    if found is not cls:
        raise _NeedsPickle(f"value of the class {qualname}, which cannot be found by its name")
    return [module, qualname]


def _encode_dataclass(value: Any) -> msgpack.ExtType:
    names = [field.name for field in sys.modules["dataclasses"].fields(value)]
    state = getattr(value, "__dict__", None)
    if state is not None and set(state) != set(names):
        # Attributes beyond the fields would be lost on the way back.
        raise _NeedsPickle(f"dataclass {type(value).__qualname__} with non-field attributes")
    fields = {name: getattr(value, name) for name in names}
    return _ext(EXT_DATACLASS, [_class_path(type(value)), fields])


def _encode_ndarray(value: Any) -> msgpack.ExtType:
    plain = type(value) is _numpy().ndarray and value.dtype.fields is None
    if value.dtype.hasobject or not plain:
        raise _NeedsPickle(f"numpy array of dtype {value.dtype}")
    order = "F" if value.flags.f_contiguous and not value.flags.c_contiguous else "C"
    return _ext(EXT_NDARRAY, [value.dtype.str, list(value.shape), order, value.tobytes(order)])


def _encode_numpy_scalar(value: Any) -> msgpack.ExtType:
    if value.dtype.hasobject or value.dtype.fields is not None:
        raise _NeedsPickle(f"numpy scalar of dtype {value.dtype}")
    return _ext(EXT_NUMPY_SCALAR, [value.dtype.str, value.tobytes()])


def _numpy() -> Any:
    return sys.modules["numpy"]


_EXT_ENCODERS: dict[type, Callable[[Any], msgpack.ExtType]] = {
    tuple: lambda value: _ext(EXT_TUPLE, list(value)),
    set: lambda value: _ext(EXT_SET, list(value)),
    frozenset: lambda value: _ext(EXT_FROZENSET, list(value)),
    int: _encode_bigint,
    complex: lambda value: _ext(EXT_COMPLEX, [value.real, value.imag]),
}


def _stdlib_ext_encoders() -> dict[type, Callable[[Any], msgpack.ExtType]]:
    """Encoders of the standard library's value types whose modules are loaded (a value of
    a type cannot exist before its module is), so persistmemo need not import them."""
    found: dict[type, Callable[[Any], msgpack.ExtType]] = {}
    datetime = sys.modules.get("datetime")
    if datetime is not None:
        found[datetime.datetime] = _encode_datetime
        found[datetime.date] = lambda value: _ext(EXT_DATE, [value.year, value.month, value.day])
        found[datetime.time] = _encode_time
        found[datetime.timedelta] = lambda value: _ext(
            EXT_TIMEDELTA, [value.days, value.seconds, value.microseconds]
        )
    decimal = sys.modules.get("decimal")
    if decimal is not None:
        found[decimal.Decimal] = lambda value: _ext(EXT_DECIMAL, str(value))
    uuid = sys.modules.get("uuid")
    if uuid is not None:
        found[uuid.UUID] = lambda value: msgpack.ExtType(EXT_UUID, value.bytes)
    return found


def _ext_encoder_for(cls: type) -> Callable[[Any], msgpack.ExtType]:
    encoder = _choose_ext_encoder(cls)
    _EXT_ENCODERS[cls] = encoder
    return encoder


def _choose_ext_encoder(cls: type) -> Callable[[Any], msgpack.ExtType]:
    stdlib = _stdlib_ext_encoders()
    if cls in stdlib:
        return stdlib[cls]
    enum = sys.modules.get("enum")
    if enum is not None and issubclass(cls, enum.Enum):
        return lambda value: _ext(EXT_ENUM, [_class_path(type(value)), value.name])
    if issubclass(cls, tuple) and hasattr(cls, "_fields") and hasattr(cls, "_make"):
        return lambda value: _ext(EXT_NAMEDTUPLE, [_class_path(type(value)), list(value)])
    dataclasses = sys.modules.get("dataclasses")
    if dataclasses is not None and dataclasses.is_dataclass(cls):
        return _encode_dataclass
    pathlib = sys.modules.get("pathlib")
    if (
        pathlib is not None
        and cls.__name__ in _PATH_CLASS_NAMES
        and getattr(pathlib, cls.__name__) is cls
    ):
        return lambda value: _ext(EXT_PATH, [type(value).__name__, str(value)])
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if issubclass(cls, numpy.ndarray):
            return _encode_ndarray
        if issubclass(cls, numpy.generic):
            return _encode_numpy_scalar
    return _needs_pickle


def _needs_pickle(value: object) -> msgpack.ExtType:
    raise _NeedsPickle(f"value of type {type(value).__module__}.{type(value).__qualname__}")


# --- decoding ------------------------------------------------------------------------------


def _unpackb(payload: bytes | memoryview) -> Any:
    return msgpack.unpackb(
        payload, ext_hook=_decode_ext, strict_map_key=False, unicode_errors="surrogatepass"
    )


def _decode_tz(state: Any) -> Any:
    if state is None:
        return None
    import datetime as dt

    if state[0] == "fixed":
        _, days, seconds, microseconds, name = state
        offset = dt.timedelta(days=days, seconds=seconds, microseconds=microseconds)
        return dt.timezone(offset) if name is None else dt.timezone(offset, name)
    if state[0] == "zone":
        import zoneinfo

        return zoneinfo.ZoneInfo(state[1])
    raise CorruptEntry(f"unknown tzinfo state {state!r}")


def _decode_datetime(payload: bytes) -> Any:
    dt = _module("datetime")
    year, month, day, hour, minute, second, microsecond, fold, tz = _unpackb(payload)
    return dt.datetime(
        year, month, day, hour, minute, second, microsecond, tzinfo=_decode_tz(tz), fold=fold
    )


def _decode_time(payload: bytes) -> Any:
    dt = _module("datetime")
    hour, minute, second, microsecond, fold, tz = _unpackb(payload)
    return dt.time(hour, minute, second, microsecond, tzinfo=_decode_tz(tz), fold=fold)


def _find_class(path: Any) -> Any:
    module, qualname = path
    try:
        return lookup(module, qualname)
    except LookupError as error:
        raise CorruptEntry(str(error)) from error


def _decode_dataclass(payload: bytes) -> object:
    path, fields = _unpackb(payload)
    cls = _find_class(path)
    # Built the way pickle builds it: no __init__ or __post_init__ runs again, and frozen
    # dataclasses are filled in through object.__setattr__.
    instance = object.__new__(cls)
    for name, item in fields.items():
        object.__setattr__(instance, name, item)
    return instance


def _decode_namedtuple(payload: bytes) -> object:
    path, items = _unpackb(payload)
    return _find_class(path)._make(items)


def _decode_enum(payload: bytes) -> object:
    path, name = _unpackb(payload)
    return _find_class(path)[name]


def _decode_path(payload: bytes) -> Any:
    class_name, text = _unpackb(payload)
    if class_name not in _PATH_CLASS_NAMES:
        raise CorruptEntry(f"unknown path class {class_name!r}")
    return getattr(_module("pathlib"), class_name)(text)


def _decode_ndarray(payload: bytes) -> Any:
    import numpy  # numpy stays optional: only arrays need it

    dtype, shape, order, data = _unpackb(payload)
    flat = numpy.frombuffer(data, dtype=numpy.dtype(dtype))
    # frombuffer gives a read-only view of the stored bytes; the caller gets its own array.
    return flat.reshape(shape, order=order).copy(order="K")


def _decode_numpy_scalar(payload: bytes) -> Any:
    import numpy

    dtype, data = _unpackb(payload)
    return numpy.frombuffer(data, dtype=numpy.dtype(dtype))[0]


def _decode_complex(payload: bytes) -> complex:
    real, imag = _unpackb(payload)
    return complex(real, imag)


def _decode_timedelta(payload: bytes) -> Any:
    dt = _module("datetime")
    days, seconds, microseconds = _unpackb(payload)
    return dt.timedelta(days=days, seconds=seconds, microseconds=microseconds)


_EXT_DECODERS: dict[int, Callable[[bytes], object]] = {
    EXT_TUPLE: lambda payload: tuple(_unpackb(payload)),
    EXT_SET: lambda payload: set(_unpackb(payload)),
    EXT_FROZENSET: lambda payload: frozenset(_unpackb(payload)),
    EXT_BIGINT: lambda payload: int.from_bytes(payload, "big", signed=True),
    EXT_DATETIME: _decode_datetime,
    EXT_DATE: lambda payload: _module("datetime").date(*_unpackb(payload)),
    EXT_TIME: _decode_time,
    EXT_TIMEDELTA: _decode_timedelta,
    EXT_DECIMAL: lambda payload: _module("decimal").Decimal(_unpackb(payload)),
    EXT_UUID: lambda payload: _module("uuid").UUID(bytes=bytes(payload)),
    EXT_COMPLEX: _decode_complex,
    EXT_PATH: _decode_path,
    EXT_ENUM: _decode_enum,
    EXT_DATACLASS: _decode_dataclass,
    EXT_NAMEDTUPLE: _decode_namedtuple,
    EXT_NDARRAY: _decode_ndarray,
    EXT_NUMPY_SCALAR: _decode_numpy_scalar,
}


def _module(name: str) -> Any:
    """A standard-library module, imported when a stored value first needs it."""
    return sys.modules.get(name) or importlib.import_module(name)


def _decode_ext(code: int, payload: bytes) -> object:
    decoder = _EXT_DECODERS.get(code)
    if decoder is None:
        raise CorruptEntry(f"unknown extension type {code}")
    return decoder(payload)
