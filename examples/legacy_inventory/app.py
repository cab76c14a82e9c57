"""The legacy inventory service: the Flask JSON app that rpckit's migration story starts from.

Run it (from the repository root)::

    flask --app examples.legacy_inventory.app:create_app run --port 8080
    gunicorn --bind 127.0.0.1:8080 --threads 8 'examples.legacy_inventory.app:create_app()'

Its JSON contract is the one ``protos/inventory/v1/inventory.proto`` maps with
``google.api.http``; the migrated service must serve the same bytes through the
shim. The contract, quirks included, as this app has always served it:

- Bodies come from :func:`flask.jsonify`: keys sorted, compact separators, a
  trailing newline, non-ASCII escaped as ``\\uXXXX``, int64 values as plain
  JSON numbers, defaults always present (``"tags":[]``, ``"next_page_token":""``).
  In debug mode Flask indents instead; the recorded bytes are for debug off.
- Errors are ``{"error":{"code":N,"message":"..."}}`` -- routing errors too (the
  message is Werkzeug's reason phrase, 405 carries a sorted ``Allow``).
- Request bodies must be ``application/json`` objects (else 415/400). Checks run
  in a fixed order and the first failure wins: bearer token (401), content
  type (415), size (413), UTF-8 and JSON syntax, a JSON object, unknown fields
  (all of them, sorted), field types in proto field order, then field values.
- Integers must be JSON integers: ``true``, ``1.0``, ``"1"`` and ``null`` are
  refused with the field's name. Unknown query parameters are ignored.
- ``PUT /items/<sku>`` takes the SKU from the URL; a ``sku`` in the body is
  type-checked and then ignored.
- ``DELETE`` answers 204 with an empty body (and Flask's default
  ``text/html`` Content-Type, which nobody reads).
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from flask import Flask, Response, current_app, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from examples.legacy_inventory.store import (
    INT64_MAX,
    INT64_MIN,
    InvalidFieldError,
    InventoryStore,
    Item,
    ItemExistsError,
    ItemNotFoundError,
    RestockLine,
    check_item,
    check_restock_request,
    encode_page_token,
    plan_restock,
    resolve_page_request,
)

__all__ = ["DEV_API_TOKEN", "EXTENSION_KEY", "LegacyInventoryState", "create_app"]

#: The bearer token writes need unless ``INVENTORY_API_TOKEN`` is configured.
#: It is published in the README on purpose: a development default, not a secret.
DEV_API_TOKEN = "dev-token-not-for-production"  # noqa: S105 (documented dev default)

#: Where the app's state lives in ``app.extensions`` (no module-level state).
EXTENSION_KEY = "legacy_inventory"

#: Largest request body accepted (Flask's ``MAX_CONTENT_LENGTH``); an item is < 1 KiB.
MAX_BODY_BYTES = 64 * 1024

#: ``GET /reports/stock`` lists items with fewer units than this unless told otherwise.
DEFAULT_LOW_STOCK_THRESHOLD = 5

#: Bounds of the proto's int32 fields, used for query parameters and int32 body fields.
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
_INT_BOUNDS = {"int32": (_INT32_MIN, _INT32_MAX), "int64": (INT64_MIN, INT64_MAX)}

#: A query-string integer: optional minus and ASCII digits (int() would also take "+1", "1_0").
_QUERY_INT = re.compile(r"-?[0-9]+")

#: JSON fields of an ``inventory.v1.Item``, in proto field order, with their proto types.
_ITEM_FIELDS = (
    ("sku", "string"),
    ("name", "string"),
    ("quantity", "int64"),
    ("price_cents", "int64"),
    ("tags", "repeated string"),
)
#: JSON fields of an ``inventory.v1.PlanRestockRequest`` (the rule's ``body: "*"``).
_RESTOCK_FIELDS = (("threshold", "int64"), ("work_ms_per_item", "int32"))

_BEARER_CHALLENGE = ("WWW-Authenticate", 'Bearer realm="inventory"')


@dataclasses.dataclass(frozen=True, kw_only=True)
class LegacyInventoryState:
    """What the views need, kept on the app as ``app.extensions[EXTENSION_KEY]``."""

    store: InventoryStore
    #: Called with seconds of simulated planning work per item (``time.sleep`` by default).
    simulate_work: Callable[[float], None]


class ApiError(Exception):
    """An error answered as ``{"error": {"code": status, "message": message}}``."""

    def __init__(
        self, status: int, message: str, *, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)


def create_app(
    store: InventoryStore | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    simulate_work: Callable[[float], None] = time.sleep,
) -> Flask:
    """A new inventory app over ``store`` (a freshly seeded one by default).

    ``config`` is applied over the defaults (``INVENTORY_API_TOKEN``,
    ``MAX_CONTENT_LENGTH``). Nothing is read from the environment.
    """
    app = Flask(__name__, static_folder=None)
    app.config.update(INVENTORY_API_TOKEN=DEV_API_TOKEN, MAX_CONTENT_LENGTH=MAX_BODY_BYTES)
    if config is not None:
        app.config.update(config)
    app.extensions[EXTENSION_KEY] = LegacyInventoryState(
        store=InventoryStore() if store is None else store, simulate_work=simulate_work
    )
    for rule, view, methods in _ROUTES:
        app.add_url_rule(rule, view_func=view, methods=list(methods))
    app.register_error_handler(ApiError, _render_api_error)
    app.register_error_handler(InvalidFieldError, _render_invalid_field)
    app.register_error_handler(ItemNotFoundError, _render_item_not_found)
    app.register_error_handler(ItemExistsError, _render_item_exists)
    app.register_error_handler(HTTPException, _render_http_exception)
    return app


# ---------------------------------------------------------------- views


def get_item(sku: str) -> ResponseReturnValue:
    """GET /items/<sku> -> the item."""
    return jsonify(_item_json(_state().store.get(sku)))


def list_items() -> ResponseReturnValue:
    """GET /items?page_size=&page_token= -> {"items": [...], "next_page_token": "..."}."""
    after_sku, page_size = resolve_page_request(
        page_size=_query_int("page_size", "int32", default=0),
        page_token=request.args.get("page_token", ""),
    )
    items, resume_after = _state().store.page(after_sku=after_sku, page_size=page_size)
    next_page_token = encode_page_token(resume_after) if resume_after else ""
    return jsonify(items=[_item_json(item) for item in items], next_page_token=next_page_token)


def create_item() -> ResponseReturnValue:
    """POST /items (body: the item) -> 201, Location, the item."""
    _require_bearer_token()
    item = _item_from_body(_read_json_object(), sku=None)
    check_item(item, new=True)
    _state().store.create(item)
    response = jsonify(_item_json(item))
    response.status_code = 201
    response.headers["Location"] = url_for("get_item", sku=item.sku)
    return response


def update_item(sku: str) -> ResponseReturnValue:
    """PUT /items/<sku> (body: the whole item) -> the item as stored."""
    _require_bearer_token()
    item = _item_from_body(_read_json_object(), sku=sku)
    check_item(item, new=False)
    _state().store.replace(item)
    return jsonify(_item_json(item))


def delete_item(sku: str) -> ResponseReturnValue:
    """DELETE /items/<sku> -> 204, empty body."""
    _require_bearer_token()
    _state().store.delete(sku)
    return "", 204


def item_tags(sku: str) -> ResponseReturnValue:
    """GET /items/<sku>/tags -> the tags as a top-level JSON array."""
    return jsonify(list(_state().store.get(sku).tags))


def create_restock_plan() -> ResponseReturnValue:
    """POST /restock-plans {"threshold": N, "work_ms_per_item": M} -> {"lines": [...]}.

    Read-only despite the POST (no token needed); slow on purpose: it "works"
    ``work_ms_per_item`` milliseconds on every item it examines.
    """
    body = _read_json_object()
    _reject_unknown_fields(body, _RESTOCK_FIELDS)
    threshold = _json_int(body, "threshold", "int64")
    work_ms_per_item = _json_int(body, "work_ms_per_item", "int32")
    check_restock_request(threshold=threshold, work_ms_per_item=work_ms_per_item)
    state = _state()
    items = state.store.snapshot()
    if work_ms_per_item:
        for _ in items:
            state.simulate_work(work_ms_per_item / 1000)
    return jsonify(lines=[_line_json(line) for line in plan_restock(items, threshold)])


def healthz() -> ResponseReturnValue:
    """GET /healthz -> {"status": "ok"} (stays on Flask during the migration)."""
    return jsonify(status="ok")


def stock_report() -> ResponseReturnValue:
    """GET /reports/stock?low_stock_threshold=N -> nested totals (stays on Flask).

    ``average_price_cents`` is a float (Python's repr, two decimals) or null for
    an empty store; ``by_tag`` counts untagged items under ``"(untagged)"``.
    """
    threshold = _query_int("low_stock_threshold", "int64", default=DEFAULT_LOW_STOCK_THRESHOLD)
    if threshold < 0:
        raise InvalidFieldError("low_stock_threshold", "must be >= 0")
    items = _state().store.snapshot()
    by_tag: dict[str, dict[str, int]] = {}
    for item in items:
        for tag in item.tags or ("(untagged)",):
            counts = by_tag.setdefault(tag, {"items": 0, "units": 0})
            counts["items"] += 1
            counts["units"] += item.quantity
    average = round(sum(i.price_cents for i in items) / len(items), 2) if items else None
    return jsonify(
        average_price_cents=average,
        by_tag=by_tag,
        low_stock=[{"quantity": i.quantity, "sku": i.sku} for i in items if i.quantity < threshold],
        low_stock_threshold=threshold,
        totals={
            "items": len(items),
            "units": sum(i.quantity for i in items),
            "value_cents": sum(i.quantity * i.price_cents for i in items),
        },
    )


#: The URL map: (rule, view, methods). Endpoint names are the view names.
_ROUTES: tuple[tuple[str, Callable[..., ResponseReturnValue], tuple[str, ...]], ...] = (
    ("/items/<sku>", get_item, ("GET",)),
    ("/items", list_items, ("GET",)),
    ("/items", create_item, ("POST",)),
    ("/items/<sku>", update_item, ("PUT",)),
    ("/items/<sku>", delete_item, ("DELETE",)),
    ("/items/<sku>/tags", item_tags, ("GET",)),
    ("/restock-plans", create_restock_plan, ("POST",)),
    ("/healthz", healthz, ("GET",)),
    ("/reports/stock", stock_report, ("GET",)),
)


# ---------------------------------------------------------------- request parsing


def _state() -> LegacyInventoryState:
    return cast(LegacyInventoryState, current_app.extensions[EXTENSION_KEY])


def _require_bearer_token() -> None:
    expected = str(current_app.config["INVENTORY_API_TOKEN"]).encode("utf-8")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode("utf-8"), expected):
        raise ApiError(401, "missing or invalid bearer token", headers=[_BEARER_CHALLENGE])


def _read_json_object() -> dict[str, Any]:
    if not request.is_json:
        raise ApiError(415, "expected Content-Type: application/json")
    raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not valid UTF-8") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def _reject_unknown_fields(body: Mapping[str, Any], fields: Iterable[tuple[str, str]]) -> None:
    unknown = sorted(set(body) - {name for name, _ in fields})
    if unknown:
        names = ", ".join(f"'{name}'" for name in unknown)
        raise ApiError(400, f"unknown field{'s' if len(unknown) > 1 else ''} {names}")


def _json_int(body: Mapping[str, Any], name: str, kind: str) -> int:
    value = body.get(name, 0)
    if type(value) is not int:  # not isinstance: bool is an int in Python, not in JSON
        raise InvalidFieldError(name, "must be an integer")
    low, high = _INT_BOUNDS[kind]
    if not low <= value <= high:
        raise InvalidFieldError(name, f"is out of range for {kind}")
    return value


def _json_string(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise InvalidFieldError(name, "must be a string")
    return value


def _json_string_list(body: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidFieldError(name, "must be a list of strings")
    return tuple(value)


def _item_from_body(body: Mapping[str, Any], *, sku: str | None) -> Item:
    """The item a request body describes, type-checked in proto field order.

    ``sku`` (from the URL) replaces the body's, after the body's is type-checked.
    """
    _reject_unknown_fields(body, _ITEM_FIELDS)
    body_sku = _json_string(body, "sku")
    return Item(
        sku=body_sku if sku is None else sku,
        name=_json_string(body, "name"),
        quantity=_json_int(body, "quantity", "int64"),
        price_cents=_json_int(body, "price_cents", "int64"),
        tags=_json_string_list(body, "tags"),
    )


def _query_int(name: str, kind: str, *, default: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if _QUERY_INT.fullmatch(raw) is None:
        raise InvalidFieldError(name, "must be an integer")
    value = int(raw)
    low, high = _INT_BOUNDS[kind]
    if not low <= value <= high:
        raise InvalidFieldError(name, f"is out of range for {kind}")
    return value


# ---------------------------------------------------------------- responses


def _item_json(item: Item) -> dict[str, Any]:
    return {
        "sku": item.sku,
        "name": item.name,
        "quantity": item.quantity,
        "price_cents": item.price_cents,
        "tags": list(item.tags),
    }


def _line_json(line: RestockLine) -> dict[str, Any]:
    return {"sku": line.sku, "order_quantity": line.order_quantity}


def _error_response(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    response = jsonify(error={"code": status, "message": message})
    response.status_code = status
    for name, value in headers:
        response.headers[name] = value
    return response


def _render_api_error(exc: ApiError) -> Response:
    return _error_response(exc.status, exc.message, exc.headers)


def _render_invalid_field(exc: InvalidFieldError) -> Response:
    return _error_response(400, str(exc))


def _render_item_not_found(exc: ItemNotFoundError) -> Response:
    return _error_response(404, f"item '{exc.sku}' not found")


def _render_item_exists(exc: ItemExistsError) -> Response:
    return _error_response(409, f"item '{exc.sku}' already exists")


def _render_http_exception(exc: HTTPException) -> ResponseReturnValue:
    """Werkzeug's own errors (unknown URL, wrong method, body too large) as JSON."""
    if exc.code is None:
        return exc
    headers = []
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        # Werkzeug collects the methods in a set: sort them so the header is stable.
        headers.append(("Allow", ", ".join(sorted(exc.valid_methods))))
    return _error_response(exc.code, exc.name, headers)
