"""Large buffers kept out of the encoded document: written once, read back in place.

A value holding large arrays (or a pickle with large buffers: a DataFrame's blocks) is
encoded as a small *document* plus an *area*: the buffers laid end to end, each at a 64-byte
aligned offset, which the document names by ``(offset, length)``. The store writes the
document and then each buffer straight from the array's memory (no join, no copy through
msgpack), and a hit reads the file once into one buffer (or maps it) and builds the arrays
as views of it.

A NumPy array's segment is a complete ``.npy`` image (numpy's own header, padded so that the
data starts 64-byte aligned, then the data): the header is written and read by
``numpy.lib.format``, as ``np.save``/``np.load`` do, so any dtype ``.npy`` holds without
pickling (numbers, bool, datetime, timedelta, fixed-width strings, structured records)
round-trips, C- or Fortran-ordered. Arrays holding Python objects never take this path.

See _sealing.py for how a document and its area are framed and sealed.
"""

from __future__ import annotations

import io
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ALIGN = 64
"""Buffers start at multiples of this in the area (numpy's and Arrow's alignment)."""

OUT_OF_BAND_FROM = 64 * 1024
"""Buffers of at least this many bytes are kept out of the document by default."""

COPY_OUT_PART = 128
COPY_OUT_BUDGET = 32
"""A hit's small parts are copies, not views of its buffer: kept alone, a view keeps the
whole buffer alive (four 80 KB arrays kept from four 95 MB values held 380 MB). A part (an
array, a pickle buffer) of at most 1/COPY_OUT_PART of the area is copied, in the value's
order, while the copies add up to at most 1/COPY_OUT_BUDGET of it: what a hit costs grows
by that much at most, and a value made of many like parts (a list of chunks, which one
keeps together) stays mostly views. Larger parts stay views (zero copy): one kept alone
holds at most COPY_OUT_PART times its size. Parts of a map are never copied: a map is pages
of the file, which the kernel may drop, not the process's memory."""

_MAX_NPY_HEADER = 1 << 16


