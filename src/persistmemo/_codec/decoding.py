"""Stored bytes back to values, under trust rules: msgpack rebuilds only what its tags say.

Bytes are decoded only after the entry's keyed seal verified, but a store may be shared, so
stored msgpack values are still not allowed to build arbitrary objects. A value rebuilds a
class only if it is the kind its tag says (``_kinds``): a dataclass with exactly the stored
fields and a plain ``object`` layout, a NamedTuple made by ``collections.namedtuple`` or
``typing.NamedTuple``, an ``enum.Enum`` (an ``enum.Flag`` by value); anything else raises
``UndecodableValue`` (the entry is a miss). Classes are found under the rules of
class_names.py, and pickles are unpickled only with ``allow_pickle``. ``decode_value``
raises only ``CorruptEntry``, or its subclass ``UndecodableValue`` for well-formed bytes that
cannot be rebuilt in this process.
"""

from __future__ import annotations

import sys
import threading

import msgpack

from persistmemo._codec.formats import (
    FORMAT_MSGPACK,
    FORMAT_PICKLE,
    FORMAT_PICKLE_OUT_OF_BAND,
    MAX_EXT_DEPTH,
    ValueExtension,
)
from persistmemo._codec.out_of_band import (
    COPY_OUT_PART,
    BadSegment,
    FramedValue,
    array_from_segment,
)
from persistmemo._deferred import load_before_fork
from persistmemo._kinds import (
    PATHLIB_CLASS_NAMES,
    dataclass_field_names,
    is_enum,
    is_flag,
    is_namedtuple,
    is_plain_dataclass,
)
from persistmemo.errors import CorruptEntry, UndecodableValue

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeAlias

    _Unpack: TypeAlias = Callable[[bytes | memoryview], Any]
    _Decoder: TypeAlias = Callable[[bytes, _Unpack, bool], object]

Encoded = bytes | memoryview | FramedValue
"""What a store hands back to decode: encoded bytes, or a document and its area."""

_MSGPACK = FORMAT_MSGPACK[0]
_MSGPACK_BYTE = FORMAT_MSGPACK[:1]
_PICKLE = FORMAT_PICKLE[0]
_PICKLE_OUT_OF_BAND = FORMAT_PICKLE_OUT_OF_BAND[0]


class _Decoding(threading.local):
    """This thread's decode: the value's area, when it has one (``framed``; ``area``, made
    usable at its first view; ``copy_budget``, the bytes of small parts still to be copied
    out of it), and whether arrays are to be read-only."""

    framed: FramedValue | None = None
    area: memoryview | None = None
    copy_budget = 0
    read_only = False


_decoding = _Decoding()


def decode_value(data: Encoded, *, allow_pickle: bool = True, read_only: bool = False) -> object:
    """Return the value stored as ``data``; raises CorruptEntry when it is not well-formed.

    Raises its subclass UndecodableValue when the bytes are well-formed but cannot be
    rebuilt here (the module's trust rules). Pickle-fallback bytes are only unpickled
    with ``allow_pickle``: callers pass it only for bytes whose origin was authenticated
    (see _sealing.py), and only then may a value import the module of one of its classes.

    ``read_only`` (``memo(mmap=True)``): NumPy arrays come back read-only, whether the area
    is a map or not (a Redis hit's bytes are viewed, not copied), and so do arrays of a
    pickle's buffers; an array a pickle holds in its own stream is the pickle's to build.
    Arrays of a mapped area are read-only either way.
    """
    if read_only:
        return _decode_read_only(data, allow_pickle)
    if type(data) is bytes and data[:1] == _MSGPACK_BYTE:  # a small value: every hit's
        try:
            return (_unpack_importing if allow_pickle else _unpack_loaded)(data[1:])
        except CorruptEntry:
            raise
        except Exception:
            pass  # _decode_document says what is wrong
    if type(data) is FramedValue:
        _decoding.framed = data
        _decoding.area = None
        _decoding.copy_budget = data.copy_budget()
        try:
            return _decode_document(data.document, allow_pickle)
        finally:
            _decoding.framed = _decoding.area = None
    return _decode_document(data, allow_pickle)  # type: ignore[arg-type]


