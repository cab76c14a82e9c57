"""rpckit.http._mapping._routes: google.api.http templates, routing with Flask's answers,
request building."""

from __future__ import annotations

import math
from urllib.parse import quote

import pytest
import werkzeug.exceptions
import werkzeug.routing
from google.api import (  # type: ignore[import-untyped, unused-ignore]
    annotations_pb2,
    http_pb2,
)
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, empty_pb2, field_mask_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from rpckit.http._mapping._jsonmap import LegacyProfile
from rpckit.http._mapping._routes import (
    Match,
    MethodNotAllowed,
    NotFound,
    PathTemplate,
    RedirectSlash,
    RequestError,
    Resolution,
    Route,
    Router,
    TemplateSegment,
    TemplateVariable,
    build_request,
    routes_for_service,
)
from tests.protos._gen.shimtest.v1 import shimtest_pb2 as pb

SHOP = pb.DESCRIPTOR.services_by_name["Shop"]
BIG = 2**53 + 1


def shop_routes() -> dict[str, Route]:
    """Shop's routes keyed by ``"METHOD /template"``."""
    return {f"{r.http_method} {r.template}": r for r in routes_for_service(SHOP)}


def route(key: str) -> Route:
    return shop_routes()[key]


# ---------------------------------------------------------------- template parsing


def test_parse_every_template_form() -> None:
    t = PathTemplate.parse("/v1/{name=shelves/*/books/**}:run")
    assert t.segments == (
        TemplateSegment("literal", "v1"),
        TemplateSegment("literal", "shelves"),
        TemplateSegment("*"),
        TemplateSegment("literal", "books"),
        TemplateSegment("**"),
    )
    assert t.variables == (TemplateVariable("name", 1, 5, multi=True),)
    assert t.verb == "run"
    assert not t.trailing_slash
    assert str(t) == "/v1/{name=shelves/*/books/**}:run"

    t = PathTemplate.parse("/v1/{item.id}/*/x")
    assert t.variables == (TemplateVariable("item.id", 1, 2, multi=False),)
    assert t.segments[1] == TemplateSegment("*")
    assert t.field_paths == ("item.id",)

    assert PathTemplate.parse("/a/{x=lit}").variables == (TemplateVariable("x", 1, 2, False),)
    assert PathTemplate.parse("/a/{p=**}").variables[0].multi
    assert PathTemplate.parse("/items/").trailing_slash
    root = PathTemplate.parse("/")
    assert root.segments == ()
    assert root.variables == ()
    # ':' inside a segment is a literal; only the last one after the last '/' or '}' is a verb.
    t = PathTemplate.parse("/a:b/c:d")
    assert t.segments == (TemplateSegment("literal", "a:b"), TemplateSegment("literal", "c"))
    assert t.verb == "d"
    assert PathTemplate.parse("/caf%C3%A9").segments == (TemplateSegment("literal", "café"),)


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("v1/items", 0, "starts with '/'"),
        ("/v1/{x", 4, "not closed"),
        ("/v1/{x=a/{y}}", 9, "cannot be nested"),
        ("/v1/**/a", 4, "'**' must be the last segment"),
        ("/v1/{p=**}/a", 7, "'**' must be the last segment"),
        ("/v1/{a}/{a}", 10, "bound twice"),
        ("/v1/a b", 5, "invalid character ' '"),
        ("/users/<int:id>", 7, "'{id}'"),
        ("/v1/x:", 5, "empty verb"),
        ("/v1/x/:run", 5, "trailing '/' cannot come before a verb"),
        ("/:run", 1, "a verb needs a path"),
        ("/v1//a", 4, "empty path segment"),
        ("//", 1, "empty path segment"),
        ("/v1/{x=}", 7, "empty path segment"),
        ("/v1/{1x}", 5, "'1x' is not a field name"),
        ("/v1/{a.}", 7, "'' is not a field name"),
        ("/v1/%zz", 4, "bad %-escape"),
        ("/v1/x}", 5, "unexpected '}'"),
        ("/v1/a{x}", 5, "unexpected '{'"),
    ],
)
def test_parse_errors_name_template_and_position(text: str, position: int, fragment: str) -> None:
    with pytest.raises(ValueError, match="invalid path template") as caught:
        PathTemplate.parse(text)
    message = str(caught.value)
    assert repr(text) in message
    assert f"at position {position}:" in message
    assert fragment in message


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(TypeError):
        PathTemplate.parse(b"/v1")  # type: ignore[arg-type]


