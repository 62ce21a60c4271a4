"""The values the code reads, as they go into a version: constants, defaults, class attributes.

Values are taken as the process holds them at the first call: by their key encoding, a large
table by its ``marshal`` digest, a value without a key encoding by its running state. What
the code itself mutates is state, left out (kept_state.py). The rules:
docs/guarantees.md#what-the-version-covers.
"""

from __future__ import annotations

import itertools
import marshal
import sys
import types

from persistmemo._hashing import hashing_threads
from persistmemo._keys.canonical import encode
from persistmemo._versioning.code_objects import is_code, qualified
from persistmemo._versioning.origins import USER, origin_of_module
from persistmemo.errors import UnsupportedType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Class attributes and defaults that are not constants: descriptors (code, followed through
# the class's methods).
DESCRIPTORS = (
    staticmethod,
    classmethod,
    property,
    types.MemberDescriptorType,
    types.GetSetDescriptorType,
)
# Mutable defaults and class attributes: versioned by their value at the first call, unless
# the code mutates them (a class-level cache would give each process its own version).
MUTABLE = (list, dict, set, bytearray)


def encodable(value: object) -> bool:
    """Whether the key encoding takes ``value``."""
    try:
        encode(value)
    except (UnsupportedType, TypeError, ValueError, RecursionError):
        return False
    return True


def class_attributes(cls: type) -> list[object]:
    """``[name, value]`` of the class's own plain attributes the key encoding takes."""
    attributes: list[object] = []
    for name, value in sorted(vars(cls).items()):
        if name.startswith("__") and name.endswith("__"):
            continue
        if encodable(value) and not isinstance(value, type):
            attributes.append([name, value])
    return attributes


def enum_internal(cls: type, attribute: str) -> bool:
    """Whether ``attribute`` of ``cls`` is the enum machinery's (``_member_map_``...): its
    members are versioned as attributes of their own, and Python versions add these."""
    return (
        len(attribute) > 2
        and attribute[0] == "_" != attribute[1]
        and attribute.endswith("_")
        and "_member_map_" in vars(cls)
    )


CONTAINED_AT_MOST = 1000


def contained(value: Any) -> list[Any]:
    """The items of a container constant, two levels deep (a dispatch table's functions)."""
    found: list[Any] = []
    layer = [value]
    for _ in range(2):
        following: list[Any] = []
        for item in layer:
            if len(following) >= CONTAINED_AT_MOST:
                break  # a 300,000-row table: the first rows tell what kind of items it holds
            if isinstance(item, dict):
                following += itertools.islice(
                    itertools.chain(item.keys(), item.values()), CONTAINED_AT_MOST
                )
            elif isinstance(item, (list, tuple, set, frozenset)):
                following += itertools.islice(item, CONTAINED_AT_MOST)
        found += following
        layer = following
    return found[:CONTAINED_AT_MOST]


def running_state(value: object) -> bytes | None:
    """Bytes that describe ``value`` as this process holds it, without its source: an
    instance's attributes when they have a key encoding; a container of such values and
    functions or classes (``{"a": handle_a}``), the code by its name (followed as a helper
    by the caller); else a repr that names no address (``re.compile('a+')``,
    ``range(0, 2)``). None when none does."""
    if isinstance(value, _CONTAINERS):
        try:
            seen = [0]
            structure = _structure(value, 0, seen)
            if seen[0] <= 900:  # every function in it followed (contained's limit)
                return encode(["structure", structure])
        except (_Opaque, UnsupportedType, TypeError, ValueError, RecursionError):
            pass
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict) and state and not isinstance(value, (type, types.ModuleType)):
        try:
            return encode(["state", type(value).__qualname__, state])
        except (UnsupportedType, TypeError, ValueError, RecursionError):
            pass
    try:
        text = repr(value)
    except Exception:
        return None
    if " at 0x" in text or len(text) > 100_000:
        return None
    return encode(["repr", type(value).__qualname__, text])


_CONTAINERS = (list, tuple, dict, set, frozenset)


class _Opaque(Exception):
    """A value inside a container that neither the key encoding nor a name describes."""


def _structure(value: object, depth: int, seen: list[int]) -> object:
    # Encodable values as themselves, code by its qualified name, containers item by item
    # (a set's items sorted by their encoding: its order varies between processes). Code
    # only where the caller follows it (contained: two levels, a thousand items at most),
    # so that a function named here is also versioned by what it does.
    if depth > 8:
        raise _Opaque
    if 0 < depth <= 2:
        seen[0] += 1
    if is_code(value):
        if depth > 2:
            raise _Opaque
        return ["code", qualified(value).partition(":")[2]]  # no module, as in the version
    if isinstance(value, dict):
        pairs = [
            [_structure(k, depth + 1, seen), _structure(v, depth + 1, seen)]
            for k, v in value.items()
        ]
        return ["dict", pairs]
    if isinstance(value, (set, frozenset)):
        items = sorted(encode(_structure(item, depth + 1, seen)) for item in value)
        return [type(value).__name__, items]
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, [_structure(item, depth + 1, seen) for item in value]]
    if not encodable(value):
        raise _Opaque  # a partial, an instance: described otherwise, or not at all
    return value


def defining_modules(module: str, name: str, value: object) -> list[types.ModuleType]:
    """The user modules that hold ``value`` as ``name``: the referencing one first, then
    those it may have been imported from (``from config import PAT``)."""
    found: list[types.ModuleType] = []
    first = sys.modules.get(module)
    if isinstance(first, types.ModuleType):
        found.append(first)
    for candidate in list(sys.modules.values()):
        if (
            isinstance(candidate, types.ModuleType)
            and candidate is not first
            and vars(candidate).get(name) is value
            and origin_of_module(candidate) == USER
        ):
            found.append(candidate)
    return found


_LARGE = 1024
_large_digests: dict[int, tuple[object, bytes]] = {}


def large_content(value: object) -> bytes | None:
    """The content of a large container of plain values (a lookup table of 300,000 rows),
    digested through ``marshal`` rather than the canonical key encoding (~4 µs an item):
    the same content in the same order gives the same bytes in every process and Python 3
    version; another order, or sets of strings nested inside (ordered by their hashes), only
    cost misses. None for anything else, or what marshal does not take. Remembered per
    object in this process (a table mutated in place later is not seen, as documented)."""
    kind = type(value)
    if kind not in (list, tuple, dict, set, frozenset) or len(value) < _LARGE:  # type: ignore[arg-type]
        return None
    known = _large_digests.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    plain: Any = value
    if kind in (set, frozenset):
        try:
            plain = sorted(value)  # type: ignore[call-overload]
        except TypeError:
            return None
    try:
        # Version 4 writes an object seen twice (a shared key string) as a back-reference:
        # twice as fast as version 2, and the same for the same program; a table whose items
        # are shared differently costs a miss, never a stale result.
        data = marshal.dumps(plain, 4)
    except ValueError:
        return None
    import blake3  # a core dependency; imported only when a large table is met

    digest = b"marshal4:" + blake3.blake3(data, max_threads=hashing_threads(len(data))).digest()
    if len(_large_digests) >= 64:
        _large_digests.clear()
    _large_digests[id(value)] = (value, digest)  # holds it: the id stays its own
    return digest
