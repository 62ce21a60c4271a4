"""The benchmark code runs end to end (tiny sizes, no assertion on speed), so it cannot rot."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conftest import REPO


def _benchmark_module(name: str) -> ModuleType:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One run of every scenario at tiny sizes, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("bench")
    return _benchmark_module("run").run("smoke", out=out), out


@pytest.mark.slow
def test_every_benchmark_scenario_runs_and_writes_its_report(
    smoke_run: tuple[dict[str, Any], Path],
) -> None:
    results, tmp_path = smoke_run
    scenarios = {row["scenario"] for row in results["rows"]}
    assert "hit, small int" in scenarios
    assert "miss + store, distinct keys" in scenarios
    systems = {row["system"] for row in results["rows"] if row["scenario"] == "hit, small int"}
    assert {"persistmemo", "dict memo", "raw diskcache get", "joblib.Memory", "cachier"} <= systems
    # A system that cannot run yet (an option not landed) is a row with a note, not a time.
    # (A time over a function's own is a difference: at smoke sizes it may be negative.)
    assert all(
        row["seconds"] > 0
        for row in results["rows"]
        if row["seconds"] is not None and not row.get("over_function")
    )
    assert all(len(row["samples"]) >= 1 for row in results["rows"] if row["seconds"] is not None)
    assert all(
        row["note"].startswith("skipped") for row in results["rows"] if row["seconds"] is None
    )
    table = (tmp_path / "latest.md").read_text()
    assert "x raw diskcache get" in table
    assert (tmp_path / "latest.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "latest.json").read_text())["rows"]


@pytest.mark.slow
def test_data_and_script_path_scenarios_measure_each_system_the_issues_name(
    smoke_run: tuple[dict[str, Any], Path],
) -> None:
    results, tmp_path = smoke_run
    systems: dict[str, set[str]] = {}
    for row in results["rows"]:
        systems.setdefault(row["scenario"].split(" (")[0], set()).add(row["system"])
    assert systems["hit, large float64 array result"] >= {
        "persistmemo",
        "persistmemo mmap=True",
        "np.load, .npy in the page cache",
        "joblib.Memory",
        "joblib.Memory mmap_mode='r'",
    }
    assert systems["miss + store, large float64 array"] == {
        "persistmemo",
        "np.save",
        "joblib.Memory",
    }
    assert systems["hit, DataFrame result"] == {"persistmemo", "joblib.Memory"}
    assert systems["first hit in a fresh process, DataFrame result"] == {
        "persistmemo",
        "joblib.Memory",
    }
    assert systems["key of a DataFrame argument"] == {"persistmemo", "joblib.hash"}
    assert systems["cold process"] >= {
        "python -c pass",
        "import persistmemo",
        "from persistmemo import memo",
        "persistmemo @memo script, one hit",
        "diskcache memoize script, one hit",
    }
    # The script is timed as a re-run sees it: a hit, its version read and not derived again.
    (script,) = [
        row for row in results["rows"] if row["system"] == "persistmemo @memo script, one hit"
    ]
    assert script["note"].startswith("a hit; the version read, not derived")
    claimed = {
        row["system"]: row
        for row in results["rows"]
        if row["scenario"].startswith("miss + store, a function of")
    }
    assert set(claimed) == {
        "the function alone",
        "persistmemo",
        "persistmemo lock=False",
        "diskcache memoize",
        "raw diskcache set",
    }
    assert claimed["persistmemo"]["over_function"]
    table = (tmp_path / "latest.md").read_text()
    assert "## targets" in table
    assert "| 11 | cold script vs the diskcache memoize script |" in table
    assert "| 10 | key of a DataFrame vs joblib.hash (10x faster) |" in table


def test_only_takes_comma_separated_scenarios_and_groups_in_run_order() -> None:
    run = _benchmark_module("run")
    assert run.selected("data,cold") == ["cold", "data"]
    assert run.selected(["misses", "issue10"]) == ["misses", "large", "data"]
    assert run.selected(None) == list(run.SCENARIOS)
    with pytest.raises(ValueError, match="unknown scenario 'bogus'; choose from warm"):
        run.selected("data,bogus")


def test_targets_table_says_met_not_met_and_skipped_against_the_same_run() -> None:
    report = _benchmark_module("report")
    cold = "cold process (whole-process wall time)"
    array = "hit, large float64 array result (100 MB)"
    rows = [
        {"scenario": cold, "system": "python -c pass", "seconds": 0.020},
        {"scenario": cold, "system": "import persistmemo", "seconds": 0.027},
        {"scenario": cold, "system": "persistmemo @memo script, one hit", "seconds": 0.060},
        {"scenario": cold, "system": "diskcache memoize script, one hit", "seconds": 0.050},
        {"scenario": array, "system": "np.load, .npy in the page cache", "seconds": 0.015},
        {"scenario": array, "system": "persistmemo", "seconds": 0.020},
        {
            "scenario": array,
            "system": "persistmemo mmap=True",
            "seconds": None,
            "note": "skipped: x",
        },
    ]
    lines = report.targets(rows)
    assert (
        "| 11 | import persistmemo over bare python -c pass | 27.00 ms | 20.00 ms "
        "| +7.0 ms | one figure | ≤ +10 ms | not judged (one figure: met) |"
    ) in lines
    assert any(
        "cold script" in line
        and "| 1.20x | one figure | ≤ 1x | not judged (one figure: not met) |" in line
        for line in lines
    )
    assert any(
        "large array hit vs np.load" in line
        and "| 1.33x | one figure | ≤ 1.5x | not judged (one figure: met) |" in line
        for line in lines
    )
    assert any("mmap=True" in line and line.endswith("| skipped: x |") for line in lines)
    assert not any("joblib" in line for line in lines)  # no baseline row measured: no target line


def test_mmap_row_tells_a_memory_map_from_a_copy(tmp_path: Path) -> None:
    import mmap

    import numpy

    run = _benchmark_module("run")
    path = tmp_path / "a.npy"
    numpy.save(path, numpy.arange(16.0))
    mapped = numpy.load(path, mmap_mode="r")
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as raw:
        view = numpy.frombuffer(raw, dtype="<f8", offset=128)
        assert run._memory_mapped(view[2:].reshape(2, 7))
        del view
    assert run._memory_mapped(mapped)
    assert run._memory_mapped(mapped[3:])
    assert not run._memory_mapped(numpy.array(mapped))
    assert not run._memory_mapped(numpy.arange(3))


def test_merge_replaces_only_the_rerun_scenarios_rows_and_says_when_each_ran(
    tmp_path: Path,
) -> None:
    run = _benchmark_module("run")
    first = run.run("smoke", "features,keys", out=tmp_path)
    kept = [row for row in first["rows"] if row["part"] == "features"]
    second = run.run("smoke", "keys", out=tmp_path, merge=True)
    assert [row for row in second["rows"] if row["part"] == "features"] == kept
    keys = [row for row in second["rows"] if row["part"] == "keys"]
    assert len(keys) == len([row for row in first["rows"] if row["part"] == "keys"])
    assert [row["part"] for row in second["rows"]] == sorted(
        (row["part"] for row in second["rows"]), key=list(run.SCENARIOS).index
    )
    assert set(second["dates"]) == {"earlier run", "keys"}
    assert "Scenarios rerun and merged" in (tmp_path / "latest.md").read_text()
    with pytest.raises(ValueError, match="holds a quick run; rerun with the same sizes"):
        run.run("full", "features", out=tmp_path, merge=True)


def test_a_target_is_met_only_when_the_whole_spread_of_the_rounds_is_within_it() -> None:
    report = _benchmark_module("report")
    hit = "hit, small int"

    def lines(ours: list[float], raw: list[float]) -> list[str]:
        rows = [
            {"scenario": hit, "system": "persistmemo", "seconds": sorted(ours)[1], "samples": ours},
            {
                "scenario": hit,
                "system": "raw diskcache get",
                "seconds": sorted(raw)[1],
                "samples": raw,
            },
        ]
        return [line for line in report.targets(rows) if line.startswith("| 22 |")]

    # Rounds paired: per-round ratios 0.7, 0.8, 0.84 (median 0.8, IQR 0.75-0.82).
    (line,) = lines([7.0, 8.0, 8.4], [10.0, 10.0, 10.0])
    assert line.endswith("| 0.80x | 0.75 to 0.82x | ≤ 0.85x | met |")
    (line,) = lines([7.0, 8.0, 10.0], [10.0, 10.0, 10.0])
    assert line.endswith("| 0.80x | 0.75 to 0.90x | ≤ 0.85x | unsure: the spread crosses it |")
    (line,) = lines([9.0, 9.5, 10.0], [10.0, 10.0, 10.0])
    assert line.endswith("| 0.95x | 0.93 to 0.97x | ≤ 0.85x | not met |")


def test_a_quick_run_writes_outside_the_published_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _benchmark_module("run")
    monkeypatch.setattr(run, "RESULTS", tmp_path / "results")
    run.main(["--quick", "--only", "features"])
    assert "# persistmemo benchmark (quick run)" in capsys.readouterr().out
    assert (tmp_path / "results" / "quick" / "latest.md").exists()
    assert not (tmp_path / "results" / "latest.md").exists()
    assert run.default_out(False, ["features"], merge=False) == tmp_path / "results" / "partial"
    assert run.default_out(False, list(run.SCENARIOS), merge=False) == tmp_path / "results"
    ignored = (REPO / "benchmarks" / ".gitignore").read_text().split()
    assert {"results/quick/", "results/partial/"} <= set(ignored)


def test_a_failing_scenario_keeps_the_results_of_those_that_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _benchmark_module("run")

    def broken(tmp: Path, settings: Any) -> list[Any]:
        raise ModuleNotFoundError("No module named 'pandas'")

    monkeypatch.setattr(run, "SCENARIOS", {"features": run.feature_costs, "broken": broken})
    with pytest.raises(run.ScenariosFailed, match="broken: ModuleNotFoundError"):
        run.run("smoke", "features,broken", out=tmp_path)
    written = json.loads((tmp_path / "latest.json").read_text())
    assert {row["part"] for row in written["rows"]} == {"features"}
    assert written["failed"] == {"broken": "ModuleNotFoundError: No module named 'pandas'"}
    assert "**Incomplete run**: broken failed" in (tmp_path / "latest.md").read_text()


def test_a_missing_package_is_named_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _benchmark_module("run")
    monkeypatch.setitem(run.NEEDS, "features", ["persistmemo_no_such_package"])
    with pytest.raises(ValueError, match=r"persistmemo_no_such_package \(features\).*\[bench"):
        run.run("smoke", "features", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
