"""Results to bytes: msgpack with extension types, pickle only as a marked fallback.

Everything the key encoding supports round-trips exactly through msgpack: a tuple comes back
a tuple, a set a set, a datetime with its tzinfo, a big int as itself, an array with its
dtype and shape, an ``enum.Flag`` combination as itself. Each class is checked once, with the
predicates the decoder applies (``_kinds``), so that what is stored comes back. Any other
object (a dataclass with a builtin base such as ``dict``; reference cycles, nesting deeper
than msgpack allows, extension types nested over ``MAX_EXT_DEPTH`` levels) is pickled, and
the first byte says so; a strict store refuses that fallback instead. One exception to
exactness: msgpack packs bytearray and memoryview as bytes, so they come back as bytes.
``encode_value`` raises only ``UnstorableValue``.
"""

from __future__ import annotations

import io
import sys
import threading

import msgpack

from persistmemo._codec.class_names import resolve_global
from persistmemo._codec.formats import (
    FORMAT_MSGPACK,
    FORMAT_PICKLE,
    FORMAT_PICKLE_OUT_OF_BAND,
    MAX_EXT_DEPTH,
    ValueExtension,
)
from persistmemo._codec.out_of_band import BufferCollector, OutOfBand, npy_segment
from persistmemo._codec.pickles import pickle_into
from persistmemo._kinds import (
    dataclass_field_names,
    is_dataclass,
    is_enum,
    is_flag,
    is_namedtuple,
    is_ndarray,
    is_numpy_scalar,
    is_pathlib_class,
    is_plain_dataclass,
    is_tuple_with_fields,
)
from persistmemo._naming import module_name
from persistmemo.errors import UndecodableValue, UnstorableValue

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# The depth of _ext calls in this thread's encoding, and the area being laid out when the
# value has one.
_encoding = threading.local()


class _NeedsPickle(Exception):
    """Raised inside msgpack's default hook: the value leaves the msgpack subset."""


def encode_value(value: object, *, allow_pickle: bool = True) -> bytes:
    """Return the stored form of ``value``, as one bytes object.

    Raises UnstorableValue (and nothing else) when the value needs the pickle fallback and
    ``allow_pickle`` is false, or when it cannot be pickled either.
    """
    return encode_result(value, allow_pickle=allow_pickle, out_of_band_from=None)  # type: ignore[return-value]


def encode_result(
    value: object, *, allow_pickle: bool = True, out_of_band_from: int | None
) -> bytes | OutOfBand:
    """Return the stored form of ``value``; with ``out_of_band_from``, arrays (and pickle
    buffers) of at least that many bytes are kept out of the document (see out_of_band.py),
    and the result is an ``OutOfBand`` when there were any.

    Raises UnstorableValue as ``encode_value`` does.
    """
    collector = None if out_of_band_from is None else BufferCollector(out_of_band_from)
    _encoding.collector = collector
    try:
        document = FORMAT_MSGPACK + _packb(value)
    except _NeedsPickle as needs:
        reason = f"contains a {needs.args[0]}, which has no msgpack encoding"
    except RecursionError:
        reason = "is nested too deeply for msgpack"
    except ValueError as error:
        # msgpack's own depth limit: a reference cycle, or nesting deeper than 511 levels.
        reason = f"has a reference cycle or is nested too deeply for msgpack ({error})"
    except Exception as error:
        # A property of a dataclass field that raises, a container changed while packed...
        reason = f"cannot be packed as msgpack ({error!r})"
    else:
        if collector is None or not collector.segments:
            return document
        return OutOfBand(document, collector.segments, collector.size)
    finally:
        _encoding.collector = None
    if not allow_pickle:
        raise UnstorableValue(
            f"the result {reason}, and the pickle fallback is refused here"
        ) from None
    return _pickled(value, reason, out_of_band_from)


def _pickled(value: object, reason: str, out_of_band_from: int | None) -> bytes | OutOfBand:
    buffer = io.BytesIO()
    buffer.write(FORMAT_PICKLE)
    collector = None if out_of_band_from is None else BufferCollector(out_of_band_from)
    try:
        references = pickle_into(buffer, value, collector)
    except Exception as error:
        raise UnstorableValue(f"the result {reason}, and cannot be pickled: {error!r}") from None
    if collector is None or not references:
        return buffer.getvalue()
    packed = _packb(references)
    buffer.seek(0)
    head = FORMAT_PICKLE_OUT_OF_BAND + len(packed).to_bytes(4, "big") + packed
    document = head + buffer.getbuffer()[1:]
    return OutOfBand(document, collector.segments, collector.size)


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
    depth = getattr(_encoding, "depth", 0)
    if depth >= MAX_EXT_DEPTH:
        raise _NeedsPickle(
            f"value nested more than {MAX_EXT_DEPTH} levels deep in tuples, sets, dataclasses "
            "and other extension types"
        )
    _encoding.depth = depth + 1
    try:
        return msgpack.ExtType(code, _packb(payload))
    finally:
        _encoding.depth = depth