def _decode_read_only(data: Encoded, allow_pickle: bool) -> object:
    before = _decoding.read_only
    _decoding.read_only = True
    try:
        return decode_value(data, allow_pickle=allow_pickle)
    finally:
        _decoding.read_only = before


def _decode_document(data: bytes | memoryview, allow_pickle: bool) -> object:
    head = data[0] if data else -1
    try:
        if head == _MSGPACK:
            return (_unpack_importing if allow_pickle else _unpack_loaded)(data[1:])
        if head in (_PICKLE, _PICKLE_OUT_OF_BAND):
            if not allow_pickle:
                raise UndecodableValue(
                    "refused: the value is a pickle, and this store does not allow pickles "
                    "(it is shared, or strict, or its secret key is not private)"
                )
            if head == _PICKLE:
                return _pickles().unpickle(data[1:])
            return _unpickle_out_of_band(data[1:])
    except CorruptEntry:
        raise
    except RecursionError:
        raise CorruptEntry("stored value is nested too deeply to decode") from None
    except Exception as error:
        raise CorruptEntry(f"stored value does not decode: {error!r}") from error
    raise CorruptEntry(f"stored value has an unknown format byte {head!r}")


def _framed_area(length: object) -> tuple[memoryview, bool, bool]:
    """Where a part of ``length`` bytes of the value being decoded is read from: the area
    (made usable once), or the area as stored when the part is to be copied out of it (a
    small one: out_of_band.COPY_OUT_PART); whether it is; whether arrays are read-only."""
    framed: FramedValue | None = getattr(_decoding, "framed", None)
    if framed is None:
        raise CorruptEntry("stored value refers to buffers it does not have")
    read_only = framed.mapped or _decoding.read_only
    if (
        type(length) is int
        and 0 <= length <= _decoding.copy_budget
        and length * COPY_OUT_PART <= len(framed.area)
    ):
        _decoding.copy_budget -= length
        return framed.area, True, read_only
    area: memoryview | None = _decoding.area
    if area is None:
        area = _decoding.area = framed.usable_area(read_only)
    return area, False, read_only


def _unpickle_out_of_band(payload: bytes | memoryview) -> object:
    size = int.from_bytes(payload[:4], "big")
    if len(payload) < 4 + size:
        raise CorruptEntry("truncated buffer references")
    references = _unpack_loaded(payload[4 : 4 + size])
    stream = payload[4 + size :]
    if type(references) is not list:
        raise CorruptEntry("malformed buffer references")
    buffers = []
    for reference in references:
        if type(reference) is not list or len(reference) != 2:
            raise CorruptEntry("malformed buffer reference")
        offset, length = reference
        if type(offset) is not int or type(length) is not int or offset < 0 or length < 0:
            raise CorruptEntry("malformed buffer reference")
        area, copy, read_only = _framed_area(length)
        if offset + length > len(area):
            raise CorruptEntry("buffer reference past the end of the stored data")
        view = area[offset : offset + length]
        if copy:  # a small buffer: its own memory, so that it does not keep the area alive
            view = memoryview(bytes(view) if read_only else bytearray(view))
        buffers.append(view.toreadonly() if read_only else view)
    return _pickles().unpickle(stream, buffers)


def _pickles() -> Any:
    """pickles.py (and class_names.py, which it loads), imported at the first pickle or
    class to rebuild: a process whose hits are plain msgpack values reads neither (a seam of
    the cold-start budget, docs/architecture.md)."""
    from persistmemo._codec import pickles

    return pickles


load_before_fork(_pickles)


