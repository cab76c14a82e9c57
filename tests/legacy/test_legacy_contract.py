"""The legacy inventory's HTTP contract, byte for byte, as its clients have always seen it.

Every test goes through ``legacy_client`` (see conftest.py), so this same suite
checks the Flask app today and, later, the Flask app behind rpckit's shim and the
migrated gRPC handlers behind the shim. Golden bytes are inline: Flask's JSON
provider sorts keys, writes compact JSON with a trailing newline and escapes
non-ASCII as ``\\uXXXX``; int64 values are plain JSON numbers.
"""

from __future__ import annotations

import pytest
from werkzeug.test import Client, TestResponse

from examples.legacy_inventory.app import DEV_API_TOKEN

AUTH = {"Authorization": f"Bearer {DEV_API_TOKEN}"}

#: GET /items/<sku> for every seed item, without the trailing newline.
SEED_ITEM_BYTES: dict[str, bytes] = {
    "BOLT-M6-20": (
        rb'{"name":"Hex bolt M6x20, zinc","price_cents":12,'
        rb'"quantity":1200,"sku":"BOLT-M6-20","tags":["fastener","metric"]}'
    ),
    "BOLT-M8-30": (
        rb'{"name":"Hex bolt M8x30, zinc","price_cents":19,'
        rb'"quantity":640,"sku":"BOLT-M8-30","tags":["fastener","metric"]}'
    ),
    "CABLE-TIE-200": (
        rb'{"name":"Cable ties 200 mm (100 pack)","price_cents":349,'
        rb'"quantity":85,"sku":"CABLE-TIE-200","tags":["electrical"]}'
    ),
    "CLAMP-F-300": (
        rb'{"name":"F-clamp 300 mm","price_cents":1899,'
        rb'"quantity":14,"sku":"CLAMP-F-300","tags":["clamping","tool"]}'
    ),
    "DRILL-BIT-SET": (
        rb'{"name":"HSS drill bit set, 19 pieces","price_cents":2495,'
        rb'"quantity":3,"sku":"DRILL-BIT-SET","tags":["drilling","tool"]}'
    ),
    "GLOVE-NITRILE-L": (
        rb'{"name":"Nitrile gloves, size L (50 pairs)","price_cents":1150,'
        rb'"quantity":0,"sku":"GLOVE-NITRILE-L","tags":["safety"]}'
    ),
    "HEX-KEY-SET": (
        rb'{"name":"Hex key set 1/16\" - 3/8\"","price_cents":1375,'
        rb'"quantity":22,"sku":"HEX-KEY-SET","tags":["imperial","tool"]}'
    ),
    "LEVEL-600": (
        rb'{"name":"Spirit level 600 mm","price_cents":2150,'
        rb'"quantity":9,"sku":"LEVEL-600","tags":["measuring","tool"]}'
    ),
    "NUT-M6": (
        rb'{"name":"Hex nut M6, zinc","price_cents":3,'
        rb'"quantity":5000,"sku":"NUT-M6","tags":["fastener","metric"]}'
    ),
    "NUT-M8": (
        rb'{"name":"Hex nut M8, zinc","price_cents":5,'
        rb'"quantity":2,"sku":"NUT-M8","tags":["fastener","metric"]}'
    ),
    "PLIERS-COMBI": (
        rb'{"name":"Combination pliers 180 mm","price_cents":1599,'
        rb'"quantity":17,"sku":"PLIERS-COMBI","tags":["tool"]}'
    ),
    "SANDPAPER-P120": (
        rb'{"name":"Sandpaper P120 (10 sheets)","price_cents":499,'
        rb'"quantity":60,"sku":"SANDPAPER-P120","tags":["abrasive"]}'
    ),
    "SAW-HAND-500": (
        rb'{"name":"Hand saw 500 mm","price_cents":2799,'
        rb'"quantity":4,"sku":"SAW-HAND-500","tags":["cutting","tool"]}'
    ),
    "SCREW-WOOD-4X40": (
        rb'{"name":"Wood screw 4x40 <Torx> & countersunk","price_cents":4,'
        rb'"quantity":2500,"sku":"SCREW-WOOD-4X40","tags":["fastener","metric"]}'
    ),
    "SEALANT-CLEAR": (
        rb'{"name":"Silicone sealant, clear 300 ml","price_cents":675,'
        rb'"quantity":1,"sku":"SEALANT-CLEAR","tags":[]}'
    ),
    "TAPE-DUCT-50": (
        rb'{"name":"Duct tape 50 mm x 50 m","price_cents":899,'
        rb'"quantity":33,"sku":"TAPE-DUCT-50","tags":["adhesive"]}'
    ),
    "TAPE-MEASURE-5M": (
        rb'{"name":"Tape measure 5 m","price_cents":1299,'
        rb'"quantity":0,"sku":"TAPE-MEASURE-5M","tags":["measuring","tool"]}'
    ),
    "TORCH-BRULEE": (
        rb'{"name":"Cr\u00e8me br\u00fbl\u00e9e torch","price_cents":3450,'
        rb'"quantity":6,"sku":"TORCH-BRULEE","tags":["kitchen","tool"]}'
    ),
    "WASHER-M6": (
        rb'{"name":"Flat washer M6","price_cents":2,'
        rb'"quantity":7300,"sku":"WASHER-M6","tags":["fastener","metric"]}'
    ),
    "WD-40-400": (
        rb'{"name":"Penetrating oil 400 ml \u2014 spray","price_cents":749,'
        rb'"quantity":26,"sku":"WD-40-400","tags":["lubricant"]}'
    ),
}
SEED_SKUS = tuple(SEED_ITEM_BYTES)


