"""overload.png: one row per load profile (goodput and p99 vs offered load), one for bursts.

matplotlib is imported lazily with the Agg backend, so nothing needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.harness.report import draw_load_curves, save_figure
from bench.overload.results import curves


def plot_run(run: Mapping[str, Any], path: Path) -> None:
    """Write the run's figure to ``path`` (nothing when no profile produced data)."""
    profiles = run.get("profiles", {})
    load = [e for e in profiles.values() if e.get("kind") == "load" and curves(run, e["name"])]
    burst = profiles.get("burst")
    burst_systems = [s for s in (burst or {}).get("systems", []) if s.get("bursts")]
    rows = len(load) + (1 if burst_systems else 0)
    if rows == 0:
        return
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(rows, 2, figsize=(13, 4.6 * rows), squeeze=False)
    for row, entry in enumerate(load):
        goodput_axes, latency_axes = axes[row]
        draw_load_curves(
            goodput_axes,
            latency_axes,
            curves(run, entry["name"]),
            deadline_ms=entry["deadline_ms"],
            capacity_rps=entry.get("capacity", {}).get("rps"),
        )
        goodput_axes.set_title(f"{entry['name']}: {entry['describe']}", fontsize="medium")
    if burst is not None and burst_systems:
        _draw_bursts(axes[len(load)][0], axes[len(load)][1], burst, burst_systems)
    cores = run.get("machine", {}).get("cores", "?")
    save_figure(figure, path, title=f"bench/overload, {cores} cores ({run.get('mode', '?')} mode)")


def _draw_bursts(
    outcome_axes: Any,
    finish_axes: Any,
    burst: Mapping[str, Any],
    systems: list[Mapping[str, Any]],
) -> None:
    """Stacked OK / refused / failed per system (summed over its bursts), and each burst's
    time to finish."""
    labels = [system["label"] for system in systems]
    positions = range(len(systems))
    bottom = [0.0] * len(systems)
    for key, colour in (("ok", "tab:green"), ("refused", "tab:orange"), ("failed", "tab:red")):
        heights = [float(sum(b["burst"][key] for b in s["bursts"])) for s in systems]
        outcome_axes.bar(positions, heights, bottom=bottom, color=colour, label=key)
        bottom = [low + high for low, high in zip(bottom, heights, strict=True)]
    outcome_axes.set_xticks(list(positions), labels, rotation=20, ha="right", fontsize="small")
    outcome_axes.set(ylabel="calls (all bursts)")
    outcome_axes.set_title(f"burst: {burst['describe']}", fontsize="medium")
    outcome_axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for index, system in enumerate(systems):
        finishes = [b["burst"]["finish_ms"] or 0.0 for b in system["bursts"]]
        finish_axes.scatter([index] * len(finishes), finishes, marker="o")
    finish_axes.set_xticks(list(positions), labels, rotation=20, ha="right", fontsize="small")
    finish_axes.set(ylabel="time to finish a burst (ms)")
    finish_axes.set_title("each burst: from its send to its last call's end", fontsize="medium")
    finish_axes.set_ylim(bottom=0)
    finish_axes.grid(alpha=0.3)
