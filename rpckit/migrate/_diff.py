"""Differences between two answers to one request, with Diffy-style noise cancelled. Pure.

:func:`compare` lists what differs between an old and a new answer:

* ``status``: the code; ``reason``: the reason phrase (``404 NOT FOUND`` vs
  ``404 Not Found``);
* ``header``: a header missing, added or with another value (names compared
  without case, order ignored; repeated headers compared as sorted lists);
* ``json``: for JSON bodies, the path of each key that is missing (``missing``),
  added (``extra``), of another JSON type (``type int -> string``) or value
  (``value``); JSON that is equal but spelled differently (key order, spacing,
  escapes) is a ``body`` difference, as is any difference of non-JSON bodies.

Noise (Diffy): the old app answers every request twice; whatever differs
between those two answers -- a random id, a timestamp -- is noise for that
route, and the same difference against the new app is not reported
(:class:`NoiseTable`). Array indexes are folded (``$.items[*].id``) so noise
seen at one index covers all. Explicit :class:`IgnoreRule` s (from the
command line or a TOML file) name differences that are deliberate, each with
the reason a reader of the report is given.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rpckit.migrate._infer import json_kind
from rpckit.migrate._samples import is_json_type

__all__ = [
    "KINDS",
    "Answer",
    "Difference",
    "IgnoreRule",
    "NoiseTable",
    "compare",
    "fold_indexes",
    "json_differences",
    "json_path",
    "parse_ignore_rules",
]

#: The kinds of difference, in report order.
KINDS = ("status", "reason", "header", "json", "body")

_INDEX = re.compile(r"\[\d+\]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclasses.dataclass(frozen=True)
class Answer:
    """One HTTP answer: status code, reason phrase, headers, body."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)


@dataclasses.dataclass(frozen=True)
class Difference:
    """One difference: its kind, where (header name in lower case, JSON path), what, the values."""

    kind: str
    where: str
    what: str
    old: Any = None
    new: Any = None

    @property
    def key(self) -> tuple[str, str]:
        """What noise and ignore rules match on: the kind and the index-folded place."""
        return self.kind, fold_indexes(self.where)

    def describe(self) -> str:
        place = f" {self.where}" if self.where else ""
        return f"{self.kind}{place}: {self.what}"


def fold_indexes(path: str) -> str:
    """``$.items[3].id`` -> ``$.items[*].id``."""
    return _INDEX.sub("[*]", path)


