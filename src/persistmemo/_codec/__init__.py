"""Results to bytes and back: msgpack with extension types, pickle only as a marked fallback.

Everything the key encoding supports round-trips exactly through msgpack: a tuple comes back
a tuple, a set a set, a datetime with its tzinfo, a big int as itself, an array with its
dtype and shape, an ``enum.Flag`` combination as itself. Any other object (including a
dataclass with a builtin base such as ``dict``, and values msgpack cannot hold: reference
cycles, nesting deeper than msgpack allows, extension types nested over ``MAX_EXT_DEPTH``
levels) is pickled, and the stored bytes say so in their
first byte; a strict store refuses that fallback instead. One exception to exactness: msgpack
packs bytearray and memoryview as bytes, so they come back as bytes.

Trust rules for decoding (bytes are decoded only after the entry's keyed seal verified, but
a store may be shared, so stored msgpack values are still not allowed to build arbitrary
objects):

- msgpack values rebuild a class only if it is the kind its tag says: a dataclass with
  exactly the stored fields and a plain ``object`` layout, a NamedTuple made by
  ``collections.namedtuple``/``typing.NamedTuple``, an ``enum.Enum`` (``enum.Flag`` by value).
  Anything else raises ``UndecodableValue`` (the entry is a miss).
- A class is found in a module already in ``sys.modules``. A module is imported to find it
  only with ``allow_pickle`` (a private store with a private key: the rule that allows
  pickles), and then only from the standard library or site-packages.
- A script is never imported to read a value (its top-level code would run). The running
  script's own name (``python script.py`` stores its classes as ``script.X``, like function
  identities in naming.py; ``__mp_main__`` in multiprocessing workers is the same script)
  resolves to the running ``__main__`` module. Pickles follow the same rules: classes of the
  running script are pickled under the script's importable name.
- Pickles are unpickled only with ``allow_pickle``.

``encode_value`` raises only ``UnstorableValue``; ``decode_value`` raises only
``CorruptEntry``, or its subclass ``UndecodableValue`` for well-formed bytes that cannot be
rebuilt in this process.
"""

from __future__ import annotations

import collections
import enum
import functools
import importlib
import io
import os
import sys
import threading
from collections.abc import Callable
from types import FunctionType, ModuleType
from typing import Any

import msgpack

from persistmemo._codec.out_of_band import (
    BadSegment,
    BufferCollector,
    FramedValue,
    OutOfBand,
    array_from_segment,
    npy_segment,
)
from persistmemo._naming import module_name
from persistmemo.errors import CorruptEntry, UndecodableValue, UnstorableValue

FORMAT_MSGPACK = b"\x01"
FORMAT_PICKLE = b"\x02"
FORMAT_PICKLE_OUT_OF_BAND = b"\x03"
"""A pickle whose large buffers (protocol 5) are in the value's area: the length of the
references (u32), the references (msgpack ``[[offset, length], ...]``), the pickle stream."""
_MSGPACK = FORMAT_MSGPACK[0]
_PICKLE = FORMAT_PICKLE[0]
_PICKLE_OUT_OF_BAND = FORMAT_PICKLE_OUT_OF_BAND[0]

Encoded = bytes | memoryview | FramedValue
"""What a store hands back to decode: encoded bytes, or a document and its area."""

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
EXT_FLAG = 18
EXT_NDARRAY_NPY = 19
"""An array kept in the value's area as a ``.npy`` image: ``[offset, length, header]``
(the image's ``.npy`` header, also in the document: see out_of_band.array_from_segment)."""

