"""Shadow mode and rollout for migrated routes: who answers, and how the two answers differ.

Per route, ``rollout_percent`` decides which side's answer a request gets
(rpckit's handlers or the fallback app); with ``shadow`` on, the other side is
called too and the two answers are compared: status, then the JSON bodies
value by value (bodies that are not JSON byte by byte). A difference is
reported as data -- JSON pointer paths and both values -- for a structured
log line and the counters. Pure: takes ``rng`` and returns decisions.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any, Literal

__all__ = [
    "CapturedResponse",
    "JsonDifference",
    "ShadowReport",
    "Side",
    "choose_primary",
    "compare_responses",
]

Side = Literal["rpckit", "fallback"]

#: Differences kept per comparison; the report says how many there were in all.
MAX_DIFFERENCES = 20
#: A non-JSON body is shown in a difference up to this many characters.
_SHOWN_CHARS = 200

_ABSENT = "(absent)"


def choose_primary(rollout_percent: float, rng: random.Random) -> Side:
    """``rpckit`` for ``rollout_percent`` % of requests, the fallback for the rest."""
    if rollout_percent >= 100:
        return "rpckit"
    if rollout_percent <= 0:
        return "fallback"
    return "rpckit" if rng.random() * 100 < rollout_percent else "fallback"


@dataclasses.dataclass(frozen=True)
class CapturedResponse:
    """A WSGI answer held in memory: status, headers, body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclasses.dataclass(frozen=True)
class JsonDifference:
    """One place where the answers differ: a JSON pointer (``/items/0/name``) and both values.

    A value missing on one side is shown as ``"(absent)"``.
    """

    path: str
    primary: Any
    shadow: Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShadowReport:
    """The comparison of one shadowed request."""

    route: str
    method: str
    path: str
    primary: Side
    primary_status: int
    shadow_status: int
    differences: tuple[JsonDifference, ...]
    difference_count: int

    @property
    def matched(self) -> bool:
        return self.primary_status == self.shadow_status and self.difference_count == 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data for a structured log line."""
        return {
            "route": self.route,
            "method": self.method,
            "path": self.path,
            "primary": self.primary,
            "matched": self.matched,
            "primary_status": self.primary_status,
            "shadow_status": self.shadow_status,
            "difference_count": self.difference_count,
            "differences": [dataclasses.asdict(d) for d in self.differences],
        }


def compare_responses(
    primary: CapturedResponse, shadow: CapturedResponse, *, limit: int = MAX_DIFFERENCES
) -> tuple[tuple[JsonDifference, ...], int]:
    """The body differences (at most ``limit``) and how many there were in all."""
    found: list[JsonDifference] = []
    ok_a, a = _json_or_text(primary.body)
    ok_b, b = _json_or_text(shadow.body)
    if ok_a and ok_b:
        count = _diff(a, b, "", found, limit)
    elif primary.body == shadow.body:
        count = 0
    else:
        found.append(JsonDifference("", a, b))
        count = 1
    return tuple(found), count


def _json_or_text(body: bytes) -> tuple[bool, Any]:
    if not body:
        return True, _ABSENT
    try:
        return True, json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace")
        return False, text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _same(a: Any, b: Any) -> bool:
    """JSON equality that tells 1 from 1.0 and from true (they are different bytes)."""
    return type(a) is type(b) and a == b


def _diff(a: Any, b: Any, path: str, found: list[JsonDifference], limit: int) -> int:
    if isinstance(a, dict) and isinstance(b, dict):
        count = 0
        for key in sorted(set(a) | set(b), key=str):
            where = f"{path}/{_escape(str(key))}"
            if key not in a or key not in b:
                count += _note(found, limit, where, a.get(key, _ABSENT), b.get(key, _ABSENT))
            else:
                count += _diff(a[key], b[key], where, found, limit)
        return count
    if isinstance(a, list) and isinstance(b, list):
        count = 0
        for i in range(max(len(a), len(b))):
            where = f"{path}/{i}"
            if i >= len(a) or i >= len(b):
                left = a[i] if i < len(a) else _ABSENT
                right = b[i] if i < len(b) else _ABSENT
                count += _note(found, limit, where, left, right)
            else:
                count += _diff(a[i], b[i], where, found, limit)
        return count
    if _same(a, b):
        return 0
    return _note(found, limit, path, a, b)


def _note(found: list[JsonDifference], limit: int, path: str, a: Any, b: Any) -> int:
    if len(found) < limit:
        found.append(JsonDifference(path, a, b))
    return 1


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
