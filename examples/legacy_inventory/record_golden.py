"""Records the legacy app's answers to a fixed scenario as golden traffic (JSON lines).

The scenario is a sequence of requests covering every endpoint, success and
error, replayed in order against one freshly seeded app (later requests see
earlier writes). Each output line is one exchange::

    {"name": ..., "method": ..., "path": ..., "query": ..., "headers": {...},
     "body": <request text or null>, "expected_status": 200,
     "expected_headers": {...}, "expected_body": <response text>}

``path`` is as sent (percent-encoded), ``query`` is the raw query string.
``expected_headers`` holds only the headers that matter to clients:
Content-Type (when there is a body), Location, WWW-Authenticate and Allow.

Regenerate, or check that the committed file is current::

    python -m examples.legacy_inventory.record_golden            # writes the file
    python -m examples.legacy_inventory.record_golden --check    # exit 1 if stale
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.datastructures import Headers

from examples.legacy_inventory.app import DEV_API_TOKEN, create_app

__all__ = [
    "DEFAULT_OUT",
    "HEADERS_THAT_MATTER",
    "SCENARIO",
    "GoldenRequest",
    "headers_that_matter",
    "main",
    "record",
    "render_jsonl",
]

#: Where the golden file lives, relative to the repository root.
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "tests" / "legacy" / "golden_requests.jsonl"

#: Response headers recorded and compared; the rest (Content-Length, Server...) are incidental.
HEADERS_THAT_MATTER = ("Content-Type", "Location", "WWW-Authenticate", "Allow")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GoldenRequest:
    """One request of the scenario, as it goes over the wire."""

    name: str
    method: str
    path: str
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None


_MODULE = "examples.legacy_inventory.record_golden"
_AUTH = ("Authorization", f"Bearer {DEV_API_TOKEN}")


def _get(name: str, path: str, query: str = "") -> GoldenRequest:
    return GoldenRequest(name=name, method="GET", path=path, query=query)


def _write(
    name: str,
    method: str,
    path: str,
    body: str | None,
    *,
    auth: bool = True,
    content_type: str | None = "application/json",
) -> GoldenRequest:
    headers = ((_AUTH,) if auth else ()) + (
        (("Content-Type", content_type),) if content_type else ()
    )
    return GoldenRequest(name=name, method=method, path=path, headers=headers, body=body)


_NEW_ITEM = (
    '{"sku": "ANCHOR-8", "name": "Wall anchor 8 mm", "quantity": 9007199254740993, '
    '"price_cents": 9223372036854775807, "tags": ["fastener", "w\\u00e4ll"]}'
)

#: The recorded scenario, in order. Tokens are literal, as a client would have them.
SCENARIO: tuple[GoldenRequest, ...] = (
    _get("healthz", "/healthz"),
    _get("get plain item", "/items/BOLT-M6-20"),
    _get("get non-ASCII name", "/items/TORCH-BRULEE"),
    _get("get name with quotes", "/items/HEX-KEY-SET"),
    _get("get name with <>&", "/items/SCREW-WOOD-4X40"),
    _get("get empty tags, low stock", "/items/SEALANT-CLEAR"),
    _get("get unknown sku", "/items/NOPE-1"),
    _get("get unknown non-ASCII sku", "/items/%C3%A9t%C3%A9"),
    _get("list first page, default size", "/items"),
    _get("list second page", "/items", "page_size=7&page_token=TlVULU04"),
    _get("list last page", "/items", "page_size=100&page_token=VEFQRS1NRUFTVVJFLTVN"),
    _get("list page_size 0 is the default", "/items", "page_size=0"),
    _get("list unknown query parameter ignored", "/items", "page_size=2&colour=red"),
    _get("list page_size too large", "/items", "page_size=101"),
    _get("list page_size negative", "/items", "page_size=-1"),
    _get("list page_size not a number", "/items", "page_size=ten"),
    _get("list page_size empty", "/items", "page_size="),
    _get("list page_size beyond int32", "/items", "page_size=3000000000"),
    _get("list bad page_token", "/items", "page_token=not-a-token"),
    _get("tags", "/items/NUT-M8/tags"),
    _get("tags empty", "/items/SEALANT-CLEAR/tags"),
    _get("tags unknown sku", "/items/NOPE-1/tags"),
    _get("stock report", "/reports/stock"),
    _get("stock report threshold 0", "/reports/stock", "low_stock_threshold=0"),
    _get("stock report negative threshold", "/reports/stock", "low_stock_threshold=-3"),
    _write("create without token", "POST", "/items", _NEW_ITEM, auth=False),
    GoldenRequest(
        name="create with wrong token",
        method="POST",
        path="/items",
        headers=(("Authorization", "Bearer wrong"), ("Content-Type", "application/json")),
        body=_NEW_ITEM,
    ),
    _write("create text/plain", "POST", "/items", _NEW_ITEM, content_type="text/plain"),
    _write("create without Content-Type", "POST", "/items", _NEW_ITEM, content_type=None),
    _write("create malformed JSON", "POST", "/items", '{"sku": "X-1", "name": }'),
    _write("create empty body", "POST", "/items", ""),
    _write("create array body", "POST", "/items", '[{"sku": "X-1"}]'),
    _write(
        "create unknown fields",
        "POST",
        "/items",
        '{"sku": "X-1", "name": "x", "size": 1, "colour": "red"}',
    ),
    _write("create unknown field", "POST", "/items", '{"sku": "X-1", "name": "x", "qty": 1}'),
    _write(
        "create quantity as string",
        "POST",
        "/items",
        '{"sku": "X-1", "name": "x", "quantity": "12"}',
    ),
    _write(
        "create quantity as bool", "POST", "/items", '{"sku": "X-1", "name": "x", "quantity": true}'
    ),
    _write(
        "create quantity null", "POST", "/items", '{"sku": "X-1", "name": "x", "quantity": null}'
    ),
    _write(
        "create price as float", "POST", "/items", '{"sku": "X-1", "name": "x", "price_cents": 1.5}'
    ),
    _write(
        "create tags not a list", "POST", "/items", '{"sku": "X-1", "name": "x", "tags": "red"}'
    ),
    _write("create type errors in proto order", "POST", "/items", '{"tags": 1, "name": 2}'),
    _write("create missing sku", "POST", "/items", '{"name": "x"}'),
    _write("create bad sku", "POST", "/items", '{"sku": "x-1", "name": "x"}'),
    _write("create missing name", "POST", "/items", '{"sku": "X-1"}'),
    _write(
        "create negative quantity", "POST", "/items", '{"sku": "X-1", "name": "x", "quantity": -1}'
    ),
    _write(
        "create quantity beyond int64",
        "POST",
        "/items",
        '{"sku": "X-1", "name": "x", "quantity": 9223372036854775808}',
    ),
    _write("create empty tag", "POST", "/items", '{"sku": "X-1", "name": "x", "tags": [""]}'),
    _write("create", "POST", "/items", _NEW_ITEM),
    _write("create duplicate", "POST", "/items", _NEW_ITEM),
    _get("get created", "/items/ANCHOR-8"),
    _write(
        "update (body sku ignored)",
        "PUT",
        "/items/ANCHOR-8",
        '{"sku": "OTHER", "name": "Wall anchor 8 mm, nylon", "quantity": 40}',
    ),
    _get("get updated", "/items/ANCHOR-8"),
    _write("update unknown sku", "PUT", "/items/NOPE-1", '{"name": "x"}'),
    _write("update without token", "PUT", "/items/ANCHOR-8", '{"name": "x"}', auth=False),
    _write("update unknown field", "PUT", "/items/ANCHOR-8", '{"name": "x", "stock": 1}'),
    _write("update empty name", "PUT", "/items/ANCHOR-8", '{"name": ""}'),
    _write("update body sku wrong type", "PUT", "/items/ANCHOR-8", '{"sku": 8, "name": "x"}'),
    _write(
        "delete without token", "DELETE", "/items/ANCHOR-8", None, auth=False, content_type=None
    ),
    _write("delete", "DELETE", "/items/ANCHOR-8", None, content_type=None),
    _write("delete again", "DELETE", "/items/ANCHOR-8", None, content_type=None),
    _get("get deleted", "/items/ANCHOR-8"),
    _write(
        "restock plan",
        "POST",
        "/restock-plans",
        '{"threshold": 5, "work_ms_per_item": 0}',
        auth=False,
    ),
    _write("restock plan, nothing below 0", "POST", "/restock-plans", "{}", auth=False),
    _write("restock negative threshold", "POST", "/restock-plans", '{"threshold": -1}', auth=False),
    _write(
        "restock too much work", "POST", "/restock-plans", '{"work_ms_per_item": 1001}', auth=False
    ),
    _write(
        "restock threshold as string", "POST", "/restock-plans", '{"threshold": "5"}', auth=False
    ),
    _write("restock unknown field", "POST", "/restock-plans", '{"thresold": 5}', auth=False),
    _write(
        "restock form body",
        "POST",
        "/restock-plans",
        "threshold=5",
        auth=False,
        content_type="application/x-www-form-urlencoded",
    ),
    GoldenRequest(name="wrong method on item", method="PATCH", path="/items/BOLT-M6-20"),
    _get("wrong method on restock-plans", "/restock-plans"),
    _get("unknown path", "/nowhere"),
    _get("trailing slash", "/items/"),
)


def headers_that_matter(headers: Headers, body: bytes) -> dict[str, str]:
    """The :data:`HEADERS_THAT_MATTER` a response carries (Content-Type only with a body)."""
    return {
        name: headers[name]
        for name in HEADERS_THAT_MATTER
        if name in headers and (body or name != "Content-Type")
    }


def record(app: Flask, scenario: Iterable[GoldenRequest] = SCENARIO) -> list[dict[str, Any]]:
    """Send ``scenario`` in order to ``app`` and return one exchange per request."""
    client = app.test_client()
    exchanges = []
    for golden in scenario:
        response = client.open(
            golden.path,
            method=golden.method,
            query_string=golden.query,
            headers=list(golden.headers),
            data=None if golden.body is None else golden.body.encode("utf-8"),
        )
        body = response.get_data()
        headers = headers_that_matter(response.headers, body)
        exchanges.append(
            {
                "name": golden.name,
                "method": golden.method,
                "path": golden.path,
                "query": golden.query,
                "headers": dict(golden.headers),
                "body": golden.body,
                "expected_status": response.status_code,
                "expected_headers": headers,
                "expected_body": body.decode("utf-8"),
            }
        )
    return exchanges


def render_jsonl(exchanges: Iterable[dict[str, Any]]) -> str:
    """One compact JSON object per line, keys in recording order, non-ASCII escaped."""
    return "".join(json.dumps(exchange) + "\n" for exchange in exchanges)


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with ``--check``, verify) the golden file from a freshly seeded app."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {_MODULE}", description="Record the legacy app's golden traffic."
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="golden JSONL file")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render_jsonl(record(create_app()))
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run python -m {_MODULE}", file=sys.stderr)
            return 1
        print(f"{args.out} is current")
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {len(text.splitlines())} exchanges to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
