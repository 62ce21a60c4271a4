"""The benchmark's table (ratios to the baselines) and its chart (log-scale latency)."""

from __future__ import annotations

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
        "Medians of repeated runs; every system measured in the same run. Ratios are to the",
        "scenario's baselines (the textbook dict memo, raw diskcache get/set of the same bytes).",
        "",
    ]
    for scenario, rows in _scenarios(results["rows"]).items():
        bases = {row["system"]: row["seconds"] for row in rows if row["system"] in BASELINES}
        headers = ["system", "value", *(f"x {base}" for base in bases), "notes"]
        lines += [f"## {scenario}", "", "| " + " | ".join(headers) + " |"]
        lines.append("|" + "---|" * len(headers))
        for row in rows:
            value = (
                f"{row['seconds']:,.0f} bytes"
                if row.get("unit") == "bytes"
                else _duration(row["seconds"])
            )
            ratios = [f"{row['seconds'] / base:.2f}" for base in bases.values()]
            notes = [row.get("note", "")]
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
