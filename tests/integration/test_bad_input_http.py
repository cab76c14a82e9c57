"""A seeded fuzzer against the legacy HTTP shim on the embedded server (127.0.0.1:0, real sockets):
10,000 generated requests -- methods, paths, percent-encoding, query strings, headers and bodies
(invalid UTF-8, deep nesting, huge numbers, duplicate keys, wrong types, truncated JSON,
oversized, chunked) -- get no 5xx and no traceback, and the server serves a valid request after.

Four keep-alive connections on raw sockets send the requests back to back (reconnecting when
the server closes one), so the run takes seconds. Every handler answers, so a 5xx could only
come from the bad input itself.
"""

from __future__ import annotations

import collections
import json
import random
import socket
import threading
from collections.abc import Callable
from typing import Any

from google.protobuf import message_factory

import rpckit
from rpckit.http import HttpLimits, HttpServer, Shim
from tests.protos._gen.shimtest.v1 import shimtest_pb2 as pb
from tests.protos._gen.shimtest.v1 import shimtest_pb2_grpc as pb_grpc

REQUESTS = 10_000
CONNECTIONS = 4
SEED = 1717
BOUND_S = 20.0

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "PURGE", "BREW", "get"]
PATHS = [
    "/v1/items/{x}", "/v1/items/search", "/v1/items", "/v1/shelves/{x}/items", "/legacy/items/",
    "/v1/shelves/{x}/books/{x}", "/v1/buckets/{x}/files/{x}/{x}", "/v1/ping/{x}/{x}",
    "/v1/jobs/{x}:run", "/v1/jobs/{x}:cancel", "/v1/cache/{x}", "/v1/echo/{n}/{n}/{n}/{x}/{x}",
    "/v1/echo-tags", "/v1/events", "/nope", "/", "//v1//items", "/v1/items/../items",
]  # fmt: skip
SEGMENTS = [
    "a", "%41", "%zz", "%", "%00", "%ff%fe", "%C3%A9", "é", "..", ".", "a%2Fb", "+", " ", "x" * 300,
    "RED", "true", "nope", "-1", "1e999", "99999999999999999999999", "%E2%80%AE", "\x7f",
]  # fmt: skip
NUMBERS = ["0", "-1", "1.5", "1e999", "-1e999", "123456789012345678901234567890", "NaN", "0x10"]
QUERIES = [
    "", "?page_size=1", "?page_size=abc", "?page_size=99999999999999", "?tag=a&tag=b",
    "?labels[a]=b", "?filter.in_stock=maybe", "?%zz=1", "?a=%ff", "?since=not-a-time",
    "?fields=a,b,,", "?limit=-1", "?" + "&".join(f"k{i}=v" for i in range(300)), "?=&&=",
    "?colors=PURPLE", "?ids=1&ids=x", "?cursor=!!notbase64",
]  # fmt: skip


def _json_body(rng: random.Random) -> bytes:
    kind = rng.randrange(12)
    if kind == 0:
        return b'\xff\xfe{"id": "\xc3\x28"}'  # not UTF-8
    if kind == 1:
        depth = rng.choice([50, 500, 5000])
        return b"[" * depth + b"]" * depth  # deep nesting
    if kind == 2:
        return b'{"payload": ' + b'{"a": ' * 2000 + b"1" + b"}" * 2001
    if kind == 3:
        quantity, i32 = rng.choice(NUMBERS), rng.choice(NUMBERS)
        return f'{{"quantity": {quantity}, "i32": {i32}}}'.encode()
    if kind == 4:
        return b'{"id": "a", "id": "b", "id": 3}'  # duplicate keys
    if kind == 5:
        return json.dumps({"id": [1, 2], "quantity": "many", "active": "yes", "tags": 5}).encode()
    if kind == 6:
        full = json.dumps({"kind": "k", "payload": {"a": [1, {"b": None}]}}).encode()
        return full[: rng.randrange(1, len(full))]  # truncated
    if kind == 7:
        return b'{"kind": "' + b"k" * rng.choice([10, 70_000, 300_000]) + b'"}'  # large, oversized
    if kind == 8:
        return rng.randbytes(rng.randrange(1, 200))
    if kind == 9:
        return b'{"price": 1e999999, "weight": -0.0, "serial": -1, "rank": 4294967296}'
    if kind == 10:
        return b"null" if rng.random() < 0.5 else b'"just a string"'
    return json.dumps({"kind": "ok", "items": [1, "two", True, None]}).encode()


