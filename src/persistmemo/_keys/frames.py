"""The encoders of pandas, pyarrow and polars values: frames, series, indexes, tables, scalars.

A frame is keyed by its logical content: every column's values, dtype, name and position,
the index with its names, and what else a function may read (pandas' attrs and
duplicate-labels flag, Arrow's schema metadata). A column's values are digest streams that do
not depend on its layout in memory: its null rows, its fixed-width bytes, or for strings and
binary the UTF-8 bytes and each row's length, hashed in place with BLAKE3 (never pickled).
Arrow chunks and slices, polars rechunking, and pandas' Arrow or Python storage of strings
all give the same streams for the same values. A large frame's columns of buffers are
encoded on several threads at once (BLAKE3 and numpy's loops release the GIL); the bytes are
those of one thread.
"""

from __future__ import annotations

import sys

from persistmemo._keys.arrays import encode_ndarray, encode_numpy_scalar, numpy_module
from persistmemo._keys.digests import (
    DIGEST_SIZE,
    digest,
    new_hasher,
    on_threads,
    parallel_threads,
)
from persistmemo._keys.encoders import concat, encode_item
from persistmemo._keys.framing import KeyExtension, array_header, document, ext, pack
from persistmemo._keys.standard_types import encode_tzinfo
from persistmemo.errors import UnsupportedType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any


# --- pandas scalars ------------------------------------------------------------------------


def encode_pandas_timestamp(value: Any) -> bytes:
    # asm8 is the numpy datetime64 of the instant in the Timestamp's own unit: every
    # nanosecond and the unit itself are in the key, which a datetime's fields would drop.
    exact = encode_numpy_scalar(value.asm8) + pack(value.fold)
    return ext(KeyExtension.PANDAS_TIMESTAMP, exact + encode_tzinfo(value.tzinfo))


def encode_pandas_nat(value: Any) -> bytes:
    return ext(KeyExtension.PANDAS_TIMESTAMP, pack(None))


def encode_pandas_timedelta(value: Any) -> bytes:
    return ext(KeyExtension.PANDAS_TIMEDELTA, encode_numpy_scalar(value.asm8))


def encode_pandas_na(value: Any) -> bytes:
    return ext(KeyExtension.PANDAS, pack("NA"))


# --- columns as digest streams -------------------------------------------------------------


class _Streams:
    """The digests of one column: which rows are null, and the values of the rows (fixed-width
    bytes; or the UTF-8 bytes of strings, binary, and each row's length in bytes)."""

    __slots__ = ("children", "data", "lengths", "nulls", "rows")

    def __init__(self) -> None:
        self.rows = 0
        self.nulls: Any = None  # a hasher of the null rows' positions, from the first null
        self.lengths: list[Any] | None = None  # of each chunk, hashed once all are known
        self.data: Any = None  # a hasher of the values, from the first chunk's
        self.children: list[_Streams] = []  # a list's values, a struct's fields

    def child(self, index: int) -> _Streams:
        while len(self.children) <= index:
            self.children.append(_Streams())
        return self.children[index]

    def add_nulls(self, positions: Any) -> None:
        """Record the null rows (an int64 array of positions within the current chunk)."""
        if len(positions):
            rows = _le_int64(positions + self.rows)
            if self.nulls is None:
                self.nulls = new_hasher(rows.nbytes)
            self.nulls.update(rows)

    def add_variable(self, lengths: Any, data: bytes | memoryview = b"") -> None:
        """Add rows of bytes: ``data`` cut into rows of ``lengths`` bytes (or, for lists,
        rows of ``lengths`` values of the child)."""
        if self.lengths is None:
            self.lengths = []
        self.lengths.append(lengths)
        self.add_data(data)

    def add_data(self, data: bytes | memoryview) -> None:
        """Hash ``data`` into the values, on as many threads as the first chunk's values are
        worth (a column is mostly one chunk)."""
        if self.data is None:
            self.data = new_hasher(data.nbytes if isinstance(data, memoryview) else len(data))
        self.data.update(data)

    def parts(self) -> list[object]:
        nulls = None if self.nulls is None else self.nulls.digest(DIGEST_SIZE)
        data = new_hasher(0) if self.data is None else self.data
        parts = [self.rows, nulls, self._lengths_digest(), data.digest(DIGEST_SIZE)]
        return parts + [child.parts() for child in self.children]

    def _lengths_digest(self) -> bytes | None:
        if self.lengths is None:
            return None
        # Lengths as unsigned ints of the narrowest width that holds the longest row (a
        # property of the values, not of their chunks): 1 byte a row for short strings
        # instead of 8 is most of the cost of keying a string column saved.
        width = max((_width(part) for part in self.lengths if len(part)), default=1)
        hasher = new_hasher(width * sum(map(len, self.lengths)))
        hasher.update(pack(width))
        for part in self.lengths:
            narrow = numpy_module().ascontiguousarray(part, dtype=f"<u{width}")
            hasher.update(memoryview(narrow).cast("B"))
        return bytes(hasher.digest(DIGEST_SIZE))


