"""Frames and columns as arguments: pandas, pyarrow and polars values keyed by their content."""

from __future__ import annotations

import pickle
import sqlite3
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import run_python
from persistmemo import Store, memo
from persistmemo._keys.canonical import encode
from persistmemo.errors import UnsupportedType

# pandas 3 gives text its own dtype (str); pandas 2 keeps it as object unless asked.
TEXT_IS_OBJECT = pd.Index(["x"]).dtype == object


def mixed_frame() -> pd.DataFrame:
    """One column of every dtype family, built afresh on each call."""
    return pd.DataFrame(
        {
            "f": [1.5, np.nan, -0.0],
            "i": [1, 2, 3],
            "b": [True, False, True],
            "s": ["a", None, "é"],
            "o": np.array(["x", "y", "z"], dtype=object),
            "mixed": np.array([1, "a", None], dtype=object),
            "dt": pd.to_datetime(["2026-11-25 00:00", None, "2026-11-26 06:30"]).astype("M8[ns]"),
            "tz": pd.date_range("2026-11-25", periods=3, tz="Europe/Paris"),
            "td": pd.to_timedelta([1, 2, 3], unit="s"),
            "cat": pd.Categorical(["x", "y", "x"], categories=["y", "x"], ordered=True),
            "I": pd.array([1, None, 3], dtype="Int64"),
            "F": pd.array([1.5, None, 3.0], dtype="Float64"),
            "B": pd.array([True, None, False], dtype="boolean"),
            "S": pd.array(["a", None, "c"], dtype="string"),
            "P": pd.array(["a", None, "c"], dtype=pd.StringDtype("python")),
            "A": pd.array([1, None, 3], dtype="int64[pyarrow]"),
            "per": pd.period_range("2026-11", periods=3, freq="M"),
            "iv": pd.interval_range(0, 3),
            "sp": pd.arrays.SparseArray([0.0, 1.0, 0.0]),
        },
        index=pd.Index([10, 20, 30], name="row"),
    )


def test_equal_frames_built_separately_share_a_key() -> None:
    assert encode(mixed_frame()) == encode(mixed_frame())
    assert encode(mixed_frame()["s"]) == encode(mixed_frame()["s"])
    assert encode(mixed_frame().columns) == encode(mixed_frame().columns)


def test_frame_keys_agree_in_fresh_interpreters_with_other_hash_seeds() -> None:
    code = """
        import pandas as pd, polars as pl, pyarrow as pa
        from test_keys_frames import mixed_frame
        from persistmemo._keys.canonical import encode
        table = pa.table({"a": [1, None], "s": ["x", "y"]})
        frame = pl.DataFrame({"a": [1, None], "s": ["x", "y"]})
        print(encode([mixed_frame(), table, frame]).hex())
    """
    here = encode([mixed_frame(), *_arrow_and_polars()]).hex()
    for seed in ("0", "1", "4242"):
        assert run_python(code, env={"PYTHONHASHSEED": seed}).stdout.strip() == here


def _arrow_and_polars() -> list[object]:
    return [
        pa.table({"a": [1, None], "s": ["x", "y"]}),
        pl.DataFrame({"a": [1, None], "s": ["x", "y"]}),
    ]


CHANGES: dict[str, Callable[[pd.DataFrame], Any]] = {
    "a value": lambda df: df.assign(i=[1, 2, 4]),
    "a string value": lambda df: df.assign(s=["a", None, "e"]),
    "a null for an empty string": lambda df: df.assign(s=["a", "", "é"]),
    "a datetime by 1 ns": lambda df: df.assign(dt=df["dt"] + pd.Timedelta(1)),
    "the time zone": lambda df: df.assign(tz=df["tz"].dt.tz_convert("UTC")),
    "a dtype": lambda df: df.astype({"i": "int32"}),
    "int64 to nullable Int64": lambda df: df.astype({"i": "Int64"}),
    "str to object": lambda df: df.astype({"s": object}),
    "str to string": lambda df: df.astype({"s": "string"}),
    "the datetime unit": lambda df: df.astype({"dt": "datetime64[us]"}),
    "a column name": lambda df: df.rename(columns={"i": "j"}),
    "the column order": lambda df: df[[*df.columns[1:], df.columns[0]]],
    "the index": lambda df: df.set_axis([10, 20, 31]),
    "the index name": lambda df: df.rename_axis("line"),
    "the columns' name": lambda df: df.rename_axis(columns="field"),
    "the index kind": lambda df: df.reset_index(drop=True),
    "the categories' order": lambda df: df.assign(cat=df["cat"].cat.reorder_categories(["x", "y"])),
    "the categories' orderedness": lambda df: df.assign(cat=df["cat"].cat.as_unordered()),
    "a masked value": lambda df: df.assign(I=pd.array([1, 0, 3], dtype="Int64")),
    "-0.0 for 0.0": lambda df: df.assign(f=[1.5, np.nan, 0.0]),
    "the attrs": lambda df: _with_attrs(df),
}


