"""The encoders of numpy arrays, their subclasses and numpy scalars.

An array is keyed by its exact dtype, its shape and a digest of its buffer, hashed in place
(a 100 MB array is never copied into the key). Arrays of Python objects are refused; of the
ndarray subclasses, the masked array is keyed with its mask and fill value, matrix and
recarray by their type, and any other is refused (its extra state is not visible).
"""

from __future__ import annotations

import sys

from persistmemo._keys.digests import digest
from persistmemo._keys.encoders import encode_item, refusal
from persistmemo._keys.framing import KeyExtension, ext, pack
from persistmemo._naming import qualified_name
from persistmemo.errors import UnsupportedType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from persistmemo._keys.encoders import Encoder


def numpy_module() -> Any:
    """numpy, loaded: by the value being keyed, or here for an Arrow value's buffers."""
    numpy = sys.modules.get("numpy")
    if numpy is None:  # an Arrow value without numpy loaded (pyarrow does not need it)
        import numpy
    return numpy


def encode_ndarray(value: Any) -> bytes:
    if value.dtype.hasobject:
        raise UnsupportedType(
            type(value), f" with dtype={value.dtype} (its items are Python objects)"
        )
    contiguous = value if value.flags.c_contiguous else numpy_module().ascontiguousarray(value)
    # The buffer is hashed in place: a 100 MB array is never copied into the key.
    data = _bytes_of(contiguous) if contiguous.size else b""
    header = encode_item(_dtype_descriptor(value.dtype)) + encode_item(list(value.shape))
    return ext(KeyExtension.NDARRAY, header + pack(digest(data)))


def _bytes_of(contiguous: Any) -> memoryview:
    try:
        return memoryview(contiguous).cast("B")
    except ValueError:
        # The buffer protocol refuses structured dtypes with out-of-order or overlapping
        # fields; the same bytes, seen as uint8, are what is hashed for them.
        return memoryview(contiguous.reshape(-1).view(numpy_module().uint8))


def encode_numpy_scalar(value: Any) -> bytes:
    if value.dtype.hasobject:
        raise UnsupportedType(type(value))
    descriptor = encode_item(_dtype_descriptor(value.dtype))
    return ext(KeyExtension.NUMPY_SCALAR, descriptor + value.tobytes())


def _dtype_descriptor(dtype: Any) -> object:
    if dtype.fields is None:
        return dtype.str
    # dtype.str alone loses a structured dtype's field names; descr keeps them, but only
    # when it describes the dtype exactly: it cannot express overlapping or out-of-order
    # fields, and it drops the aligned-struct flag.
    try:
        descr = dtype.descr
    except ValueError:
        return _exact_struct(dtype)
    return descr if numpy_module().dtype(descr) == dtype else _exact_struct(dtype)


def _exact_struct(dtype: Any) -> object:
    """Every field of a structured dtype with its dtype, offset and title (a msgpack map,
    so it never equals a ``descr`` list)."""
    formats, offsets, titles = [], [], []
    for name in dtype.names:
        field, offset, *title = dtype.fields[name]
        formats.append(_field_descriptor(field))
        offsets.append(offset)
        titles.append(title[0] if title else None)
    return {
        "names": list(dtype.names),
        "formats": formats,
        "offsets": offsets,
        "titles": titles,
        "itemsize": dtype.itemsize,
        "aligned": bool(dtype.isalignedstruct),
    }


def _field_descriptor(dtype: Any) -> object:
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return [_field_descriptor(base), list(shape)]
    return _exact_struct(dtype) if dtype.fields is not None else dtype.str


def _encode_array_subclass_by_type(value: Any) -> bytes:
    # numpy.matrix and numpy.recarray hold nothing beyond the array: their type is their
    # only difference from an equal ndarray (and it changes what `*` and indexing do).
    array = value.view(numpy_module().ndarray)
    name = pack(qualified_name(type(value)))
    return ext(KeyExtension.ARRAY_SUBCLASS, name + encode_ndarray(array))


def _encode_masked_array(value: Any) -> bytes:
    ma = numpy_module().ma
    state = [ma.getmaskarray(value), value.fill_value, bool(value.hardmask)]
    # .data is the array under the mask, as its base class (a masked matrix stays a matrix).
    payload = encode_item(value.data) + encode_item(state)
    return ext(KeyExtension.ARRAY_SUBCLASS, pack(qualified_name(type(value))) + payload)


def array_subclass_encoder(cls: type) -> Encoder:
    """The encoder of an ndarray subclass: one of numpy's own, or a refusal."""
    numpy = numpy_module()
    if cls is numpy.ma.MaskedArray:
        return _encode_masked_array
    if cls is numpy.matrix or cls is numpy.recarray:
        return _encode_array_subclass_by_type
    return refusal(
        cls,
        " (a numpy.ndarray subclass whose extra state a key cannot see: pass "
        "numpy.asarray(value), or define __persistmemo_key__ on the type)",
    )