def _width(lengths: Any) -> int:
    """The narrowest width, in bytes, of unsigned ints that holds every one of ``lengths``."""
    if lengths.dtype == numpy_module().uint8:
        return 1  # narrowed already (_row_lengths): no pass over the lengths
    longest = int(lengths.max())
    return next(width for width in (1, 2, 4, 8) if longest < 1 << (8 * width))


def _row_lengths(offsets: Any) -> Any:
    """The length of each row between Arrow ``offsets``: as uint8 when every row is shorter
    than 256 (most text; the digest stream has them at one byte anyway), else as int64."""
    numpy = numpy_module()
    narrow = numpy.empty(len(offsets) - 1, dtype=numpy.uint8)
    # Each length modulo 256, in one pass that writes a byte a row rather than eight. Arrow
    # offsets never decrease, so no length is negative: each narrowed length is at most its
    # own, and the narrowed ones add up to the span of the offsets only when none was cut.
    numpy.subtract(offsets[1:], offsets[:-1], out=narrow, casting="unsafe")
    total = numpy.uint32 if 255 * len(narrow) < 1 << 32 else numpy.uint64  # cannot overflow
    if int(narrow.sum(dtype=total)) == int(offsets[-1]) - int(offsets[0]):
        return narrow
    return numpy.diff(offsets)


def _le_int64(values: Any) -> memoryview:
    numpy = numpy_module()
    return memoryview(numpy.ascontiguousarray(values, dtype="<i8")).cast("B")


def _canonical_floats(values: Any) -> Any:
    """The array with every NaN as the one canonical NaN (as float scalars are keyed)."""
    numpy = numpy_module()
    # The minimum is NaN when any item is (numpy's minimum propagates NaN): a pass that
    # writes nothing, before the one that finds them.
    if values.dtype.kind == "f" and values.size and numpy.isnan(values.min()):
        nans = numpy.isnan(values)
        if nans.any():
            values = values.copy()
            values[nans] = numpy.nan
    return values


def _encode_values_array(values: Any) -> bytes:
    """A 1-d numpy array of column values: ext 21 for fixed-width dtypes (NaNs made
    canonical), and for object arrays the strings' streams or every item's encoding."""
    if not values.dtype.hasobject:
        return encode_ndarray(_canonical_floats(values))
    items = values.tolist()
    strings = _str_objects(values, items)
    if strings is not None:
        return encode_item(strings)
    # Mixed or other objects: each item keyed as an argument of its own type would be, or
    # the column is refused as that item would be.
    return encode_item(["objects", items])