# ---------------------------------------------------------------- template matching


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/v1/items", "/v1/items", {}),
        ("/v1/items", "/v1/items/x", None),
        ("/v1/items", "/v1/item", None),
        ("/v1/items", "v1/items", None),
        ("/v1/items/{id}", "/v1/items/42", {"id": "42"}),
        ("/v1/items/{id}", "/v1/items/", None),
        ("/v1/items/{id}", "/v1/items//", None),
        ("/v1/items/{id}", "/v1/items/a/b", None),
        # one segment: everything decoded, %2F too
        ("/v1/items/{id}", "/v1/items/a%2Fb%20c%C3%A9", {"id": "a/b cé"}),
        ("/v1/items/{id}", "/v1/items/%FF", {"id": "\ufffd"}),
        ("/v1/{name=shelves/*}", "/v1/shelves/s1", {"name": "shelves/s1"}),
        ("/v1/{name=shelves/*}", "/v1/books/s1", None),
        # several segments: decoded except %2F / %2f
        ("/v1/{name=shelves/*}", "/v1/shelves/a%2Fb%2fc%20d", {"name": "shelves/a%2Fb%2fc d"}),
        ("/f/{p=**}", "/f/a/b%2Fc/%41", {"p": "a/b%2Fc/A"}),
        ("/f/{p=**}", "/f", {"p": ""}),
        ("/f/{p=**}", "/f/a//b", {"p": "a//b"}),
        ("/f/{b}/x/{p=**}", "/f/bk/x/1/2", {"b": "bk", "p": "1/2"}),
        ("/v1/*/**", "/v1/a", {}),
        ("/v1/*/**", "/v1/a/b/c", {}),
        ("/v1/*/**", "/v1", None),
        ("/v1/{a}/{b=c/*}", "/v1/x/c/y", {"a": "x", "b": "c/y"}),
        # verbs
        ("/v1/{name=jobs/*}:run", "/v1/jobs/j1:run", {"name": "jobs/j1"}),
        ("/v1/{name=jobs/*}:run", "/v1/jobs/j1:stop", None),
        ("/v1/{name=jobs/*}:run", "/v1/jobs/j1", None),
        ("/v1/{name=jobs/*}:run", "/v1/jobs/:run", None),
        ("/v1/{p=**}:get", "/v1/a/b:get", {"p": "a/b"}),
        ("/v1/items/{id}", "/v1/items/a:run", {"id": "a:run"}),
        # literals compare decoded
        ("/v1/café", "/v1/caf%C3%A9", {}),
        ("/v1/items", "/v1/%69tems", {}),
        # root and trailing slashes (Flask URLs)
        ("/", "/", {}),
        ("/", "/x", None),
        ("/items/", "/items/", {}),
        ("/items/", "/items", None),
        ("/items", "/items/", None),
        ("/f/{p=**}", "/f/a/", None),
        ("/{p=**}", "/", {"p": ""}),
        ("/{p=**}:get", "/:get", None),
        ("/{p=**}:get", "/x:get", {"p": "x"}),
    ],
)
def test_match(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert PathTemplate.parse(template).match(path) == expected


segment_text = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=10)


@settings(deadline=None, max_examples=200, derandomize=True)
@given(value=segment_text)
def test_single_segment_variables_round_trip_percent_encoding(value: str) -> None:
    path = "/v1/items/" + quote(value, safe="")
    assert PathTemplate.parse("/v1/items/{id}").match(path) == {"id": value}


