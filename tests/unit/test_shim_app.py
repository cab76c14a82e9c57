"""rpckit.http.Shim as a WSGI app, in process (no sockets): every HttpRule feature end to end,
slash policy, HEAD/OPTIONS, the request checks in order, errors, metadata, deadlines, profiles.

The servicer is the shimtest ``Shop``: its methods echo what they received, so each
test sees exactly what the shim built from the URL, query and body.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import empty_pb2, json_format
from google.rpc import error_details_pb2
from werkzeug.test import Client, TestResponse

import rpckit
from rpckit.http import (
    GuardedCall,
    HttpError,
    LegacyProfile,
    RouteOptions,
    Shim,
    ShimConfig,
    render_error_object,
)
from tests.protos._gen.shimtest.v1 import shimtest_pb2 as pb
from tests.protos._gen.shimtest.v1 import shimtest_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

COMPACT = LegacyProfile(emit_defaults=False)
SHOP = "shimtest.v1.Shop"


class Shop(pb_grpc.ShopServicer):
    """Echoes requests back; records the metadata and deadline each call saw."""

    def __init__(self) -> None:
        self.seen_metadata: list[tuple[tuple[str, str], ...]] = []
        self.seen_remaining: list[float | None] = []

    def _note(self, context: grpc.ServicerContext) -> None:
        self.seen_metadata.append(tuple((m[0], str(m[1])) for m in context.invocation_metadata()))
        self.seen_remaining.append(rpckit.time_remaining())

    def GetItem(self, request: pb.GetItemRequest, context: grpc.ServicerContext) -> pb.Item:
        self._note(context)
        if request.id == "missing":
            violation = error_details_pb2.BadRequest.FieldViolation(field="id", description="no")
            raise rpckit.StatusError(
                grpc.StatusCode.NOT_FOUND,
                "no item 'missing'",
                details=[error_details_pb2.BadRequest(field_violations=[violation])],
            )
        if request.id == "boom":
            raise RuntimeError("SECRET-MARKER")
        if request.id == "busy":
            context.set_trailing_metadata(
                (("grpc-retry-pushback-ms", "1500"), ("x-request-id", "r-1"), ("x-private", "no"))
            )
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")
        return pb.Item(id=request.id, display_name=request.view, quantity=2**53 + 1)

    def SearchItems(
        self, request: pb.ListItemsRequest, context: grpc.ServicerContext
    ) -> pb.ListItemsResponse:
        return pb.ListItemsResponse(next_page_token="search")

    def ListItems(
        self, request: pb.ListItemsRequest, context: grpc.ServicerContext
    ) -> pb.ListItemsResponse:
        items = [
            pb.Item(id=tag, display_name=request.filter.shelf, quantity=request.filter.min_quantity)
            for tag in request.tag
        ]
        return pb.ListItemsResponse(items=items, next_page_token=request.page_token)

    def CreateItem(self, request: pb.CreateItemRequest, context: grpc.ServicerContext) -> pb.Item:
        item = pb.Item()
        item.CopyFrom(request.item)
        item.display_name = f"{request.shelf}/{item.display_name}"
        return item

    def UpdateItem(self, request: pb.UpdateItemRequest, context: grpc.ServicerContext) -> pb.Item:
        return request.item

    def DeleteItem(
        self, request: pb.GetItemRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        return empty_pb2.Empty()

    def GetBook(self, request: pb.GetBookRequest, context: grpc.ServicerContext) -> pb.Book:
        return pb.Book(name=request.name, title="t")

    def GetFile(self, request: pb.GetFileRequest, context: grpc.ServicerContext) -> pb.File:
        return pb.File(bucket=request.bucket, path=request.path)

    def Ping(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> empty_pb2.Empty:
        return empty_pb2.Empty()

    def RunJob(self, request: pb.RunJobRequest, context: grpc.ServicerContext) -> pb.Job:
        return pb.Job(name=request.name, state=f"run:{request.timeout_ms}")

    def CancelJob(self, request: pb.RunJobRequest, context: grpc.ServicerContext) -> pb.Job:
        return pb.Job(name=request.name, state="cancelled")

    def PurgeCache(
        self, request: pb.PurgeCacheRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self._note(context)
        return empty_pb2.Empty()

    def Echo(self, request: pb.EchoRequest, context: grpc.ServicerContext) -> pb.EchoRequest:
        return request

    def RecordEvent(self, request: pb.Event, context: grpc.ServicerContext) -> pb.Event:
        return request


def shim(
    shop: Shop | None = None,
    *,
    routes: dict[str, RouteOptions] | None = None,
    fallback: Any = None,
    config: ShimConfig | None = None,
) -> Shim:
    options = {SHOP: RouteOptions(json=COMPACT), **(routes or {})}
    if options[SHOP].json is None:  # a service-level override keeps the compact profile
        options[SHOP] = dataclasses.replace(options[SHOP], json=COMPACT)
    return Shim(services=[shop or Shop()], routes=options, fallback=fallback, config=config)


def body(response: TestResponse) -> Any:
    return json.loads(response.get_data())


def post(client: Client, path: str, data: bytes | str, **headers: str) -> TestResponse:
    return client.post(path, data=data, headers={"Content-Type": "application/json", **headers})


class Legacy:
    """A tiny fallback WSGI app: answers 200 with its own JSON, 405 on /v1/items/x with POST."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.bodies: list[bytes] = []

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        self.paths.append(environ["PATH_INFO"])
        length = int(environ.get("CONTENT_LENGTH") or 0)
        self.bodies.append(environ["wsgi.input"].read(length) if length else b"")
        if environ["REQUEST_METHOD"] == "OPTIONS":
            start_response("200 OK", [("Allow", "GET, LEGACY")])
            return [b""]
        if environ["PATH_INFO"] == "/v1/items/x" and environ["REQUEST_METHOD"] == "POST":
            start_response("405 METHOD NOT ALLOWED", [("Allow", "POST, TRACE")])
            return [b"legacy 405"]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"legacy":true}']


