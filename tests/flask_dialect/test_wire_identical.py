"""The Flask dialect's acceptance: the pet store answers byte for byte the same through the
shim (every pet route migrated) as through Flask, on raw HTTP from real servers.

Two embedded HTTP servers on 127.0.0.1 port 0 -- one serving the Flask app alone, one
the same app with the shim in front -- get the same probes, in the same order, each on
a fresh store. Status lines, headers (order aside; ``Date`` aside) and bodies must be
equal. The probes cover what the issue measured: reason phrases, 204 without body
headers, the fallback's 405s, ``<int:pet_id>`` refusing ``abc``/``-1``, the strict
content type (415), the absolute ``Location``, the CORS hook, webargs' errors (every
field at once, empty and non-JSON bodies), marshmallow's date-times and nulls, ``+1``
in a query, and a stray ``grpc-timeout``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from rpckit.http import HttpServer
from tests.flask_dialect.petstore_app import create_app
from tests.flask_dialect.petstore_shim import migrated_app

ALICE = {"Authorization": "Bearer alice-token"}
JSON = {"Content-Type": "application/json"}
ORIGIN = {"Origin": "http://front.example"}

#: (name, method, target, headers, body): run in order; later probes see earlier writes.
PROBES: list[tuple[str, str, str, dict[str, str], bytes | None]] = [
    ("unmigrated route", "GET", "/health", {}, None),
    ("empty list", "GET", "/pets", {}, None),
    ("create without token", "POST", "/pets", JSON, b'{"name":"rex"}'),
    ("create, charset in content type", "POST", "/pets",
     {**ALICE, "Content-Type": "application/json; charset=utf-8"}, b'{"name":"rex"}'),
    ("create, no content type", "POST", "/pets", ALICE, b'{"name":"rex"}'),
    ("create", "POST", "/pets", {**ALICE, **JSON}, b'{"name":"rex","age":3}'),
    ("create with tag", "POST", "/pets", {**ALICE, **JSON}, b'{"name":"tom","tag":"cat"}'),
    ("create, three violations", "POST", "/pets", {**ALICE, **JSON},
     b'{"age":"x","colour":"red"}'),
    ("create, empty object", "POST", "/pets", {**ALICE, **JSON}, b"{}"),
    ("create, empty body", "POST", "/pets", {**ALICE, **JSON}, b""),
    ("create, malformed JSON", "POST", "/pets", {**ALICE, **JSON}, b"{bad"),
    ("create, name not a string", "POST", "/pets", {**ALICE, **JSON}, b'{"name":5}'),
    ("get", "GET", "/pets/1", {}, None),
    ("get, head", "HEAD", "/pets/1", {}, None),
    ("get, not an int", "GET", "/pets/abc", {}, None),
    ("get, negative", "GET", "/pets/-1", {}, None),
    ("get, missing", "GET", "/pets/99", {}, None),
    ("get, beyond int64", "GET", "/pets/99999999999999999999999", {}, None),
    ("get, with origin", "GET", "/pets/2", ORIGIN, None),
    ("list, fallback 405", "PUT", "/pets", {**JSON}, b"{}"),
    ("item, fallback 405", "PATCH", "/pets/1", {**JSON}, b"{}"),
    ("update, text body ignored", "PUT", "/pets/1", {"Content-Type": "text/plain"}, b"hello"),
    ("update, empty body", "PUT", "/pets/1", {}, b""),
    ("update", "PUT", "/pets/1", JSON, b'{"age":4,"tag":"dog"}'),
    ("update, wrong type", "PUT", "/pets/1", JSON, b'{"age":"old"}'),
    ("update, missing pet", "PUT", "/pets/77", JSON, b'{"age":5}'),
    ("list, limit +1 (encoded)", "GET", "/pets?limit=%2B1", {}, None),
    ("list, limit +1 (a space)", "GET", "/pets?limit=+1", {}, None),
    ("list, limit not an int", "GET", "/pets?limit=abc", {}, None),
    ("list, stray grpc-timeout", "GET", "/pets", {"grpc-timeout": "garbage"}, None),
    ("list, with origin", "GET", "/pets", ORIGIN, None),
    ("preflight", "OPTIONS", "/pets",
     {**ORIGIN, "Access-Control-Request-Method": "POST"}, None),
    ("delete without token", "DELETE", "/pets/2", {}, None),
    ("delete", "DELETE", "/pets/2", ALICE, None),
    ("delete again", "DELETE", "/pets/2", ALICE, None),
    ("delete, not an int", "DELETE", "/pets/two", ALICE, None),
    ("list after", "GET", "/pets", {}, None),
]  # fmt: skip

#: Sent on every probe: the same Host for both servers, so absolute URLs agree.
HOST = "pets.example"


@contextmanager
def serving(app: Any) -> Iterator[tuple[str, int]]:
    server = HttpServer(app, "127.0.0.1:0", threads=2, grace_s=2.0)
    host, port = server.start().rsplit(":", 1)
    try:
        yield host, int(port)
    finally:
        server.stop()


def raw_exchange(
    address: tuple[str, int], method: str, target: str, headers: dict[str, str], body: bytes | None
) -> bytes:
    """One request on its own connection; every byte of the answer, as sent."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {HOST}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    with socket.create_connection(address, timeout=30) as connection:
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def parsed(raw: bytes) -> tuple[bytes, list[bytes], bytes]:
    """(status line, headers sorted without Date, body)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *headers = head.split(b"\r\n")
    kept = sorted(h for h in headers if not h.lower().startswith(b"date:"))
    return status, kept, body


def exchanges(app: Any) -> list[bytes]:
    with serving(app) as address:
        return [raw_exchange(address, m, t, h, b) for _, m, t, h, b in PROBES]


@pytest.fixture(scope="module")
def answers() -> tuple[list[bytes], list[bytes]]:
    return exchanges(create_app()), exchanges(migrated_app())


@pytest.mark.parametrize("index", range(len(PROBES)), ids=[p[0] for p in PROBES])
def test_the_shim_answers_as_flask_did(
    answers: tuple[list[bytes], list[bytes]], index: int
) -> None:
    flask_answer, shim_answer = answers[0][index], answers[1][index]
    assert parsed(shim_answer) == parsed(flask_answer)


def test_the_probes_reach_both_sides_of_the_shim(answers: tuple[list[bytes], list[bytes]]) -> None:
    """The comparison means something: rpckit answered the pet routes, Flask the rest,
    and the answers are the ones the issue measured."""
    by_name = {p[0]: parsed(a) for p, a in zip(PROBES, answers[1], strict=True)}
    assert by_name["get, not an int"][0] == b"HTTP/1.1 404 NOT FOUND"
    assert by_name["delete"][0] == b"HTTP/1.1 204 NO CONTENT"
    assert not any(h.lower().startswith(b"content-length") for h in by_name["delete"][1])
    assert b"Location: http://pets.example/pets/1" in by_name["create"][1]
    assert by_name["create, charset in content type"][0] == b"HTTP/1.1 415 UNSUPPORTED MEDIA TYPE"
    violations = json.loads(by_name["create, three violations"][2])
    assert violations == {
        "errors": {
            "json": {
                "age": ["Not a valid integer."],
                "colour": ["Unknown field."],
                "name": ["Missing data for required field."],
            }
        }
    }
    assert b'"born":"2024-05-01T10:00:09.500000+00:00"' in by_name["get"][2]
    assert b'"tag":null' in by_name["get"][2]
    assert b"Access-Control-Allow-Origin: http://front.example" in by_name["get, with origin"][1]
    assert b"Vary: Origin" in by_name["get, with origin"][1]


def test_the_documented_contract_change_body_before_lookup() -> None:
    """README, "Flask dialect": the shim reads the body before the handler looks the pet
    up, so a bad body on a missing pet is 422 where the old view's lookup made it 404."""
    probe = ("PUT", "/pets/77", JSON, b'{"age":"old"}')
    with serving(create_app()) as address:
        flask_status = parsed(raw_exchange(address, *probe))[0]
    with serving(migrated_app()) as address:
        shim_status = parsed(raw_exchange(address, *probe))[0]
    assert (flask_status, shim_status) == (
        b"HTTP/1.1 404 NOT FOUND",
        b"HTTP/1.1 422 UNPROCESSABLE ENTITY",
    )