def aligned(offset: int) -> int:
    """``offset`` rounded up to the next multiple of ALIGN."""
    return -(-offset // ALIGN) * ALIGN


class OutOfBand:
    """An encoded value whose large buffers are kept apart: ``document`` (the codec's
    format byte and payload) and ``segments``, the area's buffers with their offsets."""

    __slots__ = ("area_size", "document", "segments")

    def __init__(self, document: bytes, segments: list[tuple[int, memoryview]], size: int):
        self.document = document
        self.segments = segments
        self.area_size = size

    def __len__(self) -> int:
        return len(self.document) + self.area_size

    def joined(self) -> bytes:
        """The area as one bytes object (zero padding included), for tests and tools."""
        area = bytearray(self.area_size)
        for offset, view in self.segments:
            area[offset : offset + view.nbytes] = view
        return bytes(area)


class FramedValue:
    """A stored document and the area its buffer references point into.

    ``mapped`` says the area is a read-only map of the stored file (``memo(mmap=True)``):
    arrays are then returned as read-only views of it. Otherwise the arrays are views of
    ``area`` when it is writable (a buffer of the hit's own), or of a private copy, or
    read-only views of ``area`` when the caller asked for read-only arrays; small parts
    are copies (COPY_OUT_PART).
    """

    __slots__ = ("area", "document", "mapped")

    def __init__(self, document: memoryview, area: memoryview, *, mapped: bool = False) -> None:
        self.document = document
        self.area = area
        self.mapped = mapped

    def __len__(self) -> int:
        return len(self.document) + len(self.area)

    def __getitem__(self, index: int) -> int:
        return int(self.document[index])  # the format byte, as on plain encoded bytes

    def __bool__(self) -> bool:
        return len(self.document) > 0

    def as_out_of_band(self) -> OutOfBand:
        """The same value, to be written to another store (its area as one segment)."""
        return OutOfBand(bytes(self.document), [(0, self.area)], len(self.area))

    def usable_area(self, read_only: bool = False) -> memoryview:
        """The area arrays may view: the mapped or writable area itself, or with
        ``read_only`` (the arrays will be read-only) any area; else a copy."""
        if self.mapped or read_only or not self.area.readonly:
            return self.area
        return memoryview(bytearray(self.area))

    def copy_budget(self) -> int:
        """How many bytes of small parts a decode copies out of the area (COPY_OUT_PART);
        none out of a map."""
        return 0 if self.mapped else len(self.area) // COPY_OUT_BUDGET


class BufferCollector:
    """Lays out the area while a value is encoded."""

    __slots__ = ("segments", "size", "threshold")

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.segments: list[tuple[int, memoryview]] = []
        self.size = 0

    def add(self, *parts: memoryview | bytes) -> list[int]:
        """Place ``parts`` back to back at the next aligned offset: ``[offset, length]``."""
        start = position = aligned(self.size)
        for part in parts:
            view = memoryview(part)
            if view.nbytes:
                self.segments.append((position, view))
            position += view.nbytes
        self.size = position
        return [start, position - start]


def npy_segment(array: Any) -> tuple[bytes, memoryview] | None:
    """An array as a ``.npy`` image: (header, data view). None when ``.npy`` cannot hold the
    dtype exactly without pickling (objects, dtype metadata, an aligned record layout)."""
    numpy = sys.modules["numpy"]
    fmt = numpy.lib.format
    dtype = array.dtype
    if dtype.hasobject or dtype.metadata is not None or dtype.isalignedstruct:
        return None
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        array = numpy.ascontiguousarray(array)
    header = fmt.header_data_from_array_1_0(array)
    try:
        if fmt.descr_to_dtype(header["descr"]) != array.dtype:
            return None
    except (TypeError, ValueError):
        return None
    spelled = io.BytesIO()
    try:
        fmt.write_array_header_1_0(spelled, header)
    except ValueError:  # a header over 64 KiB (a huge record dtype)
        spelled = io.BytesIO()
        fmt.write_array_header_2_0(spelled, header)
    order = "F" if header["fortran_order"] else "C"
    data = array.ravel(order=order).view(numpy.uint8)
    return spelled.getvalue(), memoryview(data)


class BadSegment(ValueError):
    """A segment reference or ``.npy`` header that does not describe stored data."""


def array_from_segment(
    area: memoryview,
    offset: object,
    length: object,
    header: object,
    read_only: bool,
    copy: bool = False,
) -> Any:
    """The array stored as a ``.npy`` image at ``area[offset : offset + length]``: a view of
    the area, or with ``copy`` an array of its own; read-only with ``read_only`` (a map is
    viewed read-only always). ``header`` is the image's ``.npy`` header as the
    document holds it: the document is covered by the entry's head tag, which a mapped hit
    checks and the area's tag is not, so the dtype, shape and order come from it, and the
    area must hold the same bytes."""
    if type(offset) is not int or type(length) is not int or offset < 0 or length < 0:
        raise BadSegment(f"bad array reference ({offset!r}, {length!r})")
    if not isinstance(header, bytes) or len(header) > length:
        raise BadSegment("bad array header reference")
    if offset + length > len(area):
        raise BadSegment("array reference past the end of the stored data")
    numpy: Any = sys.modules.get("numpy")
    if numpy is None:
        import numpy  # numpy stays optional: only arrays need it
    fmt = numpy.lib.format
    segment = area[offset : offset + length]
    if segment[: len(header)] != header:
        raise BadSegment("the stored array's header differs from its entry's")
    head = io.BytesIO(header)
    version = fmt.read_magic(head)
    limit = max(_MAX_NPY_HEADER, len(header))  # the encoder wrote it: any size it chose
    if version == (1, 0):
        shape, fortran_order, dtype = fmt.read_array_header_1_0(head, max_header_size=limit)
    elif version == (2, 0):
        shape, fortran_order, dtype = fmt.read_array_header_2_0(head, max_header_size=limit)
    else:
        raise BadSegment(f"unsupported .npy version {version}")
    if head.tell() != len(header):
        raise BadSegment("array header has bytes past its end")
    if dtype.hasobject:  # the encoder never writes these: it would build objects
        raise BadSegment(f"refused numpy dtype {dtype}")
    count = 1
    for extent in shape:
        count *= extent
    data_start = head.tell()
    if data_start + count * dtype.itemsize != length:
        raise BadSegment("array data does not match its .npy header")
    order = "F" if fortran_order else "C"
    if count == 0:  # frombuffer cannot view zero items at the end of a buffer
        array = numpy.empty(shape, dtype=dtype, order=order)
    else:
        flat = numpy.frombuffer(segment, dtype=dtype, count=count, offset=data_start)
        array = flat.reshape(shape, order=order)
        if copy:
            array = array.copy(order=order)
    if read_only:
        array.flags.writeable = False
    return array