def error_bytes(code: int, message: str) -> bytes:
    """The legacy error body; ``message`` must already be JSON-escaped."""
    return b'{"error":{"code":%d,"message":"%s"}}\n' % (code, message.encode("ascii"))


def page_bytes(skus: tuple[str, ...] | list[str], next_page_token: str) -> bytes:
    items = b",".join(SEED_ITEM_BYTES[sku] for sku in skus)
    return b'{"items":[%s],"next_page_token":"%s"}\n' % (items, next_page_token.encode())


def assert_response(
    response: TestResponse, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    """Status, exact body bytes, Content-Type for any body, and the named headers."""
    assert (response.status_code, response.get_data()) == (status, body)
    if body:
        assert response.headers["Content-Type"] == "application/json"
    for name, value in (headers or {}).items():
        assert response.headers.get(name) == value, name


def post_json(client: Client, path: str, body: bytes | str, *, auth: bool = True) -> TestResponse:
    headers = (
        {**AUTH, "Content-Type": "application/json"}
        if auth
        else {"Content-Type": "application/json"}
    )
    return client.post(path, data=body, headers=headers)


def put_json(client: Client, path: str, body: bytes | str) -> TestResponse:
    return client.put(path, data=body, headers={**AUTH, "Content-Type": "application/json"})


# ---------------------------------------------------------------- GET /healthz


def test_healthz(legacy_client: Client) -> None:
    assert_response(legacy_client.get("/healthz"), 200, b'{"status":"ok"}\n')


# ---------------------------------------------------------------- GET /items/<sku>


@pytest.mark.parametrize("sku", SEED_SKUS)
def test_get_every_seed_item(legacy_client: Client, sku: str) -> None:
    assert_response(legacy_client.get(f"/items/{sku}"), 200, SEED_ITEM_BYTES[sku] + b"\n")


def test_get_unknown_sku_is_404(legacy_client: Client) -> None:
    response = legacy_client.get("/items/NOPE-1")
    assert_response(response, 404, error_bytes(404, "item 'NOPE-1' not found"))


def test_get_is_case_sensitive(legacy_client: Client) -> None:
    response = legacy_client.get("/items/bolt-m6-20")
    assert_response(response, 404, error_bytes(404, "item 'bolt-m6-20' not found"))


def test_get_unknown_non_ascii_sku_is_escaped_in_the_message(legacy_client: Client) -> None:
    response = legacy_client.get("/items/%C3%A9t%C3%A9")
    assert_response(response, 404, error_bytes(404, r"item '\u00e9t\u00e9' not found"))


# ---------------------------------------------------------------- GET /items


def test_list_first_page_has_the_default_size(legacy_client: Client) -> None:
    response = legacy_client.get("/items")
    assert_response(response, 200, page_bytes(SEED_SKUS[:10], "TlVULU04"))


def test_list_page_size_zero_means_the_default(legacy_client: Client) -> None:
    response = legacy_client.get("/items?page_size=0")
    assert_response(response, 200, page_bytes(SEED_SKUS[:10], "TlVULU04"))


def test_list_page_size_one(legacy_client: Client) -> None:
    response = legacy_client.get("/items?page_size=1")
    assert_response(response, 200, page_bytes(SEED_SKUS[:1], "Qk9MVC1NNi0yMA=="))


def test_list_largest_page_holds_everything(legacy_client: Client) -> None:
    response = legacy_client.get("/items?page_size=100")
    assert_response(response, 200, page_bytes(SEED_SKUS, ""))


def test_list_follows_tokens_to_the_end(legacy_client: Client) -> None:
    first = legacy_client.get("/items?page_size=7")
    assert_response(first, 200, page_bytes(SEED_SKUS[:7], "SEVYLUtFWS1TRVQ="))
    second = legacy_client.get(
        "/items", query_string={"page_size": 7, "page_token": "SEVYLUtFWS1TRVQ="}
    )
    assert_response(second, 200, page_bytes(SEED_SKUS[7:14], "U0NSRVctV09PRC00WDQw"))
    last = legacy_client.get("/items?page_size=7&page_token=U0NSRVctV09PRC00WDQw")
    assert_response(last, 200, page_bytes(SEED_SKUS[14:], ""))


def test_list_token_with_escaped_padding(legacy_client: Client) -> None:
    response = legacy_client.get("/items?page_size=2&page_token=Qk9MVC1NNi0yMA%3D%3D")
    assert_response(response, 200, page_bytes(SEED_SKUS[1:3], "Q0FCTEUtVElFLTIwMA=="))


def test_list_token_is_a_cursor_not_an_offset(legacy_client: Client) -> None:
    first = legacy_client.get("/items?page_size=2")
    assert_response(first, 200, page_bytes(SEED_SKUS[:2], "Qk9MVC1NOC0zMA=="))
    assert legacy_client.delete("/items/BOLT-M8-30", headers=AUTH).status_code == 204
    assert legacy_client.delete("/items/CABLE-TIE-200", headers=AUTH).status_code == 204
    second = legacy_client.get("/items?page_size=2&page_token=Qk9MVC1NOC0zMA==")
    assert_response(
        second, 200, page_bytes(["CLAMP-F-300", "DRILL-BIT-SET"], "RFJJTEwtQklULVNFVA==")
    )


def test_list_ignores_unknown_query_parameters(legacy_client: Client) -> None:
    response = legacy_client.get("/items?page_size=2&colour=red&sort=desc")
    assert_response(response, 200, page_bytes(SEED_SKUS[:2], "Qk9MVC1NOC0zMA=="))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page_size=101", "field 'page_size' must be between 1 and 100"),
        ("page_size=-1", "field 'page_size' must be between 1 and 100"),
        ("page_size=ten", "field 'page_size' must be an integer"),
        ("page_size=", "field 'page_size' must be an integer"),
        ("page_size=%2B5", "field 'page_size' must be an integer"),
        ("page_size=1_0", "field 'page_size' must be an integer"),
        ("page_size=2.0", "field 'page_size' must be an integer"),
        ("page_size=3000000000", "field 'page_size' is out of range for int32"),
        ("page_token=not-a-token", "field 'page_token' is not a token from a previous response"),
        ("page_token=Zm9v", "field 'page_token' is not a token from a previous response"),
        ("page_token=Qk9MVC1NNi0yMA", "field 'page_token' is not a token from a previous response"),
    ],
)
def test_list_rejects_bad_query(legacy_client: Client, query: str, message: str) -> None:
    response = legacy_client.get(f"/items?{query}")
    assert_response(response, 400, error_bytes(400, message))