# ---------------------------------------------------------------- every HttpRule feature


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/items/a1?view=full", {"id": "a1", "display_name": "full", "quantity": 2**53 + 1}),
        ("/v1/items/a%2Fb", {"id": "a/b", "quantity": 2**53 + 1}),  # one segment: %2F decoded
        ("/v1/items/search", {"next_page_token": "search"}),  # a literal beats {id}
        ("/v1/shelves/s1/items?tag=a&tag=b&filter.min_quantity=3&page_token=p",
         {"items": [{"id": "a", "display_name": "s1", "quantity": 3},
                    {"id": "b", "display_name": "s1", "quantity": 3}], "next_page_token": "p"}),
        ("/v1/shelves/1/books/2", {"name": "shelves/1/books/2", "title": "t"}),
        ("/v1/buckets/b/files/x/y%2Fz/w.txt", {"bucket": "b", "path": "x/y%2Fz/w.txt"}),
        ("/v1/buckets/b/files", {"bucket": "b"}),  # ** matches zero segments
        ("/v1/ping/a/b/c", {}),
        ("/v1/echo/-1/9007199254740993/18446744073709551615/COLOR_RED/true",
         {"i32": -1, "i64": 9007199254740993, "u64": 18446744073709551615, "color": "COLOR_RED",
          "flag": True}),
        ("/v1/echo/1/2/3/2/false", {"i32": 1, "i64": 2, "u64": 3, "color": "COLOR_GREEN"}),
        ("/v1/echo-tags?tags=x&tags=y", ["x", "y"]),  # response_body: a scalar list
        ("/legacy/items/?tag=t", [{"id": "t"}]),  # response_body: repeated message, trailing /
    ],
)  # fmt: skip
def test_get_routes_fill_the_request_from_path_and_query(path: str, expected: Any) -> None:
    response = Client(shim()).get(path)
    assert (response.status_code, body(response)) == (200, expected)
    assert response.headers["Content-Type"] == "application/json"


def test_body_field_and_path_variable() -> None:
    response = post(Client(shim()), "/v1/shelves/s9/items", b'{"id": "i", "display_name": "d"}')
    assert (response.status_code, body(response)) == (200, {"id": "i", "display_name": "s9/d"})