def is_pickled(data: Encoded) -> bool:
    """Whether encoded bytes hold a pickle-fallback value."""
    return len(data) > 0 and data[0] in (_PICKLE, _PICKLE_OUT_OF_BAND)


def _stored_class(path: Any, kind: str, is_kind: Callable[[type], bool], allow_import: bool) -> Any:
    """The class a stored value names, checked to be ``kind``; raises UndecodableValue."""
    if not (type(path) is list and len(path) == 2 and all(type(part) is str for part in path)):
        raise CorruptEntry(f"malformed class name {path!r}")
    module, qualname = path
    loaded = sys.modules.get(module)
    # The common case first (a top-level class of a loaded module); then every rule.
    cls = vars(loaded).get(qualname) if loaded is not None and "." not in qualname else None
    if cls is None:
        # class_names.py's rule, as pickles.py (which loads it) applies it: see _pickles().
        cls = _pickles().resolve_global(
            module, qualname, allow_import=allow_import, by_getattr=False
        )
    if not (isinstance(cls, type) and is_kind(cls)):
        raise UndecodableValue(
            f"refused: {module}.{qualname} is not {kind}, and a stored {kind} may build "
            "nothing else"
        )
    return cls


def _make_unpacker(allow_import: bool) -> _Unpack:
    """msgpack.unpackb with the extension hook, whose class lookups may import modules only
    with ``allow_import``; nested payloads are unpacked by the same rules, one level deeper.

    Each nested unpackb holds msgpack's 40 KB parse stack on the C stack: a document nesting
    extension types a few hundred levels deep (planted, since the encoder stops at
    MAX_EXT_DEPTH) would crash the process, not raise. The depth is counted by the chain
    of closures, so that the hit path pays nothing for it.
    """

    def too_deep(payload: bytes | memoryview) -> Any:
        raise CorruptEntry(f"stored value nests extension types over {MAX_EXT_DEPTH} levels")

    def unpacker_at(nested: _Unpack) -> _Unpack:
        def ext_hook(code: int, payload: bytes) -> object:
            decoder = _EXT_DECODERS.get(code)
            if decoder is None:
                raise CorruptEntry(f"unknown extension type {code}")
            return decoder(payload, nested, allow_import)

        def unpack(payload: bytes | memoryview) -> Any:
            return msgpack.unpackb(
                payload, ext_hook=ext_hook, strict_map_key=False, unicode_errors="surrogatepass"
            )

        return unpack

    unpack: _Unpack = too_deep
    for _ in range(MAX_EXT_DEPTH + 1):
        unpack = unpacker_at(unpack)
    return unpack


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

        try:
            return zoneinfo.ZoneInfo(state[1])
        except zoneinfo.ZoneInfoNotFoundError:
            raise UndecodableValue(f"time zone {state[1]!r} is not available here") from None
    raise CorruptEntry(f"unknown tzinfo state {state!r}")


def _decode_datetime(payload: bytes, unpack: _Unpack, _: bool) -> Any:
    dt = _module("datetime")
    year, month, day, hour, minute, second, microsecond, fold, tz = unpack(payload)
    return dt.datetime(
        year, month, day, hour, minute, second, microsecond, tzinfo=_decode_tz(tz), fold=fold
    )


def _decode_time(payload: bytes, unpack: _Unpack, _: bool) -> Any:
    dt = _module("datetime")
    hour, minute, second, microsecond, fold, tz = unpack(payload)
    return dt.time(hour, minute, second, microsecond, tzinfo=_decode_tz(tz), fold=fold)