# ---------------------------------------------------------------- POST /items

NEW_ITEM = b'{"sku": "ANCHOR-8", "name": "Wall anchor 8 mm", "quantity": 250, "price_cents": 7}'
NEW_ITEM_BYTES = (
    b'{"name":"Wall anchor 8 mm","price_cents":7,"quantity":250,"sku":"ANCHOR-8","tags":[]}\n'
)


def test_create_answers_201_with_location_and_the_item(legacy_client: Client) -> None:
    response = post_json(legacy_client, "/items", NEW_ITEM)
    assert_response(response, 201, NEW_ITEM_BYTES, {"Location": "/items/ANCHOR-8"})
    assert_response(legacy_client.get("/items/ANCHOR-8"), 200, NEW_ITEM_BYTES)


def test_create_keeps_int64_extremes_exact(legacy_client: Client) -> None:
    body = (
        b'{"sku": "BIG-1", "name": "n", "quantity": 9007199254740993, '
        b'"price_cents": 9223372036854775807}'
    )
    expected = (
        b'{"name":"n","price_cents":9223372036854775807,"quantity":9007199254740993,'
        b'"sku":"BIG-1","tags":[]}\n'
    )
    assert_response(post_json(legacy_client, "/items", body), 201, expected)
    assert_response(legacy_client.get("/items/BIG-1"), 200, expected)


def test_create_escapes_non_ascii_and_keeps_tag_order(legacy_client: Client) -> None:
    body = '{"sku": "MUG-1", "name": "Caf\u00e9 mug \u2615", "tags": ["z", "\u00e4", "a"]}'
    expected = (
        rb'{"name":"Caf\u00e9 mug \u2615","price_cents":0,"quantity":0,"sku":"MUG-1",'
        rb'"tags":["z","\u00e4","a"]}'
        b"\n"
    )
    response = post_json(legacy_client, "/items", body.encode("utf-8"))
    assert_response(response, 201, expected, {"Location": "/items/MUG-1"})
    assert_response(legacy_client.get("/items/MUG-1/tags"), 200, rb'["z","\u00e4","a"]' b"\n")


