"""Nothing is lost under contention: writers that meet a locked database wait for it (within
the store's timeout) and store their results, while other processes hold long write
transactions. Real processes on one real store."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO

WRITER = """
import sys
from persistmemo import Store, memo

store = Store(sys.argv[1])
number = int(sys.argv[2])

@memo(store=store, name="busy.f", version="1")
def f(x):
    return [x] * 50

for x in range(number * 1000, number * 1000 + 60):
    assert f(x) == [x] * 50
print("done")
"""

# Holds the write lock for 0.4 s at a time (well within the store's 5 s timeout), writing a
# large row, with short gaps between: what a bulk import or another program's writes do.
HEAVY = """
import os, sqlite3, sys, time
database = os.path.join(sys.argv[1], "cache.db")
connection = sqlite3.connect(database, timeout=30, isolation_level=None)
deadline = time.monotonic() + float(sys.argv[2])
round_ = 0
while time.monotonic() < deadline:
    connection.execute("BEGIN IMMEDIATE")
    connection.execute(
        "INSERT OR REPLACE INTO Cache(key, raw, store_time, expire_time, access_time,"
        " access_count, tag, size, mode, filename, value) VALUES (?, 1, 0, NULL, 0, 0, NULL, 0,"
        " 1, NULL, ?)",
        (f"other:{sys.argv[3]}:{round_ % 5}", os.urandom(200_000)),
    )
    time.sleep(float(sys.argv[4]))
    connection.execute("COMMIT")
    round_ += 1
    time.sleep(0.02)
print("heavy", round_)
"""

CHECK = """
import sys
from persistmemo import Store, memo

store = Store(sys.argv[1])
computed = []

@memo(store=store, name="busy.f", version="1")
def f(x):
    computed.append(x)
    return [x] * 50

for number in range(4):
    for x in range(number * 1000, number * 1000 + 60):
        assert f(x) == [x] * 50
print(len(computed))
"""


@pytest.mark.slow
def test_four_writers_beside_two_heavy_writers_keep_every_result(tmp_path: Path) -> None:
    directory = str(tmp_path / "store")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    # Every store fault is an error here: a result given up for a locked database fails.
    strict = [sys.executable, "-W", "error::persistmemo.PersistmemoWarning", "-c"]
    opened = subprocess.run(
        [
            *strict,
            "from persistmemo import Store; import sys; Store(sys.argv[1]).open()",
            directory,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert opened.returncode == 0, opened.stderr
    heavy = [
        subprocess.Popen(
            [sys.executable, "-c", HEAVY, directory, "8", str(n), "1.2"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    writers = [
        subprocess.Popen(
            [*strict, textwrap.dedent(WRITER), directory, str(n)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    for process in writers + heavy:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    checked = subprocess.run(
        [*strict, CHECK, directory], env=env, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "0"  # every result was stored: all hits