def _with_attrs(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.attrs["source"] = "other.csv"
    return df


@pytest.mark.parametrize("change", CHANGES, ids=str)
def test_each_change_of_a_frame_gives_another_key(change: str) -> None:
    if change == "str to object" and TEXT_IS_OBJECT:
        # pandas 2 keeps text as object (its str dtype is opt-in): the same frame, one key.
        assert encode(CHANGES[change](mixed_frame())) == encode(mixed_frame())
        return
    assert encode(CHANGES[change](mixed_frame())) != encode(mixed_frame())


def test_how_a_frame_is_laid_out_in_memory_does_not_change_its_key() -> None:
    values = np.arange(12, dtype="float64").reshape(4, 3)
    from_rows = pd.DataFrame(values, columns=["a", "b", "c"])  # one 2-d block, strided columns
    from_columns = pd.DataFrame({name: values[:, i].copy() for i, name in enumerate("abc")})
    assert encode(from_rows) == encode(from_columns)
    assert encode(from_rows) == encode(
        pd.DataFrame(np.asfortranarray(values), columns=["a", "b", "c"])
    )


def test_frames_are_keyed_without_pickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a frame went through pickle")

    expected = encode(mixed_frame())
    for name in ("dumps", "dump", "Pickler"):
        monkeypatch.setattr(pickle, name, refuse)
    assert encode(mixed_frame()) == expected
    assert encode(_arrow_and_polars()) == encode(_arrow_and_polars())


def test_duplicate_column_names_are_keyed_by_position() -> None:
    twice = pd.DataFrame([[1, 2]], columns=["a", "a"])
    assert encode(twice) == encode(pd.DataFrame([[1, 2]], columns=["a", "a"]))
    assert encode(twice) != encode(pd.DataFrame([[2, 1]], columns=["a", "a"]))


def test_empty_frames_are_keyed_by_their_shape_and_dtypes() -> None:
    keys = {
        encode(pd.DataFrame()),
        encode(pd.DataFrame({"a": []})),
        encode(pd.DataFrame({"a": pd.Series([], dtype="int64")})),
        encode(pd.DataFrame({"b": pd.Series([], dtype="int64")})),
        encode(pd.DataFrame(index=[1])),
    }
    assert len(keys) == 5
    assert encode(pd.DataFrame({"a": []})) == encode(pd.DataFrame({"a": []}))


def test_pandas_na_is_keyed_apart_from_none_and_nan() -> None:
    assert len({encode(pd.NA), encode(None), encode(float("nan")), encode(pd.NaT)}) == 4


def test_a_series_is_keyed_with_its_name_and_index() -> None:
    series = pd.Series([1.0, 2.0], index=["a", "b"], name="x")
    assert encode(series) == encode(pd.Series([1.0, 2.0], index=["a", "b"], name="x"))
    assert encode(series) != encode(series.rename("y"))
    assert encode(series) != encode(series.set_axis(["a", "c"]))
    assert encode(series) != encode(series.to_frame())
    assert encode(series) != encode(series.values)


INDEXES: list[Callable[[], pd.Index]] = [
    lambda: pd.RangeIndex(3),
    lambda: pd.Index([0, 1, 2]),
    lambda: pd.Index(["0", "1", "2"]),
    lambda: pd.Index(["0", "1", "2"], dtype=object),
    lambda: pd.MultiIndex.from_tuples([(0, "a"), (1, "b"), (2, "a")], names=["n", "s"]),
    lambda: pd.CategoricalIndex(["a", "b", "a"]),
    lambda: pd.date_range("2026-11-25", periods=3),
    lambda: pd.DatetimeIndex(["2026-11-25", "2026-11-26", "2026-11-27"]),
    lambda: pd.date_range("2026-11-25", periods=3, tz="Europe/Paris"),
    lambda: pd.timedelta_range(0, periods=3, freq="s"),
    lambda: pd.period_range("2026-11", periods=3, freq="M"),
    lambda: pd.interval_range(0, 3),
    lambda: pd.interval_range(0, 3, closed="left"),
]


def test_every_kind_of_index_is_keyed_by_content_and_kind() -> None:
    keys = [encode(make()) for make in INDEXES]
    assert keys == [encode(make()) for make in INDEXES]
    if TEXT_IS_OBJECT:  # pandas 2: an index of strings is the object one, so is its key
        assert keys[2] == keys[3]
        del keys[3]
    assert len(set(keys)) == len(keys)


def test_a_multiindex_is_keyed_by_its_values_not_its_unused_levels() -> None:
    full = pd.MultiIndex.from_product([[1, 2], ["a", "b"]])
    sliced = full[:2]  # keeps 2 among its levels
    assert list(sliced.levels[0]) == [1, 2]
    assert encode(sliced) == encode(pd.MultiIndex.from_tuples([(1, "a"), (1, "b")]))
    assert encode(sliced) != encode(full)


def test_masked_values_under_the_mask_do_not_change_the_key() -> None:
    left = pd.array([1, 2, 3], dtype="Int64")
    right = pd.array([1, 7, 3], dtype="Int64")
    left[1] = pd.NA
    right[1] = pd.NA
    assert encode(pd.Series(left)) == encode(pd.Series(right))


def test_every_nan_in_a_float_column_is_keyed_alike() -> None:
    negative_nan = np.array([np.copysign(np.nan, -1.0)])  # what 0.0 / 0.0 gives on x86
    assert negative_nan.tobytes() != np.array([np.nan]).tobytes()
    assert encode(pd.Series([np.nan])) == encode(pd.Series(negative_nan))


def test_str_columns_key_alike_whether_arrow_or_python_backed() -> None:
    values = ["a", None, "é", ""]
    arrow = pd.Series(values, dtype=pd.StringDtype("pyarrow", na_value=np.nan))
    python = pd.Series(values, dtype=pd.StringDtype("python", na_value=np.nan))
    assert encode(arrow) == encode(python)
    assert encode(arrow) != encode(pd.Series(values, dtype="string"))  # NA, not NaN
    chunked = pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([["a"], [None, "é", ""]])))
    assert encode(pd.Series(values, dtype="string[pyarrow]")) == encode(chunked)