@settings(deadline=None, max_examples=200, derandomize=True)
@given(segments=st.lists(segment_text, min_size=1, max_size=4))
def test_multi_segment_variables_keep_encoded_slashes(segments: list[str]) -> None:
    path = "/f/" + "/".join(quote(s, safe="") for s in segments)
    expected = "/".join(s.replace("/", "%2F") for s in segments)
    assert PathTemplate.parse("/f/{p=**}").match(path) == {"p": expected}


def test_specificity_orders_literal_star_double_star_and_verbs() -> None:
    ordered = sorted(
        ["/a/**", "/a/{x}", "/a/b", "/a/{x}:run", "/a/*/**", "/a/b/c"],
        key=lambda t: PathTemplate.parse(t).specificity,
    )
    # A prefix sorts first: "/a/b" and "/a/b/c" never match the same path anyway.
    assert ordered == ["/a/{x}:run", "/a/b", "/a/b/c", "/a/{x}", "/a/*/**", "/a/**"]


# ---------------------------------------------------------------- routes from descriptors


def test_routes_for_service_reads_every_binding() -> None:
    routes = routes_for_service(SHOP)
    assert [f"{r.http_method} {r.template}" for r in routes] == [
        "GET /v1/items/{id}",
        "GET /v1/items/search",
        "GET /v1/items",
        "GET /v1/shelves/{filter.shelf}/items",
        "GET /legacy/items/",
        "POST /v1/shelves/{shelf}/items",
        "PATCH /v1/items/{item.id}",
        "PUT /v1/items/{item.id}",
        "DELETE /v1/items/{id}",
        "GET /v1/{name=shelves/*/books/*}",
        "GET /v1/buckets/{bucket}/files/{path=**}",
        "GET /v1/ping/*/**",
        "POST /v1/{name=jobs/*}:run",
        "POST /v1/{name=jobs/*}:cancel",
        "PURGE /v1/cache/{key}",
        "GET /v1/echo/{i32}/{i64}/{u64}/{color}/{flag}",
        "GET /v1/echo-tags",
        "POST /v1/events",
    ]
    by_key = shop_routes()
    listing = by_key["GET /legacy/items/"]
    assert listing.grpc_method == "/shimtest.v1.Shop/ListItems"
    assert listing.response_body == "items"
    assert listing.request_descriptor is pb.ListItemsRequest.DESCRIPTOR
    assert listing.response_descriptor is pb.ListItemsResponse.DESCRIPTOR
    assert by_key["POST /v1/shelves/{shelf}/items"].body == "item"
    assert by_key["POST /v1/{name=jobs/*}:run"].body == "*"
    assert by_key["PUT /v1/items/{item.id}"].grpc_method == "/shimtest.v1.Shop/UpdateItem"
    assert by_key["GET /v1/echo-tags"].response_body == "tags"
    assert not any(r.grpc_method.endswith("/Internal") for r in routes)
    assert not any(r.client_streaming or r.server_streaming for r in routes)
    assert str(listing) == "GET /legacy/items/ -> /shimtest.v1.Shop/ListItems"


