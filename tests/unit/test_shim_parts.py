"""The shim's pure parts: settings from proto options, request reading, errors, shadow diffs,
traffic counters, and rpckit.http's public surface."""

from __future__ import annotations

import inspect
import random
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rpckit.http
from examples.inventory._gen.inventory.v1 import inventory_pb2
from rpckit.http._errors import (
    GATEWAY_STATUS_FOR_CODE,
    HttpError,
    http_status_for,
    reason_phrase,
    render_error_object,
    render_gateway_error,
)
from rpckit.http._mapping._jsonmap import LegacyProfile
from rpckit.http._mapping._routes import routes_for_service
from rpckit.http._options import RouteOptions, ShimConfig, resolve_settings, route_key
from rpckit.http._request import (
    deadline_from_headers,
    decode_body,
    is_json_content_type,
    parse_query,
    raw_request_path,
)
from rpckit.http._shadow import CapturedResponse, JsonDifference, choose_primary, compare_responses
from rpckit.http._traffic import OTHER_CALLER, TrafficCounters, caller_of

INVENTORY = inventory_pb2.DESCRIPTOR.services_by_name["Inventory"]


def inventory_settings(options: dict[str, RouteOptions] | None = None) -> dict[str, Any]:
    return {
        route_key(r): resolve_settings(
            r,
            INVENTORY.methods_by_name[r.grpc_method.rsplit("/", 1)[1]],
            ShimConfig(),
            options or {},
        )
        for r in routes_for_service(INVENTORY)
    }


# ---------------------------------------------------------------- settings


def test_proto_options_layer_service_then_method() -> None:
    by_key = inventory_settings()
    legacy = LegacyProfile(unknown_fields="reject")
    create = by_key["POST /items"]
    assert (create.json, create.strict_types, create.max_body_bytes) == (legacy, True, 65536)
    assert (create.success_status, create.response_headers) == (
        201,
        (("Location", "/items/{sku}"),),
    )
    assert by_key["DELETE /items/{sku}"].success_status == 204
    tags = by_key["GET /items/{sku}/tags"]
    assert (tags.success_status, tags.response_headers, tags.strict_types) == (200, (), True)


def test_python_options_layer_service_method_binding() -> None:
    options = {
        "inventory.v1.Inventory": RouteOptions(timeout_s=5.0, max_body_bytes=10),
        "inventory.v1.Inventory.GetItem": RouteOptions(timeout_s=2.0),
        "GET /items/{sku}/tags": RouteOptions(timeout_s=1.0, rollout_percent=50),
    }
    by_key = inventory_settings(options)
    assert by_key["POST /items"].timeout_s == 5.0
    assert by_key["GET /items/{sku}"].timeout_s == 2.0
    assert (
        by_key["GET /items/{sku}/tags"].timeout_s,
        by_key["GET /items/{sku}/tags"].rollout_percent,
    ) == (1.0, 50)
    assert by_key["POST /items"].max_body_bytes == 10  # Python over the proto's 65536


def test_config_defaults_reach_routes_without_options() -> None:
    config = ShimConfig(default_timeout_s=3.0, max_body_bytes=99)
    route = routes_for_service(INVENTORY)[0]
    method = INVENTORY.methods_by_name["GetItem"]
    resolved = resolve_settings(route, method, config, {})
    assert (resolved.timeout_s, resolved.max_body_bytes) == (3.0, 65536)  # proto wins over config