def _str_objects(values: Any, items: list[Any]) -> list[object] | None:
    """``["str-objects", rows, None rows, lengths, data, NaN rows]`` for items that are all
    exactly str (not a subclass: numpy.str_, a str with a __dict__ are keyed apart), None or
    NaN, the usual object column of text; None for any other items."""
    present = set(map(type, items))
    if str not in present or not present <= {str, type(None), float}:
        return None
    streams = _Streams()
    nans: bytes | None = None
    if len(present) > 1:
        numpy = numpy_module()
        # isna is one pass in C; it finds None and NaN, and no float that is a number.
        others = numpy.flatnonzero(sys.modules["pandas"].isna(values))
        if len(others) != len(items) - list(map(type, items)).count(str):
            return None  # a float that is not NaN
        is_none = numpy.array([items[position] is None for position in others.tolist()])
        streams.add_nulls(others[is_none])
        if not is_none.all():
            nans = digest(_le_int64(others[~is_none]))
        items = items.copy()
        for position in others.tolist():
            items[position] = ""
    _add_str_objects(streams, items)
    return ["str-objects", *streams.parts(), nans]


def _add_str_objects(streams: _Streams, strings: Any) -> None:
    """Add Python strings (none missing) as UTF-8 lengths and bytes, as Arrow holds them."""
    if not len(strings):
        return  # as an empty Arrow chunk adds nothing
    numpy = numpy_module()
    # Joined with NUL, the strings' UTF-8 bytes show where each ends (a NUL byte is only
    # ever U+0000): the lengths come from C loops, not a len() call per string.
    joined = "\0".join(strings).encode("utf-8", "surrogatepass")
    raw = numpy.frombuffer(joined, dtype=numpy.uint8)
    separators = numpy.flatnonzero(raw == 0)
    if len(separators) == len(strings) - 1:
        ends = numpy.append(separators, len(raw))
        lengths = numpy.diff(ends, prepend=-1) - 1
        data: bytes | memoryview = memoryview(raw[raw != 0]) if len(separators) else joined
    else:  # some string holds U+0000
        data = "".join(strings).encode("utf-8", "surrogatepass")
        lengths = numpy.fromiter(
            (len(item.encode("utf-8", "surrogatepass")) for item in strings),
            numpy.int64,
            count=len(strings),
        )
    streams.add_variable(lengths, data)
    streams.rows += len(strings)


def _pandas_column(array: Any) -> bytes:
    """The encoding of one pandas array (a column, a Series' values, an Index's values)."""
    numpy = numpy_module()
    pandas = sys.modules["pandas"]
    dtype = array.dtype
    label = str(dtype)
    # Before numpy arrays: the Python-backed string array is a NumpyExtensionArray too.
    if isinstance(dtype, pandas.StringDtype):
        streams = _Streams()
        if dtype.storage == "python":
            strings = numpy.asarray(array, dtype=object)
            missing = pandas.isna(strings)
            if missing.any():
                # Null slots as empty strings, as Arrow's are here: both storages agree.
                streams.add_nulls(numpy.flatnonzero(missing))
                strings = strings.copy()
                strings[missing] = ""
            _add_str_objects(streams, strings)
        else:
            _add_arrow_chunks(streams, array.__arrow_array__())
        return encode_item(["string", label, *streams.parts()])
    if isinstance(dtype, numpy.dtype) or isinstance(array, pandas.arrays.NumpyExtensionArray):
        return document(pack("numpy"), _encode_values_array(numpy.asarray(array)))
    if isinstance(dtype, pandas.CategoricalDtype):
        codes = _encode_values_array(numpy.asarray(array.codes))
        head = concat(["category", label, dtype.ordered])
        return document(head, encode_item(dtype.categories), codes)
    if isinstance(dtype, pandas.DatetimeTZDtype):
        instants = _encode_values_array(numpy.asarray(array.asi8))
        return document(concat(["datetime-tz", label]), encode_tzinfo(dtype.tz), instants)
    if isinstance(dtype, pandas.PeriodDtype):
        instants = _encode_values_array(numpy.asarray(array.asi8))
        return document(concat(["period", label]), instants)
    if isinstance(dtype, pandas.IntervalDtype):
        missing = _encode_values_array(numpy.asarray(array.isna()))
        head = concat(["interval", label, array.closed])
        return document(head, encode_item(array.left), encode_item(array.right), missing)
    if isinstance(dtype, pandas.SparseDtype):
        dense = _encode_values_array(numpy.asarray(array.to_dense()))
        return document(concat(["sparse", label]), encode_item(dtype.fill_value), dense)
    if hasattr(array, "_mask") and hasattr(array, "_data"):
        return document(concat(["masked", label]), *_masked_values(array))
    if isinstance(dtype, pandas.ArrowDtype):
        streams = _Streams()
        _add_arrow_chunks(streams, array.__arrow_array__())
        return encode_item(["arrow", label, *streams.parts()])
    raise UnsupportedType(
        type(array), f" with dtype={label} (this pandas dtype has no key encoding)"
    )