def service_with_rules(*rules: http_pb2.HttpRule) -> descriptor.ServiceDescriptor:
    """A throwaway service (in its own descriptor pool) whose method M has each rule."""
    pool = descriptor_pool.DescriptorPool()
    for module in (descriptor_pb2, http_pb2, annotations_pb2, empty_pb2):
        dependency = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(dependency)
        pool.Add(dependency)
    file = descriptor_pb2.FileDescriptorProto(
        name="t/rules.proto",
        package="t",
        syntax="proto3",
        dependency=["google/api/annotations.proto", "google/protobuf/empty.proto"],
    )
    field = descriptor_pb2.FieldDescriptorProto
    request = file.message_type.add(name="Req")
    request.field.add(name="id", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    request.field.add(name="tags", number=2, type=field.TYPE_STRING, label=field.LABEL_REPEATED)
    request.field.add(
        name="inner",
        number=3,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_OPTIONAL,
        type_name=".t.Req",
    )
    service = file.service.add(name="S")
    for i, rule in enumerate(rules):
        method = service.method.add(
            name=f"M{i}", input_type=".t.Req", output_type=".google.protobuf.Empty"
        )
        method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    pool.Add(file)
    return pool.FindServiceByName("t.S")


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        (http_pb2.HttpRule(), "without a method and path"),
        (http_pb2.HttpRule(get="items"), "starts with '/'"),
        (http_pb2.HttpRule(get="/x/{nope}"), "has no field 'nope'"),
        (http_pb2.HttpRule(get="/x/{tags}"), "must name a singular scalar field"),
        (http_pb2.HttpRule(get="/x/{inner}"), "must name a singular scalar field"),
        (http_pb2.HttpRule(get="/x/{id.sub}"), "is not a singular message field"),
        (http_pb2.HttpRule(post="/x", body="nope"), "body 'nope' is not a field"),
        (http_pb2.HttpRule(get="/x", response_body="nope"), "response_body 'nope'"),
        (
            http_pb2.HttpRule(
                get="/x",
                additional_bindings=[
                    http_pb2.HttpRule(post="/y", additional_bindings=[http_pb2.HttpRule(get="/z")])
                ],
            ),
            "additional_bindings cannot be nested",
        ),
    ],
)
def test_bad_rules_name_the_method(rule: http_pb2.HttpRule, fragment: str) -> None:
    with pytest.raises(ValueError, match="M0") as caught:
        routes_for_service(service_with_rules(rule))
    assert fragment in str(caught.value)


def test_custom_kind_is_upper_cased_and_nested_path_variables_allowed() -> None:
    rule = http_pb2.HttpRule(custom=http_pb2.CustomHttpPattern(kind="purge", path="/c/{inner.id}"))
    (purge,) = routes_for_service(service_with_rules(rule))
    assert purge.http_method == "PURGE"
    assert purge.template.field_paths == ("inner.id",)


def test_route_validates_its_names() -> None:
    good = route("GET /v1/items/{id}")
    with pytest.raises(ValueError, match="upper-case HTTP method"):
        Route(**{**good.__dict__, "http_method": "get"})
    with pytest.raises(ValueError, match="gRPC method name"):
        Route(**{**good.__dict__, "grpc_method": "GetItem"})


# ---------------------------------------------------------------- router


def resolve(router: Router, method: str, path: str) -> tuple[str, object]:
    """A compact view of a resolution: ("match", (grpc method, params)) and so on."""
    result = router.resolve(method, path)
    if isinstance(result, Match):
        return "match", (f"{result.route.http_method} {result.route.template}", result.path_params)
    if isinstance(result, MethodNotAllowed):
        return "405", result.allowed
    if isinstance(result, RedirectSlash):
        return "308", result.location
    assert isinstance(result, NotFound)
    return "404", None