def test_strings_are_delimited_exactly() -> None:
    assert encode(pd.Series(["ab", "c"])) != encode(pd.Series(["a", "bc"]))
    assert encode(pd.Series(["ab", ""])) != encode(pd.Series(["", "ab"]))
    objects = pd.Series(["ab", "c"], dtype=object)
    assert encode(objects) != encode(pd.Series(["a", "bc"], dtype=object))


def test_object_columns_of_other_items_are_keyed_item_by_item() -> None:
    def column(*items: object) -> pd.Series:
        return pd.Series(np.array(items, dtype=object), dtype=object)

    keys = {
        encode(column("a", None)),
        encode(column("a", np.nan)),
        encode(column("a", pd.NA)),
        encode(column("a", 1)),
        encode(column("a", "1")),
        encode(column("a", np.str_("1"))),
        encode(column({"k": 1}, None)),
        encode(column({"k": 2}, None)),
    }
    assert len(keys) == 8
    assert encode(column({"k": 1}, (1, 2))) == encode(column({"k": 1}, (1, 2)))


def test_object_columns_of_text_with_none_and_nan_keep_them_apart() -> None:
    def column(*items: object) -> pd.Series:
        return pd.Series(np.array(items, dtype=object), dtype=object)

    keys = [
        column("a", None, "b"),
        column("a", np.nan, "b"),
        column("a", "", "b"),
        column("a", None, np.nan),
        column("a", np.nan, None),
        column("a", 1.5, "b"),
        column("a", "b", None),
    ]
    assert len({encode(key) for key in keys}) == len(keys)
    assert encode(column("a", None, np.nan)) == encode(column("a", None, float("nan")))


def test_an_object_column_of_unsupported_items_is_refused_naming_the_parameter(
    store: Store,
) -> None:
    @memo(store=store)
    def rows(frame: pd.DataFrame) -> int:
        return len(frame)

    connection = sqlite3.connect(":memory:")
    try:
        with pytest.raises(TypeError) as raised:
            rows(pd.DataFrame({"c": [connection]}))
    finally:
        connection.close()
    message = str(raised.value)
    assert "argument 'frame' of" in message
    assert "sqlite3.Connection is not supported" in message