def _decode_dataclass(payload: bytes, unpack: _Unpack, allow_import: bool) -> object:
    path, fields = unpack(payload)
    cls = _stored_class(path, "a dataclass", is_plain_dataclass, allow_import)
    names = dataclass_field_names(cls)
    if type(fields) is not dict or fields.keys() != names:
        stored = sorted(map(str, fields)) if isinstance(fields, dict) else fields
        raise UndecodableValue(
            f"refused: the stored fields {stored} are not the fields {sorted(names)} of "
            f"dataclass {path[0]}.{path[1]} (the class changed)"
        )
    # Built the way pickle and copy build it: no __init__ or __post_init__ runs again (they
    # may compute fields, take InitVars that are not stored, or have effects), and frozen
    # dataclasses are filled in through object.__setattr__. Safe only because the class was
    # checked to be a dataclass whose __new__ is object's and the names to be its fields.
    instance = object.__new__(cls)
    for name, item in fields.items():
        object.__setattr__(instance, name, item)
    return instance


def _decode_namedtuple(payload: bytes, unpack: _Unpack, allow_import: bool) -> object:
    path, items = unpack(payload)
    cls = _stored_class(path, "a NamedTuple", is_namedtuple, allow_import)
    if type(items) is not list or len(items) != len(cls._fields):
        raise UndecodableValue(
            f"refused: the stored items do not match the fields {list(cls._fields)} of "
            f"NamedTuple {path[0]}.{path[1]} (the class changed)"
        )
    return cls._make(items)


def _decode_enum(payload: bytes, unpack: _Unpack, allow_import: bool) -> object:
    path, name = unpack(payload)
    cls = _stored_class(path, "an Enum", is_enum, allow_import)
    member = cls.__members__.get(name) if type(name) is str else None
    if member is None:
        raise UndecodableValue(f"enum {path[0]}.{path[1]} has no member {name!r} here")
    return member


def _decode_flag(payload: bytes, unpack: _Unpack, allow_import: bool) -> object:
    path, number = unpack(payload)
    cls = _stored_class(path, "a Flag", is_flag, allow_import)
    if type(number) is not int:
        raise CorruptEntry(f"malformed flag value {number!r}")
    try:
        return cls(number)
    except ValueError:
        raise UndecodableValue(f"flag {path[0]}.{path[1]} has no value {number} here") from None


def _decode_path(payload: bytes, unpack: _Unpack, _: bool) -> Any:
    class_name, text = unpack(payload)
    if class_name not in PATHLIB_CLASS_NAMES:
        raise CorruptEntry(f"unknown path class {class_name!r}")
    return getattr(_module("pathlib"), class_name)(text)


def _numpy_for_decoding() -> Any:
    try:
        import numpy  # numpy stays optional: only arrays need it
    except ImportError:
        raise UndecodableValue(
            "the value holds a numpy array, and numpy is not installed here"
        ) from None
    return numpy


def _plain_dtype(numpy: Any, spelled: object) -> Any:
    dtype = numpy.dtype(spelled) if type(spelled) is str else None
    if dtype is None or dtype.hasobject or dtype.fields is not None:
        # The encoder never writes these: a dtype holding objects would build them.
        raise CorruptEntry(f"refused numpy dtype {spelled!r}")
    return dtype


def _decode_ndarray(payload: bytes, unpack: _Unpack, _: bool) -> Any:
    numpy = _numpy_for_decoding()
    dtype, shape, order, data = unpack(payload)
    if order not in ("C", "F"):
        raise CorruptEntry(f"unknown array order {order!r}")
    flat = numpy.frombuffer(data, dtype=_plain_dtype(numpy, dtype))
    # frombuffer gives a read-only view of the stored bytes; the caller gets its own array.
    array = flat.reshape(shape, order=order).copy(order="K")
    if _decoding.read_only:
        array.flags.writeable = False
    return array


def _decode_ndarray_npy(payload: bytes, unpack: _Unpack, _: bool) -> Any:
    reference = unpack(payload)
    if type(reference) is not list or len(reference) != 3:
        raise CorruptEntry("malformed array reference")
    offset, length, header = reference
    area, copy, read_only = _framed_area(length)
    try:
        return array_from_segment(area, offset, length, header, read_only, copy)
    except ImportError:
        raise UndecodableValue(
            "the value holds a numpy array, and numpy is not installed here"
        ) from None
    except BadSegment as error:
        raise CorruptEntry(str(error)) from None


