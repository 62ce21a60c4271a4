"""The benchmark code runs end to end (tiny sizes, no assertion on speed), so it cannot rot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import REPO


def test_every_benchmark_scenario_runs_and_writes_its_report(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import run
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    results = run.run("smoke", out=tmp_path)
    scenarios = {row["scenario"] for row in results["rows"]}
    assert "hit, small int" in scenarios
    assert "miss + store, distinct keys" in scenarios
    systems = {row["system"] for row in results["rows"] if row["scenario"] == "hit, small int"}
    assert {"persistmemo", "dict memo", "raw diskcache get", "joblib.Memory", "cachier"} <= systems
    assert all(row["seconds"] > 0 for row in results["rows"])
    assert "x raw diskcache get" in (tmp_path / "latest.md").read_text()
    assert (tmp_path / "latest.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "latest.json").read_text())["rows"]
