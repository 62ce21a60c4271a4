"""The benchmark's table (ratios to the baselines, the spread over rounds, the issues'
targets) and its chart (log-scale latency)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from measure import quartiles

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
    """What an issue asks of one row, against a baseline in the same run: a ratio
    (``system / baseline <= limit``), for ``kind="difference"`` added seconds, for
    ``kind="faster"`` a speedup (``baseline / system >= limit``); for ``kind="absolute"``
    the row's own seconds (no baseline)."""

    issue: int
    what: str
    scenario: str  # a pattern: the scenario's name carries the run's sizes
    system: str
    baseline: str | None
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
        23,
        "DataFrame first hit in a fresh process vs joblib.Memory's",
        "first hit in a fresh process, DataFrame result (*)",
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
        23,
        "100 MB verified hit vs np.load",
        "hit, large float64 array result (*)",
        "persistmemo",
        "np.load, .npy in the page cache",
        1.3,
    ),
    Target(
        23,
        "100 MB verified hit vs joblib.Memory's unverified hit",
        "hit, large float64 array result (*)",
        "persistmemo",
        "joblib.Memory",
        0.85,
    ),
    Target(
        23,
        "DataFrame hit, repeated, vs joblib.Memory hit",
        "hit, DataFrame result (*)",
        "persistmemo",
        "joblib.Memory",
        1.0,
    ),
    Target(
        23,
        "key of a DataFrame vs joblib.hash (10x faster)",
        "key of a DataFrame argument (*)",
        "persistmemo",
        "joblib.hash",
        0.1,
    ),
    Target(
        23,
        "10 MB array hit vs raw diskcache get of its bytes",
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
        "miss + store, default settings (a claiming function), over the function, vs raw "
        "diskcache set",
        "miss + store, a function of * (time over its own)",
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
    Target(
        22,
        "warm hit f(123) vs raw diskcache get of the same entry",
        "hit, small int",
        "persistmemo",
        "raw diskcache get",
        0.85,
    ),
    Target(
        22,
        "key of a dict of 100 str->float (~20 µs)",
        "key of a dict of 100 str->float",
        "persistmemo",
        None,
        20e-6,
        "absolute",
    ),
    Target(
        22,
        "miss of a small int, default settings (a claiming function), over the function, "
        "vs raw diskcache set",
        "miss + store, a function of * (time over its own)",
        "persistmemo",
        "raw diskcache set",
        0.8,
    ),
    Target(
        22,
        "bytes on disk per small entry vs diskcache memoize",
        "bytes on disk per small entry (*)",
        "persistmemo",
        "diskcache memoize",
        1.5,
    ),
    Target(
        22,
        "cold re-run script, one hit, vs the diskcache memoize script",
        "cold process (*)",
        "persistmemo @memo script, one hit",
        "diskcache memoize script, one hit",
        0.95,
    ),
    Target(
        22,
        "5,000 hits: f.map vs a loop of calls (3x faster)",
        "5,000 hits: f.map vs a loop",
        "persistmemo, f.map",
        "persistmemo, loop of calls",
        3.0,
        "faster",
    ),
)


def _duration(seconds: float) -> str:
    size = abs(seconds)
    if size < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if size < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    if size < 1:
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


def _samples(row: dict[str, Any]) -> list[float]:
    """The rounds' figures of a measured row (a run before they were kept: its median)."""
    return row.get("samples") or [row["seconds"]]


def _spread(row: dict[str, Any]) -> str:
    """The interquartile range of the row's rounds, or "" for a single figure."""
    samples = _samples(row)
    if row["seconds"] is None or len(samples) < 2:
        return ""
    first, _, third = quartiles(samples)
    return f"{_duration(first)} to {_duration(third)}"


def _pairs(
    ours: dict[str, Any], base: dict[str, Any], combine: Callable[[float, float], float]
) -> tuple[float, float, float]:
    """(low, middle, high) of ``combine(ours, base)`` over the rounds: the quartiles of the
    per-round figures when both rows took turns in the same rounds, otherwise the widest
    combination of their interquartile ranges around the combination of their medians."""
    mine, theirs = _samples(ours), _samples(base)
    if len(mine) == len(theirs):
        return quartiles([combine(a, b) for a, b in zip(mine, theirs, strict=True)])
    ends = [combine(a, b) for a in quartiles(mine)[::2] for b in quartiles(theirs)[::2]]
    return min(ends), combine(ours["seconds"], base["seconds"]), max(ends)


def _verdict(low: float, high: float, limit: float, higher_is_better: bool) -> str:
    """Met only when the whole spread is on the right side of the limit."""
    if higher_is_better:
        low, high, limit = -high, -low, -limit
    if high <= limit:
        return "met"
    if low > limit:
        return "not met"
    return "unsure: the spread crosses it"