def _decode_numpy_scalar(payload: bytes, unpack: _Unpack, _: bool) -> Any:
    numpy = _numpy_for_decoding()
    dtype, data = unpack(payload)
    return numpy.frombuffer(data, dtype=_plain_dtype(numpy, dtype))[0]


def _decode_complex(payload: bytes, unpack: _Unpack, _: bool) -> complex:
    real, imag = unpack(payload)
    return complex(real, imag)


def _decode_timedelta(payload: bytes, unpack: _Unpack, _: bool) -> Any:
    dt = _module("datetime")
    days, seconds, microseconds = unpack(payload)
    return dt.timedelta(days=days, seconds=seconds, microseconds=microseconds)


_EXT_DECODERS: dict[int, _Decoder] = {
    ValueExtension.TUPLE: lambda payload, unpack, _: tuple(unpack(payload)),
    ValueExtension.SET: lambda payload, unpack, _: set(unpack(payload)),
    ValueExtension.FROZENSET: lambda payload, unpack, _: frozenset(unpack(payload)),
    ValueExtension.BIGINT: lambda payload, unpack, _: int.from_bytes(payload, "big", signed=True),
    ValueExtension.DATETIME: _decode_datetime,
    ValueExtension.DATE: lambda payload, unpack, _: _module("datetime").date(*unpack(payload)),
    ValueExtension.TIME: _decode_time,
    ValueExtension.TIMEDELTA: _decode_timedelta,
    ValueExtension.DECIMAL: lambda payload, unpack, _: _module("decimal").Decimal(unpack(payload)),
    ValueExtension.UUID: lambda payload, unpack, _: _module("uuid").UUID(bytes=bytes(payload)),
    ValueExtension.COMPLEX: _decode_complex,
    ValueExtension.PATH: _decode_path,
    ValueExtension.ENUM: _decode_enum,
    ValueExtension.FLAG: _decode_flag,
    ValueExtension.DATACLASS: _decode_dataclass,
    ValueExtension.NAMEDTUPLE: _decode_namedtuple,
    ValueExtension.NDARRAY: _decode_ndarray,
    ValueExtension.NUMPY_SCALAR: _decode_numpy_scalar,
    ValueExtension.NDARRAY_NPY: _decode_ndarray_npy,
}

# Two unpackers built once, so that the hit path picks one and pays nothing per value.
_unpack_loaded = _make_unpacker(allow_import=False)
_unpack_importing = _make_unpacker(allow_import=True)


def _module(name: str) -> Any:
    """A standard-library module the codec itself names, imported when a value first needs
    it (never a module named by the stored bytes)."""
    found = sys.modules.get(name)
    if found is None:
        import importlib  # not on a re-run's path: its hits decode what is loaded

        found = importlib.import_module(name)
    return found


def decode_many(
    found: dict[str, Encoded], *, allow_pickle: bool = True, read_only: bool = False
) -> tuple[dict[str, object], list[CorruptEntry]]:
    """``decode_value`` of many values (f.map's hits): the values by key, and the errors of
    those that did not decode (as ``decode_value`` raises them). A small msgpack value is
    unpacked here, in one loop; any other (and, ``read_only``, every one: its arrays come
    back read-only) goes through ``decode_value``."""
    unpack = _unpack_importing if allow_pickle else _unpack_loaded
    values: dict[str, object] = {}
    failed: list[CorruptEntry] = []
    for key, data in found.items():
        if not read_only and type(data) is bytes and data and data[0] == _MSGPACK:
            try:
                values[key] = unpack(data[1:])
                continue
            except CorruptEntry as error:
                failed.append(error)
                continue
            except Exception:
                pass  # decode_value says what is wrong
        try:
            values[key] = decode_value(data, allow_pickle=allow_pickle, read_only=read_only)
        except CorruptEntry as error:
            failed.append(error)
    return values, failed