_PATH_CLASS_NAMES = frozenset(
    ("PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath", "WindowsPath")
)
MAX_EXT_DEPTH = 16
"""Extension types (tuple, set, dataclass...) nest at most this deep in msgpack; deeper
values are pickled. Decoding holds about 45 KB of C stack per level (msgpack's parse stack):
16 levels (under 800 KB) fit even a 1 MB thread stack."""
# The depth of _ext calls in this thread's encoding; the area being laid out (encoding) or
# read (decoding), when the value has one.
_encoding = threading.local()
_decoding = threading.local()
# The names a running script's module has: its own, and multiprocessing workers' copy.
_MAIN_NAMES = frozenset(("__main__", "__mp_main__"))
# Every class made by collections.namedtuple (typing.NamedTuple included) shares this code
# object for _make: it tells a real NamedTuple from any tuple subclass with a _make.
_NAMEDTUPLE_MAKE = collections.namedtuple("_Probe", "x")._make.__func__.__code__  # type: ignore[attr-defined]


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
    pickler, _ = _pickle_classes()
    buffer = io.BytesIO()
    buffer.write(FORMAT_PICKLE)
    collector = None if out_of_band_from is None else BufferCollector(out_of_band_from)
    references: list[list[int]] = []

    def keep_apart(pickle_buffer: Any) -> bool:
        # Protocol 5 hands over each contiguous buffer (array data, Arrow buffers): a false
        # answer keeps it out of the pickle stream, in the area.
        assert collector is not None
        try:
            raw = pickle_buffer.raw()
        except BufferError:  # not contiguous: pickled in band
            return True
        if raw.nbytes < collector.threshold:
            return True
        references.append(collector.add(raw))
        return False

    try:
        pickler(buffer, protocol=5, buffer_callback=keep_apart if collector else None).dump(value)
    except Exception as error:
        raise UnstorableValue(f"the result {reason}, and cannot be pickled: {error!r}") from None
    if collector is None or not references:
        return buffer.getvalue()
    packed = _packb(references)
    buffer.seek(0)
    head = FORMAT_PICKLE_OUT_OF_BAND + len(packed).to_bytes(4, "big") + packed
    document = head + buffer.getbuffer()[1:]
    return OutOfBand(document, collector.segments, collector.size)


def decode_value(data: Encoded, *, allow_pickle: bool = True) -> object:
    """Return the value stored as ``data``; raises CorruptEntry when it is not well-formed.

    Raises its subclass UndecodableValue when the bytes are well-formed but cannot be
    rebuilt here (see the module's trust rules). Pickle-fallback bytes are only unpickled
    with ``allow_pickle``: callers pass it only for bytes whose origin was authenticated
    (see integrity.py), and only then may a value import the module of one of its classes.
    """
    if type(data) is FramedValue:
        _decoding.framed = data
        _decoding.area = None
        try:
            return _decode_document(data.document, allow_pickle)
        finally:
            _decoding.framed = _decoding.area = None
    return _decode_document(data, allow_pickle)  # type: ignore[arg-type]


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
                return _unpickle(data[1:])
            return _unpickle_out_of_band(data[1:])
    except CorruptEntry:
        raise
    except RecursionError:
        raise CorruptEntry("stored value is nested too deeply to decode") from None
    except Exception as error:
        raise CorruptEntry(f"stored value does not decode: {error!r}") from error
    raise CorruptEntry(f"stored value has an unknown format byte {head!r}")


def _framed_area() -> tuple[memoryview, bool]:
    """The area of the value being decoded (made usable once), and whether it is mapped."""
    framed: FramedValue | None = getattr(_decoding, "framed", None)
    if framed is None:
        raise CorruptEntry("stored value refers to buffers it does not have")
    area: memoryview | None = _decoding.area
    if area is None:
        area = _decoding.area = framed.usable_area()
    return area, framed.mapped


def _unpickle_out_of_band(payload: bytes | memoryview) -> object:
    size = int.from_bytes(payload[:4], "big")
    if len(payload) < 4 + size:
        raise CorruptEntry("truncated buffer references")
    references = _unpack_loaded(payload[4 : 4 + size])
    stream = payload[4 + size :]
    area, mapped = _framed_area()
    if type(references) is not list:
        raise CorruptEntry("malformed buffer references")
    buffers = []
    for reference in references:
        if type(reference) is not list or len(reference) != 2:
            raise CorruptEntry("malformed buffer reference")
        offset, length = reference
        if type(offset) is not int or type(length) is not int or offset < 0 or length < 0:
            raise CorruptEntry("malformed buffer reference")
        if offset + length > len(area):
            raise CorruptEntry("buffer reference past the end of the stored data")
        view = area[offset : offset + length]
        buffers.append(view.toreadonly() if mapped else view)
    return _unpickle(stream, buffers)


