"""Turn the runs into a markdown table (median, min, max per measure) and a PNG plot."""

from __future__ import annotations

import statistics
from pathlib import Path


def summarize(runs: list[list[dict]]) -> list[dict]:
    """[{"case", "measure", "median", "min", "max", "runs"}] in first-seen order of case and measure."""
    values: dict[tuple[str, str], list[float]] = {}
    notes: dict[str, None] = {}
    for rows in runs:
        for row in rows:
            case = row["case"]
            notes.setdefault(case, None)
            for measure, value in row.items():
                if measure != "case" and isinstance(value, int | float) and not isinstance(value, bool):
                    values.setdefault((case, measure), []).append(float(value))
    summary = []
    for case in notes:
        measures = [(measure, samples) for (name, measure), samples in values.items() if name == case]
        if not measures:
            summary.append({"case": case, "measure": "", "median": None, "min": None, "max": None, "runs": 0})
        for measure, samples in measures:
            summary.append(
                {
                    "case": case,
                    "measure": measure,
                    "median": statistics.median(samples),
                    "min": min(samples),
                    "max": max(samples),
                    "runs": len(samples),
                }
            )
    return summary


def ratio_line(summary: list[dict]) -> str:
    """The headline: the robot route as a share of the bare echo on stock daphne, measured in the same runs."""
    lines = []
    for row in summary:
        if row["case"] == "2 ingest: robot route, everything on" and row["measure"].startswith("% of bare echo"):
            what = "frames/s" if row["measure"] == "% of bare echo on daphne" else "frames per server CPU-second"
            lines.append(
                f"**Robot route / bare echo on stock daphne ({what}): {_number(row['median'])}%** "
                f"(median of {row['runs']}; {_number(row['min'])}–{_number(row['max'])}%)"
            )
    return "".join(f"- {line}\n" for line in lines) + ("\n" if lines else "")


def _number(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:,.0f}"


def markdown(summary: list[dict]) -> str:
    lines = ["| case | measure | median | min | max |", "|---|---|---:|---:|---:|"]
    previous = None
    for row in summary:
        case = row["case"] if row["case"] != previous else ""
        previous = row["case"]
        lines.append(
            f"| {case} | {row['measure']} | {_number(row['median'])} | {_number(row['min'])} | {_number(row['max'])} |"
        )
    return "\n".join(lines)


def plot(summary: list[dict], path: Path) -> bool:
    """Frames/s and ack p99 of robot ingest against offered load. False when there is nothing to plot."""
    by_case: dict[str, dict[str, dict]] = {}
    for row in summary:
        by_case.setdefault(row["case"], {})[row["measure"]] = row
    sweep = sorted(
        (measures["offered/s"]["median"], measures)
        for measures in by_case.values()
        if "offered/s" in measures and "frames/s" in measures
    )
    if not sweep:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offered = [load for load, _ in sweep]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(offered, [m["frames/s"]["median"] for _, m in sweep], "o-", label="robot ingest (paced)")
    left.plot(offered, offered, ":", color="grey", label="offered")
    right.plot(offered, [m["ack p99 ms"]["median"] for _, m in sweep if "ack p99 ms" in m], "o-", label="ack p99")
    headline = by_case.get("2 ingest: robot route, everything on", {})
    if "frames/s" in headline:
        top = headline["frames/s"]["median"]
        left.plot([top], [top], "s", color="C3", label="ingest, 100 clients closed loop")
        if "ack p99 ms" in headline:
            right.plot([top], [headline["ack p99 ms"]["median"]], "s", color="C3", label="closed loop (max)")
    for case, style in (("1 ceiling: Channels echo on daphne", "--"), ("1 ceiling: websockets echo", "-.")):
        if "frames/s" in by_case.get(case, {}):
            left.axhline(by_case[case]["frames/s"]["median"], linestyle=style, color="grey", label=case[11:])
    left.set(xlabel="offered load (frames/s)", ylabel="acknowledged frames/s", title="Throughput")
    right.set(xlabel="offered load (frames/s)", ylabel="ms", title="Ack latency p99")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    left.grid(alpha=0.3)
    right.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