def test_router_resolves_the_shop() -> None:
    router = Router(routes_for_service(SHOP))
    assert resolve(router, "GET", "/v1/items/42") == ("match", ("GET /v1/items/{id}", {"id": "42"}))
    # literal segment beats the variable
    assert resolve(router, "GET", "/v1/items/search") == ("match", ("GET /v1/items/search", {}))
    assert resolve(router, "get", "/v1/items") == ("match", ("GET /v1/items", {}))
    assert resolve(router, "GET", "/v1/shelves/s1/books/b1") == (
        "match",
        ("GET /v1/{name=shelves/*/books/*}", {"name": "shelves/s1/books/b1"}),
    )
    assert resolve(router, "GET", "/v1/shelves/s1/items") == (
        "match",
        ("GET /v1/shelves/{filter.shelf}/items", {"filter.shelf": "s1"}),
    )
    assert resolve(router, "POST", "/v1/jobs/j1:run") == (
        "match",
        ("POST /v1/{name=jobs/*}:run", {"name": "jobs/j1"}),
    )
    assert resolve(router, "POST", "/v1/jobs/j1:cancel")[1] == (
        "POST /v1/{name=jobs/*}:cancel",
        {"name": "jobs/j1"},
    )
    assert resolve(router, "PURGE", "/v1/cache/k%20ey") == (
        "match",
        ("PURGE /v1/cache/{key}", {"key": "k ey"}),
    )
    assert resolve(router, "PATCH", "/v1/items/7")[1] == (
        "PATCH /v1/items/{item.id}",
        {"item.id": "7"},
    )
    assert resolve(router, "GET", "/v1/buckets/b/files/x/y.txt")[1] == (
        "GET /v1/buckets/{bucket}/files/{path=**}",
        {"bucket": "b", "path": "x/y.txt"},
    )
    # HEAD is answered by the GET route
    assert resolve(router, "HEAD", "/v1/items/42")[0] == "match"
    # 405 with everything the path allows (HEAD with GET; OPTIONS always)
    assert resolve(router, "POST", "/v1/items/42") == (
        "405",
        ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "PUT"),
    )
    assert resolve(router, "GET", "/v1/jobs/j1:run") == ("405", ("OPTIONS", "POST"))
    assert resolve(router, "GET", "/v1/nothing") == ("404", None)
    assert resolve(router, "GET", "/") == ("404", None)
    # a route declared with a trailing slash redirects the slashless URL
    assert resolve(router, "GET", "/legacy/items/")[0] == "match"
    assert resolve(router, "GET", "/legacy/items") == ("308", "/legacy/items/")
    assert resolve(router, "GET", "/v1/items/42/") == ("404", None)
    assert router.allowed_methods("/v1/items") == ("GET", "HEAD", "OPTIONS")
    # Every template matching the path counts, as in werkzeug: {id} matches "search" too.
    assert router.allowed_methods("/v1/items/search") == router.allowed_methods("/v1/items/42")
    deleted = router.resolve("DELETE", "/v1/items/search")
    assert isinstance(deleted, Match)
    assert deleted.path_params == {"id": "search"}
    assert router.allowed_methods("/v1/nothing") == ()


def test_non_strict_slashes_match_both_spellings() -> None:
    router = Router(routes_for_service(SHOP), strict_slashes=False)
    assert resolve(router, "GET", "/legacy/items")[1] == ("GET /legacy/items/", {})
    assert resolve(router, "GET", "/legacy/items/")[1] == ("GET /legacy/items/", {})
    assert resolve(router, "GET", "/v1/items/42/")[1] == ("GET /v1/items/{id}", {"id": "42"})
    assert resolve(router, "POST", "/v1/items/42/")[0] == "405"
    assert router.allowed_methods("/legacy/items") == ("GET", "HEAD", "OPTIONS")


def make_route(
    method: str,
    template: str,
    grpc: str = "/t.S/M",
    request: descriptor.Descriptor = empty_pb2.Empty.DESCRIPTOR,
) -> Route:
    return Route(
        http_method=method,
        template=PathTemplate.parse(template),
        body="",
        response_body="",
        grpc_method=grpc,
        request_descriptor=request,
        response_descriptor=empty_pb2.Empty.DESCRIPTOR,
    )


def test_most_specific_template_wins_whatever_the_declaration_order() -> None:
    routes = [
        make_route("GET", "/a/**", "/t.S/Deep"),
        make_route("GET", "/a/*/**", "/t.S/StarDeep"),
        make_route("GET", "/a/*", "/t.S/Star"),
        make_route("GET", "/a/b", "/t.S/Literal"),
    ]
    for ordering in (routes, routes[::-1]):
        router = Router(ordering)
        for path, expected in [
            ("/a/b", "/t.S/Literal"),
            ("/a/c", "/t.S/Star"),
            ("/a/c/d", "/t.S/StarDeep"),
            ("/a", "/t.S/Deep"),
        ]:
            result = router.resolve("GET", path)
            assert isinstance(result, Match)
            assert result.route.grpc_method == expected, path


def test_explicit_head_route_beats_get() -> None:
    router = Router([make_route("GET", "/x", "/t.S/Get"), make_route("HEAD", "/x", "/t.S/Head")])
    result = router.resolve("HEAD", "/x")
    assert isinstance(result, Match)
    assert result.route.grpc_method == "/t.S/Head"


