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


def test_a_symlinked_directory_inside_a_directory_argument_is_keyed(
    store: Store, tmp_path: Path
) -> None:
    outside = tmp_path / "ext"
    outside.mkdir()
    (outside / "a.txt").write_text("one")
    data = tmp_path / "data"
    data.mkdir()
    (data / "linked").symlink_to(outside)
    (data / "loop").symlink_to(data)  # a cycle: walked once

    @memo(store=store, files=["folder"])
    def listing(folder: str) -> list[str]:
        return sorted(p.read_text() for p in Path(folder).glob("linked/*.txt"))

    assert listing(str(data)) == ["one"]
    (outside / "a.txt").write_text("two")
    assert listing(str(data)) == ["two"]


def test_a_fifo_given_as_a_file_input_runs_uncached_and_is_not_consumed(
    store: Store, tmp_path: Path
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    calls = []

    @memo(store=store, files=["path"])
    def kind(path: str) -> str:
        calls.append(path)
        return "called"

    assert kind(str(fifo)) == "called"  # not opened to be keyed: no hang, nothing consumed
    assert kind(str(fifo)) == "called"
    assert len(calls) == 2


def test_an_empty_file_and_an_empty_directory_are_different_inputs(
    store: Store, tmp_path: Path
) -> None:
    @memo(store=store, files=["path"])
    def what(path: str) -> str:
        return "dir" if Path(path).is_dir() else "file"

    target = tmp_path / "out"
    target.mkdir()
    assert what(str(target)) == "dir"
    target.rmdir()
    target.write_text("")
    assert what(str(target)) == "file"


def test_a_file_edited_while_the_function_runs_is_not_stored_under_the_old_content(
    store: Store, tmp_path: Path
) -> None:
    config = tmp_path / "cfg"
    config.write_text("v1")

    @memo(store=store, files=["path"])
    def load(path: str) -> str:
        config.write_text("v2")  # an editor saving while the run reads
        return Path(path).read_text()

    assert load(str(config)) == "v2"
    config.write_text("v1")
    assert load.info(str(config)) is None  # the v2 result was not kept under v1's key


def test_controls_with_a_missing_file_do_what_a_call_does(store: Store, tmp_path: Path) -> None:
    from persistmemo import MissingInput

    @memo(store=store, files=["path"])
    def read(path: str) -> str:
        return "ran"

    missing = str(tmp_path / "nope")
    assert read.refresh(missing) == "ran"
    assert read.invalidate(missing) is False
    with pytest.raises(MissingInput):
        read.key(missing)
    assert read(None) == "ran"  # type: ignore[arg-type]  (an optional path not given)


def test_a_store_inside_a_directory_argument_is_left_out_of_its_key(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "a.csv").write_text("1")
    calls = []

    @memo(store=Store(project / ".cache" / "persistmemo"), files=["folder"])
    def scan(folder: str) -> int:
        calls.append(folder)
        return sum(1 for _ in Path(folder).rglob("*.csv"))

    assert scan(str(project)) == 1
    assert scan(str(project)) == 1  # the first call's write to the store changed nothing
    (project / "data" / "b.csv").write_text("2")
    assert scan(str(project)) == 2
    assert len(calls) == 2
