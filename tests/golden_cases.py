"""The argument values of the golden key vectors, as Python expressions."""

GOLDEN_IDENTITY = "golden.f"
GOLDEN_VERSION = "1"

EXPRESSIONS = [
    "None",
    "True",
    "False",
    "0",
    "1",
    "-1",
    "255",
    "2**63",
    "2**64",
    "-(2**70)",
    "1.0",
    "0.0",
    "-0.0",
    "float('nan')",
    "float('inf')",
    "1e300",
    "''",
    "'1'",
    "'héllo'",
    "'\\udc80'",
    "'x' * 70000",
    "b''",
    "b'a'",
    "bytearray(b'a')",
    "b'\\x00' * 70000",
    "[]",
    "[1, 2]",
    "()",
    "(1, 2)",
    "((1,), [2])",
    "{}",
    "{'a': 1, 'b': [1.5]}",
    "{(1, 2): 'tuple key', 3: None}",
    "set()",
    "{1, 2, 3}",
    "frozenset({'x'})",
    "datetime.datetime(2026, 11, 25, 6, 30, 1, 5)",
    "datetime.datetime(2026, 11, 25, tzinfo=datetime.timezone.utc)",
    "datetime.datetime(2026, 11, 25, tzinfo=zoneinfo.ZoneInfo('Europe/Paris'))",
    "datetime.date(2026, 11, 25)",
    "datetime.time(6, 30)",
    "datetime.timedelta(days=1, seconds=2)",
    "decimal.Decimal('1.10')",
    "uuid.UUID('12345678-1234-5678-1234-567812345678')",
    "complex(1, -2)",
    "pathlib.PurePosixPath('/data/x.csv')",
    "golden_types.Color.RED",
    "golden_types.Point(1, 2)",
    "golden_types.Pair(1, 'a')",
    "golden_types.Keyed('k')",
    "int",
    "golden_types.Color",
    "numpy.arange(6, dtype='<i8').reshape(2, 3)",
    "numpy.float64(1.5)",
    # Added with the subclass, numpy-subclass and pandas rules (the keys above are unchanged).
    "golden_types.Celsius(1.5)",
    "golden_types.Tagged('a', 'tag')",
    "golden_types.Stamp(2026, 11, 25, 6, 30)",
    "golden_types.Labelled(2026, 11, 25, 'x')",
    "numpy.matrix([[1, 2]], dtype='<i8')",
    "numpy.ma.MaskedArray(numpy.arange(3, dtype='<i8'), mask=[False, True, False], fill_value=7)",
    "numpy.zeros(2, numpy.dtype({'names': ['b', 'a'], 'formats': ['<i4', '<i4'],"
    " 'offsets': [4, 0]}))",
    "numpy.zeros(1, numpy.dtype([('a', 'u1'), ('b', '<i4')], align=True))",
    "pandas.Timestamp('2026-11-25 06:30:01.000000005')",
    "pandas.Timestamp('2026-11-25 06:30', tz=zoneinfo.ZoneInfo('Europe/Paris'))",
    "pandas.Timedelta(1)",
    "pandas.NaT",
    # Added with frames and columns (docs/keys.md, ext 28-30; the keys above are unchanged).
    "pandas.NA",
    "pandas.DataFrame({'f': [1.5, float('nan')], 's': pandas.array(['a', None], dtype='str'),"
    " 'd': pandas.to_datetime(['2026-11-25 06:30', None]).astype('M8[ns]')},"
    " index=pandas.Index([10, 20], name='row'))",
    "pandas.DataFrame({'o': numpy.array(['x', None], dtype=object)}, dtype=object)",
    "pandas.Series(pandas.Categorical(['x', 'y', 'x'], categories=['y', 'x']), name='c')",
    "pandas.Series(pandas.array([1, None], dtype='Int64'), index=pandas.RangeIndex(2))",
    "pandas.MultiIndex.from_tuples([(1, 'a'), (2, 'b')], names=['n', 's'])",
    "pandas.date_range('2026-11-25', periods=2, tz=zoneinfo.ZoneInfo('Europe/Paris'))",
    "pyarrow.table({'a': [1, None], 's': ['x', 'yz']})",
    "pyarrow.chunked_array([[1.5], [None, 2.5]])",
    "pyarrow.array(['a', 'bc', None]).slice(1)",
    "polars.DataFrame({'a': [1, None], 's': ['x', 'yz']})",
    "polars.Series('t', [1.5, None])",
    "pyarrow.array([[1, 2], None, []])",
    "pyarrow.array([{'x': 1, 'y': 'a'}, None])",
    # Added with the key registry's built-in entries (docs/keys.md, ext 31; the keys above are
    # unchanged): scikit-learn estimators and scipy.sparse matrices.
    "golden_estimators.Scale(factor=2.0)",
    "golden_estimators.Scale(factor=2.0).fit(numpy.arange(6.0).reshape(3, 2))",
    "golden_estimators.Chain(first=golden_estimators.Scale(), second=golden_estimators.Scale("
    "offset=[1, 2]))",
    "sklearn.preprocessing.StandardScaler(with_mean=False)",
    "scipy.sparse.csr_matrix(numpy.array([[0.0, 1.5], [2.0, 0.0]]))",
    "scipy.sparse.csr_array(numpy.array([[0.0, 1.5], [2.0, 0.0]]))",
    "scipy.sparse.csc_matrix(numpy.array([[0.0, 1.5], [2.0, 0.0]]))",
    "scipy.sparse.coo_array(numpy.array([[0.0, 1.5], [2.0, 0.0]]))",
    "scipy.sparse.dok_array(numpy.array([[0.0, 1.5], [2.0, 0.0]]))",
]


def namespace() -> dict[str, object]:
    import datetime
    import decimal
    import pathlib
    import uuid
    import zoneinfo

    import numpy
    import pandas
    import polars
    import pyarrow
    import scipy.sparse
    import sklearn.preprocessing

    import golden_estimators
    import golden_types

    return {
        "datetime": datetime,
        "decimal": decimal,
        "pathlib": pathlib,
        "uuid": uuid,
        "zoneinfo": zoneinfo,
        "golden_types": golden_types,
        "numpy": numpy,
        "pandas": pandas,
        "pyarrow": pyarrow,
        "polars": polars,
        "scipy": scipy,
        "sklearn": sklearn,
        "golden_estimators": golden_estimators,
    }