def test_nested_path_variable_overrides_the_body_and_both_bindings_work() -> None:
    client = Client(shim())
    for method in ("PATCH", "PUT"):
        response = client.open(
            "/v1/items/from-url",
            method=method,
            data=b'{"id": "from-body", "rank": 4}',
            headers={"Content-Type": "application/json"},
        )
        assert (response.status_code, body(response)) == (200, {"id": "from-url", "rank": 4})


def test_custom_verbs_and_body_star() -> None:
    client = Client(shim())
    run = post(client, "/v1/jobs/j1:run", b'{"timeout_ms": 5, "env": {"A": "1"}}')
    assert body(run) == {"name": "jobs/j1", "state": "run:5"}
    cancel = post(client, "/v1/jobs/j1:cancel", b"{}")
    assert body(cancel) == {"name": "jobs/j1", "state": "cancelled"}


def test_custom_http_method() -> None:
    shop = Shop()
    response = Client(shim(shop)).open("/v1/cache/k1", method="PURGE")
    assert (response.status_code, body(response)) == (200, {})


def test_struct_body_keeps_whole_numbers_as_ints() -> None:
    event = b'{"kind": "k", "payload": {"n": 5, "f": 1.5, "deep": [1, {"x": null}]}}'
    response = post(Client(shim()), "/v1/events", event)
    assert body(response) == {"kind": "k", "payload": {"n": 5, "f": 1.5, "deep": [1, {"x": None}]}}


def test_delete_and_empty_responses() -> None:
    response = Client(shim()).delete("/v1/items/a1")
    assert (response.status_code, response.get_data()) == (200, b"{}\n")


# ---------------------------------------------------------------- slashes, HEAD, OPTIONS


def test_missing_trailing_slash_redirects_308_keeping_the_query() -> None:
    response = Client(shim()).get("/legacy/items?tag=t")
    assert response.status_code == 308
    assert response.headers["Location"] == "/legacy/items/?tag=t"


def test_non_strict_slashes_match_both_spellings() -> None:
    app = shim(config=ShimConfig(strict_slashes=False))
    client = Client(app)
    assert body(client.get("/legacy/items?tag=t")) == [{"id": "t"}]
    assert body(client.get("/v1/items/a1/"))["id"] == "a1"


def test_strict_slashes_do_not_match_an_extra_slash() -> None:
    response = Client(shim()).get("/v1/items/a1/")
    assert (response.status_code, body(response)["message"]) == (404, "Not Found")


def test_head_answers_headers_of_get_without_the_body() -> None:
    client = Client(shim())
    got = client.get("/v1/items/a1")
    head = client.head("/v1/items/a1")
    assert (head.status_code, head.get_data()) == (200, b"")
    assert head.headers["Content-Length"] == str(len(got.get_data()))
    assert head.headers["Content-Type"] == "application/json"


def test_options_lists_the_allowed_methods() -> None:
    response = Client(shim()).options("/v1/items/a1")
    assert (response.status_code, response.get_data()) == (200, b"")
    assert response.headers["Allow"] == "DELETE, GET, HEAD, OPTIONS, PATCH, PUT"


def test_options_merges_the_fallbacks_allow() -> None:
    response = Client(shim(fallback=Legacy())).options("/v1/items/a1")
    assert response.headers["Allow"] == "DELETE, GET, HEAD, LEGACY, OPTIONS, PATCH, PUT"


def test_wrong_method_is_405_with_allow() -> None:
    response = Client(shim()).post("/v1/items/a1")
    assert response.status_code == 405
    assert response.headers["Allow"] == "DELETE, GET, HEAD, OPTIONS, PATCH, PUT"
    assert body(response) == {"code": 12, "message": "Method Not Allowed", "details": []}


def test_wrong_method_merges_a_fallback_405_and_keeps_its_body() -> None:
    response = Client(shim(fallback=Legacy())).post("/v1/items/x")
    assert (response.status_code, response.get_data()) == (405, b"legacy 405")
    assert response.headers["Allow"] == "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE"


