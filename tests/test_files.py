"""memo(files=[...]): a path is keyed by the content behind it, so an edited file is a miss."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import pytest

from conftest import run_python
from persistmemo import Store, memo
from persistmemo._memo import files
from persistmemo.stores.base import MISSING, secret_scoped


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


# The digests of unchanged files are recorded in the store, for fresh processes. KEYED keys a
# path in a fresh interpreter and reports the digest and how many files under the path it
# opened: an audit hook sees every open, so the count holds as root (chmod 000 would not).
KEYED = """
import json, os, sys
from persistmemo import RedisStore, Store
from persistmemo._memo import files

data, store_dir, racy = sys.argv[1], sys.argv[2], sys.argv[3]
if racy != "default":
    files.RACY_NANOSECONDS = int(racy)
watched = os.path.realpath(data)
opened = []

def watch(event, args):
    if event == "open" and isinstance(args[0], str):
        real = os.path.realpath(args[0])
        if real == watched or real.startswith(watched + os.sep):
            opened.append(real)

sys.addaudithook(watch)
with (RedisStore if store_dir.startswith("redis://") else Store)(store_dir) as store:
    key = files.file_key(data, "path", store=store)
print(json.dumps({"digest": key[2].hex(), "reads": len(opened)}))
"""

QUICK = 50_000_000  # a racy window of 50 ms, so that a test need not wait out 2 s


def keyed_in_a_fresh_process(
    data: Path, store_dir: Path | str, racy: int | None = QUICK
) -> tuple[str, int]:
    """(digest, files opened) when a fresh interpreter keys ``data`` with the store (a
    directory, or a redis:// URL)."""
    import json

    time.sleep(0.06)  # whatever the test just wrote is now older than the QUICK window
    result = run_python(
        KEYED, args=(str(data), str(store_dir), "default" if racy is None else str(racy))
    )
    reported = json.loads(result.stdout)
    return reported["digest"], reported["reads"]


def digest_without_a_store(path: Path) -> str:
    files.forget()
    key = files.file_key(str(path), "path")
    return key[2].hex()  # type: ignore[index]


def test_a_fresh_process_does_not_read_an_unchanged_file_again(tmp_path: Path) -> None:
    data, store_dir = tmp_path / "data.bin", tmp_path / "store"
    data.write_bytes(b"x" * 100_000)
    first = keyed_in_a_fresh_process(data, store_dir)
    assert first == (digest_without_a_store(data), 1)
    assert keyed_in_a_fresh_process(data, store_dir) == (first[0], 0)
    os.utime(data, ns=(10**18, 10**18))  # touched (mtime and ctime change): read again
    assert keyed_in_a_fresh_process(data, store_dir)[1] == 1


def test_an_edited_file_is_seen_in_a_fresh_process(tmp_path: Path) -> None:
    data, store_dir = tmp_path / "data.txt", tmp_path / "store"
    data.write_text("first")
    keyed_in_a_fresh_process(data, store_dir)
    data.write_text("second, longer")
    assert keyed_in_a_fresh_process(data, store_dir) == (digest_without_a_store(data), 1)


def test_a_same_size_rewrite_that_restores_the_mtime_is_seen_in_a_fresh_process(
    tmp_path: Path,
) -> None:
    data, store_dir = tmp_path / "data.txt", tmp_path / "store"
    old = 1_000_000_000 * 10**9
    data.write_text("aaaa")
    os.utime(data, ns=(old, old))
    keyed_in_a_fresh_process(data, store_dir)
    data.write_text("bbbb")
    os.utime(data, ns=(old, old))  # size and mtime as recorded: only ctime tells
    assert keyed_in_a_fresh_process(data, store_dir) == (digest_without_a_store(data), 1)


def test_a_replaced_file_is_seen_in_a_fresh_process(tmp_path: Path) -> None:
    data, store_dir = tmp_path / "data.txt", tmp_path / "store"
    old = 1_000_000_000 * 10**9
    data.write_text("aaaa")
    os.utime(data, ns=(old, old))
    keyed_in_a_fresh_process(data, store_dir)
    replacement = tmp_path / "new.txt"
    replacement.write_text("bbbb")
    os.utime(replacement, ns=(old, old))
    os.replace(replacement, data)  # a new inode under the same name, same size and mtime
    assert keyed_in_a_fresh_process(data, store_dir) == (digest_without_a_store(data), 1)


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_digest_recorded_within_the_racy_window_is_not_trusted_by_a_fresh_process(
    tmp_path: Path, kind: str
) -> None:
    data, store_dir = tmp_path / "data", tmp_path / "store"
    if kind == "directory":
        data.mkdir()
        (data / "a.txt").write_text("v1")
    else:
        data.write_text("v1")
    # A writer with no racy window records the digest of a file written just now ...
    assert keyed_in_a_fresh_process(data, store_dir, racy=0)[1] == 1
    assert keyed_in_a_fresh_process(data, store_dir, racy=0)[1] == 0  # (it is there)
    # ... which a reader with the 2 s window does not trust: the file may have been rewritten
    # within the file system's timestamp granularity since.
    assert keyed_in_a_fresh_process(data, store_dir, racy=None)[1] == 1


def test_planted_or_garbage_fingerprint_records_are_ignored(tmp_path: Path) -> None:
    data, store_dir = tmp_path / "data.txt", tmp_path / "store"
    data.write_text("the real content")
    wrong, late = bytes(32), 2**62  # taken long after the file's times: trusted if believed
    with Store(store_dir) as reader:  # records are kept per sealing secret: the reader's
        key = secret_scoped(
            reader, files._file_record_key(str(data), files._fingerprint(os.stat(data)))
        )
    planted: list[tuple[str | None, bytes]] = [
        ("a co-user without the secret", files.encode_value({"digest": wrong, "at": late})),
        (None, files.encode_value({"digest": "not bytes", "at": "never"})),
        (None, b"\xffnot a value at all"),
        (None, files.encode_value({"digest": wrong[:5], "at": late})),
    ]
    for secret, encoded in planted:
        with Store(store_dir, secret=secret) as store:
            store.write(key, encoded, ttl=None, tag="planted")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fresh process reports the failed seal
            digest, reads = keyed_in_a_fresh_process(data, store_dir)
        assert (digest, reads) == (digest_without_a_store(data), 1)
        with Store(store_dir) as store:
            store.delete(key)


def test_fingerprint_records_are_not_counted_as_results(tmp_path: Path) -> None:
    data, store_dir = tmp_path / "data.txt", tmp_path / "store"
    data.write_text("content")
    keyed_in_a_fresh_process(data, store_dir)
    with Store(store_dir) as store:
        key = files._file_record_key(str(data), files._fingerprint(os.stat(data)))
        assert store.read(secret_scoped(store, key)) is not MISSING  # recorded ...
        assert len(store) == 0  # ... but not a result
        assert list(store.entries()) == []


def test_a_fresh_process_reads_only_the_changed_files_of_a_directory(tmp_path: Path) -> None:
    folder, store_dir = tmp_path / "in", tmp_path / "store"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.csv", "b.csv", "sub/c.csv"):
        (folder / name).write_text(name)
    first = keyed_in_a_fresh_process(folder, store_dir)
    assert first == (digest_without_a_store(folder), 3)
    assert keyed_in_a_fresh_process(folder, store_dir) == (first[0], 0)
    (folder / "sub" / "c.csv").write_text("edited")
    edited = keyed_in_a_fresh_process(folder, store_dir)
    assert edited == (digest_without_a_store(folder), 1)
    (folder / "d.csv").write_text("new")
    added = keyed_in_a_fresh_process(folder, store_dir)
    assert added == (digest_without_a_store(folder), 1)
    (folder / "a.csv").unlink()
    removed = keyed_in_a_fresh_process(folder, store_dir)
    assert removed == (digest_without_a_store(folder), 0)
    assert len({first[0], edited[0], added[0], removed[0]}) == 4


def test_a_store_that_cannot_be_opened_does_not_stop_a_file_being_keyed(
    tmp_path: Path,
) -> None:
    from persistmemo import PersistmemoWarning

    data = tmp_path / "data.txt"
    data.write_text("content")
    not_a_directory = tmp_path / "store"
    not_a_directory.write_text("a file where the store should be")
    files.forget()
    with pytest.warns(PersistmemoWarning), Store(not_a_directory) as store:
        key = files.file_key(str(data), "path", store=store)
    assert key[2].hex() == digest_without_a_store(data)  # type: ignore[index]


def test_within_a_process_only_the_edited_file_of_a_directory_is_read_again(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.csv", "b.csv", "sub/c.csv"):
        (folder / name).write_text(name)
    code = f"""
        import os, sys, time
        from persistmemo._memo import files
        files.RACY_NANOSECONDS = {QUICK}
        folder = {str(folder)!r}
        opened = []
        sys.addaudithook(
            lambda event, args: opened.append(args[0])
            if event == "open" and str(args[0]).startswith(folder) else None
        )
        time.sleep(0.06)
        first = files.content_digest(folder)
        again = files.content_digest(folder)
        print(len(opened), first == again)
        with open(os.path.join(folder, "b.csv"), "w") as edited:
            edited.write("edited")
        time.sleep(0.06)
        before = len(opened)
        print(files.content_digest(folder) != first, len(opened) - before)
    """
    lines = run_python(code).stdout.split("\n")
    assert lines[0] == "3 True"  # three files read once, then a hit
    assert lines[1] == "True 1"  # a new digest, from the one file read again


def test_a_redis_store_keeps_the_digests_for_fresh_processes_as_bookkeeping(
    tmp_path: Path, redis_url: str
) -> None:
    from persistmemo import RedisStore

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.csv").write_text("a")
    (tmp_path / "b.csv").write_text("b")
    for data in (folder, tmp_path / "b.csv"):
        first = keyed_in_a_fresh_process(data, redis_url)
        assert first == (digest_without_a_store(data), 1)
        assert keyed_in_a_fresh_process(data, redis_url) == (first[0], 0)
    with RedisStore(redis_url) as store:
        assert len(store) == 0


def test_a_memoized_call_in_a_fresh_process_does_not_read_an_unchanged_file_again(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 100_000)
    (tmp_path / "job.py").write_text(
        "import os, sys\nfrom persistmemo import memo, files\n"
        f"files.RACY_NANOSECONDS = {QUICK}\n"
        "opened = []\n"
        "sys.addaudithook(lambda event, args: opened.append(args[0])\n"
        f"    if event == 'open' and str(args[0]).endswith('data.bin') else None)\n\n"
        "@memo(files=['path'])\ndef size(path):\n    print('computing')\n"
        "    return os.path.getsize(path)\n"
    )
    code = "import job; print(job.size('data.bin'), len(job.opened))"
    env = {"PERSISTMEMO_DIR": str(tmp_path / "store")}
    time.sleep(0.06)
    assert run_python(code, cwd=tmp_path, env=env).stdout.split() == ["computing", "100000", "1"]
    assert run_python(code, cwd=tmp_path, env=env).stdout.split() == ["100000", "0"]