def test_duplicate_routes_are_refused() -> None:
    request = pb.GetItemRequest.DESCRIPTOR
    first, same_shape = make_route("GET", "/x/{id}", request=request), "/x/{view}"
    with pytest.raises(ValueError, match="two routes for one request"):
        Router([first, make_route("GET", same_shape, request=request)])
    assert len(Router([first, make_route("POST", same_shape, request=request)]).routes) == 2


WERKZEUG_RULES = [("/items/", ("GET",)), ("/users", ("GET", "POST")), ("/both/", ("POST",))]
WERKZEUG_PATHS = ["/items", "/items/", "/users", "/users/", "/both", "/both/", "/none", "/none/"]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_slash_and_method_answers_agree_with_werkzeug(strict: bool, method: str) -> None:
    url_map = werkzeug.routing.Map(
        [werkzeug.routing.Rule(p, methods=m, endpoint=p) for p, m in WERKZEUG_RULES],
        strict_slashes=strict,
    )
    adapter = url_map.bind("localhost")
    router = Router(
        [make_route(m, p, f"/t.S/M{i}") for i, (p, ms) in enumerate(WERKZEUG_RULES) for m in ms],
        strict_slashes=strict,
    )
    for path in WERKZEUG_PATHS:
        try:
            adapter.match(path, method)
            expected = "match"
        except werkzeug.routing.RequestRedirect as redirect:
            expected = str(redirect.code)  # 308
        except werkzeug.exceptions.MethodNotAllowed:
            expected = "405"
        except werkzeug.exceptions.NotFound:
            expected = "404"
        assert resolve(router, method, path)[0] == expected, (path, method, strict)


def test_resolution_types_are_values() -> None:
    results: list[Resolution] = [NotFound(), MethodNotAllowed(("GET",)), RedirectSlash("/x/")]
    assert results == [NotFound(), MethodNotAllowed(("GET",)), RedirectSlash("/x/")]


# ---------------------------------------------------------------- build_request


def test_query_parameters_fill_nested_repeated_and_typed_fields() -> None:
    request = build_request(
        route("GET /v1/items"),
        {},
        [
            ("page_size", "10"),
            ("pageToken", "t"),
            ("tag", "a"),
            ("tag", "b"),
            ("filter.color", "COLOR_RED"),
            ("filter.price.min", "1.5"),
            ("filter.inStock", "true"),
            ("filter.min_quantity", str(BIG)),
            ("colors", "2"),
            ("colors", "COLOR_BLUE"),
            ("since", "2020-01-01T00:00:00Z"),
            ("fields", "a,b.c"),
            ("limit", "5"),
            ("labels[env]", "prod"),
            ("labels[team]", "core"),
            ("order_by", "name"),
            ("ids", "1"),
            ("ids", str(-BIG)),
            ("cursor", "aGk"),
            ("max_age", "1.5s"),
            ("hints", '{"a": [1, "x"]}'),
            ("utm_source", "ignored"),
            ("_", "1700000000"),
        ],
        None,
    )
    assert isinstance(request, pb.ListItemsRequest)
    assert request.page_size == 10
    assert request.page_token == "t"
    assert list(request.tag) == ["a", "b"]
    assert request.filter.color == pb.COLOR_RED
    assert request.filter.price.min == 1.5
    assert request.filter.in_stock is True
    assert request.filter.min_quantity == BIG
    assert list(request.colors) == [pb.COLOR_GREEN, pb.COLOR_BLUE]
    assert request.since.seconds == 1577836800
    assert list(request.fields.paths) == ["a", "b.c"]
    assert request.HasField("limit")
    assert request.limit.value == 5
    assert dict(request.labels) == {"env": "prod", "team": "core"}
    assert request.WhichOneof("order") == "order_by"
    assert list(request.ids) == [1, -BIG]
    assert request.cursor == b"hi"
    assert request.max_age.seconds == 1
    assert request.max_age.nanos == 500_000_000
    assert request.hints.fields["a"].list_value.values[1].string_value == "x"


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("True", True), ("1", True), ("t", True), ("false", False), ("0", False)],
)
def test_bool_parameters(text: str, value: bool) -> None:
    request = build_request(route("GET /v1/items"), {}, [("shuffle", text)], None)
    assert isinstance(request, pb.ListItemsRequest)
    assert request.shuffle is value
    assert request.WhichOneof("order") == "shuffle"