def _in_place(array: Any) -> bool:
    """Whether a pandas array is keyed by its buffers alone, without a Python object's own
    encoder (such a column may be encoded on another thread)."""
    dtype = array.dtype
    if isinstance(dtype, numpy_module().dtype):
        return not dtype.hasobject
    pandas = sys.modules["pandas"]
    if isinstance(dtype, pandas.StringDtype):
        return bool(dtype.storage != "python")  # Arrow's buffers
    return isinstance(dtype, pandas.ArrowDtype)


def _masked_values(array: Any) -> tuple[bytes, bytes]:
    # Nullable Int64, Float64, boolean: the values under the mask are whatever was there
    # before, so they are zeroed: equal arrays give equal bytes.
    data, mask = array._data, array._mask
    if mask.any():
        data = data.copy()
        data[mask] = 0
    return _encode_values_array(data), _encode_values_array(mask)


def _add_arrow_chunks(streams: _Streams, column: Any) -> None:
    """Feed an Arrow Array or ChunkedArray's values into ``streams``, chunk by chunk."""
    chunks = column.chunks if hasattr(column, "chunks") else [column]
    if len(chunks) > 1 and streams.data is None:
        # The values' hasher is made for all the chunks' bytes, not the first's alone.
        streams.data = new_hasher(sum(chunk.nbytes for chunk in chunks))
    for chunk in chunks:
        _add_arrow_chunk(streams, chunk)


def _add_arrow_chunk(streams: _Streams, chunk: Any) -> None:
    pyarrow = sys.modules["pyarrow"]  # loaded: the value is an Arrow array
    numpy = numpy_module()
    types = pyarrow.types
    kind = chunk.type
    if not len(chunk):
        return  # no values (and the buffers of an empty array may be missing)
    if types.is_dictionary(kind):
        # Logical values: chunks with different dictionaries for the same values agree.
        _add_arrow_chunk(streams, chunk.dictionary_decode())
        return
    if types.is_string_view(kind) or types.is_binary_view(kind):
        large = pyarrow.large_string() if types.is_string_view(kind) else pyarrow.large_binary()
        chunk = chunk.cast(large)
        kind = chunk.type
    if chunk.null_count:
        streams.add_nulls(numpy.flatnonzero(chunk.is_null().to_numpy(zero_copy_only=False)))
    if types.is_null(kind):
        pass
    elif types.is_boolean(kind):
        filled = chunk.fill_null(False) if chunk.null_count else chunk
        streams.add_data(filled.to_numpy(zero_copy_only=False).tobytes())
    elif (
        types.is_string(kind)
        or types.is_large_string(kind)
        or types.is_binary(kind)
        or types.is_large_binary(kind)
    ):
        _add_arrow_binary(streams, chunk)
    elif _arrow_fixed_width(kind):
        _add_arrow_fixed(streams, chunk)
    elif types.is_list(kind) or types.is_large_list(kind):
        lengths = numpy.diff(chunk.offsets.to_numpy())  # offsets of this slice, not rebased
        if chunk.null_count:
            # A null row may still span values: it is emptied, and flatten() skips them.
            lengths[chunk.is_null().to_numpy(zero_copy_only=False)] = 0
        streams.add_variable(lengths)
        _add_arrow_chunk(streams.child(0), chunk.flatten())
    elif types.is_struct(kind):
        # flatten() slices each field as the struct is sliced, and marks its null rows.
        for index, field in enumerate(chunk.flatten()):
            _add_arrow_chunk(streams.child(index), field)
    else:
        raise UnsupportedType(
            type(chunk),
            f" (its Arrow type {kind} has no key encoding: maps, unions, fixed-size lists, "
            "run-end encoded arrays and extension types not stored as fixed-width values "
            "are not keyed)",
        )
    streams.rows += len(chunk)