def is_pickled(data: Encoded) -> bool:
    """Whether encoded bytes hold a pickle-fallback value."""
    return len(data) > 0 and data[0] in (_PICKLE, _PICKLE_OUT_OF_BAND)


# --- finding classes by name ---------------------------------------------------------------


def _running_script(name: str) -> ModuleType | None:
    """The running script's module when ``name`` is its importable name (see naming.py)."""
    for alias in ("__mp_main__", "__main__"):
        # __mp_main__ first: while a spawn worker re-runs the script, __main__ is still the
        # multiprocessing bootstrap.
        script = sys.modules.get(alias)
        if script is not None and (name in _MAIN_NAMES or name == module_name(alias)):
            return script
    return None


def _find_module(name: str, *, allow_import: bool) -> ModuleType:
    """The module ``name`` for a stored value; raises UndecodableValue saying why not."""
    found = sys.modules.get(name)
    if found is not None:
        return found
    script = _running_script(name)
    if script is not None:
        return script
    if not all(part.isidentifier() for part in name.split(".")):
        raise UndecodableValue(f"{name!r} is not a module name")
    if not allow_import:
        raise UndecodableValue(
            f"module {name} is not loaded here, and values read from a store that refuses "
            "pickles never import modules"
        )
    if not _installed(name):
        raise UndecodableValue(
            f"module {name} is not loaded here and is not installed (standard library or "
            "site-packages): persistmemo never imports a script to read a value"
        )
    try:
        return importlib.import_module(name)
    except Exception as error:
        raise UndecodableValue(f"importing module {name} failed: {error!r}") from None


def _installed(name: str) -> bool:
    """Whether module ``name`` would be imported from the standard library or site-packages
    (and not from a script's directory or the working directory)."""
    top = name.partition(".")[0]
    if top in sys.builtin_module_names:
        return True
    import importlib.util

    try:
        # A top-level name: finding its spec imports nothing.
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    if spec.origin in ("built-in", "frozen"):
        return True
    locations: list[str | None] = list(spec.submodule_search_locations or ()) or [spec.origin]
    roots = _installed_roots()
    return all(
        location is not None and os.path.realpath(location).startswith(roots)
        for location in locations
    )