def test_wrong_method_the_fallback_still_serves_goes_to_it() -> None:
    legacy = Legacy()
    response = Client(shim(fallback=legacy)).post("/v1/items/y")
    assert (response.status_code, response.get_data()) == (200, b'{"legacy":true}')
    assert legacy.paths == ["/v1/items/y"]


def test_unknown_path_goes_to_the_fallback_untouched() -> None:
    legacy = Legacy()
    response = Client(shim(fallback=legacy)).post("/old/thing", data=b"raw body")
    assert response.get_data() == b'{"legacy":true}'
    assert (legacy.paths, legacy.bodies) == (["/old/thing"], [b"raw body"])


def test_unknown_path_without_fallback_is_404() -> None:
    response = Client(shim()).get("/nowhere")
    assert (response.status_code, body(response)) == (
        404,
        {"code": 5, "message": "Not Found", "details": []},
    )


# ---------------------------------------------------------------- request checks


def test_body_needs_a_json_content_type() -> None:
    client = Client(shim())
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = {} if content_type is None else {"Content-Type": content_type}
        response = client.post("/v1/jobs/j:run", data=b"{}", headers=headers)
        assert (response.status_code, body(response)["message"]) == (
            415,
            "expected Content-Type: application/json",
        )
    vendor = client.post(
        "/v1/jobs/j:run", data=b"{}", headers={"Content-Type": "application/vnd.x+json; q=1"}
    )
    assert vendor.status_code == 200


def test_body_over_the_limit_is_413_by_length_and_when_chunked() -> None:
    app = shim(config=ShimConfig(max_body_bytes=10))
    response = post(Client(app), "/v1/jobs/j:run", b'{"timeout_ms": 12345}')
    assert (response.status_code, body(response)["message"]) == (413, "Request Entity Too Large")
    chunked = Client(app).post(
        "/v1/jobs/j:run",
        input_stream=iter_stream([b'{"timeout_ms":', b" 12345}"]),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    assert chunked.status_code == 413
    small = Client(app).post(
        "/v1/jobs/j:run",
        input_stream=iter_stream([b"{}"]),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    assert small.status_code == 200


def iter_stream(chunks: list[bytes]) -> Any:
    import io

    return io.BytesIO(b"".join(chunks))


def test_per_route_body_limit() -> None:
    app = shim(routes={f"{SHOP}.RunJob": RouteOptions(max_body_bytes=3)})
    assert post(Client(app), "/v1/jobs/j:run", b'{"timeout_ms": 1}').status_code == 413
    assert post(Client(app), "/v1/jobs/j:cancel", b'{"timeout_ms": 1}').status_code == 200


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"timeout_ms": }', "malformed JSON: Expecting value: line 1 column 16 (char 15)"),
        (b'{\n "a": 1', "malformed JSON: Expecting ',' delimiter: line 2 column 8 (char 9)"),
        (b'{"name": "\xff"}', "request body is not valid UTF-8"),
    ],
)
def test_malformed_json_says_where(data: bytes, message: str) -> None:
    response = post(Client(shim()), "/v1/jobs/j:run", data)
    assert (response.status_code, body(response)["message"]) == (400, message)


def test_empty_body_is_an_empty_message_unless_strict() -> None:
    assert body(post(Client(shim()), "/v1/jobs/j:run", b"")) == {
        "name": "jobs/j",
        "state": "run:0",
    }
    strict = shim(routes={SHOP: RouteOptions(strict_types=True)})
    response = post(Client(strict), "/v1/jobs/j:run", b"")
    assert body(response)["message"] == "malformed JSON: Expecting value: line 1 column 1 (char 0)"