def test_created_item_shows_up_in_listings(legacy_client: Client) -> None:
    assert post_json(legacy_client, "/items", NEW_ITEM).status_code == 201
    response = legacy_client.get("/items?page_size=2")
    expected = b'{"items":[%s,%s],"next_page_token":"Qk9MVC1NNi0yMA=="}\n' % (
        NEW_ITEM_BYTES.rstrip(b"\n"),
        SEED_ITEM_BYTES["BOLT-M6-20"],
    )
    assert_response(response, 200, expected)


def test_create_duplicate_is_409(legacy_client: Client) -> None:
    body = b'{"sku": "NUT-M6", "name": "Another nut"}'
    response = post_json(legacy_client, "/items", body)
    assert_response(response, 409, error_bytes(409, "item 'NUT-M6' already exists"))
    assert_response(legacy_client.get("/items/NUT-M6"), 200, SEED_ITEM_BYTES["NUT-M6"] + b"\n")


UNAUTHORIZED = error_bytes(401, "missing or invalid bearer token")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="inventory"'}


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong-token",
        f"Basic {DEV_API_TOKEN}",
        f"Bearer  {DEV_API_TOKEN}",
        f"Bearer {DEV_API_TOKEN}x",
    ],
)
def test_create_needs_the_bearer_token(legacy_client: Client, authorization: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = legacy_client.post("/items", data=NEW_ITEM, headers=headers)
    assert_response(response, 401, UNAUTHORIZED, CHALLENGE)
    assert legacy_client.get("/items/ANCHOR-8").status_code == 404


def test_bearer_scheme_is_case_insensitive(legacy_client: Client) -> None:
    headers = {"Authorization": f"bearer {DEV_API_TOKEN}", "Content-Type": "application/json"}
    response = legacy_client.post("/items", data=NEW_ITEM, headers=headers)
    assert_response(response, 201, NEW_ITEM_BYTES, {"Location": "/items/ANCHOR-8"})


def test_auth_is_checked_before_the_body(legacy_client: Client) -> None:
    response = legacy_client.post(
        "/items", data=b"not json", headers={"Content-Type": "text/plain"}
    )
    assert_response(response, 401, UNAUTHORIZED, CHALLENGE)


UNSUPPORTED = error_bytes(415, "expected Content-Type: application/json")


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "text/json"]
)
def test_create_needs_a_json_content_type(legacy_client: Client, content_type: str | None) -> None:
    headers = dict(AUTH)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = legacy_client.post("/items", data=NEW_ITEM, headers=headers)
    assert_response(response, 415, UNSUPPORTED)


def test_create_accepts_json_with_charset(legacy_client: Client) -> None:
    headers = {**AUTH, "Content-Type": "application/json; charset=utf-8"}
    response = legacy_client.post("/items", data=NEW_ITEM, headers=headers)
    assert_response(response, 201, NEW_ITEM_BYTES, {"Location": "/items/ANCHOR-8"})


