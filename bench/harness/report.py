"""Reporting: markdown tables (pure) and a PNG of goodput and p99 latency vs offered load.

matplotlib is imported lazily with the Agg backend, so nothing needs a display.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

Cell = str | int | float | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Check:
    """One acceptance check: passed is None when the data to decide is missing.

    A check that is not a ``gate`` is a goal worth reporting: its outcome reads "met" or
    "missed", never PASS or FAIL.
    """

    name: str
    value: str
    target: str
    passed: bool | None
    gate: bool = True


def verdict(passed: bool | None, *, gate: bool = True) -> str:
    """How a check's outcome reads in a table: PASS, FAIL, or n/a when undecided (goals:
    met, missed, n/a)."""
    if not gate:
        return {True: "goal met", False: "goal missed", None: "n/a"}[passed]
    return {True: "PASS", False: "FAIL", None: "n/a"}[passed]


def format_cell(value: Cell, *, digits: int = 1) -> str:
    """A table cell: None and NaN as '-', floats with `digits` decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """A GitHub-flavoured markdown table (numbers right-aligned)."""
    if any(len(row) != len(headers) for row in rows):
        raise ValueError("every row needs one cell per header")
    numeric = [
        all(isinstance(row[col], int | float) or row[col] is None for row in rows) and bool(rows)
        for col in range(len(headers))
    ]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if is_num else "---" for is_num in numeric) + "|",
    ]
    lines += ["| " + " | ".join(format_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CurvePoint:
    """One load step of one system, for the plot."""

    offered_rps: float
    goodput_rps: float
    p99_ms: float | None  # of successful calls; None when there were none


def plot_load_curves(
    curves: Mapping[str, Sequence[CurvePoint]],
    path: Path,
    *,
    title: str,
    deadline_ms: float | None = None,
    capacity_rps: float | None = None,
) -> None:
    """Two panels, one line per system: goodput vs offered load, p99 vs offered load."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (goodput_axes, latency_axes) = pyplot.subplots(1, 2, figsize=(12, 4.8))
    draw_load_curves(
        goodput_axes, latency_axes, curves, deadline_ms=deadline_ms, capacity_rps=capacity_rps
    )
    save_figure(figure, path, title=title, dpi=110)


def save_figure(figure: Any, path: Path, *, title: str, dpi: int = 100) -> None:
    """Title, lay out, write and close a matplotlib figure."""
    from matplotlib import pyplot

    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    pyplot.close(figure)


def publish(
    run: Mapping[str, Any],
    out: Path,
    *,
    render: Callable[[Mapping[str, Any]], str],
    plot: Callable[[Mapping[str, Any], Path], None],
    png: str,
) -> str:
    """Write a run into ``out``: ``results.json`` (everything measured), ``results.md``
    (``render(run)``, returned) and the plot ``png``; say so on stderr."""
    markdown = render(run)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(run, indent=2) + "\n")
    (out / "results.md").write_text(markdown)
    plot(run, out / png)
    elapsed = run.get("elapsed_s", "?")
    print(
        f"[bench] done in {elapsed} s: {out}/results.md, results.json, {png}",
        file=sys.stderr,
        flush=True,
    )
    return markdown


def draw_load_curves(
    goodput_axes: Any,
    latency_axes: Any,
    curves: Mapping[str, Sequence[CurvePoint]],
    *,
    deadline_ms: float | None = None,
    capacity_rps: float | None = None,
) -> None:
    """Draw goodput and p99 vs offered load, one line per system, on two matplotlib axes."""
    top = max((p.offered_rps for points in curves.values() for p in points), default=1.0)
    goodput_axes.plot([0, top], [0, top], color="0.8", linestyle=":", label="offered")
    for label, points in curves.items():
        ordered = sorted(points, key=lambda point: point.offered_rps)
        offered = [point.offered_rps for point in ordered]
        goodput_axes.plot(offered, [p.goodput_rps for p in ordered], marker="o", label=label)
        latency = [math.nan if p.p99_ms is None else p.p99_ms for p in ordered]
        latency_axes.plot(offered, latency, marker="o", label=label)
    if capacity_rps:
        for axes in (goodput_axes, latency_axes):
            axes.axvline(capacity_rps, color="0.6", linestyle="--", linewidth=0.8, label="1x")
    if deadline_ms:
        latency_axes.axhline(deadline_ms, color="tab:red", linestyle=":", label="deadline")
    goodput_axes.set(xlabel="offered load (req/s)", ylabel="goodput (ok within deadline, req/s)")
    goodput_axes.set_ylim(bottom=0)
    latency_axes.set(xlabel="offered load (req/s)", ylabel="p99 latency of successful calls (ms)")
    latency_axes.set_ylim(bottom=0)
    for axes in (goodput_axes, latency_axes):
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
