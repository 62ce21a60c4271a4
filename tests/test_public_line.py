"""The public line: what users import, the one exception tree, and old paths kept for a release."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import persistmemo
import persistmemo.errors as errors
import persistmemo.stores

SOURCE = Path(persistmemo.__file__).parent


def test_every_error_is_a_persistmemo_error_and_keeps_its_builtin_base() -> None:
    builtin_bases = {
        errors.UnsupportedType: TypeError,
        errors.UnsupportedCapture: TypeError,
        errors.UnstorableValue: TypeError,
        errors.CorruptEntry: ValueError,
        errors.UndecodableValue: ValueError,
        errors.ComputationFailed: RuntimeError,
        errors.StoreUnreadable: OSError,
        errors.SecretUnavailable: OSError,
    }
    for error, base in builtin_bases.items():
        assert issubclass(error, errors.PersistmemoError)
        assert issubclass(error, base)
    raised = [getattr(errors, name) for name in errors.__all__]
    assert all(
        issubclass(each, (errors.PersistmemoError, errors.PersistmemoWarning)) for each in raised
    )


SIGNALS = {
    "_versioning/basis.py: NotByStat",  # a light walk cannot vouch: derive afresh (never escapes)
    "_codec/out_of_band.py: BadSegment",  # a bad array reference: the codec raises CorruptEntry
}


def test_no_exception_class_is_defined_outside_errors_py() -> None:
    defined = []
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {ast.unparse(base) for base in node.bases}
                if any(base.endswith(("Error", "Exception", "Warning")) for base in bases):
                    defined.append(f"{path.relative_to(SOURCE)}: {node.name}")
    outside = {place for place in defined if not place.startswith("errors.py")}
    assert outside <= SIGNALS


def test_a_key_error_for_an_unsupported_argument_is_caught_as_a_type_error() -> None:
    import tempfile

    from persistmemo import Store, memo

    @memo(store=Store(tempfile.mkdtemp()))
    def load(connection: object) -> int:
        return 1

    with pytest.raises(TypeError, match="connection"):
        load(object())
    with pytest.raises(persistmemo.PersistmemoError):
        load(object())


def test_the_environment_is_read_in_one_module() -> None:
    readers = []
    for path in SOURCE.rglob("*.py"):
        text = path.read_text()
        if "PERSISTMEMO_" in text and ("environ" in text or "getenv" in text):
            for line in text.splitlines():
                if "PERSISTMEMO_" in line and ("environ" in line or "getenv" in line):
                    readers.append(f"{path.relative_to(SOURCE)}: {line.strip()}")
    assert [reader for reader in readers if not reader.startswith("_environment.py")] == []


@pytest.mark.parametrize(
    ("old", "name"),
    [
        ("persistmemo.codec", "CorruptEntry"),
        ("persistmemo.codec", "EXT_TUPLE"),
        ("persistmemo.keys", "KEY_FORMAT"),
        ("persistmemo.keys", "UnsupportedType"),
        ("persistmemo.integrity", "user_secret"),
        ("persistmemo.versioning", "source_index"),
        ("persistmemo.memoized", "ENV_DISABLE"),
        ("persistmemo.decorator", "memo"),
        ("persistmemo.integrity", "Sealer"),
        ("persistmemo.faults", "PersistmemoWarning"),
    ],
)
def test_an_old_import_path_still_works_with_a_deprecation_warning(old: str, name: str) -> None:
    code = (
        "import warnings\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        f"try:\n    from {old} import {name}\n"
        "except DeprecationWarning as warning:\n    print('warned:', warning)\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        f"from {old} import {name}\nprint('found:', {name} is not None)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"warned: {old} is private now" in done.stdout
    assert "found: True" in done.stdout


def test_memo_from_an_old_path_decorates_and_the_new_module_keeps_its_own_spec(
    tmp_path: Path,
) -> None:
    code = (
        "import warnings\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "from persistmemo.decorator import memo\n"
        "import persistmemo.codec, persistmemo._codec\n"
        "@memo\ndef f(x):\n    return x + 1\n"
        "print(f(1), f(1), f.cache_info().hits, persistmemo._codec.__spec__.name)\n"
    )
    env = {**os.environ, "PERSISTMEMO_DIR": str(tmp_path / "store")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "2", "1", "persistmemo._codec"]


def test_the_public_packages_export_their_names_lazily() -> None:
    code = (
        "import sys, persistmemo, persistmemo.stores, persistmemo.errors\n"
        "print(sorted(m for m in sys.modules if m.startswith('persistmemo.')))\n"
        "from persistmemo.stores import Backend, SealedStore, Store\n"
        "print(Backend.__name__, SealedStore.__name__, Store.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded, names = done.stdout.splitlines()
    assert loaded == "['persistmemo._moved', 'persistmemo.errors', 'persistmemo.stores']"
    assert names == "Backend SealedStore Store"
    assert set(persistmemo.stores.__all__) <= set(dir(persistmemo.stores))


def test_a_pickled_script_class_names_the_helper_every_release_reads(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        "import sys, warnings\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "from persistmemo import Store, memo\n"
        "class Point:\n    def __init__(self, x):\n        self.x = x\n"
        "calls = []\n"
        "@memo(store=Store(sys.argv[1]), name='job.point', version='1')\n"
        "def make(x):\n    calls.append(x)\n    return Point(x)\n"
        "print(calls, make(5).x)\n"
    )
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    runs = [
        subprocess.run(
            [sys.executable, str(script), str(tmp_path / "store")],
            capture_output=True,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    assert [run.stdout.strip() for run in runs] == ["[5] 5", "[] 5"], runs[1].stderr
    (stored,) = (tmp_path / "store").rglob("cache.db")
    assert b"persistmemo.codec" in stored.read_bytes()  # the helper's name since pm2
