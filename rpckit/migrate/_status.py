"""``rpckit migrate status``: from the shim's legacy-traffic counters, who still calls, since when.

Counters come from every process that serves the shim, summed:

* Prometheus text from ``rpckit serve --metrics HOST:PORT`` (``--workers N``:
  one endpoint per worker, ports PORT..PORT+N-1), metric
  ``rpckit_http_requests_total{route,method,status,caller,served_by}``;
* JSON traffic reports (``Shim.traffic_report()``, served at
  ``ShimConfig.traffic_report_path`` or dumped to a file).

Counters know counts, not time. Each run appends its reading to a history
file (JSON lines); :func:`assess` (pure, takes ``now``) reads the history
like Prometheus's ``increase()`` (a count that went down is a restarted
process): per route and caller, the first reading that saw it, the last
reading in which it grew, and its requests within the quiet window. The
verdict: the Flask fallback can go when it answered no request below 400 in
the window; the shim (the legacy HTTP port) can go when nobody called it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Reading", "StatusReport", "assess", "parse_prometheus", "parse_report"]

#: (route, method, status, caller, served_by)
Key = tuple[str, str, str, str, str]
#: The counter labels that make a :data:`Key`, in its order.
KEY_LABELS = ("route", "method", "status", "caller", "served_by")

METRIC = "rpckit_http_requests"


@dataclasses.dataclass(frozen=True)
class Reading:
    """Summed counters at one moment (wall-clock seconds)."""

    time: float
    counts: Mapping[Key, float]

    def as_json(self) -> str:
        rows = [[*key, count] for key, count in sorted(self.counts.items())]
        return json.dumps({"time": self.time, "counts": rows}) + "\n"

    @classmethod
    def from_json(cls, line: str) -> Reading:
        data = json.loads(line)
        counts = {
            _key(dict(zip(KEY_LABELS, row, strict=False))): float(row[5]) for row in data["counts"]
        }
        return cls(float(data["time"]), counts)


def parse_prometheus(text: str) -> dict[Key, float]:
    """The shim's request counters in a Prometheus exposition (other metrics are skipped)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != METRIC:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            key = _key(sample.labels)
            counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def parse_report(data: Mapping[str, Any]) -> dict[Key, float]:
    """The request counters of a ``Shim.traffic_report()`` document."""
    counts: dict[Key, float] = {}
    for row in data.get("requests", []):
        missing = [label for label in KEY_LABELS if label not in row]
        if missing:
            raise KeyError(f"a request counter without {', '.join(missing)}")
        key = _key(row)
        counts[key] = counts.get(key, 0.0) + float(row["count"])
    return counts


def _key(labels: Mapping[str, Any]) -> Key:
    """A counter's key from its labels (a missing label reads as "")."""
    route, method, status, caller, served_by = (str(labels.get(n, "")) for n in KEY_LABELS)
    return route, method, status, caller, served_by


def add_counts(parts: Iterable[Mapping[Key, float]]) -> dict[Key, float]:
    """Counters of several processes, summed per key."""
    total: dict[Key, float] = {}
    for part in parts:
        for key, count in part.items():
            total[key] = total.get(key, 0.0) + count
    return total


@dataclasses.dataclass(frozen=True)
class Caller:
    """One route's traffic from one caller, as the history shows it."""

    route: str
    method: str
    caller: str
    served_by: str
    total: float
    recent: float
    first_seen: float | None
    last_seen: float | None


@dataclasses.dataclass(frozen=True)
class StatusReport:
    now: float
    quiet_s: float
    readings: int
    span_s: float
    callers: tuple[Caller, ...]

    @property
    def fallback_can_go(self) -> bool:
        return (
            self.readings > 1
            and self.span_s >= self.quiet_s
            and not any(c.recent and c.served_by == "fallback" for c in self.callers)
        )

    @property
    def shim_can_go(self) -> bool:
        return (
            self.readings > 1
            and self.span_s >= self.quiet_s
            and not any(c.recent for c in self.callers)
        )

    def render_text(self) -> str:
        lines = []
        width = max((len(f"{c.method} {c.route}") for c in self.callers), default=10)
        for c in sorted(self.callers, key=lambda c: (-c.recent, c.route, c.method, c.caller)):
            head = f"{c.method} {c.route}"
            lines.append(
                f"{head:<{width}}  {c.served_by:<8} {c.caller:<24} {int(c.recent):>8} recent "
                f"{int(c.total):>9} total  first {_when(c.first_seen, self.now)}, "
                f"last {_when(c.last_seen, self.now)}"
            )
        lines.append("")
        window = _duration(self.quiet_s)
        if self.readings < 2:
            lines.append(
                "one reading so far: run status again later with the same --history to learn "
                "which routes are still called, and since when"
            )
        else:
            span = _duration(self.span_s)
            lines.append(f"{self.readings} readings over {span}; recent = the last {window}")
            lines.append(
                "the Flask fallback can go: it served no request in the last " + window
                if self.fallback_can_go
                else "the Flask fallback cannot go yet: it still serves the routes marked "
                "'fallback' above (or the history is shorter than the window)"
            )
            if self.shim_can_go:
                lines.append(f"the shim can go: no legacy HTTP request in the last {window}")
            elif self.span_s < self.quiet_s:
                lines.append(f"the shim cannot go yet: history covers less than {window}")
            else:
                lines.append("the shim cannot go yet: legacy HTTP callers remain (above)")
        return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _when(moment: float | None, now: float) -> str:
    if moment is None:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(moment))
    return f"{stamp}Z ({_duration(max(0.0, now - moment))} ago)"


def assess(readings: Sequence[Reading], *, now: float, quiet_s: float) -> StatusReport:
    """Who called since when, from readings in time order (module docstring)."""
    ordered = sorted(readings, key=lambda r: r.time)
    totals: dict[tuple[str, str, str, str], float] = {}
    recent: dict[tuple[str, str, str, str], float] = {}
    first: dict[tuple[str, str, str, str], float] = {}
    last: dict[tuple[str, str, str, str], float] = {}
    previous: Mapping[Key, float] = {}
    for index, reading in enumerate(ordered):
        grew: dict[tuple[str, str, str, str], float] = {}
        for key, count in reading.counts.items():
            before = previous.get(key, 0.0)
            increase = count - before if count >= before else count  # a restart reset it
            if index == 0:
                increase = count
            served = key[4]
            if served == "fallback" and not (key[2].isdigit() and int(key[2]) < 400):
                served = "fallback-error"  # a 404/405 the shim would answer alike
            short = (key[0], key[1], key[3], served)
            if increase > 0:
                grew[short] = grew.get(short, 0.0) + increase
        for short, increase in grew.items():
            totals[short] = totals.get(short, 0.0) + increase
            first.setdefault(short, reading.time)
            last[short] = reading.time
            if index > 0 and reading.time >= now - quiet_s:
                recent[short] = recent.get(short, 0.0) + increase
        previous = reading.counts
    callers = tuple(
        Caller(
            route=k[0],
            method=k[1],
            caller=k[2],
            served_by=k[3],
            total=totals[k],
            recent=recent.get(k, 0.0),
            first_seen=first.get(k),
            last_seen=last.get(k),
        )
        for k in sorted(totals)
    )
    span = ordered[-1].time - ordered[0].time if ordered else 0.0
    return StatusReport(now, quiet_s, len(ordered), span, callers)


def read_history(path: Path) -> list[Reading]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as lines:
        return [Reading.from_json(line) for line in lines if line.strip()]