def test_an_object_column_holding_a_cycle_is_refused_naming_the_parameter(
    store: Store,
) -> None:
    @memo(store=store)
    def rows(frame: pd.DataFrame) -> int:
        return len(frame)

    looped: list[object] = [1]
    looped.append(looped)
    frame = pd.DataFrame({"a": [1, 2], "c": pd.Series([looped, None], dtype=object)})
    with pytest.raises(TypeError, match=r"argument 'frame' of .*\(it contains itself\)"):
        rows(frame)
    with pytest.raises(TypeError, match=r"\(it contains itself\)"):
        rows(frame["c"])


def test_a_memoized_function_of_a_frame_hits_with_an_equal_frame(store: Store) -> None:
    calls = []

    @memo(store=store)
    def total(frame: pd.DataFrame) -> float:
        calls.append(1)
        return float(frame["f"].sum())

    assert total(mixed_frame()) == total(mixed_frame()) == 1.5
    assert len(calls) == 1
    total(mixed_frame().assign(f=[1.0, 2.0, 3.0]))
    assert len(calls) == 2


def test_frame_subclasses_are_refused_with_the_remedy() -> None:
    class Tracked(pd.DataFrame):
        pass

    with pytest.raises(UnsupportedType, match="pass the plain frame"):
        encode(Tracked({"a": [1]}))


def test_importing_persistmemo_loads_no_frame_library() -> None:
    code = """
        import sys, datetime, decimal
        from persistmemo._keys.canonical import encode
        encode([1, "a", datetime.datetime(2026, 1, 1), decimal.Decimal(1)])
        print(sorted({"pandas", "pyarrow", "polars"} & set(sys.modules)))
    """
    assert run_python(code).stdout.strip() == "[]"


# --- pyarrow ----------------------------------------------------------------------------------


def test_a_sliced_arrow_array_keys_like_its_copy() -> None:
    strings = pa.array(["zero", "one", None, "three", "four"])
    numbers = pa.array([0, 1, None, 3, 4])
    flags = pa.array([True, False, None, True, False])
    for array in (strings, numbers, flags):
        sliced = array.slice(1, 3)
        copied = pa.array(sliced.to_pylist(), type=array.type)
        assert encode(sliced) == encode(copied)
        assert encode(sliced) != encode(array.slice(2, 3))


def test_chunking_of_an_arrow_column_does_not_change_its_key() -> None:
    for values in (["a", "bb", None, "ccc"], [1.5, None, 2.5, 3.5], [True, None, False, True]):
        whole = pa.chunked_array([values])
        split = pa.chunked_array([values[:1], values[1:3], [], values[3:]])
        assert encode(whole) == encode(split)
        table = pa.table({"c": whole})
        assert encode(table) == encode(pa.table({"c": split}))


def test_arrow_null_slots_are_keyed_whatever_bytes_they_hold() -> None:
    values = pa.array([1, 2, 3])
    validity = pa.py_buffer(np.packbits([1, 0, 1], bitorder="little").tobytes())
    hidden_two = pa.Array.from_buffers(pa.int64(), 3, [validity, values.buffers()[1]])
    assert encode(hidden_two) == encode(pa.array([1, None, 3]))
    words = pa.array(["a", "bb", "c"])  # the null row below still spans "bb"
    hidden_bb = pa.Array.from_buffers(pa.string(), 3, [validity, *words.buffers()[1:]])
    assert hidden_bb.to_pylist() == ["a", None, "c"]
    assert encode(hidden_bb) == encode(pa.array(["a", None, "c"]))


def test_arrow_dictionaries_are_keyed_by_their_decoded_values() -> None:
    first = pa.DictionaryArray.from_arrays(pa.array([0, 1]), pa.array(["a", "b"]))
    second = pa.DictionaryArray.from_arrays(pa.array([1, 0]), pa.array(["b", "a"]))
    assert encode(first) == encode(second)
    assert encode(first) != encode(first.dictionary_decode())  # the type differs


def test_each_change_of_an_arrow_table_gives_another_key() -> None:
    table = pa.table({"a": [1, 2], "s": ["x", None]})
    changed = [
        pa.table({"a": [1, 3], "s": ["x", None]}),
        pa.table({"b": [1, 2], "s": ["x", None]}),
        pa.table({"s": ["x", None], "a": [1, 2]}),
        pa.table({"a": pa.array([1, 2], pa.int32()), "s": ["x", None]}),
        pa.table({"a": [1, 2], "s": ["x", ""]}),
        table.replace_schema_metadata({"origin": "x"}),
        pa.record_batch({"a": [1, 2], "s": ["x", None]}),
        table.select([]),
        table.slice(1).select([]),
    ]
    keys = {encode(table), *map(encode, changed)}
    assert len(keys) == len(changed) + 1
    assert encode(pa.table({"a": [1, 2], "s": ["x", None]})) == encode(table)