def _target_line(target: Target, ours: dict[str, Any], base: dict[str, Any] | None) -> str:
    baseline = "" if base is None else _value(base)
    if ours["seconds"] is None or (base is not None and base["seconds"] is None):
        note = ours.get("note") or (base or {}).get("note", "")
        return f"| {target.issue} | {target.what} | {_value(ours)} | {baseline} |  |  |  | {note} |"
    limit = target.limit
    if target.kind == "absolute":
        low, _, high = quartiles(_samples(ours))
        measured, spread = _value(ours), _spread(ours)
        wanted = f"~{limit * 1e6:g} µs"
        met = _verdict(low, high, limit, higher_is_better=False)
    elif base is None:
        raise ValueError(f"target {target.what!r} needs a baseline")
    elif target.kind == "difference":
        low, middle, high = _pairs(ours, base, lambda a, b: a - b)
        measured = f"{middle * 1e3:+.1f} ms"
        spread = f"{low * 1e3:+.1f} to {high * 1e3:+.1f} ms"
        wanted = f"≤ +{limit * 1e3:g} ms"
        met = _verdict(low, high, limit, higher_is_better=False)
    elif target.kind == "faster":
        low, middle, high = _pairs(ours, base, lambda a, b: b / a)
        measured = f"{middle:.2f}x faster"
        spread = f"{low:.2f} to {high:.2f}x"
        wanted = f"≥ {limit:g}x faster"
        met = _verdict(low, high, limit, higher_is_better=True)
    else:
        low, middle, high = _pairs(ours, base, lambda a, b: a / b)
        measured = f"{middle:.2f}x"
        spread = f"{low:.2f} to {high:.2f}x"
        wanted = f"≤ {limit:g}x"
        met = _verdict(low, high, limit, higher_is_better=False)
    if len(_samples(ours)) < 2 and (base is None or len(_samples(base)) < 2):
        if ours.get("unit") == "bytes":
            spread = "exact"
        else:  # a time without a spread proves nothing on a shared machine
            spread, met = "one figure", f"not judged (one figure: {met})"
    return (
        f"| {target.issue} | {target.what} | {_value(ours)} | {baseline} "
        f"| {measured} | {spread} | {wanted} | {met} |"
    )


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issues' targets as a Markdown table, for those whose rows this run measured."""
    lines = [
        "## targets",
        "",
        "Each measured against its baseline in the same run (ratio = persistmemo / baseline):",
        "the median and the interquartile range of the per-round ratios (the systems take",
        "turns in every round). A target is met only when the whole spread is within it.",
        "",
        "| issue | what | persistmemo | baseline | measured | spread | target | met |",
        "|---|---|---|---|---|---|---|---|",
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

        ours = pick(target.system)
        base = None if target.baseline is None else pick(target.baseline)
        if ours is None or (target.baseline is not None and base is None):
            continue
        found = True
        lines.append(_target_line(target, ours, base))
    return [*lines, ""] if found else []


def _header(results: dict[str, Any]) -> list[str]:
    machine = results["machine"]
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    commit = machine.get("commit", "unknown")
    if machine.get("dirty"):
        commit += " with uncommitted changes"
    elif machine.get("dirty") is False:
        commit += " (clean tree)"
    facts = [
        machine.get("cpu"),
        f"{machine['cpus']} CPUs"
        + (
            f" ({machine['cpus_usable']} usable)"
            if machine.get("cpus_usable") not in (None, machine["cpus"])
            else ""
        ),
        f"{machine['memory_gib']} GiB" if machine.get("memory_gib") else None,
        machine["platform"],
    ]
    lines = [
        "# persistmemo benchmark" + (" (quick run)" if results["quick"] else ""),
        "",
        f"{machine['date']}; commit {commit}.",
        "Machine: " + ", ".join(fact for fact in facts if fact) + ".",
    ]
    if machine.get("load"):
        load = ", ".join(f"{value:.2f}" for value in machine["load"])
        end = ", ".join(f"{value:.2f}" for value in machine.get("load_end") or [])
        lines.append(f"Load average (1, 5, 15 min): {load} at the start, {end} at the end.")
    lines += [
        f"Python {machine['python']}, SQLite {machine['sqlite']}.",
        f"Packages: {packages}.",
        "",
    ]
    if results.get("failed") or results.get("pending"):
        parts = [f"{name} failed ({error})" for name, error in results.get("failed", {}).items()]
        if results.get("pending"):
            parts.append("not run yet: " + ", ".join(results["pending"]))
        lines += ["**Incomplete run**: " + "; ".join(parts) + ".", ""]
    if results.get("dates"):
        runs = "; ".join(f"{part}: {date}" for part, date in results["dates"].items())
        lines += [f"Scenarios rerun and merged (each scenario from one run): {runs}.", ""]
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: one table per scenario, with ratios to its baselines."""
    lines = _header(results)
    lines += [
        "Medians over rounds in which the systems take turns; the spread is the interquartile",
        "range of the rounds' figures. Ratios are of the medians, to the scenario's baselines",
        "(the textbook dict memo, raw diskcache get/set of the same bytes, np.load/np.save of",
        "the same array, joblib.Memory, joblib.hash, the same script with diskcache).",
        "",
    ]
    lines += targets(results["rows"])
    for scenario, rows in _scenarios(results["rows"]).items():
        bases = {
            row["system"]: row["seconds"]
            for row in rows
            if (row["system"] in BASELINES or row.get("baseline")) and row["seconds"] is not None
        }
        rounds = (
            max(len(_samples(row)) for row in rows if row["seconds"] is not None)
            if any(row["seconds"] is not None for row in rows)
            else 0
        )
        spread = f"spread ({rounds} rounds)" if rounds > 1 else "spread"
        headers = ["system", "value", spread, *(f"x {base}" for base in bases), "notes"]
        lines += [f"## {scenario}", "", "| " + " | ".join(headers) + " |"]
        lines.append("|" + "---|" * len(headers))
        for row in rows:
            ratios = [
                f"{row['seconds'] / base:.2f}"
                if row["seconds"] is not None and not row.get("no_ratio")
                else ""
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
            if "speedup" in row:
                notes.append(f"{row['speedup']:.2f}x faster")
            cells = [row["system"], _value(row), _spread(row), *ratios]
            lines.append("| " + " | ".join([*cells, "; ".join(n for n in notes if n)]) + " |")
        lines.append("")
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> bool:
    """Log-scale latency per system and scenario, for the latency scenarios; False when the
    results have none of them (nothing drawn)."""
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
        return False
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
    figure.savefig(path, dpi=110, format="png")
    plt.close(figure)
    return True