def _class_path(cls: type) -> list[str]:
    """[module, qualname] of a class that can be found again by that name when decoding."""
    module = module_name(cls.__module__)
    qualname = cls.__qualname__
    try:
        found = resolve_global(module, qualname, allow_import=False, by_getattr=False)
    except UndecodableValue:
        found = None
    if found is not cls:
        raise _NeedsPickle(f"value of the class {qualname}, which cannot be found by its name")
    return [module, qualname]


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
    return msgpack.ExtType(ValueExtension.BIGINT, value.to_bytes(length, "big", signed=True))


def _encode_datetime(value: Any) -> msgpack.ExtType:
    fields: list[object] = [value.year, value.month, value.day, value.hour, value.minute]
    fields += [value.second, value.microsecond, value.fold, _encode_tz(value.tzinfo)]
    return _ext(ValueExtension.DATETIME, fields)


def _encode_time(value: Any) -> msgpack.ExtType:
    fields = [value.hour, value.minute, value.second, value.microsecond, value.fold]
    return _ext(ValueExtension.TIME, [*fields, _encode_tz(value.tzinfo)])


def _encode_enum(value: Any) -> msgpack.ExtType:
    # The round trip is checked here, so that nothing is stored that cannot come back.
    if type(value).__members__.get(value._name_) is not value:
        raise _NeedsPickle(f"enum {type(value).__qualname__} member that is not found by name")
    return _ext(ValueExtension.ENUM, [_class_path(type(value)), value._name_])


def _encode_flag(value: Any) -> msgpack.ExtType:
    # By value: a combination (R | W) or Flag(0) has no name to find it by.
    cls = type(value)
    number = value._value_
    try:
        rebuilt = cls(number) if type(number) is int else None
    except Exception:
        rebuilt = None
    if type(rebuilt) is not cls or rebuilt != value:
        raise _NeedsPickle(f"flag {cls.__qualname__} that is not rebuilt by its value")
    return _ext(ValueExtension.FLAG, [_class_path(cls), number])


def _encode_namedtuple(value: Any) -> msgpack.ExtType:
    if getattr(value, "__dict__", None):
        # Attributes beyond the fields would be lost on the way back.
        raise _NeedsPickle(f"NamedTuple {type(value).__qualname__} with non-field attributes")
    return _ext(ValueExtension.NAMEDTUPLE, [_class_path(type(value)), list(value)])


def _encode_dataclass(value: Any) -> msgpack.ExtType:
    names = [field.name for field in sys.modules["dataclasses"].fields(value)]
    state = getattr(value, "__dict__", None)
    if state is not None and set(state) != set(names):
        # Attributes beyond the fields would be lost on the way back.
        raise _NeedsPickle(f"dataclass {type(value).__qualname__} with non-field attributes")
    fields = {name: getattr(value, name) for name in names}
    return _ext(ValueExtension.DATACLASS, [_class_path(type(value)), fields])


def _dataclass_encoder(cls: type) -> Callable[[Any], msgpack.ExtType]:
    if not is_plain_dataclass(cls):
        base = next(
            (base for base in cls.__mro__ if "__new__" in vars(base) and base is not object), cls
        )
        return _pickled_because(
            f"dataclass {cls.__qualname__}, built by {base.__qualname__}.__new__ (a builtin "
            "base such as dict, or its own __new__)"
        )
    names = dataclass_field_names(cls)
    slots: set[str] = set()
    for klass in cls.__mro__:
        declared = vars(klass).get("__slots__", ())
        slots.update((declared,) if isinstance(declared, str) else declared)
    if slots - names - {"__dict__", "__weakref__"}:
        return _pickled_because(f"dataclass {cls.__qualname__} with slots that are not fields")
    return _encode_dataclass


