"""The first call's cost: each source file is parsed once per process, not once per function."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from persistmemo import source_index
from persistmemo.versioning import code_version


def test_each_source_file_is_parsed_once_for_every_function_that_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "coldpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for number in range(3):
        helpers = "\n".join(f"def h{i}(x):\n    return h{i + 1}(x) + {number}\n" for i in range(9))
        (package / f"m{number}.py").write_text(helpers + "\ndef h9(x):\n    return x\n")
    (package / "main.py").write_text(
        "from . import m0, m1, m2\n\n"
        + "\n".join(
            f"def f{i}(x):\n    return m{i % 3}.h0(x) + m{i % 3}.h{i}(x)\n" for i in range(9)
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    main = importlib.import_module("coldpkg.main")
    before = source_index.parse_count
    versions = {code_version(getattr(main, f"f{i}")) for i in range(9)}
    assert len(versions) == 9
    assert source_index.parse_count - before == 4  # main.py, m0.py, m1.py, m2.py
