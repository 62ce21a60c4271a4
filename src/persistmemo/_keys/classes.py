"""Values keyed through their class: key hooks, Enum members, NamedTuples, dataclasses, classes.

Each is keyed by its class's qualified name and the state that makes it (a hook's answer,
a member's name and value, the fields), so that two classes with the same fields never share
a key. A class object is keyed by its qualified name, and a class made inside a function by
its plain attributes too.
"""

from __future__ import annotations

import sys

from persistmemo._keys.encoders import concat, encode_item
from persistmemo._keys.framing import KeyExtension, ext, pack
from persistmemo._naming import qualified_name
from persistmemo.errors import UnsupportedType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

HOOK_NAME = "__persistmemo_key__"
"""Method a type may define to say what its instances are keyed by."""


def encode_with_hook(value: Any) -> bytes:
    keyed_on = getattr(value, HOOK_NAME)()
    return ext(KeyExtension.HOOK, pack(qualified_name(type(value))) + encode_item(keyed_on))


def encode_enum(value: Any) -> bytes:
    # Flag combinations have no name on older Pythons: their value names them then. A named
    # member is keyed with its value too: editing `FAST = 2` to `FAST = 3` is another input.
    name = value.name
    if name is None:
        tail = encode_item(value.value)
    else:
        try:
            tail = pack(name) + encode_item(value.value)
        except UnsupportedType:
            tail = pack(name)  # a value without a key encoding: the name alone, as before
    return ext(KeyExtension.ENUM, pack(qualified_name(type(value))) + tail)


def encode_namedtuple(value: Any) -> bytes:
    fields = [item for pair in zip(value._fields, value, strict=True) for item in pair]
    return ext(KeyExtension.NAMEDTUPLE, pack(qualified_name(type(value))) + concat(fields))


def encode_dataclass(value: Any) -> bytes:
    fields = []
    for field in sys.modules["dataclasses"].fields(value):
        fields += [field.name, getattr(value, field.name)]
    return ext(KeyExtension.DATACLASS, pack(qualified_name(type(value))) + concat(fields))


def encode_type(value: type) -> bytes:
    name = qualified_name(value)
    if "<locals>" not in name:
        return ext(KeyExtension.TYPE, pack(name))
    # A class made in a function (a factory) shares its qualified name with every class that
    # function makes: its plain attributes tell them apart (`class M: K = k`).
    attributes = {
        attribute: item
        for attribute, item in vars(value).items()
        if not attribute.startswith("__") and _has_encoding(item)
    }
    return ext(KeyExtension.TYPE, pack(name) + encode_item(attributes))


def _has_encoding(value: object) -> bool:
    if callable(value) or isinstance(value, (staticmethod, classmethod, property)):
        return False
    try:
        encode_item(value)
    except (UnsupportedType, RecursionError):
        return False
    return True