# ---------------------------------------------------------------- request reading


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"PATH_INFO": "/a/b", "REQUEST_URI": "/a/b?x=1"}, "/a/b"),
        ({"PATH_INFO": "/a/b/c", "REQUEST_URI": "/a/b%2Fc"}, "/a/b%2Fc"),  # %2F kept
        (
            {"PATH_INFO": "/\u00c3\u00a9t\u00c3\u00a9", "RAW_URI": "/%C3%A9t%C3%A9"},
            "/%C3%A9t%C3%A9",
        ),
        ({"PATH_INFO": "/\u00c3\u00a9"}, "/%C3%A9"),  # no raw URI: PATH_INFO's latin-1 bytes
        ({"PATH_INFO": "/x", "REQUEST_URI": "/rewritten"}, "/x"),  # disagreeing raw URI
        ({"SCRIPT_NAME": "/app", "PATH_INFO": "/x%2Fy", "REQUEST_URI": "/app/x%252Fy"}, "/x%252Fy"),
        ({"SCRIPT_NAME": "/app", "PATH_INFO": "/a/b", "REQUEST_URI": "/app/a%2Fb"}, "/a%2Fb"),
        ({"PATH_INFO": "/p", "REQUEST_URI": "http://host:8/p?q"}, "/p"),
        ({"PATH_INFO": ""}, "/"),
    ],
)
def test_raw_request_path(environ: dict[str, str], expected: str) -> None:
    assert raw_request_path(environ) == expected


def test_parse_query_as_werkzeug() -> None:
    assert parse_query("a=1&b=x+y&c=&d=%C3%A9&a=2") == [
        ("a", "1"), ("b", "x y"), ("c", ""), ("d", "é"), ("a", "2"),
    ]  # fmt: skip
    assert parse_query("") == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/problem+json", True),
        ("text/json", False),
        ("text/plain", False),
        ("", False),
        (None, False),
    ],
)
def test_json_content_types(value: str | None, expected: bool) -> None:
    assert is_json_content_type(value) is expected


def test_deadline_headers() -> None:
    assert deadline_from_headers(None, None) is None
    assert deadline_from_headers("2.5", None) == 2.5
    assert deadline_from_headers(None, "250m") == 0.25
    assert deadline_from_headers("1", "2S") == 1.0
    for bad in ("", "1e3", "-1", "nan", "inf", "100000"):
        with pytest.raises(HttpError) as info:
            deadline_from_headers(bad, None)
        assert (info.value.status, info.value.reason) == (400, "bad_timeout")
    with pytest.raises(HttpError, match="malformed grpc-timeout"):
        deadline_from_headers(None, "1.5S")


def test_decode_body() -> None:
    assert decode_body(b"", strict=False) is None
    assert decode_body(b' {"a": [1]} ', strict=True) == {"a": [1]}
    with pytest.raises(HttpError, match="malformed JSON: Expecting value: line 1 column 1"):
        decode_body(b"", strict=True)
    with pytest.raises(HttpError, match="not valid UTF-8"):
        decode_body(b"\xff", strict=False)


# ---------------------------------------------------------------- errors


def test_gateway_status_table() -> None:
    assert len(GATEWAY_STATUS_FOR_CODE) == len(grpc.StatusCode)
    assert http_status_for(grpc.StatusCode.UNAUTHENTICATED, {}) == 401
    assert http_status_for(grpc.StatusCode.CANCELLED, {}) == 499
    assert http_status_for(grpc.StatusCode.NOT_FOUND, {"NOT_FOUND": 410}) == 410


def test_renderers() -> None:
    error = HttpError(404, "gone", reason="call_failed", grpc_code=grpc.StatusCode.NOT_FOUND)
    assert render_gateway_error(error) == {"code": 5, "message": "gone", "details": []}
    assert render_error_object(error) == {"error": {"code": 404, "message": "gone"}}
    assert (
        HttpError(405, "x", reason="method_not_allowed").grpc_code is grpc.StatusCode.UNIMPLEMENTED
    )
    assert reason_phrase(413) == "Request Entity Too Large"
    assert reason_phrase(418) == "I'm a Teapot"


# ---------------------------------------------------------------- shadow


def captured(status: int, body: bytes) -> CapturedResponse:
    return CapturedResponse(status, (), body)


def test_compare_json_bodies_by_value_with_pointers() -> None:
    a = captured(200, b'{"a": 1, "b": [1, 2], "c": {"d/e": true}, "only_a": 0}')
    b = captured(200, b'{"a": 1.0, "b": [1], "c": {"d/e": false}, "only_b": 0}')
    differences, count = compare_responses(a, b)
    assert count == 5
    assert differences == (
        JsonDifference("/a", 1, 1.0),
        JsonDifference("/b/1", 2, "(absent)"),
        JsonDifference("/c/d~1e", True, False),
        JsonDifference("/only_a", 0, "(absent)"),
        JsonDifference("/only_b", "(absent)", 0),
    )
    assert compare_responses(a, a) == ((), 0)


