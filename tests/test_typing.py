"""The decorated function keeps its signature for type checkers (mypy, strict)."""

from __future__ import annotations

import pytest

from conftest import REPO

USAGE = REPO / "tests" / "typing" / "usage.py"


@pytest.mark.slow
def test_memoized_functions_keep_their_signatures_for_mypy() -> None:
    api = pytest.importorskip("mypy.api")
    out, _, _ = api.run(["--strict", "--no-incremental", str(USAGE)])
    lines = out.splitlines()
    revealed = [line.split("Revealed type is ")[1] for line in lines if "Revealed" in line]
    # load("x"), fetch.key("u"), cache_info().hits, Model().predict(1), store.memo, await get
    assert revealed[:4] == ['"dict[str, int]"', '"str"', '"int"', '"str"']
    assert revealed[5] == '"int"'
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 2, out
    assert 'incompatible type "int"; expected "str"' in errors[0]
    assert 'incompatible type "str"; expected "bool"' in errors[1]