def test_create_rejects_a_body_over_64_kib(legacy_client: Client) -> None:
    name = "x" * (64 * 1024)
    body = b'{"sku": "BIG-2", "name": "%s"}' % name.encode()
    response = post_json(legacy_client, "/items", body)
    assert_response(response, 413, error_bytes(413, "Request Entity Too Large"))
    assert legacy_client.get("/items/BIG-2").status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "malformed JSON: Expecting value: line 1 column 1 (char 0)"),
        (
            b'{"sku": "X-1", "name": }',
            "malformed JSON: Expecting value: line 1 column 24 (char 23)",
        ),
        (
            b'{"sku": "X-1",\n "name": "x"',
            "malformed JSON: Expecting ',' delimiter: line 2 column 13 (char 27)",
        ),
        (
            b"{'sku': 'X-1'}",
            "malformed JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)",
        ),
        (b'{"sku": "X\xff"}', "request body is not valid UTF-8"),
        (b'[{"sku": "X-1"}]', "request body must be a JSON object"),
        (b'"X-1"', "request body must be a JSON object"),
        (b"null", "request body must be a JSON object"),
    ],
)
def test_create_rejects_what_is_not_a_json_object(
    legacy_client: Client, body: bytes, message: str
) -> None:
    response = post_json(legacy_client, "/items", body)
    assert_response(response, 400, error_bytes(400, message))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"sku": "X-1", "name": "x", "qty": 1}', "unknown field 'qty'"),
        (
            b'{"sku": "X-1", "name": "x", "size": 1, "colour": "red"}',
            "unknown fields 'colour', 'size'",
        ),
        (b'{"sku": "X-1", "item": {"name": "x"}}', "unknown field 'item'"),
        (b'{"sku": 1, "name": "x"}', "field 'sku' must be a string"),
        (b'{"sku": "X-1", "name": null}', "field 'name' must be a string"),
        (b'{"sku": "X-1", "name": "x", "quantity": "12"}', "field 'quantity' must be an integer"),
        (b'{"sku": "X-1", "name": "x", "quantity": true}', "field 'quantity' must be an integer"),
        (b'{"sku": "X-1", "name": "x", "quantity": null}', "field 'quantity' must be an integer"),
        (b'{"sku": "X-1", "name": "x", "quantity": 12.0}', "field 'quantity' must be an integer"),
        (b'{"sku": "X-1", "name": "x", "quantity": NaN}', "field 'quantity' must be an integer"),
        (
            b'{"sku": "X-1", "name": "x", "price_cents": 1.5}',
            "field 'price_cents' must be an integer",
        ),
        (
            b'{"sku": "X-1", "name": "x", "price_cents": 9223372036854775808}',
            "field 'price_cents' is out of range for int64",
        ),
        (
            b'{"sku": "X-1", "name": "x", "quantity": -9223372036854775809}',
            "field 'quantity' is out of range for int64",
        ),
        (b'{"sku": "X-1", "name": "x", "tags": "red"}', "field 'tags' must be a list of strings"),
        (
            b'{"sku": "X-1", "name": "x", "tags": ["a", 1]}',
            "field 'tags' must be a list of strings",
        ),
        (b'{"sku": "X-1", "name": "x", "tags": null}', "field 'tags' must be a list of strings"),
        # First failure wins: unknown fields, then types in proto field order, then values.
        (b'{"tags": 1, "name": 2, "extra": 3}', "unknown field 'extra'"),
        (b'{"tags": 1, "name": 2}', "field 'name' must be a string"),
        (b'{"quantity": -1, "tags": 1}', "field 'tags' must be a list of strings"),
        (b"{}", "field 'sku' is required"),
        (b'{"sku": "", "name": "x"}', "field 'sku' is required"),
        (
            b'{"sku": "x-1", "name": "x"}',
            "field 'sku' must be 1-32 characters of A-Z, 0-9 and '-', not starting with '-'",
        ),
        (
            b'{"sku": "-X", "name": "x"}',
            "field 'sku' must be 1-32 characters of A-Z, 0-9 and '-', not starting with '-'",
        ),
        (
            b'{"sku": "%s", "name": "x"}' % (b"A" * 33),
            "field 'sku' must be 1-32 characters of A-Z, 0-9 and '-', not starting with '-'",
        ),
        (b'{"sku": "X-1"}', "field 'name' is required"),
        (b'{"sku": "X-1", "name": ""}', "field 'name' is required"),
        (b'{"sku": "X-1", "name": "x", "quantity": -1}', "field 'quantity' must be >= 0"),
        (b'{"sku": "X-1", "name": "x", "price_cents": -5}', "field 'price_cents' must be >= 0"),
        (
            b'{"sku": "X-1", "name": "x", "tags": ["a", ""]}',
            "field 'tags' must not contain empty strings",
        ),
        (b'{"sku": "NUT-M6", "name": "", "quantity": -1}', "field 'name' is required"),
    ],
)
def test_create_rejects_bad_fields(legacy_client: Client, body: bytes, message: str) -> None:
    response = post_json(legacy_client, "/items", body)
    assert_response(response, 400, error_bytes(400, message))
    assert legacy_client.get("/items/X-1").status_code == 404


# ---------------------------------------------------------------- PUT /items/<sku>


def test_update_replaces_the_whole_item(legacy_client: Client) -> None:
    response = put_json(
        legacy_client, "/items/NUT-M8", b'{"name": "Hex nut M8, steel", "quantity": 400}'
    )
    expected = (
        b'{"name":"Hex nut M8, steel","price_cents":0,"quantity":400,"sku":"NUT-M8","tags":[]}\n'
    )
    assert_response(response, 200, expected)
    assert "Location" not in response.headers
    assert_response(legacy_client.get("/items/NUT-M8"), 200, expected)
    assert_response(legacy_client.get("/items/NUT-M8/tags"), 200, b"[]\n")


def test_update_takes_the_sku_from_the_url(legacy_client: Client) -> None:
    body = b'{"sku": "OTHER-1", "name": "Level", "quantity": 1, "price_cents": 2, "tags": ["t"]}'
    expected = b'{"name":"Level","price_cents":2,"quantity":1,"sku":"LEVEL-600","tags":["t"]}\n'
    assert_response(put_json(legacy_client, "/items/LEVEL-600", body), 200, expected)
    assert legacy_client.get("/items/OTHER-1").status_code == 404


def test_update_unknown_sku_is_404(legacy_client: Client) -> None:
    response = put_json(legacy_client, "/items/NOPE-1", b'{"name": "x"}')
    assert_response(response, 404, error_bytes(404, "item 'NOPE-1' not found"))
    assert legacy_client.get("/items/NOPE-1").status_code == 404


