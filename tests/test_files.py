"""memo(files=[...]): a path is keyed by the content behind it, so an edited file is a miss."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import run_python
from persistmemo import Store, memo


@pytest.fixture
def reader(store: Store) -> tuple[object, list[str]]:
    calls: list[str] = []

    @memo(store=store, files=["path"])
    def read(path: str | Path) -> str:
        calls.append(str(path))
        return Path(path).read_text()

    return read, calls


def test_an_edited_file_is_a_miss_and_an_untouched_one_a_hit(
    tmp_path: Path, reader: tuple[object, list[str]]
) -> None:
    read, calls = reader
    data = tmp_path / "data.txt"
    data.write_text("first")
    assert read(str(data)) == "first"  # type: ignore[operator]
    assert read(data) == "first"  # type: ignore[operator]  (a Path names the same file: a hit)
    assert read(str(data)) == "first"  # type: ignore[operator]
    data.write_text("second, longer")
    assert read(str(data)) == "second, longer"  # type: ignore[operator]
    assert len(calls) == 2


def test_touching_a_file_without_changing_it_is_a_hit(
    tmp_path: Path, reader: tuple[object, list[str]]
) -> None:
    read, calls = reader
    data = tmp_path / "data.txt"
    data.write_text("same")
    read(str(data))  # type: ignore[operator]
    os.utime(data, ns=(10**18, 10**18))  # a new mtime, far from now: not racy
    assert read(str(data)) == "same"  # type: ignore[operator]
    assert len(calls) == 1


def test_a_same_size_rewrite_that_restores_the_mtime_is_still_seen(
    tmp_path: Path, reader: tuple[object, list[str]]
) -> None:
    read, _ = reader
    data = tmp_path / "data.txt"
    data.write_text("aaaa")
    old = 1_000_000_000 * 10**9
    os.utime(data, ns=(old, old))
    assert read(str(data)) == "aaaa"  # type: ignore[operator]
    data.write_text("bbbb")  # same size
    os.utime(data, ns=(old, old))  # same mtime: only ctime tells
    assert read(str(data)) == "bbbb"  # type: ignore[operator]


def test_a_rewrite_within_the_timestamp_granularity_is_still_seen(
    tmp_path: Path, reader: tuple[object, list[str]]
) -> None:
    read, _ = reader
    data = tmp_path / "data.txt"
    for text in ("v1", "v2", "v3"):  # same size, rewritten within the same instant
        data.write_text(text)
        assert read(str(data)) == text  # type: ignore[operator]


def test_a_directory_is_keyed_by_every_file_under_it(store: Store, tmp_path: Path) -> None:
    calls = []

    @memo(store=store, files=["folder"])
    def count(folder: str) -> int:
        calls.append(folder)
        return sum(1 for _ in Path(folder).rglob("*.csv"))

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.csv").write_text("1")
    assert count(str(folder)) == 1
    assert count(str(folder)) == 1
    (folder / "sub" / "b.csv").write_text("2")
    assert count(str(folder)) == 2
    (folder / "a.csv").unlink()
    assert count(str(folder)) == 1
    assert len(calls) == 3


def test_lists_of_paths_are_keyed_by_each_file(store: Store, tmp_path: Path) -> None:
    @memo(store=store, files=["paths"])
    def joined(paths: list[str]) -> str:
        return "".join(Path(p).read_text() for p in paths)

    first, second = tmp_path / "1.txt", tmp_path / "2.txt"
    first.write_text("a")
    second.write_text("b")
    assert joined([str(first), str(second)]) == "ab"
    second.write_text("c")
    assert joined([str(first), str(second)]) == "ac"


def test_a_path_that_does_not_exist_runs_uncached(store: Store, tmp_path: Path) -> None:
    calls = []

    @memo(store=store, files=["path"])
    def read(path: str) -> str:
        calls.append(path)
        return Path(path).read_text()

    missing = str(tmp_path / "nope.txt")
    for _ in range(2):
        with pytest.raises(FileNotFoundError):
            read(missing)
    assert len(calls) == 2
    (tmp_path / "nope.txt").write_text("now here")
    assert read.map([missing, missing]) == ["now here", "now here"]


def test_bad_files_options_are_refused_with_the_remedy(store: Store) -> None:
    with pytest.raises(TypeError, match="not keyed parameters"):

        @memo(store=store, files=["nosuch"])
        def f(path: str) -> str:
            return path

    with pytest.raises(TypeError, match="write files="):
        memo(files="path")

    @memo(store=store, files=["path"])
    def g(path: object) -> object:
        return path

    with pytest.raises(TypeError, match="must be a path"):
        g(3)


def test_a_file_input_hits_in_a_fresh_process(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("content")
    (tmp_path / "job.py").write_text(
        "from pathlib import Path\nfrom persistmemo import memo\n\n"
        "@memo(files=['path'])\ndef load(path):\n    print('computing')\n"
        "    return Path(path).read_text()\n"
    )
    code = "import job; print(job.load('data.txt'))"
    env = {"PERSISTMEMO_DIR": str(tmp_path / "store")}
    assert run_python(code, cwd=tmp_path, env=env).stdout.split() == ["computing", "content"]
    assert run_python(code, cwd=tmp_path, env=env).stdout.split() == ["content"]
    (tmp_path / "data.txt").write_text("edited")
    assert run_python(code, cwd=tmp_path, env=env).stdout.split() == ["computing", "edited"]
