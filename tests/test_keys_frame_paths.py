"""A large frame's fast paths give the bytes of the general ones: its columns encoded on
several threads, and string lengths narrowed in one pass, on generated frames."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistmemo._hashing import hashing_threads
from persistmemo._keys import digests, frames
from persistmemo._keys.canonical import encode
from persistmemo.errors import UnsupportedType


@contextmanager
def general_path() -> Iterator[None]:
    """Columns taken by items() and encoded one after another on the calling thread, and
    every string column's lengths as int64 rows narrowed by their longest (the encoding
    before the fast paths)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(frames, "parallel_threads", lambda items, size: 1)
        patch.setattr(frames, "_column_arrays", lambda df: [c.array for _, c in df.items()])
        patch.setattr(frames, "_row_lengths", np.diff)
        patch.setattr(frames, "_width", longest_width)
        yield


def longest_width(lengths: Any) -> int:
    longest = int(lengths.max())
    return next(width for width in (1, 2, 4, 8) if longest < 1 << (8 * width))


@contextmanager
def fast_path(threads: int = 3) -> Iterator[None]:
    """Columns on ``threads`` threads however small the frame."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(frames, "parallel_threads", lambda items, size: min(items, threads))
        yield


def both_ways(value: object) -> tuple[bytes, bytes]:
    with general_path():
        general = encode(value)
    with fast_path():
        fast = encode(value)
    return general, fast


# Strings around the widths of the lengths stream: 255 bytes fit one, 256 need two.
long_text = st.builds(
    lambda char, count: char * count,
    st.sampled_from(["a", "é", "\u20ac", "\U0001f600"]),
    st.sampled_from([63, 64, 85, 127, 128, 255, 256, 300]),
)
texts = st.one_of(st.none(), st.text(max_size=5), long_text)
floats = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def columns(draw: st.DrawFn, rows: int) -> Any:
    kind = draw(
        st.sampled_from(
            [
                *("float64", "float32", "float16", "Float64", "int", "str", "chunked-str"),
                *("datetime", "object", "arrow", "Int64", "cat"),
            ]
        )
    )
    if kind in ("float64", "float32", "float16"):
        values = st.floats(width=np.dtype(kind).itemsize * 8)
        return np.array(draw(st.lists(values, min_size=rows, max_size=rows)), dtype=kind)
    if kind == "int":
        values = draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=rows, max_size=rows))
        return np.array(values, dtype="int64")
    if kind in ("str", "chunked-str"):
        values = draw(st.lists(texts, min_size=rows, max_size=rows))
        if kind == "str":
            return pd.array(values, dtype="str")
        cut = draw(st.integers(0, rows))
        chunks = pa.chunked_array([values[:cut], values[cut:]], type=pa.large_string())
        return pd.arrays.ArrowStringArray(chunks)
    if kind == "datetime":
        values = draw(
            st.lists(st.one_of(st.none(), st.integers(0, 2**32)), min_size=rows, max_size=rows)
        )
        unit = draw(st.sampled_from(["ns", "us", "s"]))
        return pd.array(pd.to_datetime(values, unit=unit)).astype(f"M8[{unit}]")
    if kind == "object":
        items = st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=3), floats)
        return np.array(draw(st.lists(items, min_size=rows, max_size=rows)), dtype=object)
    if kind == "arrow":
        arrow_type = draw(st.sampled_from([pa.string(), pa.large_string(), pa.int32()]))
        strategy = st.integers(-5, 5) if arrow_type == pa.int32() else texts
        values = draw(st.lists(strategy, min_size=rows, max_size=rows))
        return pd.array(values, dtype=pd.ArrowDtype(arrow_type))
    if kind == "Float64":
        values = draw(st.lists(st.one_of(st.none(), floats), min_size=rows, max_size=rows))
        return pd.array(values, dtype="Float64")
    if kind == "Int64":
        values = draw(
            st.lists(st.one_of(st.none(), st.integers(-5, 5)), min_size=rows, max_size=rows)
        )
        return pd.array(values, dtype="Int64")
    values = draw(st.lists(st.sampled_from(["x", "y", "z"]), min_size=rows, max_size=rows))
    return pd.Categorical(values, categories=["z", "y", "x"])


@st.composite
def data_frames(draw: st.DrawFn) -> pd.DataFrame:
    rows = draw(st.integers(0, 8))
    count = draw(st.integers(0, 6))
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "é"]), min_size=count, max_size=count))
    frame = pd.DataFrame({index: draw(columns(rows)) for index in range(count)})
    frame.columns = pd.Index(names, dtype=object)  # duplicate names too
    start = draw(st.integers(0, rows))
    return frame.iloc[start:] if draw(st.booleans()) else frame  # sliced Arrow buffers


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data_frames())
def test_the_fast_paths_key_a_generated_frame_as_the_general_one(frame: pd.DataFrame) -> None:
    general, fast = both_ways(frame)
    assert fast == general
    assert encode(frame) == general  # and the default choice of threads agrees


@settings(max_examples=100, deadline=None)
@given(data_frames(), data_frames())
def test_generated_frames_share_a_key_only_when_equal(
    left: pd.DataFrame, right: pd.DataFrame
) -> None:
    with fast_path():
        same = encode(left) == encode(right)
    with general_path():
        assert same == (encode(left) == encode(right))
    if same:
        pd.testing.assert_frame_equal(left, right, check_exact=True)


ARROW_VALUES: dict[str, tuple[Any, Any]] = {
    "float64": (pa.float64(), st.one_of(st.none(), floats)),
    "float32": (pa.float32(), st.one_of(st.none(), st.floats(width=32))),
    "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "string": (pa.string(), texts),
    "large_string": (pa.large_string(), texts),
    "binary": (pa.binary(), st.one_of(st.none(), st.binary(max_size=300))),
    "list": (pa.list_(pa.int32()), st.one_of(st.none(), st.lists(st.integers(-9, 9), max_size=3))),
}


@st.composite
def arrow_tables(draw: st.DrawFn) -> pa.Table:
    rows = draw(st.integers(0, 8))
    columns = {}
    for index in range(draw(st.integers(0, 5))):
        arrow_type, values = ARROW_VALUES[draw(st.sampled_from(sorted(ARROW_VALUES)))]
        column = draw(st.lists(values, min_size=rows, max_size=rows))
        cut = draw(st.integers(0, rows))
        columns[f"c{index}"] = pa.chunked_array([column[:cut], column[cut:]], type=arrow_type)
    table = pa.table(columns) if columns else pa.table({})
    start = draw(st.integers(0, rows))
    return table.slice(start) if draw(st.booleans()) else table


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrow_tables())
def test_the_fast_paths_key_generated_arrow_and_polars_frames_as_the_general_ones(
    table: pa.Table,
) -> None:
    values: list[object] = [table, table.combine_chunks()]
    if table.num_columns:  # polars has no frame of rows without columns
        values.append(pl.from_arrow(table))
    for value in values:
        general, fast = both_ways(value)
        assert fast == general
    assert both_ways(table)[1] == both_ways(table.combine_chunks())[1]


@pytest.mark.parametrize("longest", [0, 1, 255, 256, 65535, 65536])
def test_row_lengths_narrow_exactly_where_the_longest_row_allows(longest: int) -> None:
    values = ["", "ab", "x" * longest, "é"] * 3
    for chunks in ([values], [values[:5], values[5:]], [values[:2], values[2:]]):
        column = pd.arrays.ArrowStringArray(pa.chunked_array(chunks, type=pa.large_string()))
        frame = pd.DataFrame({"s": column, "t": pd.array(values, dtype="str")})
        for part in (frame, frame.iloc[1:], frame.iloc[4:9]):  # sliced Arrow buffers too
            general, fast = both_ways(part)
            assert fast == general
    lengths = frames._row_lengths(np.cumsum([0, *map(len, values)]))
    assert lengths.dtype == (np.uint8 if longest < 256 else np.int64)
    assert lengths.tolist() == list(map(len, values))


def test_a_large_frame_is_keyed_on_threads_as_on_one() -> None:
    rows = 300_000
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "x": rng.random(rows),
            "n": np.arange(rows, dtype="int64"),
            "label": [f"item-{i % 997}" if i % 11 else "é" * 300 for i in range(rows)],
            "at": pd.date_range("2020-01-01", periods=rows, freq="s"),
            "o": np.array([i % 3 for i in range(rows)], dtype=object),
        }
    )
    frame.loc[7, "x"] = np.nan
    assert digests.parallel_threads(4, 40 * rows) == min(4, digests.available_cores())
    general, fast = both_ways(frame)
    assert fast == general == encode(frame)


class Hooked:
    """An item of an object column whose key hook records the thread it ran on."""

    seen: ClassVar[set[int]] = set()

    def __persistmemo_key__(self) -> object:
        Hooked.seen.add(threading.get_ident())
        return "hooked"


def test_columns_of_python_objects_are_keyed_on_the_calling_thread() -> None:
    Hooked.seen.clear()
    frame = pd.DataFrame(
        {
            "a": np.arange(4.0),
            "h": np.array([Hooked() for _ in range(4)], dtype=object),
            "b": np.arange(4),
            "s": pd.array(["a", "b", None, "c"], dtype="str"),
        }
    )
    with fast_path():
        fast = encode(frame)
    assert Hooked.seen == {threading.get_ident()}
    assert fast == both_ways(frame)[0]


def test_the_first_failing_column_is_the_one_refused_on_threads() -> None:
    frame = pd.DataFrame(
        {
            "a": np.arange(2.0),
            "m": pd.array(
                pa.array([[("k", 1)], [("k", 2)]], type=pa.map_(pa.string(), pa.int64())),
                dtype=pd.ArrowDtype(pa.map_(pa.string(), pa.int64())),
            ),
            "c": np.array([object(), 1], dtype=object),
        }
    )
    with general_path(), pytest.raises(UnsupportedType) as general:
        encode(frame)
    with fast_path(), pytest.raises(UnsupportedType) as fast:
        encode(frame)
    assert str(fast.value) == str(general.value)
    assert "map" in str(fast.value)


def test_on_threads_keeps_the_order_and_raises_the_first_failure() -> None:
    def work(item: int) -> int:
        if item in (5, 9):
            raise ValueError(item)
        return item * 2

    assert digests.on_threads(work, range(5), 3) == [0, 2, 4, 6, 8]
    with pytest.raises(ValueError, match=r"^5$"):
        digests.on_threads(work, range(12), 3)
    threads: dict[int, int] = {}

    def where(item: int) -> int:
        threads[item] = threading.get_ident()
        return item

    anywhere = [item % 2 == 0 for item in range(10)]
    assert digests.on_threads(where, range(10), 4, anywhere) == list(range(10))
    assert {threads[item] for item in range(1, 10, 2)} == {threading.get_ident()}


def test_on_threads_hashes_on_one_thread_what_the_other_threads_balance() -> None:
    hashed_on: dict[int, int] = {}

    def work(item: int) -> int:
        hashed_on[item] = digests._hashing_threads(1 << 30)
        return item

    weights = [10, 10, 10, 100]  # the last holds more than its share of two threads
    assert digests.on_threads(work, range(4), 2, weights=weights) == [0, 1, 2, 3]
    assert hashed_on[0] == hashed_on[1] == hashed_on[2] == 1
    assert hashed_on[3] == hashing_threads(1 << 30)  # all the cores
    assert not digests._ONE_THREAD
    assert digests._hashing_threads(1 << 30) == hashing_threads(1 << 30)
