"""Replays the recorded legacy traffic (golden_requests.jsonl) against the app under test.

The file is recorded from the real Flask app by
``python -m examples.legacy_inventory.record_golden``; the exchanges are replayed in
order against one fresh ``legacy_app`` (later requests see earlier writes) and must
match status, the headers that matter, and the body byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.test import Client

from examples.legacy_inventory.app import create_app
from examples.legacy_inventory.record_golden import (
    DEFAULT_OUT,
    headers_that_matter,
    record,
    render_jsonl,
)

GOLDEN_FILE = Path(__file__).with_name("golden_requests.jsonl")

#: Every field of a golden line, in recording order.
GOLDEN_KEYS = [
    "name",
    "method",
    "path",
    "query",
    "headers",
    "body",
    "expected_status",
    "expected_headers",
    "expected_body",
]


def load_golden() -> list[dict[str, Any]]:
    with GOLDEN_FILE.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def test_replay_golden_traffic(legacy_client: Client) -> None:
    mismatches = []
    for number, exchange in enumerate(load_golden(), start=1):
        body = exchange["body"]
        response = legacy_client.open(
            exchange["path"],
            method=exchange["method"],
            query_string=exchange["query"],
            headers=exchange["headers"],
            data=None if body is None else body.encode("utf-8"),
        )
        got_body = response.get_data()
        got = (response.status_code, headers_that_matter(response.headers, got_body), got_body)
        want = (
            exchange["expected_status"],
            exchange["expected_headers"],
            exchange["expected_body"].encode("utf-8"),
        )
        if got != want:
            mismatches.append(
                f"line {number} ({exchange['name']}):\n  got  {got!r}\n  want {want!r}"
            )
    assert not mismatches, "\n".join(mismatches)


def test_golden_file_is_current() -> None:
    assert DEFAULT_OUT == GOLDEN_FILE
    recorded = render_jsonl(record(create_app()))
    assert GOLDEN_FILE.read_text(encoding="utf-8") == recorded, (
        "stale: run python -m examples.legacy_inventory.record_golden"
    )


def test_golden_file_shape() -> None:
    exchanges = load_golden()
    assert len(exchanges) >= 50
    assert all(list(exchange) == GOLDEN_KEYS for exchange in exchanges)
    assert len({exchange["name"] for exchange in exchanges}) == len(exchanges)
    statuses = {exchange["expected_status"] for exchange in exchanges}
    assert statuses == {200, 201, 204, 400, 401, 404, 405, 409, 415}


def test_golden_file_covers_every_route() -> None:
    url_map = create_app().url_map
    adapter = url_map.bind("localhost")
    covered = set()
    for exchange in load_golden():
        try:
            endpoint, _ = adapter.match(exchange["path"], method=exchange["method"])
        except (NotFound, MethodNotAllowed):  # the routing-error exchanges
            continue
        covered.add(endpoint)
    assert covered == {rule.endpoint for rule in url_map.iter_rules()}