def test_unknown_fields_are_ignored_by_default_and_rejected_all_sorted_on_request() -> None:
    data = b'{"timeout_ms": 1, "zeta": 1, "alpha": 2}'
    assert post(Client(shim()), "/v1/jobs/j:run", data).status_code == 200
    rejecting = shim(routes={SHOP: RouteOptions(json=LegacyProfile(unknown_fields="reject"))})
    response = post(Client(rejecting), "/v1/jobs/j:run", data)
    assert (response.status_code, body(response)["message"]) == (
        400,
        "request body: unknown fields: zeta, alpha",
    )
    strict = shim(
        routes={
            SHOP: RouteOptions(
                json=LegacyProfile(unknown_fields="reject", emit_defaults=False), strict_types=True
            )
        }
    )
    response = post(Client(strict), "/v1/jobs/j:run", data)
    assert body(response)["message"] == "unknown fields 'alpha', 'zeta'"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[]", "request body must be a JSON object"),
        (b'{"timeout_ms": "5"}', "field 'timeout_ms' must be an integer"),
        (b'{"timeout_ms": 5.0}', "field 'timeout_ms' must be an integer"),
        (b'{"timeout_ms": true}', "field 'timeout_ms' must be an integer"),
        (b'{"timeout_ms": null}', "field 'timeout_ms' must be an integer"),
        (b'{"timeout_ms": 9223372036854775808}', "field 'timeout_ms' is out of range for int64"),
        (b'{"name": 5}', "field 'name' must be a string"),
        (b'{"env": []}', "field 'env' must be an object"),
        (b'{"env": {"a": 1}}', "field 'env' must be an object of strings"),
        (b'{"name": 1, "timeout_ms": "x"}', "field 'name' must be a string"),  # proto order
    ],
)
def test_strict_types_name_the_field(data: bytes, message: str) -> None:
    app = shim(routes={SHOP: RouteOptions(strict_types=True)})
    response = post(Client(app), "/v1/jobs/j:run", data)
    assert (response.status_code, body(response)["message"]) == (400, message)


def test_strict_types_check_nested_and_repeated_fields_and_spelling() -> None:
    app = shim(routes={SHOP: RouteOptions(strict_types=True)})
    client = Client(app)
    cases = {
        b'{"counts": [1, "2"]}': "field 'counts' must be a list of integers",
        b'{"address": {"geo": {"lat": "n"}}}': "field 'address.geo.lat' must be a number",
        b'{"history": [{"city": 1}]}': "field 'history[0].city' must be a string",
        b'{"color": "PURPLE"}': (
            "field 'color' must be one of COLOR_UNSPECIFIED, COLOR_RED, COLOR_GREEN, COLOR_BLUE"
        ),
        b'{"active": 1}': "field 'active' must be true or false",
    }
    for data, message in cases.items():
        response = post(client, "/v1/shelves/s/items", data)
        assert body(response)["message"] == message, data
    # The profile spells proto names; json names are unknown keys (ignored by default).
    ok = post(client, "/v1/shelves/s/items", b'{"displayName": "x", "created_at": null}')
    assert (ok.status_code, body(ok)) == (200, {"display_name": "s/"})


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page_size=%2B5", "field 'page_size' must be an integer"),
        ("page_size=", "field 'page_size' must be an integer"),
        ("page_size=2.0", "field 'page_size' must be an integer"),
        ("page_size=3000000000", "field 'page_size' is out of range for int32"),
        ("ids=1&ids=x", "field 'ids' must be an integer"),
        # A camelCase key names the same field for the request builder (proto or JSON names),
        # so it is checked the same way, not let through to the lenient grammar (+5 is 5 there).
        ("pageSize=%2B5", "field 'pageSize' must be an integer"),
        ("pageSize=2.0", "field 'pageSize' must be an integer"),
        ("pageSize=3000000000", "field 'pageSize' is out of range for int32"),
        ("filter.minQuantity=1e3", "field 'filter.minQuantity' must be an integer"),
    ],
)
def test_strict_query_integers(query: str, message: str) -> None:
    app = shim(routes={SHOP: RouteOptions(strict_types=True)})
    response = Client(app).get(f"/v1/items?{query}")
    assert (response.status_code, body(response)["message"]) == (400, message)


def test_strict_query_counts_both_spellings_of_a_field_as_one_parameter() -> None:
    app = shim(routes={SHOP: RouteOptions(strict_types=True)})
    response = Client(app).get("/v1/items?pageToken=a&page_token=b")
    assert body(response) == {"next_page_token": "a"}  # request.args.get: the first one


