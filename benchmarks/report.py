"""The benchmark's table (ratios to the baselines) and its chart (log-scale latency)."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

BASELINES = (
    "dict memo",
    "raw diskcache get",
    "raw diskcache set",
    "raw redis-py GET",
    "raw redis-py SET",
    "persistmemo Store (disk)",
)


@dataclass(frozen=True)
class Target:
    """What an issue asks of one row against a baseline in the same run: a ratio
    (``system / baseline <= limit``) or, for ``kind="difference"``, added seconds."""

    issue: int
    what: str
    scenario: str  # a pattern: the scenario's name carries the run's sizes
    system: str
    baseline: str
    limit: float
    kind: str = "ratio"


TARGETS = (
    Target(
        10,
        "large array hit vs np.load",
        "hit, large float64 array result (*)",
        "persistmemo",
        "np.load, .npy in the page cache",
        1.5,
    ),
    Target(
        10,
        "large array hit vs joblib.Memory hit",
        "hit, large float64 array result (*)",
        "persistmemo",
        "joblib.Memory",
        1.0,
    ),
    Target(
        10,
        "large array hit, mmap=True, vs np.load",
        "hit, large float64 array result (*)",
        "persistmemo mmap=True",
        "np.load, .npy in the page cache",
        0.05,
    ),
    Target(
        10,
        "large array miss + store vs np.save",
        "miss + store, large float64 array (*)",
        "persistmemo",
        "np.save",
        1.5,
    ),
    Target(
        10,
        "large array miss + store vs joblib.Memory miss",
        "miss + store, large float64 array (*)",
        "persistmemo",
        "joblib.Memory",
        1.0,
    ),
    Target(
        10,
        "DataFrame hit vs joblib.Memory hit",
        "hit, DataFrame result (*)",
        "persistmemo",
        "joblib.Memory",
        1.0,
    ),
    Target(
        10,
        "key of a DataFrame vs joblib.hash (10x faster)",
        "key of a DataFrame argument (*)",
        "persistmemo",
        "joblib.hash",
        0.1,
    ),
    Target(
        10,
        "10 MB bytes hit vs raw diskcache get",
        "hit, 10 MB bytes result",
        "persistmemo",
        "raw diskcache get",
        2.0,
    ),
    Target(
        10,
        "10 MB array hit vs raw diskcache get",
        "hit, 10 MB float64 array result",
        "persistmemo",
        "raw diskcache get",
        2.0,
    ),
    Target(
        11,
        "cold script vs the diskcache memoize script",
        "cold process (*)",
        "persistmemo @memo script, one hit",
        "diskcache memoize script, one hit",
        1.0,
    ),
    Target(
        11,
        "import persistmemo over bare python -c pass",
        "cold process (*)",
        "import persistmemo",
        "python -c pass",
        0.010,
        "difference",
    ),
    Target(
        11,
        "from persistmemo import memo over bare python -c pass",
        "cold process (*)",
        "from persistmemo import memo",
        "python -c pass",
        0.010,
        "difference",
    ),
    Target(
        11,
        "miss + store, default settings, vs raw diskcache set",
        "miss + store, distinct keys",
        "persistmemo",
        "raw diskcache set",
        1.5,
    ),
    Target(
        11,
        "bytes on disk per small entry vs diskcache memoize",
        "bytes on disk per small entry (*)",
        "persistmemo",
        "diskcache memoize",
        1.5,
    ),
    Target(
        11,
        "warm hit (small int) vs raw diskcache get",
        "hit, small int",
        "persistmemo",
        "raw diskcache get",
        1.0,
    ),
)


def _duration(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _scenarios(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["scenario"], []).append(row)
    return grouped


def _value(row: dict[str, Any]) -> str:
    if row["seconds"] is None:
        return "skipped"
    if row.get("unit") == "bytes":
        return f"{row['seconds']:,.0f} bytes"
    return _duration(row["seconds"])


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issues' targets as a Markdown table, for those whose rows this run measured."""
    lines = [
        "## targets",
        "",
        "Each measured against its baseline in the same run (ratio = persistmemo / baseline).",
        "",
        "| issue | what | persistmemo | baseline | measured | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    found = False
    for target in TARGETS:

        def pick(system: str, target: Target = target) -> dict[str, Any] | None:
            return next(
                (
                    row
                    for row in rows
                    if row["system"] == system and fnmatchcase(row["scenario"], target.scenario)
                ),
                None,
            )

        ours, base = pick(target.system), pick(target.baseline)
        if ours is None or base is None:
            continue
        found = True
        if ours["seconds"] is None or base["seconds"] is None:
            measured, wanted, met = "", "", ours.get("note") or base.get("note", "")
        elif target.kind == "difference":
            added = ours["seconds"] - base["seconds"]
            measured, wanted = f"{added * 1e3:+.1f} ms", f"≤ +{target.limit * 1e3:g} ms"
            met = "met" if added <= target.limit else "not met"
        else:
            ratio = ours["seconds"] / base["seconds"]
            measured, wanted = f"{ratio:.2f}x", f"≤ {target.limit:g}x"
            met = "met" if ratio <= target.limit else "not met"
        lines.append(
            f"| {target.issue} | {target.what} | {_value(ours)} | {_value(base)} "
            f"| {measured} | {wanted} | {met} |"
        )
    return [*lines, ""] if found else []


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: one table per scenario, with ratios to its baselines."""
    machine = results["machine"]
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    lines = [
        "# persistmemo benchmark" + (" (quick run)" if results["quick"] else ""),
        "",
        f"{machine['date']}; Python {machine['python']}, SQLite {machine['sqlite']}, "
        f"{machine['cpus']} CPUs, {machine['platform']}.",
        f"Packages: {packages}.",
        "",
    ]
    if results.get("dates"):
        runs = "; ".join(f"{part}: {date}" for part, date in results["dates"].items())
        lines += [f"Scenarios rerun and merged (each scenario from one run): {runs}.", ""]
    lines += [
        "Medians of repeated runs; every system measured in the same run. Ratios are to the",
        "scenario's baselines (the textbook dict memo, raw diskcache get/set of the same bytes,",
        "np.load/np.save of the same array, joblib.Memory, the same script with diskcache).",
        "",
    ]
    lines += targets(results["rows"])
    for scenario, rows in _scenarios(results["rows"]).items():
        bases = {
            row["system"]: row["seconds"]
            for row in rows
            if (row["system"] in BASELINES or row.get("baseline")) and row["seconds"] is not None
        }
        headers = ["system", "value", *(f"x {base}" for base in bases), "notes"]
        lines += [f"## {scenario}", "", "| " + " | ".join(headers) + " |"]
        lines.append("|" + "---|" * len(headers))
        for row in rows:
            value = _value(row)
            ratios = [
                f"{row['seconds'] / base:.2f}" if row["seconds"] is not None else ""
                for base in bases.values()
            ]
            notes = [row.get("note", "")]
            if row.get("over_bare") is not None:
                notes.append(f"{row['over_bare'] * 1e3:+.1f} ms over python -c pass")
            if "mb_per_s" in row:
                notes.append(f"{row['mb_per_s']:,.0f} MB/s")
            if "hits_per_second" in row:
                notes.append(f"{row['hits_per_second']:,.0f} hits/s")
            if "share_of_hit" in row:
                notes.append(f"{row['share_of_hit']:.1%} of a hit")
            lines.append(
                "| "
                + " | ".join([row["system"], value, *ratios, "; ".join(n for n in notes if n)])
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    """Log-scale latency per system and scenario, for the latency scenarios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wanted = [
        "hit, small int",
        "hit, dict of 100 str->float",
        "hit, list of 1,000 floats",
        "miss + store, distinct keys",
    ]
    grouped = _scenarios(results["rows"])
    scenarios = [name for name in wanted if name in grouped]
    if not scenarios:
        return
    system_names = list(dict.fromkeys(row["system"] for name in scenarios for row in grouped[name]))
    figure, axis = plt.subplots(figsize=(11, 5.5))
    width = 0.8 / len(system_names)
    colors = plt.get_cmap("tab20").colors
    for index, system in enumerate(system_names):
        positions, values = [], []
        for position, scenario in enumerate(scenarios):
            match = [row["seconds"] for row in grouped[scenario] if row["system"] == system]
            if match:
                positions.append(position + (index - len(system_names) / 2) * width + width / 2)
                values.append(match[0] * 1e6)
        bold = system.startswith("persistmemo")
        axis.bar(
            positions,
            values,
            width,
            label=system,
            color=colors[index % len(colors)],
            edgecolor="black" if bold else "none",
            linewidth=1.2 if bold else 0,
        )
    axis.set_yscale("log")
    axis.set_ylabel("latency per call (µs, log scale)")
    axis.set_xticks(range(len(scenarios)))
    axis.set_xticklabels(scenarios)
    axis.set_title("persistmemo vs in-memory memos, raw diskcache/SQLite and other disk memoizers")
    axis.grid(axis="y", which="major", alpha=0.3)
    axis.legend(fontsize=8, ncol=2, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