def _arrow_fixed_width(kind: Any) -> bool:
    try:
        return bool(kind.bit_width % 8 == 0 and kind.num_fields == 0)
    except ValueError:  # "Non-fixed width type"
        return False


def _add_arrow_binary(streams: _Streams, chunk: Any) -> None:
    numpy = numpy_module()
    if chunk.null_count:
        # A null slot's bytes are undefined: emptied, the null positions say which they were.
        chunk = chunk.fill_null(b"" if "binary" in str(chunk.type) else "")
    width = "<i8" if "large" in str(chunk.type) else "<i4"
    offsets_buffer, data_buffer = chunk.buffers()[1:3]
    offsets = numpy.frombuffer(
        offsets_buffer, dtype=width, count=len(chunk) + 1, offset=chunk.offset * int(width[-1])
    )
    start, end = int(offsets[0]), int(offsets[-1])
    data = memoryview(data_buffer)[start:end] if data_buffer else b""
    streams.add_variable(_row_lengths(offsets), data)


def _add_arrow_fixed(streams: _Streams, chunk: Any) -> None:
    numpy = numpy_module()
    width = chunk.type.bit_width // 8
    buffer = chunk.buffers()[1]
    raw = numpy.frombuffer(
        buffer, dtype=numpy.uint8, count=len(chunk) * width, offset=chunk.offset * width
    )
    values = raw.reshape(len(chunk), width) if width else raw
    if chunk.null_count:
        values = values.copy()
        values[chunk.is_null().to_numpy(zero_copy_only=False)] = 0
    if sys.modules["pyarrow"].types.is_floating(chunk.type) and width in (4, 8):
        values = _canonical_floats(values.reshape(-1).view(f"<f{width}"))
    streams.add_data(memoryview(numpy.ascontiguousarray(values)).cast("B"))


# --- frames, series, indexes and tables ----------------------------------------------------


def _on_threads(
    encode: Callable[[Any], bytes],
    columns: Sequence[Any],
    sizes: Sequence[int],
    anywhere: Sequence[bool] | None = None,
) -> list[bytes]:
    """``encode`` of each column, on as many threads as the columns are worth: their
    buffers are read and hashed in place with the GIL released (BLAKE3, numpy's loops), so
    one column is hashed while the next is read, each on one thread unless one column holds
    more than its share of the bytes. Only columns ``anywhere`` allows leave the calling
    thread (all when None); ``sizes`` are the columns' bytes."""
    shared = [size for index, size in enumerate(sizes) if anywhere is None or anywhere[index]]
    threads = parallel_threads(len(shared), sum(shared))
    return on_threads(encode, columns, threads, anywhere, sizes)


def _nbytes(column: Any) -> int:
    """The bytes of a column's buffers (0 when it cannot tell)."""
    try:
        return int(column.nbytes)
    except Exception:  # a column type without the count: no threads for its sake
        return 0


def _column_arrays(frame: Any) -> list[Any]:
    """The values of each column of a pandas DataFrame, by position (duplicate names too)."""
    try:
        # pandas' own walk over its columns (since 1.3) builds no Series a column: a tenth of
        # the cost of items(), which costs a tenth of iloc. A numpy column comes as an
        # ndarray rather than in a NumpyExtensionArray: _pandas_column keys both alike.
        return list(frame._iter_column_arrays())
    except AttributeError:
        return [column.array for _, column in frame.items()]


