"""scikit-learn's own pipeline-memory tests pass with persistmemo.Memory as the memory.

They run as scikit-learn ships them (``sklearn/tests/test_pipeline.py -k memory``, collected
from the installed package with its own conftest), in a fresh pytest process whose plugin
replaces ``joblib.Memory`` with ``persistmemo.Memory`` (tests/sklearn_memory_plugin.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


@pytest.mark.slow
def test_scikit_learns_pipeline_memory_tests_pass_with_persistmemo(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "TMPDIR": str(tmp_path),  # the tests make their cache directories with mkdtemp()
    }
    command = [
        sys.executable, "-m", "pytest", "--pyargs", "sklearn.tests.test_pipeline",
        "-k", "memory", "-p", "sklearn_memory_plugin", "-p", "no:cacheprovider",
        "-W", "error::persistmemo.PersistmemoWarning", "-q", "--rootdir", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.search(r"(\d+) passed", output)
    assert passed is not None, output
    # test_pipeline_memory and make_pipeline's (scikit-learn releases for Python 3.10 have
    # these two; later ones add a third)
    assert int(passed.group(1)) >= 2, output
    assert not re.search(r"\d+ (failed|error)", output), output
    stood_in = re.search(r"persistmemo.Memory stood in (\d+) times, (\d+) hits", output)
    assert stood_in is not None, output
    assert int(stood_in.group(1)) >= 2, output
    assert int(stood_in.group(2)) >= 1, output
