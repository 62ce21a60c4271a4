"""Instances of Python subclasses of the supported types, keyed by their state.

A subclass instance is keyed by its class's qualified name, its value as the base type (read
through the base's own C code, never through methods the subclass may override), its
``__dict__`` and its slots. A subclass that may keep state in C fields (a Cython or C
extension type between it and its base) is refused: that state would not be in the key.
"""

from __future__ import annotations

import struct
import sys
import types

from persistmemo._keys.encoders import encode_item, refusal
from persistmemo._keys.framing import KeyExtension, ext, pack
from persistmemo._naming import qualified_name
from persistmemo.errors import type_label

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from persistmemo._keys.encoders import Encoder

# How an instance of a subclass is turned into an instance of its supported base through the
# base's own C code, never through methods the subclass may override (__iter__, __str__,
# a `year` property...): the key is built from the state, not from what the subclass shows.
AS_BASE: dict[type, Callable[[Any], Any]] = {
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


def _as_base(base: type) -> Callable[[Any], Any]:
    """How a subclass instance becomes a ``base``: the builtins above, the standard library's
    value types whose modules are loaded, or the value itself (a numpy scalar type)."""
    known = AS_BASE.get(base)
    if known is not None:
        return known
    datetime = sys.modules.get("datetime")
    if datetime is not None and base in (
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
    ):
        # Rebuilt from its pickle state, read by the base's C code.
        rebuilt: Any = base
        return lambda value: rebuilt(*rebuilt.__reduce_ex__(value, 4)[1])
    decimal = sys.modules.get("decimal")
    if decimal is not None and base is decimal.Decimal:
        as_decimal: Any = decimal.Decimal
        return lambda value: as_decimal(as_decimal.__str__(value))
    uuid = sys.modules.get("uuid")
    if uuid is not None and base is uuid.UUID:
        as_uuid, uuid_int = uuid.UUID, uuid.UUID.__dict__["int"]
        return lambda value: as_uuid(int=uuid_int.__get__(value))
    return lambda value: value


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


SUBCLASS_ENCODERS: set[Encoder] = set()
"""The encoders subclass_encoder made (nesting.py walks into their values)."""


def subclass_encoder(cls: type, base: type, base_encoder: Encoder) -> Encoder:
    """The encoder of ``cls``, a subclass of ``base``; a refusal when its state is hidden."""
    slots = _visible_state(cls, base)
    if slots is None:
        return refusal(
            cls,
            f" (it subclasses {type_label(base)} but keeps state outside __dict__ and "
            f"__slots__, in C fields a key cannot see: pass a plain {type_label(base)}, "
            "or define __persistmemo_key__ on the type)",
        )
    as_base = _as_base(base)

    def encode_subclass(value: Any) -> bytes:
        state = getattr(value, "__dict__", None)
        extra = encode_item(state) if state else pack(None)
        if slots:
            # Only classes that declare slots carry this fourth part, so the keys of
            # slot-less subclasses are what they always were.
            extra += encode_item(_slot_values(value, slots))
        payload = pack(qualified_name(type(value))) + base_encoder(as_base(value)) + extra
        return ext(KeyExtension.SUBCLASS, payload)

    SUBCLASS_ENCODERS.add(encode_subclass)
    return encode_subclass


def _slot_values(value: object, slots: list[tuple[str, Any]]) -> dict[str, object]:
    values = {}
    for name, descriptor in slots:
        try:
            values[name] = descriptor.__get__(value, type(value))
        except AttributeError:  # an unset slot is left out
            continue
    return values
