"""What a stored value's bytes say about themselves: the format byte and the extension codes.

The first byte says how the rest was written: msgpack, a pickle, or a pickle whose large
buffers are in the value's area. Inside msgpack, each value msgpack has no type for is an
extension frame tagged with a ``ValueExtension`` code. The codes are plain ints on a class
rather than an ``enum.IntEnum``: importing enum costs a cold start.
"""

FORMAT_MSGPACK = b"\x01"
FORMAT_PICKLE = b"\x02"
FORMAT_PICKLE_OUT_OF_BAND = b"\x03"
"""A pickle whose large buffers (protocol 5) are in the value's area: the length of the
references (u32), the references (msgpack ``[[offset, length], ...]``), the pickle stream."""

MAX_EXT_DEPTH = 16
"""Extension types (tuple, set, dataclass...) nest at most this deep in msgpack; deeper
values are pickled. Decoding holds about 45 KB of C stack per level (msgpack's parse stack):
16 levels (under 800 KB) fit even a 1 MB thread stack."""


class ValueExtension:
    """Extension codes of stored values. Never renumber: they are in stored values."""

    TUPLE = 1
    SET = 2
    FROZENSET = 3
    BIGINT = 4
    DATETIME = 5
    DATE = 6
    TIME = 7
    TIMEDELTA = 8
    DECIMAL = 9
    UUID = 10
    COMPLEX = 11
    PATH = 12
    ENUM = 13
    DATACLASS = 14
    NAMEDTUPLE = 15
    NDARRAY = 16
    NUMPY_SCALAR = 17
    FLAG = 18
    NDARRAY_NPY = 19
    """An array kept in the value's area as a ``.npy`` image: ``[offset, length, header]``
    (the image's ``.npy`` header, also in the document: see out_of_band.array_from_segment)."""