def test_strict_query_keeps_the_first_of_a_repeated_singular_parameter() -> None:
    app = shim(routes={SHOP: RouteOptions(strict_types=True)})
    response = Client(app).get("/v1/items?page_token=a&page_token=b")
    assert body(response) == {"next_page_token": "a"}
    lenient = Client(shim()).get("/v1/items?page_token=a&page_token=b")
    assert (lenient.status_code, body(lenient)["message"]) == (
        400,
        "query parameter 'page_token': expected one value, got 2",
    )


def test_bad_path_parameter_is_400_naming_it() -> None:
    response = Client(shim()).get("/v1/echo/x/2/3/COLOR_RED/true")
    assert response.status_code == 400
    assert body(response)["message"] == (
        "path parameter 'i32': expected an integer from -2147483648 to 2147483647, got 'x'"
    )


# ---------------------------------------------------------------- errors


def test_status_error_maps_to_http_with_rich_details() -> None:
    response = Client(shim()).get("/v1/items/missing")
    assert (response.status_code, body(response)) == (
        404,
        {
            "code": 5,
            "message": "no item 'missing'",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": "id", "description": "no"}],
                }
            ],
        },
    )


def test_status_table_can_be_overridden_and_the_renderer_swapped() -> None:
    config = ShimConfig(
        status_for_code={grpc.StatusCode.NOT_FOUND: 410}, error_renderer=render_error_object
    )
    response = Client(shim(config=config)).get("/v1/items/missing")
    assert (response.status_code, body(response)) == (
        410,
        {"error": {"code": 410, "message": "no item 'missing'"}},
    )


def test_renderer_sees_the_reason_and_field() -> None:
    seen: list[HttpError] = []

    def render(error: HttpError) -> object:
        seen.append(error)
        return {"why": error.reason, "field": error.field, "text": error.description}

    app = shim(
        routes={SHOP: RouteOptions(strict_types=True)}, config=ShimConfig(error_renderer=render)
    )
    response = post(Client(app), "/v1/jobs/j:run", b'{"timeout_ms": "5"}')
    assert body(response) == {
        "why": "wrong_type",
        "field": "timeout_ms",
        "text": "must be an integer",
    }
    assert seen[0].grpc_code is grpc.StatusCode.INVALID_ARGUMENT


def test_handler_crash_is_500_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    response = Client(shim()).get("/v1/items/boom")
    assert (response.status_code, body(response)) == (
        500,
        {"code": 13, "message": "internal error; the server logged the details", "details": []},
    )
    assert b"SECRET-MARKER" not in response.get_data()
    assert b"Traceback" not in response.get_data()
    assert "SECRET-MARKER" in caplog.text


def test_shim_bug_is_500_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    def broken_renderer(error: HttpError) -> object:
        raise RuntimeError("RENDERER-SECRET")

    app = shim(config=ShimConfig(error_renderer=broken_renderer))
    response = Client(app).get("/nowhere")
    assert (response.status_code, response.get_data()) == (
        500,
        b'{"code":13,"message":"internal error; the server logged the details"}\n',
    )
    assert "RENDERER-SECRET" in caplog.text


# ---------------------------------------------------------------- metadata and headers


def test_only_allowlisted_headers_reach_the_handler() -> None:
    shop = Shop()
    Client(shim(shop)).get(
        "/v1/items/a1",
        headers={"Authorization": "Bearer t", "X-Secret": "s", "X-Request-Id": "r9"},
    )
    assert shop.seen_metadata == [(("authorization", "Bearer t"), ("x-request-id", "r9"))]
    config = ShimConfig(forward_headers=["x-secret"])
    Client(shim(shop, config=config)).get("/v1/items/a1", headers={"X-Secret": "s"})
    assert shop.seen_metadata[-1] == (("x-secret", "s"),)


def test_allowlisted_metadata_becomes_headers_and_pushback_retry_after() -> None:
    response = Client(shim()).get("/v1/items/busy")
    assert response.status_code == 503  # refused for overload (a pushback came with it)
    assert response.headers["X-Request-Id"] == "r-1"
    assert response.headers["Retry-After"] == "2"
    assert "X-Private" not in response.headers