def json_path(parent: str, key: str | int) -> str:
    """The path of ``key`` under ``parent``: ``$.name``, ``$["content-type"]``, ``$[2]``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if _IDENT.fullmatch(key):
        return f"{parent}.{key}"
    return f"{parent}[{json.dumps(key)}]"


def json_differences(old: Any, new: Any, path: str = "$") -> list[Difference]:
    """Every place two decoded JSON values differ (module docstring), depth first."""
    old_type, new_type = json_kind(old), json_kind(new)
    if old_type != new_type:
        return [Difference("json", path, f"type {old_type} -> {new_type}", old, new)]
    if isinstance(old, dict):
        found = []
        for key in old:
            if key not in new:
                found.append(Difference("json", json_path(path, key), "missing", old[key], None))
            else:
                found += json_differences(old[key], new[key], json_path(path, key))
        for key in new:
            if key not in old:
                found.append(Difference("json", json_path(path, key), "extra", None, new[key]))
        return found
    if isinstance(old, list):
        found = []
        for index, (a, b) in enumerate(zip(old, new, strict=False)):
            found += json_differences(a, b, json_path(path, index))
        if len(old) != len(new):
            found.append(Difference("json", f"{path}.length", "value", len(old), len(new)))
        return found
    if old != new:
        return [Difference("json", path, "value", old, new)]
    return []


def _headers_by_name(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    by_name: dict[str, list[str]] = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(value)
    return {name: sorted(values) for name, values in by_name.items()}


def _one(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else values


def compare(old: Answer, new: Answer) -> list[Difference]:
    """What differs between ``old`` and ``new`` (module docstring)."""
    found = []
    if old.status != new.status:
        found.append(Difference("status", "", "value", old.status, new.status))
    if old.reason != new.reason:
        found.append(Difference("reason", "", "value", old.reason, new.reason))
    theirs, ours = _headers_by_name(old.headers), _headers_by_name(new.headers)
    for name in sorted(theirs.keys() | ours.keys()):
        if name not in ours:
            found.append(Difference("header", name, "missing", _one(theirs[name]), None))
        elif name not in theirs:
            found.append(Difference("header", name, "extra", None, _one(ours[name])))
        elif theirs[name] != ours[name]:
            found.append(Difference("header", name, "value", _one(theirs[name]), _one(ours[name])))
    found += _body_differences(old, new)
    return found


def _decode(answer: Answer) -> tuple[bool, Any]:
    if not answer.body.strip() or not is_json_type(answer.header("content-type")):
        return False, None
    try:
        return True, json.loads(answer.body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False, None


def _body_differences(old: Answer, new: Answer) -> list[Difference]:
    if old.body == new.body:
        return []
    old_ok, old_value = _decode(old)
    new_ok, new_value = _decode(new)
    if old_ok and new_ok:
        found = json_differences(old_value, new_value)
        if found:
            return found
        return [
            Difference("body", "", "same JSON, other bytes", _snippet(old.body), _snippet(new.body))
        ]
    if old_ok != new_ok:
        what = "JSON -> not JSON" if old_ok else "not JSON -> JSON"
        return [Difference("body", "", what, _snippet(old.body), _snippet(new.body))]
    at = next(
        (i for i, (a, b) in enumerate(zip(old.body, new.body, strict=False)) if a != b),
        min(len(old.body), len(new.body)),
    )
    what = f"bytes differ from offset {at} ({len(old.body)} -> {len(new.body)} bytes)"
    return [Difference("body", "", what, _snippet(old.body[at:]), _snippet(new.body[at:]))]


def _snippet(data: bytes, limit: int = 80) -> str:
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("..." if len(data) > limit else "")


class NoiseTable:
    """Per route, the differences the old app has with itself (Diffy's A/A noise)."""

    def __init__(self) -> None:
        self._noise: dict[str, dict[tuple[str, str], int]] = {}

    def learn(self, route: str, differences: Iterable[Difference]) -> None:
        """Record what differed between two answers of the old app to one request."""
        table = self._noise.setdefault(route, {})
        for difference in differences:
            table[difference.key] = table.get(difference.key, 0) + 1

    def is_noise(self, route: str, difference: Difference) -> bool:
        return difference.key in self._noise.get(route, {})

    def items(self) -> list[tuple[str, tuple[str, str], int]]:
        """``(route, (kind, place), times seen)``, sorted."""
        return sorted(
            (route, key, count)
            for route, keys in self._noise.items()
            for key, count in keys.items()
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class IgnoreRule:
    """A deliberate difference: not reported as one, but counted under ``why``.

    Attributes:
        what: the kind (``status``, ``reason``, ``header``, ``json``, ``body``).
        where: a glob over the place: the header name (any case) or the JSON
            path (``$.items[*].id``; indexes are folded before matching);
            ``*`` (default) for any.
        route: a glob over ``METHOD /legacy/<rule>`` (``DELETE /items/*``).
        status: only when the old app answered this status (0: any).
        why: the reason, printed in the report. Required.
    """

    what: str
    where: str = "*"
    route: str = "*"
    status: int = 0
    why: str

    def __post_init__(self) -> None:
        if self.what not in KINDS:
            raise ValueError(
                f"ignore rule: what must be one of {', '.join(KINDS)}, not {self.what!r}"
            )
        if not self.why.strip():
            raise ValueError(f'ignore rule for {self.what} {self.where}: say why (why = "...")')
        if isinstance(self.status, bool) or not isinstance(self.status, int):
            raise ValueError(f"ignore rule: status must be an integer, not {self.status!r}")

    def matches(self, route: str, old_status: int, difference: Difference) -> bool:
        if difference.kind != self.what:
            return False
        if self.status and old_status != self.status:
            return False
        if not fnmatch.fnmatchcase(route, self.route):
            return False
        place = fold_indexes(difference.where)
        if difference.kind == "header":
            return fnmatch.fnmatchcase(place, self.where.lower())
        return fnmatch.fnmatchcase(place, self.where)

    def describe(self) -> str:
        parts = [self.what]
        if self.where != "*":
            parts.append(self.where)
        if self.route != "*":
            parts.append(f"on {self.route}")
        if self.status:
            parts.append(f"when old status is {self.status}")
        return " ".join(parts)


def parse_ignore_rules(data: Mapping[str, Any], *, source: str) -> list[IgnoreRule]:
    """Rules from a decoded TOML document's ``[[ignore]]`` tables; ValueError names the table."""
    tables = data.get("ignore", [])
    if not isinstance(tables, list):
        raise ValueError(f"{source}: 'ignore' must be an array of tables ([[ignore]])")
    rules = []
    known = {f.name for f in dataclasses.fields(IgnoreRule)}
    for number, table in enumerate(tables, start=1):
        if not isinstance(table, dict):
            raise ValueError(f"{source}: [[ignore]] #{number} is not a table")
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"{source}: [[ignore]] #{number}: unknown keys {unknown}")
        try:
            rules.append(IgnoreRule(**table))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: [[ignore]] #{number}: {exc}") from None
    return rules


def first_rule(
    rules: Sequence[IgnoreRule], route: str, old_status: int, difference: Difference
) -> IgnoreRule | None:
    """The first rule that ignores ``difference``, if any."""
    return next((r for r in rules if r.matches(route, old_status, difference)), None)
