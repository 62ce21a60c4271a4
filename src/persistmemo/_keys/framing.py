"""msgpack framing: the packer, array and map headers, extension frames and their codes.

The canonical bytes of a value are msgpack documents put together by hand: containers write
their own headers and join the encodings of their items (documents delimit themselves), and
every value msgpack has no type for is an extension frame, tagged with a ``KeyExtension``
code. The codes are plain ints on a class rather than an ``enum.IntEnum``: importing enum
costs a cold start.
"""

from __future__ import annotations

import struct

import msgpack

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# No `default=` hook, so packing never calls back into Python and one packer can serve
# every thread.
pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True, strict_types=True).pack


def array_header(length: int) -> bytes:
    """The header of a msgpack array of ``length`` items."""
    if length < 16:
        return bytes((0x90 | length,))
    if length < 0x10000:
        return struct.pack(">BH", 0xDC, length)
    return struct.pack(">BI", 0xDD, length)


def map_header(length: int) -> bytes:
    """The header of a msgpack map of ``length`` entries."""
    if length < 16:
        return bytes((0x80 | length,))
    if length < 0x10000:
        return struct.pack(">BH", 0xDE, length)
    return struct.pack(">BI", 0xDF, length)


# msgpack's fixext headers, by payload length; other lengths carry their length.
_FIXED_EXT = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


def ext(code: int, payload: bytes) -> bytes:
    """An extension frame: ``payload`` tagged with ``code``.

    The bytes msgpack packs for ``ExtType(code, payload)``, with the header written here:
    an ExtType is a namedtuple built in Python, which cost more than the packing.
    """
    length = len(payload)
    fixed = _FIXED_EXT.get(length)
    if fixed is not None:
        return bytes((fixed, code)) + payload
    if length < 0x100:
        return bytes((0xC7, length, code)) + payload
    if length < 0x10000:
        return struct.pack(">BHB", 0xC8, length, code) + payload
    return struct.pack(">BIB", 0xC9, length, code) + payload


def document(*parts: bytes) -> bytes:
    """Encodings that belong together, as one msgpack array (one document)."""
    return array_header(len(parts)) + b"".join(parts)


class KeyExtension:
    """Extension codes of the key encoding. Never renumber: they are in stored keys."""

    BIGINT = 1
    STR_SURROGATES = 2
    LARGE_STR = 3
    LARGE_BYTES = 4
    BYTEARRAY = 5
    TUPLE = 6
    SET = 7
    FROZENSET = 8
    DATETIME = 9
    DATE = 10
    TIME = 11
    TIMEDELTA = 12
    DECIMAL = 13
    UUID = 14
    COMPLEX = 15
    PATH = 16
    ENUM = 17
    DATACLASS = 18
    NAMEDTUPLE = 19
    TYPE = 20
    NDARRAY = 21
    NUMPY_SCALAR = 22
    HOOK = 23
    SUBCLASS = 24
    ARRAY_SUBCLASS = 25
    PANDAS_TIMESTAMP = 26
    PANDAS_TIMEDELTA = 27
    PANDAS = 28
    ARROW = 29
    POLARS = 30
    REGISTERED = 31