def test_update_validates_before_looking_up(legacy_client: Client) -> None:
    response = put_json(legacy_client, "/items/NOPE-1", b'{"name": ""}')
    assert_response(response, 400, error_bytes(400, "field 'name' is required"))


def test_update_needs_the_bearer_token(legacy_client: Client) -> None:
    response = legacy_client.put(
        "/items/NUT-M8", data=b'{"name": "x"}', headers={"Content-Type": "application/json"}
    )
    assert_response(response, 401, UNAUTHORIZED, CHALLENGE)
    assert_response(legacy_client.get("/items/NUT-M8"), 200, SEED_ITEM_BYTES["NUT-M8"] + b"\n")


def test_update_needs_a_json_content_type(legacy_client: Client) -> None:
    response = legacy_client.put("/items/NUT-M8", data=b'{"name": "x"}', headers=AUTH)
    assert_response(response, 415, UNSUPPORTED)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"name": "x", "stock": 1}', "unknown field 'stock'"),
        (b'{"sku": 8, "name": "x"}', "field 'sku' must be a string"),
        (b'{"name": "x", "quantity": "1"}', "field 'quantity' must be an integer"),
        (b'{"name": "x", "quantity": -3}', "field 'quantity' must be >= 0"),
        (b'{"quantity": 3}', "field 'name' is required"),
        (b"[]", "request body must be a JSON object"),
    ],
)
def test_update_rejects_bad_fields(legacy_client: Client, body: bytes, message: str) -> None:
    response = put_json(legacy_client, "/items/NUT-M8", body)
    assert_response(response, 400, error_bytes(400, message))
    assert_response(legacy_client.get("/items/NUT-M8"), 200, SEED_ITEM_BYTES["NUT-M8"] + b"\n")


# ---------------------------------------------------------------- DELETE /items/<sku>


def test_delete_answers_204_with_no_body(legacy_client: Client) -> None:
    response = legacy_client.delete("/items/NUT-M8", headers=AUTH)
    assert (response.status_code, response.get_data()) == (204, b"")
    assert_response(
        legacy_client.get("/items/NUT-M8"), 404, error_bytes(404, "item 'NUT-M8' not found")
    )
    again = legacy_client.delete("/items/NUT-M8", headers=AUTH)
    assert_response(again, 404, error_bytes(404, "item 'NUT-M8' not found"))


def test_delete_unknown_sku_is_404(legacy_client: Client) -> None:
    response = legacy_client.delete("/items/NOPE-1", headers=AUTH)
    assert_response(response, 404, error_bytes(404, "item 'NOPE-1' not found"))


def test_delete_needs_the_bearer_token(legacy_client: Client) -> None:
    response = legacy_client.delete("/items/NUT-M8", headers={"Authorization": "Bearer nope"})
    assert_response(response, 401, UNAUTHORIZED, CHALLENGE)
    assert_response(legacy_client.get("/items/NUT-M8"), 200, SEED_ITEM_BYTES["NUT-M8"] + b"\n")


def test_delete_checks_the_token_before_the_sku(legacy_client: Client) -> None:
    response = legacy_client.delete("/items/NOPE-1")
    assert_response(response, 401, UNAUTHORIZED, CHALLENGE)


# ---------------------------------------------------------------- GET /items/<sku>/tags


@pytest.mark.parametrize(
    ("sku", "body"),
    [
        ("NUT-M8", b'["fastener","metric"]\n'),
        ("PLIERS-COMBI", b'["tool"]\n'),
        ("SEALANT-CLEAR", b"[]\n"),
    ],
)
def test_tags_are_a_top_level_array(legacy_client: Client, sku: str, body: bytes) -> None:
    assert_response(legacy_client.get(f"/items/{sku}/tags"), 200, body)


def test_tags_of_unknown_sku_is_404(legacy_client: Client) -> None:
    response = legacy_client.get("/items/NOPE-1/tags")
    assert_response(response, 404, error_bytes(404, "item 'NOPE-1' not found"))


# ---------------------------------------------------------------- POST /restock-plans

RESTOCK_AT_5 = (
    b'{"lines":[{"order_quantity":7,"sku":"DRILL-BIT-SET"},'
    b'{"order_quantity":10,"sku":"GLOVE-NITRILE-L"},{"order_quantity":8,"sku":"NUT-M8"},'
    b'{"order_quantity":6,"sku":"SAW-HAND-500"},{"order_quantity":9,"sku":"SEALANT-CLEAR"},'
    b'{"order_quantity":10,"sku":"TAPE-MEASURE-5M"}]}\n'
)


def test_restock_plan_orders_up_to_twice_the_threshold(legacy_client: Client) -> None:
    response = post_json(legacy_client, "/restock-plans", b'{"threshold": 5}', auth=False)
    assert_response(response, 200, RESTOCK_AT_5)
    assert "Location" not in response.headers