def test_overload_status_can_keep_the_codes_table() -> None:
    response = Client(shim(config=ShimConfig(overload_status=None))).get("/v1/items/busy")
    assert response.status_code == 429  # grpc-gateway's RESOURCE_EXHAUSTED
    assert response.headers["Retry-After"] == "2"


@pytest.mark.parametrize(
    ("value", "error"), [(200, ValueError), (600, ValueError), ("503", TypeError)]
)
def test_overload_status_must_be_an_http_error(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="overload_status"):
        ShimConfig(overload_status=value)  # type: ignore[arg-type]


def test_guard_runs_before_the_body_is_read() -> None:
    def guard(call: GuardedCall) -> None:
        if call.header("authorization") != "Bearer ok":
            raise rpckit.StatusError(
                grpc.StatusCode.UNAUTHENTICATED, "who are you", trailers=[("www-authenticate", "B")]
            )

    app = shim(routes={f"{SHOP}.RunJob": RouteOptions(guard=guard)})
    client = Client(app)
    refused = client.post(
        "/v1/jobs/j:run", data=b"not json", headers={"Content-Type": "text/plain"}
    )
    assert (refused.status_code, body(refused)["message"]) == (401, "who are you")
    assert refused.headers["WWW-Authenticate"] == "B"
    allowed = client.post(
        "/v1/jobs/j:run",
        data=b"not json",
        headers={"Content-Type": "text/plain", "Authorization": "Bearer ok"},
    )
    assert allowed.status_code == 415


# ---------------------------------------------------------------- deadlines


def test_deadline_from_headers_and_route_default() -> None:
    clock = FakeClock()
    shop = Shop()
    app = Shim(
        services=[shop],
        routes={f"{SHOP}.GetItem": RouteOptions(timeout_s=7.0)},
        clock=clock,
    )
    client = Client(app)
    client.get("/v1/items/a", headers={"X-Request-Timeout": "2.5"})
    client.get("/v1/items/a", headers={"grpc-timeout": "300m"})
    client.get("/v1/items/a", headers={"X-Request-Timeout": "2", "grpc-timeout": "1S"})
    client.get("/v1/items/a")
    # The shim's clock stands still, so each budget reaches the handler whole.
    assert len(shop.seen_remaining) == 4
    assert all(r is not None and 0 < r <= 7.0 for r in shop.seen_remaining)
    assert [round(r or 0) for r in shop.seen_remaining] == [2, 0, 1, 7]


