"""Stored values build only what they say they are, and reading a value never runs a script."""

from __future__ import annotations

import gc
import pickle
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from conftest import run_python
from golden_types import Color, Pair, Point
from persistmemo._codec.decoding import decode_value
from persistmemo._codec.formats import FORMAT_MSGPACK, FORMAT_PICKLE, ValueExtension
from persistmemo.errors import CorruptEntry, UndecodableValue


def planted(code: int, module: str, qualname: str, state: object) -> bytes:
    """A msgpack value written by hand, the way someone who can write the store could."""
    payload = msgpack.packb([[module, qualname], state], use_bin_type=True)
    return FORMAT_MSGPACK + msgpack.packb(msgpack.ExtType(code, payload))


# --- 1. msgpack values build only verified classes -----------------------------------------


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_a_planted_dataclass_naming_a_file_closer_is_refused_and_deletes_nothing(
    tmp_path: Path, allow_pickle: bool
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    data = planted(
        ValueExtension.DATACLASS,
        "tempfile",
        "_TemporaryFileCloser",
        {"file": 0, "name": str(victim), "delete": True, "close_called": False},
    )
    with pytest.raises(UndecodableValue, match="refused"):
        decode_value(data, allow_pickle=allow_pickle)
    gc.collect()
    assert victim.read_text() == "keep me"


HOSTILE = [
    (
        ValueExtension.DATACLASS,
        "subprocess",
        "Popen",
        {"args": ["true"], "pid": 1, "returncode": None},
    ),
    (ValueExtension.DATACLASS, "os", "_wrap_close", {"_stream": 0, "_proc": 0}),
    (ValueExtension.DATACLASS, "os", "system", {"command": "true"}),
    (ValueExtension.DATACLASS, "builtins", "dict", {}),
    (ValueExtension.NAMEDTUPLE, "os", "_wrap_close", ["x"]),
    (ValueExtension.NAMEDTUPLE, "subprocess", "Popen", [["true"]]),
    (ValueExtension.NAMEDTUPLE, "os", "stat_result", list(range(10))),
    (ValueExtension.NAMEDTUPLE, "builtins", "tuple", [1]),
    (ValueExtension.ENUM, "os", "_wrap_close", "x"),
    (ValueExtension.ENUM, "os", "environ", "HOME"),
    (ValueExtension.FLAG, "subprocess", "Popen", 1),
    (ValueExtension.FLAG, "golden_types", "Color", 1),
    (ValueExtension.DATACLASS, "golden_types", "Pair", {"left": 1, "right": "x"}),
]


@pytest.mark.parametrize(("code", "module", "qualname", "state"), HOSTILE, ids=repr)
@pytest.mark.parametrize("allow_pickle", [False, True])
def test_values_naming_a_class_of_another_kind_are_refused(
    code: int, module: str, qualname: str, state: object, allow_pickle: bool
) -> None:
    with pytest.raises(UndecodableValue, match=rf"refused: {module}\.{qualname} is not"):
        decode_value(planted(code, module, qualname, state), allow_pickle=allow_pickle)


@pytest.mark.parametrize(
    "fields",
    [
        {"x": 1},
        {"x": 1, "y": 2, "z": 3},
        {"x": 1, "__class__": 2},
        {"x": 1, "__dict__": {"y": 2}},
        {"x": 1, "y": 2, 3: 4},
        [1, 2],
    ],
    ids=repr,
)
def test_a_real_dataclass_is_built_only_from_exactly_its_fields(fields: object) -> None:
    with pytest.raises(
        UndecodableValue, match=r"refused: the stored fields .* golden_types\.Point"
    ):
        decode_value(planted(ValueExtension.DATACLASS, "golden_types", "Point", fields))


def test_genuine_classes_still_decode_from_planted_bytes() -> None:
    assert decode_value(
        planted(ValueExtension.DATACLASS, "golden_types", "Point", {"x": 1, "y": 2})
    ) == (Point(1, 2))
    assert decode_value(
        planted(ValueExtension.NAMEDTUPLE, "golden_types", "Pair", [1, "a"])
    ) == Pair(1, "a")
    assert decode_value(planted(ValueExtension.ENUM, "golden_types", "Color", "RED")) is Color.RED


def test_a_module_that_is_not_loaded_is_imported_only_where_pickles_are_allowed() -> None:
    output = run_python(
        """
        import sys
        import msgpack
        from persistmemo._codec.decoding import decode_value
        from persistmemo._codec.formats import FORMAT_MSGPACK, ValueExtension
        from persistmemo.errors import UndecodableValue

        assert "http" not in sys.modules
        payload = msgpack.packb([["http", "HTTPStatus"], "OK"])
        data = FORMAT_MSGPACK + msgpack.packb(msgpack.ExtType(ValueExtension.ENUM, payload))
        try:
            decode_value(data, allow_pickle=False)
        except UndecodableValue as error:
            print("refused:", error)
        print("http" in sys.modules)
        print(repr(decode_value(data, allow_pickle=True)), "http" in sys.modules)
        """
    ).stdout.splitlines()
    assert output[0].startswith("refused: class http.HTTPStatus is not importable here")
    assert output[1:] == ["False", "<HTTPStatus.OK: 200> True"]


SIDE_EFFECT_MODULE = """
import dataclasses, os
open(os.environ["RAN"], "a").write("ran\\n")

@dataclasses.dataclass
class Thing:
    x: int
"""


def test_a_module_next_to_the_script_is_never_imported_to_read_a_value(tmp_path: Path) -> None:
    (tmp_path / "sidemod.py").write_text(SIDE_EFFECT_MODULE)
    ran = tmp_path / "ran.txt"
    output = run_python(
        """
        import sys
        import msgpack
        from persistmemo._codec.formats import FORMAT_MSGPACK, ValueExtension
        from persistmemo.errors import UndecodableValue
        from persistmemo._codec.decoding import decode_value

        payload = msgpack.packb([["sidemod", "Thing"], {"x": 1}])
        data = FORMAT_MSGPACK + msgpack.packb(msgpack.ExtType(ValueExtension.DATACLASS, payload))
        for allow_pickle in (False, True):
            try:
                decode_value(data, allow_pickle=allow_pickle)
            except UndecodableValue as error:
                print(error)
        print("sidemod" in sys.modules)
        """,
        cwd=tmp_path,
        env={"RAN": str(ran)},
    ).stdout.splitlines()
    assert "refuses pickles never import" in output[0]
    assert "persistmemo never imports a script" in output[1]
    assert output[2] == "False"
    assert not ran.exists()


# --- 2. classes of a script: pickled under its name, found again without running it twice --

SCRIPT = """
import os, sys
from persistmemo import Store, memo

with open(os.environ["TOP_LOG"], "a") as log:
    log.write(f"{os.getpid()}\\n")


class Plain:
    def __init__(self, x):
        self.x = x


# A pinned version: these tests are about values, not about derived versions.
@memo(store=Store(os.environ["STORE_DIR"]), version=1)
def make(x):
    return Plain(x)


if __name__ == "__main__":
    value = make(3)
    print(type(value).__module__, isinstance(value, Plain), value.x, make.cache_info())
"""

IMPORT_SCRIPT = """
import plainscript
value = plainscript.make(3)
print(type(value).__module__, isinstance(value, plainscript.Plain), value.x,
      plainscript.make.cache_info())
"""


def run_script(
    directory: Path, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    import os

    result = subprocess.run(
        [sys.executable, *args],
        cwd=directory,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def script(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    (tmp_path / "plainscript.py").write_text(SCRIPT)
    top_log = tmp_path / "top.log"
    env = {"TOP_LOG": str(top_log), "STORE_DIR": str(tmp_path / "store")}
    return tmp_path, env, top_log


def top_level_runs(top_log: Path) -> list[str]:
    return top_log.read_text().split()


def test_a_script_class_result_hits_when_run_again_and_when_imported(
    script: tuple[Path, dict[str, str], Path],
) -> None:
    directory, env, top_log = script
    first = run_script(directory, "plainscript.py", env=env)
    second = run_script(directory, "plainscript.py", env=env)
    imported = run_python(IMPORT_SCRIPT, cwd=directory, env=env)
    assert first.stdout.startswith("__main__ True 3 CacheInfo(hits=0, misses=1)")
    assert second.stdout.startswith("__main__ True 3 CacheInfo(hits=1, misses=0)")
    assert imported.stdout.startswith("plainscript True 3 CacheInfo(hits=1, misses=0)")
    assert "corrupt" not in second.stderr + imported.stderr
    runs = top_level_runs(top_log)
    assert len(runs) == len(set(runs)) == 3  # once per process


@pytest.mark.parametrize("run", [("plainscript.py",), ("-m", "plainscript")], ids=" ".join)
def test_a_result_stored_by_an_importer_hits_in_the_script_without_running_it_twice(
    script: tuple[Path, dict[str, str], Path], run: tuple[str, ...]
) -> None:
    directory, env, top_log = script
    imported = run_python(IMPORT_SCRIPT, cwd=directory, env=env)
    ran = run_script(directory, *run, env=env)
    assert imported.stdout.startswith("plainscript True 3 CacheInfo(hits=0, misses=1)")
    assert ran.stdout.startswith("__main__ True 3 CacheInfo(hits=1, misses=0)")
    runs = top_level_runs(top_log)
    assert len(runs) == len(set(runs)) == 2


def test_reading_a_script_class_elsewhere_is_a_miss_and_never_runs_the_script(
    script: tuple[Path, dict[str, str], Path],
) -> None:
    directory, env, top_log = script
    (directory / "encode_plain.py").write_text(
        "import os, sys\n"
        "from persistmemo._codec.encoding import encode_value\n"
        "open(os.environ['TOP_LOG'], 'a').write(f'{os.getpid()}\\n')\n"
        "class Plain:\n"
        "    pass\n"
        "sys.stdout.write(encode_value(Plain()).hex())\n"
    )
    # The script encode_plain.py stores its Plain as encode_plain.Plain; a process that
    # merely has the file on its path must not import it to read the value.
    data = run_script(directory, "encode_plain.py", env=env).stdout
    output = run_python(
        f"""
        import sys
        from persistmemo._codec.decoding import decode_value
        from persistmemo.errors import UndecodableValue
        try:
            decode_value(bytes.fromhex("{data}"), allow_pickle=True)
        except UndecodableValue as error:
            print(error)
        print("encode_plain" in sys.modules)
        """,
        cwd=directory,
        env=env,
    ).stdout.splitlines()
    assert output[0].startswith("class encode_plain.Plain is not importable here")
    assert output[1] == "False"
    assert len(top_level_runs(top_log)) == 1  # the encoding run only


SPAWN_SCRIPT = """
import multiprocessing, os
from persistmemo import Store, memo


class Plain:
    def __init__(self, x):
        self.x = x


# A pinned version: these tests are about values, not about derived versions.
@memo(store=Store(os.environ["STORE_DIR"]), version=1)
def make(x):
    return Plain(x)


def in_worker(x):
    value = make(x)
    return isinstance(value, Plain), type(value).__module__, make.cache_info().hits


if __name__ == "__main__":
    make(3)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        print(pool.map(in_worker, [3, 4]))
    value = make(4)
    print(isinstance(value, Plain), make.cache_info())
"""


def test_spawn_workers_share_script_class_results_with_the_parent_and_importers(
    tmp_path: Path,
) -> None:
    (tmp_path / "spawnscript.py").write_text(SPAWN_SCRIPT)
    env = {"STORE_DIR": str(tmp_path / "store")}
    output = run_script(tmp_path, "spawnscript.py", env=env).stdout.splitlines()
    # The worker hits the parent's make(3) and stores make(4), which the parent then hits.
    assert output == [
        "[(True, '__mp_main__', 1), (True, '__mp_main__', 1)]",
        "True CacheInfo(hits=1, misses=1)",
    ]
    # A process that imports the script finds the worker's Plain as its own spawnscript.Plain.
    imported = run_python(
        """
        import spawnscript
        value = spawnscript.make(4)
        print(isinstance(value, spawnscript.Plain), spawnscript.make.cache_info())
        """,
        cwd=tmp_path,
        env=env,
    )
    assert imported.stdout.startswith("True CacheInfo(hits=1, misses=0)")


def test_old_pickles_naming_main_still_decode_in_the_running_script() -> None:
    data = FORMAT_PICKLE + b"c__main__\nPoint\n."
    sys.modules["__main__"].Point = Point  # type: ignore[attr-defined]
    try:
        assert decode_value(data) is Point
    finally:
        del sys.modules["__main__"].Point  # type: ignore[attr-defined]


# --- 5. well-formed but not buildable here: UndecodableValue, with what happened -----------


@pytest.mark.parametrize(
    ("data", "allow_pickle", "message"),
    [
        (
            planted(ValueExtension.DATACLASS, "golden_types", "Gone", {}),
            True,
            r"class golden_types\.Gone is not importable here: golden_types has no Gone",
        ),
        (
            planted(ValueExtension.ENUM, "no_such_module_here", "X", "A"),
            True,
            r"class no_such_module_here\.X is not importable here",
        ),
        (
            planted(ValueExtension.ENUM, "golden_types", "Color", "PURPLE"),
            True,
            "has no member 'PURPLE'",
        ),
        (
            FORMAT_PICKLE + b"cgolden_types\nGone\n.",
            True,
            r"class golden_types\.Gone is not importable here",
        ),
        (
            FORMAT_PICKLE + b"cno_such_module_here\nX\n.",
            True,
            r"class no_such_module_here\.X is not importable here",
        ),
        (FORMAT_PICKLE + pickle.dumps(1), False, "refused: the value is a pickle"),
    ],
)
def test_values_that_cannot_be_rebuilt_here_say_why(
    data: bytes, allow_pickle: bool, message: str
) -> None:
    with pytest.raises(UndecodableValue, match=message):
        decode_value(data, allow_pickle=allow_pickle)


def test_damaged_bytes_are_corrupt_but_not_undecodable() -> None:
    for data in (FORMAT_MSGPACK + b"\x92", FORMAT_PICKLE + b"\x80\x05garbage", b"\x09"):
        with pytest.raises(CorruptEntry) as raised:
            decode_value(data)
        assert not isinstance(raised.value, UndecodableValue)


def test_undecodable_value_is_a_corrupt_entry() -> None:
    assert issubclass(UndecodableValue, CorruptEntry)


def test_script_names_are_written_into_pickles_for_classes_of_main(tmp_path: Path) -> None:
    # Checked at the byte level: the pickle holds the script's name, never __main__.
    (tmp_path / "namedscript.py").write_text(
        "import sys\n"
        "from persistmemo._codec.encoding import encode_value\n"
        "class Plain:\n"
        "    pass\n"
        "sys.stdout.write(encode_value([Plain(), Plain]).hex())\n"
    )
    data = bytes.fromhex(run_script(tmp_path, "namedscript.py", env={}).stdout)
    assert b"namedscript" in data
    assert b"__main__" not in data