def _encode_ndarray(value: Any) -> msgpack.ExtType:
    collector: BufferCollector | None = getattr(_encoding, "collector", None)
    if (
        collector is not None
        and value.nbytes >= collector.threshold
        and type(value) is _numpy().ndarray
        and (segment := npy_segment(value)) is not None
    ):
        return _ext(ValueExtension.NDARRAY_NPY, [*collector.add(*segment), segment[0]])
    plain = type(value) is _numpy().ndarray and value.dtype.fields is None
    if value.dtype.hasobject or not plain or not _dtype_round_trips(value.dtype):
        metadata = " with dtype metadata" if value.dtype.metadata is not None else ""
        raise _NeedsPickle(f"numpy array of dtype {value.dtype}{metadata}")
    order = "F" if value.flags.f_contiguous and not value.flags.c_contiguous else "C"
    return _ext(
        ValueExtension.NDARRAY, [value.dtype.str, list(value.shape), order, value.tobytes(order)]
    )


def _encode_numpy_scalar(value: Any) -> msgpack.ExtType:
    dtype = value.dtype
    if dtype.hasobject or dtype.fields is not None or type(value) is not dtype.type:
        raise _NeedsPickle(f"numpy scalar of type {type(value).__qualname__}")
    if not _dtype_round_trips(dtype):
        raise _NeedsPickle(f"numpy scalar of dtype {dtype}")
    return _ext(ValueExtension.NUMPY_SCALAR, [dtype.str, value.tobytes()])


def _dtype_round_trips(dtype: Any) -> bool:
    # dtype.str loses what it cannot spell (variable-width strings, subarrays, metadata;
    # dtype equality ignores metadata, so it is checked apart).
    if dtype.metadata is not None:
        return False
    try:
        return bool(_numpy().dtype(dtype.str) == dtype)
    except TypeError:
        return False


def _numpy() -> Any:
    return sys.modules["numpy"]


_EXT_ENCODERS: dict[type, Callable[[Any], msgpack.ExtType]] = {
    tuple: lambda value: _ext(ValueExtension.TUPLE, list(value)),
    set: lambda value: _ext(ValueExtension.SET, list(value)),
    frozenset: lambda value: _ext(ValueExtension.FROZENSET, list(value)),
    int: _encode_bigint,
    complex: lambda value: _ext(ValueExtension.COMPLEX, [value.real, value.imag]),
}


def _stdlib_ext_encoders() -> dict[type, Callable[[Any], msgpack.ExtType]]:
    """Encoders of the standard library's value types whose modules are loaded (a value of
    a type cannot exist before its module is), so persistmemo need not import them."""
    found: dict[type, Callable[[Any], msgpack.ExtType]] = {}
    datetime = sys.modules.get("datetime")
    if datetime is not None:
        found[datetime.datetime] = _encode_datetime
        found[datetime.date] = lambda value: _ext(
            ValueExtension.DATE, [value.year, value.month, value.day]
        )
        found[datetime.time] = _encode_time
        found[datetime.timedelta] = lambda value: _ext(
            ValueExtension.TIMEDELTA, [value.days, value.seconds, value.microseconds]
        )
    decimal = sys.modules.get("decimal")
    if decimal is not None:
        found[decimal.Decimal] = lambda value: _ext(ValueExtension.DECIMAL, str(value))
    uuid = sys.modules.get("uuid")
    if uuid is not None:
        found[uuid.UUID] = lambda value: msgpack.ExtType(ValueExtension.UUID, value.bytes)
    return found


def _ext_encoder_for(cls: type) -> Callable[[Any], msgpack.ExtType]:
    encoder = _choose_ext_encoder(cls)
    _EXT_ENCODERS[cls] = encoder
    return encoder


def _choose_ext_encoder(cls: type) -> Callable[[Any], msgpack.ExtType]:
    """The encoder of a class; the checks that depend only on the class are made here, once,
    with the same predicates the decoder applies, so that what is stored comes back."""
    stdlib = _stdlib_ext_encoders()
    if cls in stdlib:
        return stdlib[cls]
    if is_flag(cls):
        return _encode_flag
    if is_enum(cls):
        return _encode_enum
    if is_namedtuple(cls):
        return _encode_namedtuple
    if is_tuple_with_fields(cls):
        return _pickled_because(f"tuple subclass {cls.__qualname__} with its own _make")
    if is_dataclass(cls):
        return _dataclass_encoder(cls)
    if is_pathlib_class(cls):
        return lambda value: _ext(ValueExtension.PATH, [type(value).__name__, str(value)])
    if is_ndarray(cls):
        return _encode_ndarray
    if is_numpy_scalar(cls):
        return _encode_numpy_scalar
    return _needs_pickle


def _needs_pickle(value: object) -> msgpack.ExtType:
    raise _NeedsPickle(f"value of type {type(value).__module__}.{type(value).__qualname__}")


def _pickled_because(reason: str) -> Callable[[Any], msgpack.ExtType]:
    def needs_pickle(value: object) -> msgpack.ExtType:
        raise _NeedsPickle(reason)

    return needs_pickle
