"""The differ: seeded differences found, identical answers pass, noise and rules cancel."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask

from rpckit.migrate._diff import Answer, IgnoreRule, compare
from rpckit.migrate._diff_report import DiffReport
from rpckit.migrate._replay import ReplayOptions, run_diff
from rpckit.migrate._samples import Exchange
from tests.migrate.fixture_apps import create_renamed_things_app, create_things_app

JSON = (("Content-Type", "application/json"),)


def _answer(
    body: Any, status: int = 200, reason: str = "OK", extra: tuple[tuple[str, str], ...] = ()
) -> Answer:
    data = json.dumps(body).encode()
    return Answer(status, reason, (*JSON, ("Content-Length", str(len(data))), *extra), data)


def _kinds(old: Answer, new: Answer) -> set[tuple[str, str, str]]:
    return {(d.kind, d.where, d.what) for d in compare(old, new)}


def test_identical_answers_have_no_difference() -> None:
    assert compare(_answer({"a": [1, {"b": None}]}), _answer({"a": [1, {"b": None}]})) == []


def test_seeded_differences_are_found() -> None:
    old = _answer({"name": "x", "quantity": 3})
    assert ("json", "$.title", "extra") in _kinds(old, _answer({"title": "x", "quantity": 3}))
    assert ("json", "$.name", "missing") in _kinds(old, _answer({"title": "x", "quantity": 3}))
    assert ("json", "$.quantity", "type int -> string") in _kinds(
        old, _answer({"name": "x", "quantity": "3"})
    )
    assert ("status", "", "value") in _kinds(old, _answer({"name": "x", "quantity": 3}, 201))
    assert ("reason", "", "value") in _kinds(
        old, _answer({"name": "x", "quantity": 3}, reason="Ok")
    )
    extra = _answer({"name": "x", "quantity": 3}, extra=(("X-Debug", "1"),))
    assert _kinds(old, extra) == {("header", "x-debug", "extra")}


def test_header_order_is_ignored_and_same_json_other_bytes_is_a_body_difference() -> None:
    a = Answer(200, "OK", (*JSON, ("A", "1"), ("B", "2")), b'{"a":1,"b":2}')
    b = Answer(200, "OK", (("b", "2"), ("a", "1"), *JSON), b'{"b": 2, "a": 1}')
    assert _kinds(a, b) == {("body", "", "same JSON, other bytes")}
    html = Answer(200, "OK", (), b"<p>a</p>")
    assert {d.kind for d in compare(html, Answer(200, "OK", (), b"<p>b</p>"))} == {"body"}


SAMPLES = [Exchange(method="GET", path=f"/things/{n}") for n in range(5)] + [
    Exchange(method="POST", path="/things", headers=JSON, body=b'{"a": 1}')
]


def _replay(new: Callable[[], Flask] = create_things_app, **options: Any) -> DiffReport:
    """SAMPLES through the things app (twice, for noise) and ``new``."""
    return run_diff(
        SAMPLES, old=create_things_app, old_fresh=True, new=new, options=ReplayOptions(**options)
    )


def test_noise_cancellation_ignores_a_random_id_but_not_a_rename() -> None:
    same = _replay()
    assert same.ok, same.render_text()
    assert ("GET /things/<int:n>", "json", "$.id") in same.noise
    renamed = _replay(create_renamed_things_app)
    assert not renamed.ok
    kinds = {k for t in renamed.routes.values() for k in t.groups}
    assert ("json", "$.name", "missing") in kinds
    assert ("json", "$.title", "extra") in kinds
    assert all(k[1] != "$.id" for k in kinds)


def test_writes_are_skipped_unless_allowed() -> None:
    report = _replay()
    assert sum(report.skipped.values()) == 1
    allowed = _replay(allow_writes=True)
    assert not allowed.skipped
    assert allowed.replayed == 6


def test_ignore_rules_count_deliberate_differences_with_their_reason() -> None:
    rule = IgnoreRule(what="json", where="$.title", why="renamed on purpose")
    rule2 = IgnoreRule(what="json", where="$.name", why="renamed on purpose")
    follows = IgnoreRule(what="header", where="Content-Length", why="follows")
    report = _replay(create_renamed_things_app, rules=(rule, rule2, follows))
    assert report.ok, report.render_text()
    assert report.ignored[rule] == 5
    assert "renamed on purpose" in report.render_text()
