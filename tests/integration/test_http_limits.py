"""The embedded HTTP server's limits over real sockets on 127.0.0.1: 414/431/413 at the limits,
408 for a head too slow, and slowloris clients that do not stop normal requests."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

import pytest

from rpckit.http import HttpLimits, HttpServer

BOUND_S = 20.0


def echo_length(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    text = f"{len(body)}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))])
    return [text]


@contextmanager
def serving(**options: Any) -> Iterator[tuple[str, int]]:
    server = HttpServer(echo_length, "127.0.0.1:0", **options)
    host, port = server.start().rsplit(":", 1)
    try:
        yield host, int(port)
    finally:
        server.stop()


def exchange(address: tuple[str, int], request: bytes) -> bytes:
    """Send ``request``, return everything the server sends until it closes (or a reply ends)."""
    with socket.create_connection(address, timeout=BOUND_S) as sock:
        # Refused before all of it was sent: the answer is still there to read.
        with suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            length = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")]
            if length and len(body) >= int(length[0].split(b":")[1]):
                break
        return received


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("what", "at_limit", "over_limit", "code"),
    [
        (
            "request line 4094",
            b"GET /" + b"a" * (4094 - 14) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /" + b"a" * (4095 - 14) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            414,
        ),
        (
            "header field 8190",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * (8190 - 7) + b"\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * (8191 - 7) + b"\r\n\r\n",
            431,
        ),
        (
            "100 header fields",
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n",
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n",
            431,
        ),
        (
            "a 20 MB header line",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"v" * 20_000_000 + b"\r\n\r\n",
            431,
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_heads_at_the_limit_are_served_and_over_it_refused(
    what: str, at_limit: bytes, over_limit: bytes, code: int
) -> None:
    with serving(threads=4) as address:
        assert status(exchange(address, at_limit)) == 200, what
        refused = exchange(address, over_limit)
        assert status(refused) == code, what
        assert b"Connection: close" in refused
        assert status(exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")) == 200


def test_a_body_over_the_limit_is_413_by_length_and_chunked() -> None:
    with serving(threads=4, limits=HttpLimits(body_bytes=1000)) as address:
        ok = exchange(
            address, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 1000
        )
        assert status(ok) == 200
        assert ok.endswith(b"1000")
        over = exchange(
            address, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n" + b"a" * 1001
        )
        assert status(over) == 413
        chunked = b"".join(b"100\r\n" + b"a" * 256 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
        over = exchange(
            address, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
        )
        assert status(over) == 413


def test_a_head_slower_than_the_timeout_gets_408() -> None:
    with (
        serving(threads=4, limits=HttpLimits(head_timeout_s=0.5)) as address,
        socket.create_connection(address, timeout=BOUND_S) as sock,
    ):
        started = time.monotonic()
        reply = b""
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"v" * 400:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.05)  # pacing the slow client, not synchronisation
            if time.monotonic() - started > BOUND_S:
                break
            sock.setblocking(False)
            try:
                reply += sock.recv(65536)
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
            if reply:
                break
        assert status(reply) == 408, reply
        assert b"not complete within 0.5 s" in reply


def test_a_hundred_slow_clients_do_not_stop_normal_requests() -> None:
    """100 clients each send a request head a byte a second, to a server with 8 request
    threads: normal requests on other connections are still answered, while they trickle."""
    address_holder: list[tuple[str, int]] = []
    stop = threading.Event()
    with ExitStack() as stack:
        address = stack.enter_context(serving(threads=8))
        address_holder.append(address)
        slow = [
            stack.enter_context(socket.create_connection(address, timeout=BOUND_S))
            for _ in range(100)
        ]
        head = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"v" * 60 + b"\r\n\r\n"

        def trickle() -> None:
            for i in range(len(head)):
                for sock in slow:
                    with suppress(OSError):
                        sock.sendall(head[i : i + 1])
                if stop.wait(1.0):  # a byte a second on each
                    return

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        try:
            stop.wait(1.5)  # let every slow client have sent its first bytes
            served = 0
            for _ in range(20):
                connection = http.client.HTTPConnection(*address, timeout=5)
                connection.request("GET", "/normal")
                reply = connection.getresponse()
                assert reply.status == 200
                assert reply.read() == b"0"
                connection.close()
                served += 1
            assert trickler.is_alive()  # the slow clients were still sending all along
            assert served == 20
        finally:
            stop.set()
            trickler.join(BOUND_S)


def test_slow_small_bodies_hold_no_thread_and_time_out() -> None:
    """20 clients send a small body a byte at a time to a server with 2 request threads:
    normal requests are still answered, and a body slower than the timeout gets 408."""
    stop = threading.Event()
    with ExitStack() as stack:
        address = stack.enter_context(serving(threads=2, limits=HttpLimits(head_timeout_s=3.0)))
        slow = [
            stack.enter_context(socket.create_connection(address, timeout=BOUND_S))
            for _ in range(20)
        ]
        for sock in slow:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")

        def trickle() -> None:
            while not stop.wait(0.25):
                for sock in slow:
                    with suppress(OSError):
                        sock.sendall(b"a")

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        try:
            for _ in range(10):
                connection = http.client.HTTPConnection(*address, timeout=5)
                connection.request("POST", "/normal", body=b"abc")
                reply = connection.getresponse()
                assert reply.status == 200
                assert reply.read() == b"3"
                connection.close()
            slow[0].settimeout(BOUND_S)
            answer = slow[0].recv(65536)  # 100 bytes at 4 a second take 25 s: over 3 s
            assert status(answer) == 408
        finally:
            stop.set()
            trickler.join(BOUND_S)
