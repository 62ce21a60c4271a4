"""Which encoder a type gets: chosen once per type, by what the type is.

An exact match first (the builtins, then the value types of the standard library, numpy,
pandas, pyarrow and polars whose modules are loaded), then what the class is (a key hook, a
registered key function, an Enum, a NamedTuple, a dataclass, a class, a path), refusals that
say what to pass instead (functions, subclasses of frames and arrays whose state is hidden),
and last a subclass of a supported type. The choice is remembered in ``encoders.ENCODERS``,
so each type pays it once.
"""

from __future__ import annotations

import sys
import types

from persistmemo._keys.arrays import (
    array_subclass_encoder,
    encode_ndarray,
    encode_numpy_scalar,
    numpy_module,
)
from persistmemo._keys.classes import (
    HOOK_NAME,
    encode_dataclass,
    encode_enum,
    encode_namedtuple,
    encode_type,
    encode_with_hook,
)
from persistmemo._keys.encoders import raise_unsupported, refusal
from persistmemo._keys.frames import (
    encode_arrow_array,
    encode_arrow_table,
    encode_pandas_frame,
    encode_pandas_index,
    encode_pandas_na,
    encode_pandas_nat,
    encode_pandas_series,
    encode_pandas_timedelta,
    encode_pandas_timestamp,
    encode_polars_frame,
    encode_polars_series,
)
from persistmemo._keys.registry import registered_encoder
from persistmemo._keys.standard_types import (
    BUILTIN_ENCODERS,
    encode_date,
    encode_datetime,
    encode_decimal,
    encode_path,
    encode_time,
    encode_timedelta,
    encode_uuid,
)
from persistmemo._keys.subclasses import subclass_encoder
from persistmemo._kinds import (
    is_dataclass,
    is_enum,
    is_ndarray,
    is_numpy_scalar,
    is_path,
    is_tuple_with_fields,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from persistmemo._keys.encoders import Encoder

_FUNCTION_REASON = (
    " (a function's code can change while its name stays, so functions are not keyed: pass "
    "the function's name or the parameters it was built from instead)"
)


def has_exact_encoding(cls: type) -> bool:
    """Whether ``cls`` is encoded before registrations are asked (``choose_encoder``)."""
    return (
        any(cls is base for base, _ in [*BUILTIN_ENCODERS, *_library_encoders()])
        or is_ndarray(cls)
        or is_numpy_scalar(cls)
        or bool((frames := _frame_types()) and issubclass(cls, frames))
    )


def choose_encoder(cls: type) -> Encoder:
    """The encoder of a type met for the first time."""
    known = [*BUILTIN_ENCODERS, *_library_encoders()]
    for base, encoder in known:
        if cls is base:
            return encoder
    if callable(getattr(cls, HOOK_NAME, None)):
        return encode_with_hook
    registered = registered_encoder(cls)
    if registered is not None:
        return registered
    if is_enum(cls):
        return encode_enum
    if is_tuple_with_fields(cls):
        return encode_namedtuple
    if is_dataclass(cls):
        return encode_dataclass
    if issubclass(cls, type):
        return encode_type
    if is_path(cls):
        return encode_path
    if _is_function_like(cls):
        return refusal(cls, _FUNCTION_REASON)
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None and issubclass(cls, pyarrow.Array):
        return encode_arrow_array  # one Cython class per Arrow type: Int64Array, StringArray...
    frames = _frame_types()
    if frames and issubclass(cls, frames):
        # Their instances' __dict__ holds the data manager, which has no key: say why here.
        return refusal(
            cls,
            " (a subclass of a pandas or polars type, whose extra state a key cannot see: "
            "pass the plain frame, series or index, or define __persistmemo_key__ on the type)",
        )
    if is_ndarray(cls):
        return array_subclass_encoder(cls)
    if is_numpy_scalar(cls):
        return _numpy_scalar_encoder(cls)
    for base, encoder in known:
        if issubclass(cls, base):
            return subclass_encoder(cls, base, encoder)
    return raise_unsupported


def _library_encoders() -> list[tuple[type, Encoder]]:
    """Encoders of the standard library's (and pandas' and numpy's) value types, for the
    modules already loaded.

    A value of a type can only exist once its module is imported, so these need not be
    imported with persistmemo (which keeps ``import persistmemo`` light). Listed subclasses
    first: a pandas Timestamp is also a datetime, and a datetime is also a date.
    """
    found: list[tuple[type, Encoder]] = []
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        found += [
            (pandas.Timestamp, encode_pandas_timestamp),
            (type(pandas.NaT), encode_pandas_nat),
            (pandas.Timedelta, encode_pandas_timedelta),
        ]
    datetime = sys.modules.get("datetime")
    if datetime is not None:
        found += [
            (datetime.datetime, encode_datetime),
            (datetime.date, encode_date),
            (datetime.time, encode_time),
            (datetime.timedelta, encode_timedelta),
        ]
    decimal = sys.modules.get("decimal")
    if decimal is not None:
        found.append((decimal.Decimal, encode_decimal))
    uuid = sys.modules.get("uuid")
    if uuid is not None:
        found.append((uuid.UUID, encode_uuid))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        found.append((numpy.ndarray, encode_ndarray))
    if pandas is not None:
        found += [(pandas.DataFrame, encode_pandas_frame), (pandas.Series, encode_pandas_series)]
        found += [(index, encode_pandas_index) for index in _pandas_index_types(pandas)]
        found.append((type(pandas.NA), encode_pandas_na))
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        found += [
            (pyarrow.Table, encode_arrow_table),
            (pyarrow.RecordBatch, encode_arrow_table),
            (pyarrow.ChunkedArray, encode_arrow_array),
        ]
    polars = sys.modules.get("polars")
    if polars is not None:
        found += [(polars.DataFrame, encode_polars_frame), (polars.Series, encode_polars_series)]
    return found


def _pandas_index_types(pandas: Any) -> list[type]:
    names = ["Index", "RangeIndex", "MultiIndex", "CategoricalIndex", "DatetimeIndex"]
    names += ["TimedeltaIndex", "PeriodIndex", "IntervalIndex"]
    return [getattr(pandas, name) for name in names]


def _frame_types() -> tuple[type, ...]:
    found: tuple[type, ...] = ()
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        found += (pandas.DataFrame, pandas.Series, pandas.Index)
    polars = sys.modules.get("polars")
    if polars is not None:
        found += (polars.DataFrame, polars.Series)
    return found


def _is_function_like(cls: type) -> bool:
    functools = sys.modules.get("functools")
    if functools is not None and issubclass(cls, functools.partial):
        return True
    function_types = (
        types.FunctionType,
        types.BuiltinFunctionType,
        types.MethodType,
        types.MethodWrapperType,
        types.WrapperDescriptorType,
        types.MethodDescriptorType,
        types.LambdaType,
    )
    return issubclass(cls, function_types)


def _numpy_scalar_encoder(cls: type) -> Encoder:
    try:
        exact = numpy_module().dtype(cls).type
    except TypeError:
        return raise_unsupported
    if exact is cls:
        return encode_numpy_scalar
    # A subclass of a numpy scalar type (numpy.record is one, of numpy.void).
    return subclass_encoder(cls, exact, encode_numpy_scalar)