def test_restock_plan_with_simulated_work_answers_the_same(legacy_client: Client) -> None:
    body = b'{"threshold": 5, "work_ms_per_item": 1}'
    assert_response(post_json(legacy_client, "/restock-plans", body), 200, RESTOCK_AT_5)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{}", b'{"lines":[]}\n'),
        (b'{"threshold": 0, "work_ms_per_item": 0}', b'{"lines":[]}\n'),
        (
            b'{"threshold": 1}',
            b'{"lines":[{"order_quantity":2,"sku":"GLOVE-NITRILE-L"},'
            b'{"order_quantity":2,"sku":"TAPE-MEASURE-5M"}]}\n',
        ),
        (
            b'{"threshold": 1000000000}',
            b'{"lines":[%s]}\n'
            % b",".join(
                b'{"order_quantity":%d,"sku":"%s"}' % (2_000_000_000 - quantity, sku.encode())
                for sku, quantity in [
                    ("BOLT-M6-20", 1200),
                    ("BOLT-M8-30", 640),
                    ("CABLE-TIE-200", 85),
                    ("CLAMP-F-300", 14),
                    ("DRILL-BIT-SET", 3),
                    ("GLOVE-NITRILE-L", 0),
                    ("HEX-KEY-SET", 22),
                    ("LEVEL-600", 9),
                    ("NUT-M6", 5000),
                    ("NUT-M8", 2),
                    ("PLIERS-COMBI", 17),
                    ("SANDPAPER-P120", 60),
                    ("SAW-HAND-500", 4),
                    ("SCREW-WOOD-4X40", 2500),
                    ("SEALANT-CLEAR", 1),
                    ("TAPE-DUCT-50", 33),
                    ("TAPE-MEASURE-5M", 0),
                    ("TORCH-BRULEE", 6),
                    ("WASHER-M6", 7300),
                    ("WD-40-400", 26),
                ]
            ),
        ),
    ],
)
def test_restock_plan_thresholds(legacy_client: Client, body: bytes, expected: bytes) -> None:
    assert_response(post_json(legacy_client, "/restock-plans", body, auth=False), 200, expected)


def test_restock_plan_sees_writes(legacy_client: Client) -> None:
    put = put_json(legacy_client, "/items/WASHER-M6", b'{"name": "Flat washer M6", "quantity": 1}')
    assert put.status_code == 200
    assert legacy_client.delete("/items/DRILL-BIT-SET", headers=AUTH).status_code == 204
    response = post_json(legacy_client, "/restock-plans", b'{"threshold": 2}', auth=False)
    expected = (
        b'{"lines":[{"order_quantity":4,"sku":"GLOVE-NITRILE-L"},'
        b'{"order_quantity":3,"sku":"SEALANT-CLEAR"},{"order_quantity":4,"sku":"TAPE-MEASURE-5M"},'
        b'{"order_quantity":3,"sku":"WASHER-M6"}]}\n'
    )
    assert_response(response, 200, expected)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"threshold": -1}', "field 'threshold' must be between 0 and 1000000000"),
        (b'{"threshold": 1000000001}', "field 'threshold' must be between 0 and 1000000000"),
        (b'{"threshold": "5"}', "field 'threshold' must be an integer"),
        (b'{"threshold": 5.5}', "field 'threshold' must be an integer"),
        (b'{"work_ms_per_item": -1}', "field 'work_ms_per_item' must be between 0 and 1000"),
        (b'{"work_ms_per_item": 1001}', "field 'work_ms_per_item' must be between 0 and 1000"),
        (b'{"work_ms_per_item": 2147483648}', "field 'work_ms_per_item' is out of range for int32"),
        (b'{"thresold": 5}', "unknown field 'thresold'"),
        (b'{"threshold": 5, "item": {}, "sku": "X"}', "unknown fields 'item', 'sku'"),
        (b"[5]", "request body must be a JSON object"),
        (b"", "malformed JSON: Expecting value: line 1 column 1 (char 0)"),
    ],
)
def test_restock_plan_rejects_bad_fields(legacy_client: Client, body: bytes, message: str) -> None:
    response = post_json(legacy_client, "/restock-plans", body, auth=False)
    assert_response(response, 400, error_bytes(400, message))


def test_restock_plan_needs_a_json_content_type(legacy_client: Client) -> None:
    response = legacy_client.post(
        "/restock-plans", data=b"threshold=5", content_type="application/x-www-form-urlencoded"
    )
    assert_response(response, 415, UNSUPPORTED)


# ---------------------------------------------------------------- GET /reports/stock