def test_typed_path_variables() -> None:
    echo = route("GET /v1/echo/{i32}/{i64}/{u64}/{color}/{flag}")
    params = {"i32": "-5", "i64": str(2**63 - 1), "u64": str(2**64 - 1), "color": "2", "flag": "1"}
    request = build_request(echo, params, [("tags", "x"), ("f32", "0.5"), ("sx64", "-3")], None)
    assert request == pb.EchoRequest(
        i32=-5, i64=2**63 - 1, u64=2**64 - 1, color=pb.COLOR_GREEN, flag=True,
        tags=["x"], f32=0.5, sx64=-3,
    )  # fmt: skip
    special = build_request(echo, params, [("f64", "NaN"), ("f32", "-Infinity")], None)
    assert isinstance(special, pb.EchoRequest)
    assert math.isnan(special.f64)
    assert special.f32 == -math.inf


@pytest.mark.parametrize(
    ("query", "field", "fragment"),
    [
        ([("page_size", "ten")], "page_size", "expected an integer from -2147483648"),
        ([("page_size", "1e3")], "page_size", "expected an integer"),
        ([("page_size", " 1")], "page_size", "expected an integer"),
        ([("page_size", "2147483648")], "page_size", "to 2147483647, got '2147483648'"),
        ([("page_size", "1"), ("page_size", "2")], "page_size", "expected one value, got 2"),
        ([("filter.color", "PINK")], "filter.color", "expected one of COLOR_UNSPECIFIED"),
        ([("colors", "9")], "colors", "got '9'"),
        ([("shuffle", "yes")], "shuffle", "expected true or false, got 'yes'"),
        ([("order_by", "a"), ("shuffle", "true")], "shuffle", "only one field of oneof 'order'"),
        ([("tag.x", "1")], "tag.x", "'tag' is not a message field"),
        ([("labels", "x")], "labels", "labels[KEY]=VALUE"),
        ([("tag[k]", "x")], "tag[k]", "not a map field"),
        ([("examples", "x")], "examples", "cannot be given as a parameter"),
        ([("filter.price", "x")], "filter.price", "cannot be given as a parameter"),
        ([("since", "yesterday")], "since", "invalid Timestamp"),
        ([("max_age", "5")], "max_age", "invalid Duration"),
        ([("limit", "x")], "limit", "expected an integer"),
        ([("cursor", "***")], "cursor", "expected base64"),
        ([("hints", "{")], "hints", "expected JSON"),
        ([("filter.price.max", "x")], "filter.price.max", "expected a number, got 'x'"),
    ],
)
def test_query_errors_name_the_parameter(
    query: list[tuple[str, str]], field: str, fragment: str
) -> None:
    with pytest.raises(RequestError) as caught:
        build_request(route("GET /v1/items"), {}, query, None)
    error = caught.value
    assert error.field == field
    assert error.location == "query"
    assert fragment in error.message
    assert str(error).startswith(f"query parameter {field!r}: ")


def test_bad_path_variable_is_a_request_error() -> None:
    echo = route("GET /v1/echo/{i32}/{i64}/{u64}/{color}/{flag}")
    params = {"i32": "x", "i64": "1", "u64": "1", "color": "1", "flag": "true"}
    with pytest.raises(RequestError) as caught:
        build_request(echo, params, [], None)
    assert caught.value.field == "i32"
    assert caught.value.location == "path"
    assert str(caught.value).startswith("path parameter 'i32': expected an integer")