@functools.cache
def _installed_roots() -> tuple[str, ...]:
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    roots = {
        paths[kind] for kind in ("stdlib", "platstdlib", "purelib", "platlib") if kind in paths
    }
    roots.update(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        roots.add(site.getusersitepackages())
    return tuple(os.path.join(os.path.realpath(root), "") for root in roots)


def _resolve_global(module: str, qualname: str, *, allow_import: bool, by_getattr: bool) -> Any:
    """The object ``module.qualname``; raises UndecodableValue when it is not here."""
    try:
        target: Any = _find_module(module, allow_import=allow_import)
    except UndecodableValue as error:
        raise UndecodableValue(
            f"class {module}.{qualname} is not importable here: {error}"
        ) from None
    for part in qualname.split("."):
        try:
            # For msgpack values, the namespace itself and not getattr: a module's
            # __getattr__ (PEP 562) or a metaclass would run code for a name the bytes chose.
            target = getattr(target, part) if by_getattr else vars(target)[part]
        except (AttributeError, KeyError, TypeError):
            raise UndecodableValue(
                f"class {module}.{qualname} is not importable here: {module} has no {qualname}"
            ) from None
    return target


def _class_path(cls: type) -> list[str]:
    """[module, qualname] of a class that can be found again by that name when decoding."""
    module = module_name(cls.__module__)
    qualname = cls.__qualname__
    try:
        found = _resolve_global(module, qualname, allow_import=False, by_getattr=False)
    except UndecodableValue:
        found = None
    if found is not cls:
        raise _NeedsPickle(f"value of the class {qualname}, which cannot be found by its name")
    return [module, qualname]


def _stored_class(path: Any, kind: str, is_kind: Callable[[type], bool], allow_import: bool) -> Any:
    """The class a stored value names, checked to be ``kind``; raises UndecodableValue."""
    if not (type(path) is list and len(path) == 2 and all(type(part) is str for part in path)):
        raise CorruptEntry(f"malformed class name {path!r}")
    module, qualname = path
    loaded = sys.modules.get(module)
    # The common case first (a top-level class of a loaded module); then every rule.
    cls = vars(loaded).get(qualname) if loaded is not None and "." not in qualname else None
    if cls is None:
        cls = _resolve_global(module, qualname, allow_import=allow_import, by_getattr=False)
    if not (isinstance(cls, type) and is_kind(cls)):
        raise UndecodableValue(
            f"refused: {module}.{qualname} is not {kind}, and a stored {kind} may build "
            "nothing else"
        )
    return cls


def _is_enum(cls: type) -> bool:
    return issubclass(cls, enum.Enum)


def _is_flag(cls: type) -> bool:
    return issubclass(cls, enum.Flag)


def _is_namedtuple(cls: type) -> bool:
    if not issubclass(cls, tuple):
        return False
    make = getattr(getattr(cls, "_make", None), "__func__", None)
    return (
        getattr(make, "__code__", None) is _NAMEDTUPLE_MAKE
        and type(getattr(cls, "_fields", None)) is tuple
    )


# Field names of the plain dataclasses already checked: the decoder checks each class once.
_plain_dataclass_fields: dict[type, frozenset[str]] = {}


def _is_plain_dataclass(cls: type) -> bool:
    """A dataclass that object.__new__ can build: no builtin base (dict, list, Exception...),
    whose __new__ is then not object's, and no __new__ of its own."""
    if cls in _plain_dataclass_fields:
        return True
    dataclasses = sys.modules.get("dataclasses")
    plain = (
        dataclasses is not None and dataclasses.is_dataclass(cls) and cls.__new__ is object.__new__  # type: ignore[comparison-overlap]
    )
    if plain:
        names = frozenset(field.name for field in dataclasses.fields(cls))  # type: ignore[union-attr]
        _plain_dataclass_fields[cls] = names
    return plain


def _field_names(cls: type) -> frozenset[str]:
    """The fields of a class that _is_plain_dataclass accepted."""
    return _plain_dataclass_fields[cls]


# --- pickles -------------------------------------------------------------------------------


def _script_global(module: str, qualname: str) -> object:
    """A class or function of a script, pickled under the script's importable name."""
    # Only reached from a pickle, which is only loaded where pickles are allowed.
    return _resolve_global(module, qualname, allow_import=True, by_getattr=True)


@functools.cache
def _pickle_classes() -> tuple[Any, Any]:
    import pickle  # only the fallback needs it

    class ScriptAwarePickler(pickle.Pickler):
        """Pickles the classes and functions of the running script under its importable
        name (naming.py), not as ``__main__``: another process, or the script imported as a
        module, then finds the same class."""

        def reducer_override(self, obj: Any) -> Any:
            if not isinstance(obj, (type, FunctionType)):
                return NotImplemented
            module = getattr(obj, "__module__", None)
            if module not in _MAIN_NAMES:
                return NotImplemented
            name = module_name(module)
            qualname = getattr(obj, "__qualname__", "")
            try:
                found = _resolve_global(name, qualname, allow_import=False, by_getattr=True)
            except UndecodableValue:
                return NotImplemented  # a local class: pickle reports it
            if found is not obj:
                return NotImplemented
            return _script_global, (name, qualname)

    class SafeUnpickler(pickle.Unpickler):
        """Finds classes under the rules of the module docstring: never imports a script."""

        def find_class(self, module: str, name: str) -> Any:
            if module not in sys.modules:
                found = _find_module_or_raise(module, name)
                if found is not sys.modules.get(module):
                    return _resolve_global(module, name, allow_import=True, by_getattr=True)
            try:
                return super().find_class(module, name)
            except AttributeError as error:
                raise UndecodableValue(
                    f"class {module}.{name} is not importable here: {error}"
                ) from None

    return ScriptAwarePickler, SafeUnpickler


def _find_module_or_raise(module: str, name: str) -> ModuleType:
    try:
        return _find_module(module, allow_import=True)
    except UndecodableValue as error:
        raise UndecodableValue(f"class {module}.{name} is not importable here: {error}") from None


def _unpickle(payload: bytes | memoryview, buffers: list[memoryview] | None = None) -> object:
    import pickle

    _, unpickler = _pickle_classes()
    try:
        return unpickler(io.BytesIO(payload), buffers=buffers).load()
    except (CorruptEntry, pickle.UnpicklingError, EOFError):
        raise
    except RecursionError:
        raise CorruptEntry("stored value is nested too deeply to decode") from None
    except Exception as error:
        # The bytes are sealed, so a well-formed pickle: its classes changed or are gone.
        raise UndecodableValue(f"the pickled value cannot be rebuilt here: {error!r}") from None


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


def _encode_enum(value: Any) -> msgpack.ExtType:
    # The round trip is checked here, so that nothing is stored that cannot come back.
    if type(value).__members__.get(value._name_) is not value:
        raise _NeedsPickle(f"enum {type(value).__qualname__} member that is not found by name")
    return _ext(EXT_ENUM, [_class_path(type(value)), value._name_])


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
    return _ext(EXT_FLAG, [_class_path(cls), number])


def _encode_namedtuple(value: Any) -> msgpack.ExtType:
    if getattr(value, "__dict__", None):
        # Attributes beyond the fields would be lost on the way back.
        raise _NeedsPickle(f"NamedTuple {type(value).__qualname__} with non-field attributes")
    return _ext(EXT_NAMEDTUPLE, [_class_path(type(value)), list(value)])


def _encode_dataclass(value: Any) -> msgpack.ExtType:
    names = [field.name for field in sys.modules["dataclasses"].fields(value)]
    state = getattr(value, "__dict__", None)
    if state is not None and set(state) != set(names):
        # Attributes beyond the fields would be lost on the way back.
        raise _NeedsPickle(f"dataclass {type(value).__qualname__} with non-field attributes")
    fields = {name: getattr(value, name) for name in names}
    return _ext(EXT_DATACLASS, [_class_path(type(value)), fields])


def _dataclass_encoder(cls: type) -> Callable[[Any], msgpack.ExtType]:
    if not _is_plain_dataclass(cls):
        base = next(
            (base for base in cls.__mro__ if "__new__" in vars(base) and base is not object), cls
        )
        return _pickled_because(
            f"dataclass {cls.__qualname__}, built by {base.__qualname__}.__new__ (a builtin "
            "base such as dict, or its own __new__)"
        )
    names = _field_names(cls)
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
        return _ext(EXT_NDARRAY_NPY, [*collector.add(*segment), segment[0]])
    plain = type(value) is _numpy().ndarray and value.dtype.fields is None
    if value.dtype.hasobject or not plain or not _dtype_round_trips(value.dtype):
        metadata = " with dtype metadata" if value.dtype.metadata is not None else ""
        raise _NeedsPickle(f"numpy array of dtype {value.dtype}{metadata}")
    order = "F" if value.flags.f_contiguous and not value.flags.c_contiguous else "C"
    return _ext(EXT_NDARRAY, [value.dtype.str, list(value.shape), order, value.tobytes(order)])


def _encode_numpy_scalar(value: Any) -> msgpack.ExtType:
    dtype = value.dtype
    if dtype.hasobject or dtype.fields is not None or type(value) is not dtype.type:
        raise _NeedsPickle(f"numpy scalar of type {type(value).__qualname__}")
    if not _dtype_round_trips(dtype):
        raise _NeedsPickle(f"numpy scalar of dtype {dtype}")
    return _ext(EXT_NUMPY_SCALAR, [dtype.str, value.tobytes()])


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
    """The encoder of a class; the checks that depend only on the class are made here, once,
    with the same predicates the decoder applies, so that what is stored comes back."""
    stdlib = _stdlib_ext_encoders()
    if cls in stdlib:
        return stdlib[cls]
    if _is_flag(cls):
        return _encode_flag
    if _is_enum(cls):
        return _encode_enum
    if _is_namedtuple(cls):
        return _encode_namedtuple
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return _pickled_because(f"tuple subclass {cls.__qualname__} with its own _make")
    dataclasses = sys.modules.get("dataclasses")
    if dataclasses is not None and dataclasses.is_dataclass(cls):
        return _dataclass_encoder(cls)
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


def _pickled_because(reason: str) -> Callable[[Any], msgpack.ExtType]:
    def needs_pickle(value: object) -> msgpack.ExtType:
        raise _NeedsPickle(reason)

    return needs_pickle


# --- decoding ------------------------------------------------------------------------------

_Unpack = Callable[[bytes | memoryview], Any]
_Decoder = Callable[[bytes, _Unpack, bool], object]


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
    cls = _stored_class(path, "a dataclass", _is_plain_dataclass, allow_import)
    names = _field_names(cls)
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
    cls = _stored_class(path, "a NamedTuple", _is_namedtuple, allow_import)
    if type(items) is not list or len(items) != len(cls._fields):
        raise UndecodableValue(
            f"refused: the stored items do not match the fields {list(cls._fields)} of "
            f"NamedTuple {path[0]}.{path[1]} (the class changed)"
        )
    return cls._make(items)


def _decode_enum(payload: bytes, unpack: _Unpack, allow_import: bool) -> object:
    path, name = unpack(payload)
    cls = _stored_class(path, "an Enum", _is_enum, allow_import)
    member = cls.__members__.get(name) if type(name) is str else None
    if member is None:
        raise UndecodableValue(f"enum {path[0]}.{path[1]} has no member {name!r} here")
    return member


def _decode_flag(payload: bytes, unpack: _Unpack, allow_import: bool) -> object:
    path, number = unpack(payload)
    cls = _stored_class(path, "a Flag", _is_flag, allow_import)
    if type(number) is not int:
        raise CorruptEntry(f"malformed flag value {number!r}")
    try:
        return cls(number)
    except ValueError:
        raise UndecodableValue(f"flag {path[0]}.{path[1]} has no value {number} here") from None


def _decode_path(payload: bytes, unpack: _Unpack, _: bool) -> Any:
    class_name, text = unpack(payload)
    if class_name not in _PATH_CLASS_NAMES:
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
    return flat.reshape(shape, order=order).copy(order="K")


def _decode_ndarray_npy(payload: bytes, unpack: _Unpack, _: bool) -> Any:
    reference = unpack(payload)
    if type(reference) is not list or len(reference) != 3:
        raise CorruptEntry("malformed array reference")
    area, mapped = _framed_area()
    try:
        offset, length, header = reference
        return array_from_segment(area, offset, length, header, mapped)
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
    EXT_TUPLE: lambda payload, unpack, _: tuple(unpack(payload)),
    EXT_SET: lambda payload, unpack, _: set(unpack(payload)),
    EXT_FROZENSET: lambda payload, unpack, _: frozenset(unpack(payload)),
    EXT_BIGINT: lambda payload, unpack, _: int.from_bytes(payload, "big", signed=True),
    EXT_DATETIME: _decode_datetime,
    EXT_DATE: lambda payload, unpack, _: _module("datetime").date(*unpack(payload)),
    EXT_TIME: _decode_time,
    EXT_TIMEDELTA: _decode_timedelta,
    EXT_DECIMAL: lambda payload, unpack, _: _module("decimal").Decimal(unpack(payload)),
    EXT_UUID: lambda payload, unpack, _: _module("uuid").UUID(bytes=bytes(payload)),
    EXT_COMPLEX: _decode_complex,
    EXT_PATH: _decode_path,
    EXT_ENUM: _decode_enum,
    EXT_FLAG: _decode_flag,
    EXT_DATACLASS: _decode_dataclass,
    EXT_NAMEDTUPLE: _decode_namedtuple,
    EXT_NDARRAY: _decode_ndarray,
    EXT_NUMPY_SCALAR: _decode_numpy_scalar,
    EXT_NDARRAY_NPY: _decode_ndarray_npy,
}

# Two unpackers built once, so that the hit path picks one and pays nothing per value.
_unpack_loaded = _make_unpacker(allow_import=False)
_unpack_importing = _make_unpacker(allow_import=True)


def _module(name: str) -> Any:
    """A standard-library module the codec itself names, imported when a value first needs
    it (never a module named by the stored bytes)."""
    return sys.modules.get(name) or importlib.import_module(name)