BY_TAG = (
    b'"by_tag":{"(untagged)":{"items":1,"units":1},"abrasive":{"items":1,"units":60},'
    b'"adhesive":{"items":1,"units":33},"clamping":{"items":1,"units":14},'
    b'"cutting":{"items":1,"units":4},"drilling":{"items":1,"units":3},'
    b'"electrical":{"items":1,"units":85},"fastener":{"items":6,"units":16642},'
    b'"imperial":{"items":1,"units":22},"kitchen":{"items":1,"units":6},'
    b'"lubricant":{"items":1,"units":26},"measuring":{"items":2,"units":9},'
    b'"metric":{"items":6,"units":16642},"safety":{"items":1,"units":0},'
    b'"tool":{"items":8,"units":75}}'
)
TOTALS = b'"totals":{"items":20,"units":16922,"value_cents":318341}'


def test_stock_report_default_threshold(legacy_client: Client) -> None:
    expected = (
        b'{"average_price_cents":1071.6,' + BY_TAG + b',"low_stock":['
        b'{"quantity":3,"sku":"DRILL-BIT-SET"},{"quantity":0,"sku":"GLOVE-NITRILE-L"},'
        b'{"quantity":2,"sku":"NUT-M8"},{"quantity":4,"sku":"SAW-HAND-500"},'
        b'{"quantity":1,"sku":"SEALANT-CLEAR"},{"quantity":0,"sku":"TAPE-MEASURE-5M"}],'
        b'"low_stock_threshold":5,' + TOTALS + b"}\n"
    )
    assert_response(legacy_client.get("/reports/stock"), 200, expected)


def test_stock_report_explicit_threshold(legacy_client: Client) -> None:
    expected = (
        b'{"average_price_cents":1071.6,' + BY_TAG + b',"low_stock":['
        b'{"quantity":0,"sku":"GLOVE-NITRILE-L"},{"quantity":0,"sku":"TAPE-MEASURE-5M"}],'
        b'"low_stock_threshold":1,' + TOTALS + b"}\n"
    )
    assert_response(legacy_client.get("/reports/stock?low_stock_threshold=1"), 200, expected)


def test_stock_report_follows_writes(legacy_client: Client) -> None:
    for sku in SEED_SKUS[1:]:
        assert legacy_client.delete(f"/items/{sku}", headers=AUTH).status_code == 204
    expected = (
        b'{"average_price_cents":12.0,"by_tag":{"fastener":{"items":1,"units":1200},'
        b'"metric":{"items":1,"units":1200}},"low_stock":[],"low_stock_threshold":0,'
        b'"totals":{"items":1,"units":1200,"value_cents":14400}}\n'
    )
    assert_response(legacy_client.get("/reports/stock?low_stock_threshold=0"), 200, expected)
    assert legacy_client.delete("/items/BOLT-M6-20", headers=AUTH).status_code == 204
    empty = (
        b'{"average_price_cents":null,"by_tag":{},"low_stock":[],"low_stock_threshold":5,'
        b'"totals":{"items":0,"units":0,"value_cents":0}}\n'
    )
    assert_response(legacy_client.get("/reports/stock"), 200, empty)
    assert_response(legacy_client.get("/items"), 200, b'{"items":[],"next_page_token":""}\n')


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("low_stock_threshold=-3", "field 'low_stock_threshold' must be >= 0"),
        ("low_stock_threshold=five", "field 'low_stock_threshold' must be an integer"),
        (
            "low_stock_threshold=9223372036854775808",
            "field 'low_stock_threshold' is out of range for int64",
        ),
    ],
)
def test_stock_report_rejects_bad_threshold(
    legacy_client: Client, query: str, message: str
) -> None:
    response = legacy_client.get(f"/reports/stock?{query}")
    assert_response(response, 400, error_bytes(400, message))


# ---------------------------------------------------------------- routing errors


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PATCH", "/items/NUT-M8", "DELETE, GET, HEAD, OPTIONS, PUT"),
        ("POST", "/items/NUT-M8", "DELETE, GET, HEAD, OPTIONS, PUT"),
        ("DELETE", "/items", "GET, HEAD, OPTIONS, POST"),
        ("GET", "/restock-plans", "OPTIONS, POST"),
        ("PUT", "/items/NUT-M8/tags", "GET, HEAD, OPTIONS"),
        ("POST", "/healthz", "GET, HEAD, OPTIONS"),
        ("DELETE", "/reports/stock", "GET, HEAD, OPTIONS"),
    ],
)
def test_wrong_method_is_405_with_sorted_allow(
    legacy_client: Client, method: str, path: str, allow: str
) -> None:
    response = legacy_client.open(path, method=method, headers=AUTH)
    assert_response(response, 405, error_bytes(405, "Method Not Allowed"), {"Allow": allow})


@pytest.mark.parametrize(
    "path", ["/nowhere", "/items/", "/items/NUT-M8/", "/items/NUT-M8/tags/x", "/healthz/", "/"]
)
def test_unknown_path_is_json_404(legacy_client: Client, path: str) -> None:
    assert_response(legacy_client.get(path), 404, error_bytes(404, "Not Found"))