def test_body_field_path_override_and_query_filter() -> None:
    create = route("POST /v1/shelves/{shelf}/items")
    body = b'{"id": "i1", "quantity": 9007199254740993, "colour": "ignored"}'
    query = [("validate_only", "1"), ("shelf", "from-query"), ("item.id", "from-query")]
    request = build_request(create, {"shelf": "s1"}, query, body)
    assert request == pb.CreateItemRequest(
        shelf="s1", item=pb.Item(id="i1", quantity=BIG), validate_only=True
    )
    # Path and body fields cannot be set from the query: ignored, or refused when asked.
    with pytest.raises(RequestError, match="set by the path or the body") as caught:
        build_request(create, {"shelf": "s1"}, query, body, unknown_query_params="reject")
    assert caught.value.field == "shelf"


def test_path_variable_overrides_the_body() -> None:
    update = route("PATCH /v1/items/{item.id}")
    request = build_request(
        update, {"item.id": "from-path"}, [("update_mask", "quantity")], {"id": "x", "quantity": 3}
    )
    assert request == pb.UpdateItemRequest(
        item=pb.Item(id="from-path", quantity=3),
        update_mask=field_mask_pb2.FieldMask(paths=["quantity"]),
    )


def test_body_star_takes_the_whole_message_and_no_query() -> None:
    run = route("POST /v1/{name=jobs/*}:run")
    body = b'{"name": "ignored", "timeout_ms": "7", "env": {"A": "b"}}'
    request = build_request(run, {"name": "jobs/j"}, [("timeout_ms", "99")], body)
    assert request == pb.RunJobRequest(name="jobs/j", timeout_ms=7, env={"A": "b"})
    with pytest.raises(RequestError, match='body: "\\*"'):
        build_request(run, {"name": "jobs/j"}, [("x", "1")], body, unknown_query_params="reject")


def test_struct_body_and_empty_bodies() -> None:
    events = route("POST /v1/events")
    request = build_request(events, {}, [], b'{"kind": "k", "payload": {"n": 1, "l": [true]}}')
    assert isinstance(request, pb.Event)
    assert request.payload["n"] == 1
    for empty in (None, b"", b"  \n"):
        assert build_request(events, {}, [], empty) == pb.Event()


def test_unknown_query_parameters_ignored_or_rejected() -> None:
    listing = route("GET /v1/items")
    assert build_request(listing, {}, [("nope", "1")], None) == pb.ListItemsRequest()
    with pytest.raises(RequestError) as caught:
        build_request(listing, {}, [("nope", "1")], None, unknown_query_params="reject")
    assert caught.value.field == "nope"
    assert caught.value.message == "unknown query parameter"
    with pytest.raises(ValueError, match="unknown_query_params"):
        build_request(listing, {}, [], None, unknown_query_params="drop")  # type: ignore[arg-type]


def test_body_errors_name_body_fields() -> None:
    create = route("POST /v1/shelves/{shelf}/items")
    reject = LegacyProfile(unknown_fields="reject")

    with pytest.raises(RequestError) as caught:
        build_request(create, {"shelf": "s"}, [], b'{"id": "a" "b"}')
    assert caught.value.field == ""
    assert caught.value.location == "body"
    assert str(caught.value) == "request body: Expecting ',' delimiter: line 1 column 12 (char 11)"

    with pytest.raises(RequestError) as caught:
        build_request(create, {"shelf": "s"}, [], b'{"quantity": "x"}')
    assert caught.value.field == "item.quantity"
    assert str(caught.value).startswith("body field 'item.quantity': expected an integer")

    with pytest.raises(RequestError) as caught:
        build_request(create, {"shelf": "s"}, [], b'{"a": 1, "address": {"b": 2}}', profile=reject)
    assert caught.value.fields == ("item.a", "item.address.b")
    assert str(caught.value) == "request body: unknown fields: item.a, item.address.b"

    with pytest.raises(RequestError) as caught:
        build_request(route("POST /v1/events"), {}, [], b"[1]")
    assert caught.value.field == ""
    assert "expected a JSON object" in caught.value.message