class FakeClock:
    """A monotonic clock that stands still (deadlines computed against it are exact)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bad_timeout_header_is_400() -> None:
    client = Client(shim())
    for headers in (
        {"X-Request-Timeout": "soon"},
        {"X-Request-Timeout": "-1"},
        {"grpc-timeout": "5x"},
    ):
        response = client.get("/v1/items/a", headers=headers)
        assert response.status_code == 400, headers


def test_expired_deadline_is_504_without_calling() -> None:
    shop = Shop()
    response = Client(shim(shop)).get("/v1/items/a", headers={"X-Request-Timeout": "0"})
    assert (response.status_code, body(response)["code"]) == (504, 4)
    assert shop.seen_metadata == []


# ---------------------------------------------------------------- profiles and success


def test_success_status_and_header_templates() -> None:
    routes = {
        f"{SHOP}.CreateItem": RouteOptions(
            success_status=201,
            response_headers=[("Location", "/v1/items/{id}"), ("X-Kind", "item")],
        ),
        f"{SHOP}.DeleteItem": RouteOptions(success_status=204),
    }
    client = Client(shim(routes=routes))
    created = post(client, "/v1/shelves/s/items", b'{"id": "a b/c"}')
    assert created.status_code == 201
    assert created.headers["Location"] == "/v1/items/a%20b%2Fc"
    assert created.headers["X-Kind"] == "item"
    deleted = client.delete("/v1/items/a")
    assert (deleted.status_code, deleted.get_data()) == (204, b"")
    assert "Content-Type" not in deleted.headers


def test_profile_spellings_and_defaults() -> None:
    profile = LegacyProfile(
        field_names="json", int64_as_number=False, enum_style="number", emit_defaults=False
    )
    app = shim(routes={f"{SHOP}.Echo": RouteOptions(json=profile)})
    response = Client(app).get("/v1/echo/1/9007199254740993/3/COLOR_BLUE/false")
    assert response.get_data() == b'{"color":3,"i32":1,"i64":"9007199254740993","u64":"3"}\n'
    flask_like = Client(shim(routes={f"{SHOP}.Echo": RouteOptions(json=LegacyProfile())}))
    full = body(flask_like.get("/v1/echo/0/0/0/0/false"))
    assert (full["color"], full["tags"], full["f32"]) == ("COLOR_UNSPECIFIED", [], 0)


def test_default_profile_emits_flask_jsonify_bytes() -> None:
    app = Shim(services=[Shop()])
    response = Client(app).get("/v1/items/x")
    data = response.get_data()
    assert data.endswith(b"}\n")
    assert b": " not in data
    assert list(json.loads(data)) == sorted(json.loads(data))


# ---------------------------------------------------------------- construction


def test_routes_keys_must_name_something_served() -> None:
    with pytest.raises(
        ValueError, match=r"routes= keys name nothing served: \['shimtest\.v1\.Nope'\]"
    ):
        Shim(services=[Shop()], routes={"shimtest.v1.Nope": RouteOptions()})


def test_shadow_needs_a_side_effect_free_method_unless_allowed() -> None:
    with pytest.raises(ValueError, match="NO_SIDE_EFFECTS"):
        Shim(services=[Shop()], routes={f"{SHOP}.CreateItem": RouteOptions(shadow=True)})
    allowed = RouteOptions(shadow=True, shadow_side_effects=True)
    Shim(services=[Shop()], routes={f"{SHOP}.CreateItem": allowed})


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"success_status": 203}, "success_status must be one of"),
        ({"rollout_percent": 101}, "rollout_percent must be from 0 to 100"),
        ({"timeout_s": 0}, "timeout_s must be > 0"),
        ({"response_headers": [("Bad Name", "x")]}, "is not a header name"),
    ],
)
def test_route_options_are_validated(kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        RouteOptions(**kwargs)


def test_header_template_must_name_a_response_field() -> None:
    bad = RouteOptions(response_headers=[("Location", "/v1/items/{nope}")])
    with pytest.raises(ValueError, match="has no field 'nope'"):
        Shim(services=[Shop()], routes={f"{SHOP}.CreateItem": bad})


def test_a_source_of_calls_must_be_unambiguous() -> None:
    with pytest.raises(TypeError, match="not both"):
        Shim(channel=grpc.insecure_channel("127.0.0.1:1"), server=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="names a service"):
        Shim(services=["shimtest.v1.Shop"])
    with pytest.raises(ValueError, match=r"no service 'no\.Such'"):
        Shim(services=["no.Such"], channel=grpc.insecure_channel("127.0.0.1:1"))


def test_shim_config_is_validated() -> None:
    with pytest.raises(ValueError, match="not a gRPC code"):
        ShimConfig(status_for_code={"NOPE": 400})
    with pytest.raises(ValueError, match="not a text header name"):
        ShimConfig(forward_headers=["x-data-bin"])
    with pytest.raises(TypeError, match="not a str"):
        ShimConfig(forward_headers="authorization")


def test_routes_and_settings_are_inspectable() -> None:
    app = shim()
    keys = {f"{r.http_method} {r.template}" for r in app.routes}
    assert {"GET /v1/{name=shelves/*/books/*}", "PURGE /v1/cache/{key}"} <= keys
    get = next(r for r in app.routes if r.grpc_method.endswith("/GetItem"))
    assert app.settings_for(get).json == COMPACT


def test_json_format_is_used_for_well_known_types() -> None:
    item = pb.Item(id="w")
    item.created_at.FromJsonString("2024-01-31T12:00:00Z")
    assert json_format.MessageToDict(item)["createdAt"] == "2024-01-31T12:00:00Z"