def encode_pandas_frame(value: Any) -> bytes:
    arrays = _column_arrays(value)
    # Columns of Python objects are keyed on the calling thread: their items' own encoders
    # (hooks, registered types) run there, as for any other argument.
    anywhere = [_in_place(array) for array in arrays]
    sizes = [_nbytes(array) if anywhere[index] else 0 for index, array in enumerate(arrays)]
    columns = _on_threads(_pandas_column, arrays, sizes, anywhere)
    parts = encode_item(value.columns) + encode_item(value.index) + array_header(len(columns))
    parts += b"".join(columns) + _pandas_attributes(value)
    return ext(KeyExtension.PANDAS, pack("DataFrame") + parts)


def encode_pandas_series(value: Any) -> bytes:
    parts = encode_item(value.name) + encode_item(value.index) + _pandas_column(value.array)
    return ext(KeyExtension.PANDAS, pack("Series") + parts + _pandas_attributes(value))


def _pandas_attributes(value: Any) -> bytes:
    # attrs (user metadata) and the duplicate-labels flag are state a function may read.
    return encode_item(dict(value.attrs)) + pack(bool(value.flags.allows_duplicate_labels))


def encode_pandas_index(value: Any) -> bytes:
    pandas = sys.modules["pandas"]
    kind = type(value).__name__
    names = encode_item(list(value.names))
    if type(value) is pandas.RangeIndex:
        body = encode_item([value.start, value.stop, value.step])
    elif type(value) is pandas.MultiIndex:
        # Level by level as values, not as levels and codes: equal MultiIndexes may keep
        # different unused level values.
        levels = [value.get_level_values(level).array for level in range(value.nlevels)]
        body = array_header(len(levels)) + b"".join(map(_pandas_column, levels))
    else:
        body = _pandas_column(value.array)
        if type(value) in (pandas.DatetimeIndex, pandas.TimedeltaIndex):
            body += pack(value.freqstr)  # shift() and friends follow it
    return ext(KeyExtension.PANDAS, pack(kind) + names + body)


def _arrow_column(column: Any) -> bytes:
    streams = _Streams()
    _add_arrow_chunks(streams, column)
    return encode_item([str(column.type), *streams.parts()])


def _arrow_metadata(metadata: Any) -> bytes:
    return encode_item(dict(metadata) if metadata else None)


def encode_arrow_array(value: Any) -> bytes:
    kind = "ChunkedArray" if hasattr(value, "chunks") else "Array"
    return ext(KeyExtension.ARROW, pack(kind) + _arrow_column(value))


def encode_arrow_table(value: Any) -> bytes:
    fields = [[field.name, str(field.type), field.nullable] for field in value.schema]
    arrays = value.columns
    encoded = _on_threads(_arrow_column, arrays, [_nbytes(array) for array in arrays])
    columns = b"".join(
        document(_arrow_metadata(field.metadata), column)
        for field, column in zip(value.schema, encoded, strict=True)
    )
    kind = type(value).__name__  # Table or RecordBatch
    head = pack(kind) + encode_item(fields) + _arrow_metadata(value.schema.metadata)
    head += pack(value.num_rows)  # a table without columns still has rows
    return ext(KeyExtension.ARROW, head + array_header(len(fields)) + columns)


def _polars_column(series: Any) -> bytes:
    if str(series.dtype) == "Object":
        raise UnsupportedType(type(series), " with dtype=Object (its items are Python objects)")
    streams = _Streams()
    try:
        column = series.to_arrow()
    except ImportError as missing:
        raise UnsupportedType(
            type(series),
            " without pyarrow (a polars column is keyed through its Arrow form: "
            "pip install pyarrow)",
        ) from missing
    _add_arrow_chunks(streams, column)
    return encode_item([series.name, str(series.dtype), *streams.parts()])


def encode_polars_series(value: Any) -> bytes:
    return ext(KeyExtension.POLARS, pack("Series") + _polars_column(value))


def encode_polars_frame(value: Any) -> bytes:
    series = value.get_columns()
    columns = _on_threads(_polars_column, series, [item.estimated_size() for item in series])
    body = array_header(len(columns)) + b"".join(columns)
    return ext(KeyExtension.POLARS, pack("DataFrame") + body)
