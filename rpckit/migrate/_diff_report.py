"""The result of ``rpckit migrate diff``: counts per route, grouped differences, text, JSON. Pure.

:class:`DiffReport` is filled one exchange at a time (:meth:`DiffReport.add`)
with the differences already sorted into real ones, noise and deliberate
ones; :meth:`DiffReport.render_text` is the terminal summary and
:meth:`DiffReport.as_dict` the ``--json`` document.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from rpckit.migrate._diff import KINDS, Difference, IgnoreRule

__all__ = ["DiffReport", "RouteTally"]

#: Example values shown per difference group in the text summary.
_EXAMPLE_CHARS = 60


@dataclasses.dataclass
class _Group:
    difference: Difference  # the first one seen
    count: int = 0
    samples: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RouteTally:
    """What happened to one legacy route's samples."""

    replayed: int = 0
    differing: int = 0
    groups: dict[tuple[str, str, str], _Group] = dataclasses.field(default_factory=dict)


class DiffReport:
    """Replay results (module docstring)."""

    def __init__(self) -> None:
        self.routes: dict[str, RouteTally] = {}
        self.skipped: dict[str, int] = {}
        self.noise: dict[tuple[str, str, str], int] = {}
        self.ignored: dict[IgnoreRule, int] = {}

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def add(
        self,
        *,
        sample: int,
        route: str,
        real: Sequence[Difference],
        noise: Sequence[Difference],
        ignored: Sequence[tuple[Difference, IgnoreRule]],
    ) -> None:
        """One replayed exchange (``sample`` is its 1-based line among the samples)."""
        tally = self.routes.setdefault(route, RouteTally())
        tally.replayed += 1
        if real:
            tally.differing += 1
        for difference in real:
            key = (difference.kind, difference.key[1], difference.what)
            group = tally.groups.setdefault(key, _Group(difference))
            group.count += 1
            if len(group.samples) < 5:
                group.samples.append(sample)
        for difference in noise:
            noise_key = (route, *difference.key)
            self.noise[noise_key] = self.noise.get(noise_key, 0) + 1
        for _, rule in ignored:
            self.ignored[rule] = self.ignored.get(rule, 0) + 1

    @property
    def replayed(self) -> int:
        return sum(t.replayed for t in self.routes.values())

    @property
    def differing(self) -> int:
        return sum(t.differing for t in self.routes.values())

    @property
    def ok(self) -> bool:
        """True when nothing but noise and deliberate differences was found."""
        return self.differing == 0

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "ok": self.ok,
            "replayed": self.replayed,
            "differing": self.differing,
            "skipped": dict(sorted(self.skipped.items())),
            "routes": [
                {
                    "route": route,
                    "replayed": tally.replayed,
                    "differing": tally.differing,
                    "differences": [
                        {
                            "kind": kind,
                            "where": where,
                            "what": what,
                            "count": group.count,
                            "samples": group.samples,
                            "old": group.difference.old,
                            "new": group.difference.new,
                        }
                        for (kind, where, what), group in _ordered(tally)
                    ],
                }
                for route, tally in sorted(self.routes.items())
            ],
            "noise": [
                {"route": route, "kind": kind, "where": where, "count": count}
                for (route, kind, where), count in sorted(self.noise.items())
            ],
            "ignored": [
                {"rule": rule.describe(), "why": rule.why, "count": count}
                for rule, count in self.ignored.items()
            ],
        }

    def render_text(self) -> str:
        """The terminal summary: one line per route, then each difference group, then verdict."""
        lines = []
        width = max((len(r) for r in self.routes), default=10)
        for route, tally in sorted(self.routes.items()):
            mark = "DIFFERS" if tally.differing else "same"
            counts = f"{tally.replayed:>4} replayed  {tally.differing:>4} differ"
            lines.append(f"{route:<{width}}  {counts}  {mark}")
            for (_, _, _), group in _ordered(tally):
                example = group.difference
                shown = ", ".join(str(s) for s in group.samples)
                lines.append(
                    f"    {example.describe()} x{group.count} (samples {shown}): "
                    f"{_short(example.old)} -> {_short(example.new)}"
                )
        if self.skipped:
            lines.append("")
            for why, count in sorted(self.skipped.items()):
                lines.append(f"skipped {count}: {why}")
        if self.noise:
            lines.append("")
            lines.append("noise cancelled (the old app differs from itself here):")
            for (route, kind, where), count in sorted(self.noise.items()):
                lines.append(f"    {route}: {kind} {where} x{count}")
        if self.ignored:
            lines.append("")
            lines.append("deliberate (ignore rules):")
            for rule, count in self.ignored.items():
                lines.append(f"    {rule.describe()} x{count}: {rule.why}")
        lines.append("")
        if self.ok:
            lines.append(f"no differences in {self.replayed} replayed samples")
        else:
            routes = sum(1 for t in self.routes.values() if t.differing)
            lines.append(
                f"{self.differing} of {self.replayed} replayed samples differ, on {routes} "
                f"route{'s' if routes != 1 else ''}"
            )
        return "\n".join(lines) + "\n"


def _ordered(tally: RouteTally) -> list[tuple[tuple[str, str, str], _Group]]:
    rank = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(tally.groups.items(), key=lambda item: (rank[item[0][0]], item[0][1:]))


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = json.dumps(text) if isinstance(value, str) else text
    return text if len(text) <= _EXAMPLE_CHARS else text[: _EXAMPLE_CHARS - 3] + "..."