def test_compare_non_json_bodies_as_text_and_limit() -> None:
    assert compare_responses(captured(200, b"<html>"), captured(200, b"<html>")) == ((), 0)
    diffs, count = compare_responses(captured(200, b"<a>"), captured(200, b"{}"))
    assert (diffs, count) == ((JsonDifference("", "<a>", {}),), 1)
    wide_a = captured(200, b"[" + b",".join(b"1" for _ in range(50)) + b"]")
    wide_b = captured(200, b"[" + b",".join(b"2" for _ in range(50)) + b"]")
    diffs, count = compare_responses(wide_a, wide_b, limit=3)
    assert (len(diffs), count) == (3, 50)


@settings(deadline=None, max_examples=200)
@given(st.floats(min_value=0, max_value=100), st.integers(min_value=0, max_value=2**32))
def test_rollout_share_follows_the_seeded_rng(percent: float, seed: int) -> None:
    picks = [choose_primary(percent, random.Random(seed)) for _ in range(3)]
    assert len(set(picks)) == 1  # same seed, same answer
    rng = random.Random(seed)
    expected = (
        "rpckit" if percent >= 100 or (percent > 0 and rng.random() * 100 < percent) else "fallback"
    )
    assert picks[0] == expected


def test_rollout_extremes_never_draw() -> None:
    class NoDraws(random.Random):
        def random(self) -> float:
            raise AssertionError("drew")

    assert choose_primary(100, NoDraws()) == "rpckit"
    assert choose_primary(0, NoDraws()) == "fallback"


# ---------------------------------------------------------------- traffic


def test_traffic_counts_and_report() -> None:
    counters = TrafficCounters(max_callers=2)
    for caller in ("a", "b", "c", "a"):
        counters.record(route="/x", method="GET", status=200, caller=caller, served_by="rpckit")
    counters.record_shadow(route="/x", matched=False)
    report = counters.report()
    assert report["total"] == 4
    assert [(r["caller"], r["count"]) for r in report["requests"]] == [
        (OTHER_CALLER, 1), ("a", 2), ("b", 1),
    ]  # fmt: skip
    assert report["shadow"] == [{"route": "/x", "outcome": "mismatch", "count": 1}]


def test_traffic_prometheus_registry_is_its_own() -> None:
    import prometheus_client

    counters = TrafficCounters(max_callers=10)
    counters.record(route="/x", method="GET", status=404, caller="curl/8", served_by="fallback")
    text = prometheus_client.generate_latest(counters.registry()).decode()
    assert (
        'rpckit_http_requests_total{caller="curl/8",method="GET",route="/x",served_by="fallback",'
        'status="404"} 1.0'
    ) in text
    assert "rpckit_http_requests" not in prometheus_client.generate_latest().decode()


def test_caller_labels() -> None:
    assert (
        caller_of({"HTTP_USER_AGENT": "python-requests/2.32 CPython"}, None)
        == "python-requests/2.32"
    )
    assert caller_of({}, None) == "(unknown)"
    assert caller_of({"HTTP_X_CALLER": " billing "}, "X-Caller") == "billing"
    assert caller_of({"HTTP_USER_AGENT": "curl/8"}, "X-Caller") == "(unknown)"


# ---------------------------------------------------------------- public surface


def test_http_all_is_sorted_complete_and_documented() -> None:
    def style(name: str) -> tuple[bool, bool, str]:
        return (not name.isupper(), not name[0].isupper(), name)

    names = list(rpckit.http.__all__)
    assert names == sorted(names, key=style)
    public = {n for n in vars(rpckit.http) if not n.startswith("_")}
    assert public == set(names)
    for name in names:
        obj = getattr(rpckit.http, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):  # not the type aliases
            assert obj.__doc__, f"rpckit.http.{name} has no docstring"