def generate(rng: random.Random) -> bytes:
    """One request, as bytes on the wire."""
    method = rng.choice(METHODS)
    path = rng.choice(PATHS)
    while "{x}" in path or "{n}" in path:
        path = path.replace("{x}", rng.choice(SEGMENTS), 1).replace("{n}", rng.choice(NUMBERS), 1)
    target = (path + rng.choice(QUERIES)).replace(" ", "%20")
    headers = [b"Host: 127.0.0.1"]
    body = _json_body(rng) if rng.random() < 0.6 else b""
    content_type = rng.choice(
        [b"application/json", b"application/json; charset=latin-1", b"text/plain", b"",
         b"\xff/\xfe", b"application/json; charset=utf-8", b"multipart/form-data; boundary=x"]
    )  # fmt: skip
    if content_type:
        headers.append(b"Content-Type: " + content_type)
    extra = rng.randrange(6)
    if extra == 1:
        # Not 0: a deadline already gone is a 504 by design (DEADLINE_EXCEEDED), not bad input.
        headers += [b"X-Request-Timeout: " + rng.choice([b"abc", b"-1", b"1e999", b"5"])]
    elif extra == 2:
        headers += [b"grpc-timeout: " + rng.choice([b"1X", b"99999999999S", b"5S"])]
    elif extra == 3:
        headers += [
            b"Authorization: Bearer \xff\xfe",
            b"X-Dup: 1",
            b"X-Dup: 2",
            b"X-U: caf\xc3\xa9",
        ]
    elif extra == 4:
        headers += [b"Accept: */*", b"Content-Length-Extra: 1", b"Expect: 100-continue"]
    if body and rng.random() < 0.15:
        headers.append(b"Transfer-Encoding: chunked")
        cut = max(1, len(body) // 2)
        body = (
            b"".join(
                b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:cut], body[cut:]) if part
            )
            + b"0\r\n\r\n"
        )
    elif body or method in ("POST", "PUT", "PATCH"):
        headers.append(b"Content-Length: %d" % len(body))
    return (
        method.encode("latin-1")
        + b" "
        + target.encode("utf-8")
        + b" HTTP/1.1\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + b"\r\n"
        + body
    )


class Reader:
    """Reads HTTP/1.1 responses (Content-Length or chunked) from one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("closed")
        self.buffer += chunk

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        part, _, self.buffer = self.buffer.partition(marker)
        return part

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        part, self.buffer = self.buffer[:n], self.buffer[n:]
        return part

    def response(self, head_request: bool) -> tuple[int, dict[bytes, bytes], bytes]:
        head = self._until(b"\r\n\r\n").split(b"\r\n")
        while head[0].startswith(b"HTTP/1.1 100"):  # an interim answer to Expect: 100-continue
            head = self._until(b"\r\n\r\n").split(b"\r\n")
        status = int(head[0].split(b" ", 2)[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if head_request or status in (204, 304):
            return status, headers, b""
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = b""
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._until(b"\r\n")
                    return status, headers, body
                body += self._take(size)
                self._take(2)
        return status, headers, self._take(int(headers.get(b"content-length", b"0")))


def _servicer() -> pb_grpc.ShopServicer:
    """Every method of the Shop service answers its response type's default."""
    methods: dict[str, Callable[..., Any]] = {}
    for method in pb.DESCRIPTOR.services_by_name["Shop"].methods:
        response = message_factory.GetMessageClass(method.output_type)
        methods[method.name] = lambda self, request, context, _r=response: _r()
    servicer: pb_grpc.ShopServicer = type("DefaultShop", (pb_grpc.ShopServicer,), methods)()
    return servicer


def _drive(address: tuple[str, int], requests: list[bytes], out: list[tuple[int, bytes]]) -> None:
    """Send each request and read its answer; a connection the server closed after its last
    answer (cheroot does after a 400 it made itself) is replaced and the request sent again
    once; -1 records a request that got no answer even then."""
    sock = socket.create_connection(address, timeout=BOUND_S)
    reader = Reader(sock)
    try:
        for request in requests:
            for attempt in (1, 2):
                try:
                    sock.sendall(request)
                    status, headers, body = reader.response(request.startswith(b"HEAD "))
                except OSError:  # ConnectionError included
                    sock.close()
                    sock = socket.create_connection(address, timeout=BOUND_S)
                    reader = Reader(sock)
                    if attempt == 2:
                        out.append((-1, b""))
                    continue
                out.append((status, body))
                if headers.get(b"connection", b"").lower() == b"close":
                    sock.close()
                    sock = socket.create_connection(address, timeout=BOUND_S)
                    reader = Reader(sock)
                break
    finally:
        sock.close()


def test_ten_thousand_generated_requests_get_no_5xx_and_no_traceback() -> None:
    rng = random.Random(SEED)
    requests = [generate(rng) for _ in range(REQUESTS)]
    results: list[list[tuple[int, bytes]]] = [[] for _ in range(CONNECTIONS)]
    server = rpckit.Server([_servicer()], config=rpckit.ServerConfig(drain_s=0.0, grace_s=5.0))
    server.add_port("127.0.0.1:0")
    server.start()
    limits = HttpLimits(body_bytes=256 * 1024)
    try:
        with HttpServer(Shim(server=server), "127.0.0.1:0", threads=16, limits=limits) as http:
            host, port = http.address.rsplit(":", 1)
            address = (host, int(port))
            threads = [
                threading.Thread(
                    target=_drive, args=(address, requests[i::CONNECTIONS], results[i])
                )
                for i in range(CONNECTIONS)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            assert not any(thread.is_alive() for thread in threads)
            # Still serving: a valid request on a new connection.
            with socket.create_connection(address, timeout=BOUND_S) as sock:
                sock.sendall(b"GET /v1/items/abc HTTP/1.1\r\nHost: x\r\n\r\n")
                status, _, body = Reader(sock).response(False)
            assert status == 200, body
    finally:
        server.stop(drain_s=0.0)
    answered = [r for rs in results for r in rs]
    statuses = collections.Counter(status for status, _ in answered)
    print(f"{len(answered)} requests: {sorted(statuses.items())}")
    assert len(answered) == REQUESTS
    server_errors = [(s, b[:200]) for s, b in answered if s >= 500]
    assert server_errors == [], server_errors[:5]
    assert statuses[-1] <= REQUESTS // 100, "connections closed without an answer"
    assert not [b for _, b in answered if b"Traceback" in b or b'File "' in b]
    assert len([s for s in statuses if 400 <= s < 500]) >= 5  # the input was varied and bad
