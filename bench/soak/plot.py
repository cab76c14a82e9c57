"""soak.png: calls per second (OK, failed, lost) over the soak, and each process's RSS."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.harness.report import save_figure


def plot_soak(run: Mapping[str, Any], path: Path) -> None:
    """Two panels over time: OK / failed / lost calls per second with the burst shaded and the
    restarts marked; RSS (MiB) of every backend slot and client process."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (calls, memory) = pyplot.subplots(2, 1, figsize=(11, 7.5), sharex=True)
    per_second = run.get("per_second", [])
    seconds = [row["start_s"] for row in per_second]
    calls.plot(seconds, [row["sent"] for row in per_second], label="offered", color="0.6")
    calls.plot(seconds, [row["ok"] for row in per_second], label="OK", color="tab:green")
    calls.plot(seconds, [row["failed"] for row in per_second], label="failed", color="tab:red")
    calls.plot(seconds, [row["lost"] for row in per_second], label="lost", color="black")
    calls.set_ylabel("calls/s (by scheduled second)")
    for axes in (calls, memory):
        start, end = run["burst"]
        axes.axvspan(start, end, color="tab:orange", alpha=0.15)
        for restart in run.get("restarts", []):
            axes.axvline(restart["at_s"], color="tab:purple", linestyle=":", linewidth=1)
    calls.legend(loc="upper left", fontsize="small", title="shaded: burst; dotted: restarts")
    for name, samples in run.get("rss", {}).items():
        points = [(at, kib / 1024) for at, kib in samples if kib is not None]
        memory.plot([p[0] for p in points], [p[1] for p in points], label=name, marker=".")
    memory.set_ylabel("RSS MiB")
    memory.set_xlabel("seconds into the soak")
    memory.legend(loc="upper left", fontsize="small", ncol=3)
    save_figure(
        figure, path, title=f"bench/soak ({run.get('mode', '?')}): {run.get('command', '')}"
    )
