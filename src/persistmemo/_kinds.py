"""What kind of class a type is: the questions the key encoding and the codec both ask.

Choosing a key encoder (``_keys/dispatch.py``), choosing a msgpack extension for a result
(``_codec/encoding.py``) and checking the class a stored value names (``_codec/decoding.py``)
ask the same questions of a class: is it an Enum, a Flag, a NamedTuple, a dataclass, a path,
a numpy array or scalar. They are answered here, once. The modules a kind needs (enum,
dataclasses, pathlib, numpy) are looked up in ``sys.modules``, never imported: a class of a
kind cannot exist before its module is loaded, and importing them would cost every cold start.
"""

from __future__ import annotations

import collections
import sys

# Every class made by collections.namedtuple (typing.NamedTuple included) shares this code
# object for _make: it tells a real NamedTuple from any tuple subclass with a _make.
_NAMEDTUPLE_MAKE = collections.namedtuple("_Probe", "x")._make.__func__.__code__  # type: ignore[attr-defined]

PATHLIB_CLASS_NAMES = frozenset(
    ("PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath", "WindowsPath")
)
"""The names of pathlib's own path classes."""

# Field names of the plain dataclasses already checked: a decoder checks each class once.
_plain_dataclass_fields: dict[type, frozenset[str]] = {}


def is_enum(cls: type) -> bool:
    """An ``enum.Enum`` (Flags included)."""
    enum = sys.modules.get("enum")
    return enum is not None and issubclass(cls, enum.Enum)


def is_flag(cls: type) -> bool:
    """An ``enum.Flag``, whose combinations have no name of their own."""
    enum = sys.modules.get("enum")
    return enum is not None and issubclass(cls, enum.Flag)


def is_tuple_with_fields(cls: type) -> bool:
    """A tuple subclass with ``_fields``: every NamedTuple, and any class that imitates one
    (``is_namedtuple`` tells them apart)."""
    return issubclass(cls, tuple) and hasattr(cls, "_fields")


def is_namedtuple(cls: type) -> bool:
    """A class made by ``collections.namedtuple`` or ``typing.NamedTuple``, with their own
    ``_make`` (which rebuilds an instance from its items and nothing else)."""
    if not issubclass(cls, tuple):
        return False
    make = getattr(getattr(cls, "_make", None), "__func__", None)
    return (
        getattr(make, "__code__", None) is _NAMEDTUPLE_MAKE
        and type(getattr(cls, "_fields", None)) is tuple
    )


def is_dataclass(cls: type) -> bool:
    """A dataclass, whatever its bases."""
    dataclasses = sys.modules.get("dataclasses")
    return dataclasses is not None and dataclasses.is_dataclass(cls)


def is_plain_dataclass(cls: type) -> bool:
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


def dataclass_field_names(cls: type) -> frozenset[str]:
    """The fields of a class that ``is_plain_dataclass`` accepted."""
    return _plain_dataclass_fields[cls]


def is_path(cls: type) -> bool:
    """A pathlib path class, or a subclass of one."""
    pathlib = sys.modules.get("pathlib")
    return pathlib is not None and issubclass(cls, pathlib.PurePath)


def is_pathlib_class(cls: type) -> bool:
    """Exactly one of pathlib's own path classes (not a subclass)."""
    pathlib = sys.modules.get("pathlib")
    return (
        pathlib is not None
        and cls.__name__ in PATHLIB_CLASS_NAMES
        and getattr(pathlib, cls.__name__) is cls
    )


def is_ndarray(cls: type) -> bool:
    """``numpy.ndarray`` or a subclass of it (a masked array, a matrix...)."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and issubclass(cls, numpy.ndarray)


def is_numpy_scalar(cls: type) -> bool:
    """A numpy scalar type (``numpy.generic`` or a subclass of it)."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and issubclass(cls, numpy.generic)