def test_arrow_lists_and_structs_are_keyed_by_content_however_sliced_or_chunked() -> None:
    lists = pa.array([[1], [2, 3], None, [], [4, 5, 6]])
    structs = pa.array([{"x": 1, "y": "a"}, None, {"x": None, "y": "c"}, {"x": 4, "y": None}])
    for array in (lists, structs, pa.array([[{"x": [1]}], None, [{"x": None}]])):
        for start in range(len(array)):
            sliced = array.slice(start)
            assert encode(sliced) == encode(pa.array(sliced.to_pylist(), type=array.type))
        split = pa.chunked_array([array.slice(0, 2), array.slice(2)])
        assert encode(split) == encode(pa.chunked_array([array]))
    assert encode(pa.array([[1, 2], [3]])) != encode(pa.array([[1], [2, 3]]))
    assert encode(pa.array([[]])) != encode(pa.array([None], pa.list_(pa.int64())))
    null_struct = pa.array([None], pa.struct([("x", pa.int64())]))
    assert encode(pa.array([{"x": None}])) != encode(null_struct)


def test_a_null_list_is_keyed_whatever_values_it_spans() -> None:
    values = pa.array([1, 2, 3])
    spanning = pa.ListArray.from_arrays(
        pa.array([0, 1, 2, 3], pa.int32()), values, mask=pa.array([False, True, False])
    )
    assert spanning.to_pylist() == [[1], None, [3]]
    assert encode(spanning) == encode(pa.array([[1], None, [3]]))


def test_arrow_types_without_an_encoding_are_refused() -> None:
    mapping = pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64()))
    with pytest.raises(
        UnsupportedType,
        match=r"MapArray is not supported \(its Arrow type map<string, int64> has no key",
    ):
        encode(mapping)


# --- polars -----------------------------------------------------------------------------------


def test_equal_polars_frames_share_a_key_however_chunked() -> None:
    frame = pl.DataFrame(
        {
            "a": [1, None, 3],
            "s": ["x", "y", None],
            "f": [0.5, 1.5, None],
            "l": [[1], None, [2, 3]],
            "st": [{"k": 1}, None, {"k": 3}],
        }
    )
    stacked = pl.concat([frame[:1], frame[1:]], rechunk=False)
    assert stacked["a"].n_chunks() == 2
    assert encode(stacked) == encode(frame) == encode(frame.rechunk())
    assert encode(stacked["s"]) == encode(frame["s"])


def test_each_change_of_a_polars_frame_gives_another_key() -> None:
    frame = pl.DataFrame({"a": [1, 2], "s": ["x", "y"]})
    changed = [
        frame.with_columns(pl.Series("a", [1, 3])),
        frame.rename({"a": "b"}),
        frame.select(["s", "a"]),
        frame.cast({"a": pl.Int32}),
        frame.with_columns(pl.col("s").cast(pl.Categorical)),
    ]
    keys = {encode(frame), *map(encode, changed)}
    assert len(keys) == len(changed) + 1
    assert encode(frame["a"]) != encode(frame["a"].alias("b"))


def test_polars_object_columns_are_refused() -> None:
    with pytest.raises(UnsupportedType, match="dtype=Object"):
        encode(pl.Series([object()], dtype=pl.Object))


# --- properties -------------------------------------------------------------------------------

cells = st.lists(
    st.one_of(st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=3)),
    max_size=6,
)


@given(cells, cells)
def test_object_columns_share_a_key_exactly_when_their_items_do(
    left: list[object], right: list[object]
) -> None:
    def column(items: list[object]) -> pd.Series:
        return pd.Series(np.array(items, dtype=object), dtype=object)

    assert (encode(column(left)) == encode(column(right))) == (encode(left) == encode(right))


@given(st.lists(st.one_of(st.none(), st.text(max_size=4)), max_size=8), st.integers(0, 8))
def test_str_columns_share_a_key_across_storages_and_chunks(
    values: list[str | None], cut: int
) -> None:
    arrow = pd.Series(values, dtype="string[pyarrow]")
    python = pd.Series(values, dtype="string[python]")
    chunks = pa.chunked_array([values[:cut], values[cut:]], type=pa.large_string())
    assert encode(arrow) == encode(python)
    assert encode(arrow) == encode(pd.Series(pd.arrays.ArrowStringArray(chunks)))
