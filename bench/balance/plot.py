"""balance.png: the latency tail of each policy, and where each policy sent its calls.

matplotlib is imported lazily with the Agg backend, so nothing needs a display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def plot_balance(run: Mapping[str, Any], path: Path) -> None:
    """Left: share of calls slower than x (failures as infinitely slow). Right: calls/backend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    config = run["config"]
    slow = config["slow_backend"]
    deadline_ms = config["deadline_ms"]
    entries = [entry for entry in run.get("policies", []) if entry.get("summary")]
    figure, (tail_axes, share_axes) = pyplot.subplots(1, 2, figsize=(13, 4.8))
    beyond = deadline_ms * 1.08  # where calls that did not return OK in time are drawn
    for entry in entries:
        points = entry["summary"]["tail"]
        xs = [beyond if ms is None else ms for _, ms in points]
        ys = [f for f, _ in points]
        tail_axes.plot(xs, ys, marker="o", markersize=2.5, label=entry["label"])
    tail_axes.axvspan(deadline_ms, beyond * 1.1, color="tab:red", alpha=0.08)
    tail_axes.axvline(deadline_ms, color="tab:red", linestyle=":", label="deadline")
    tail_axes.text(
        deadline_ms * 1.01, 0.6, "not OK\nin time", color="tab:red", fontsize="small", va="top"
    )
    tail_axes.set(
        xscale="log",
        yscale="log",
        xlabel="latency of OK calls, from the scheduled send (ms)",
        ylabel="share of calls slower (or not OK)",
        title="latency tail (lower-left is better)",
    )
    fastest = min(
        (ms for e in entries for _, ms in e["summary"]["tail"] if ms is not None), default=1.0
    )
    left, right = fastest * 0.8, beyond * 1.1
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000) if left <= t <= right]
    tail_axes.set_xticks(ticks, [str(t) for t in ticks])
    tail_axes.minorticks_off()
    tail_axes.set_xlim(left, right)
    tail_axes.grid(alpha=0.3, which="both")
    tail_axes.legend(fontsize="small", loc="lower left")

    backends = config["backends"]
    width = 0.8 / max(1, len(entries))
    for offset, entry in enumerate(entries):
        summary = entry["summary"]
        sent = summary["sent"] or 1
        shares = [100 * n / sent for n in summary["calls_by_backend"]]
        positions = [i + (offset - (len(entries) - 1) / 2) * width for i in range(backends)]
        share_axes.bar(positions, shares, width=width, label=entry["label"])
    share_axes.axhline(100 / backends, color="0.6", linestyle=":", linewidth=0.8)
    share_axes.set_xticks(
        range(backends), [f"#{i}\nslow" if i == slow else f"#{i}" for i in range(backends)]
    )
    top = max(
        (
            100 * n / (e["summary"]["sent"] or 1)
            for e in entries
            for n in e["summary"]["calls_by_backend"]
        ),
        default=10.0,
    )
    share_axes.set_ylim(0, math.ceil(top * 1.15))
    share_axes.set(xlabel="backend", ylabel="% of calls sent", title="calls per backend")
    share_axes.grid(alpha=0.3, axis="y")
    share_axes.legend(fontsize="small")
    calibrated = (run.get("capacity") or {}).get("calibration") is not None
    share = f" = {config['load']:.0%} of capacity" if calibrated else ""
    figure.suptitle(
        f"{backends} backends x {config['service_ms']:g} ms (#{slow}: "
        f"{config['service_ms'] * config['slow_factor']:g} ms), {run['rate_rps']:.0f} req/s"
        f"{share}, deadline {deadline_ms:g} ms ({run['mode']} mode)"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
