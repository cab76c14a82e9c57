"""overhead.png: each round's calls/s per system and client, with the medians.

matplotlib is imported lazily with the Agg backend, so nothing needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.harness.report import save_figure
from bench.overhead.results import SYSTEMS, ratio, summary


def plot_rounds(run: Mapping[str, Any], path: Path) -> None:
    """One panel per client: a bar per system at its median, a dot per round."""
    rows = run.get("rounds", [])
    clients = [c for c in run["config"]["clients"] if any(r["client"] == c for r in rows)]
    if not clients:
        return
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, len(clients), figsize=(6 * len(clients), 4.5), squeeze=False)
    for panel, client in zip(axes[0], clients, strict=True):
        labels = []
        for index, system in enumerate(SYSTEMS):
            s = summary(rows, client, system)
            if s is None:
                continue
            labels.append(run["systems"][system]["label"])
            panel.bar(index, s["median_calls_per_s"], color="0.85", edgecolor="0.4")
            rates = [
                r["calls_per_s"] for r in rows if r["client"] == client and r["system"] == system
            ]
            panel.scatter([index] * len(rates), rates, color="tab:blue", zorder=3, s=18)
        panel.set_xticks(range(len(labels)), labels, fontsize="small")
        value = ratio(rows, client)
        shown = "-" if value is None else f"{value:.2f}x"
        panel.set_title(f"{client} client: rpckit / plain grpcio = {shown}", fontsize="medium")
        panel.set(ylabel="calls/s reaching the handler (bar: median)")
        panel.set_ylim(bottom=0)
        panel.grid(axis="y", alpha=0.3)
    cores = run.get("machine", {}).get("cores", "?")
    title = f"bench/overhead: trivial handler, closed loop, {cores} cores ({run['mode']})"
    save_figure(figure, path, title=title)
