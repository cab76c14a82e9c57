"""A request's age counts from when its bytes reached the machine, not from when a thread
read them (the kernel's receive stamps), and a request whose client closed before it was read
is dropped unserved. Real sockets on 127.0.0.1: the server is bound, the client sends, and the
server starts reading only after a known wait -- the wait no thread could see."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rpckit.http import HttpServer, RouteOptions, Shim
from rpckit.http._server._arrival import enable_receive_stamps, recv_stamped
from rpckit.http._server._turns import RECEIVED_AT_ENVIRON_KEY
from tests.integration.counting import CountingInventory

#: How long requests wait unseen, bound but not yet read, in these tests.
UNSEEN_S = 0.3

REQUEST = b"GET /age HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class AgeApp:
    """Answers each request with its age when the app saw it (ms), and counts the requests."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.paths.append(environ["PATH_INFO"])
        age_ms = (time.monotonic() - environ[RECEIVED_AT_ENVIRON_KEY]) * 1000
        body = f"{age_ms:.1f}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]


@contextmanager
def kernel_stamping_on() -> Iterator[None]:
    """Hold the kernel's receive stamping on for the block.

    Linux turns stamping on for the whole host lazily, a moment after the first socket asks
    (and off when the last one closes): segments received in that moment carry no stamp,
    and the server counts those requests from when it read them, as without stamps. A test
    that sends at once after the server's socket asked would race that moment, so a socket
    of its own asks first and the block starts once a segment came back stamped.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert enable_receive_stamps(listener)
        with socket.create_connection(listener.getsockname(), timeout=10) as client:
            accepted, _ = listener.accept()
            with accepted:
                for _ in range(1000):
                    client.sendall(b"x")
                    _data, stamp = recv_stamped(accepted, 16)
                    if stamp is not None:
                        break
                    time.sleep(0.001)  # polls the kernel's state: nothing announces it
                else:
                    raise AssertionError("the kernel never stamped a received segment")
                yield


@contextmanager
def bound_not_reading(
    app: Any, *, on_unread: Callable[[str], None] | None = None
) -> Iterator[tuple[HttpServer, tuple[str, int]]]:
    """An embedded server that listens but has not started reading (``start`` is the test's),
    with the kernel's stamping already on (:func:`kernel_stamping_on`)."""
    with kernel_stamping_on():
        server = HttpServer(app, "127.0.0.1:0", threads=4, on_unread=on_unread)
        host, port = server.bind().rsplit(":", 1)
        try:
            yield server, (host, int(port))
        finally:
            server.stop()


def send_unread(address: tuple[str, int], data: bytes) -> tuple[socket.socket, float]:
    """Connect and send ``data``; returns the socket and when the send was done."""
    client = socket.create_connection(address, timeout=10)
    client.sendall(data)
    return client, time.monotonic()


def unseen_for(sent_at: float) -> None:
    """Let ``UNSEEN_S`` pass since ``sent_at`` with nothing reading: the wait is the input."""
    deadline = sent_at + UNSEEN_S
    while time.monotonic() < deadline:
        time.sleep(deadline - time.monotonic())


def get(address: tuple[str, int], path: str) -> int:
    """One GET on a new connection; its status."""
    connection = http.client.HTTPConnection(*address, timeout=10)
    connection.request("GET", path)
    reply = connection.getresponse()
    reply.read()
    connection.close()
    return reply.status


def read_reply(client: socket.socket) -> bytes:
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.split(b"\r\n\r\n", 1)[1]:
        chunk = client.recv(65536)
        if not chunk:
            break
        reply += chunk
    return reply


def test_a_request_that_waited_unseen_is_as_old_as_its_bytes() -> None:
    app = AgeApp()
    with bound_not_reading(app) as (server, address):
        client, sent_at = send_unread(address, REQUEST)
        with client:
            unseen_for(sent_at)
            server.start()
            reply = read_reply(client)
            seen_after_ms = (time.monotonic() - sent_at) * 1000
    assert reply.startswith(b"HTTP/1.1 200 ")
    age_ms = float(reply.split(b"\r\n\r\n", 1)[1])
    # Without the kernel's stamp the age would be the few ms since a thread read it.
    assert UNSEEN_S * 1000 - 2 <= age_ms <= seen_after_ms + 2


def test_a_kept_alive_connection_stamps_each_request_when_it_came() -> None:
    """The stamp is the request's own, not its connection's: a second request on a kept-alive
    connection is young again."""
    app = AgeApp()
    with bound_not_reading(app) as (server, address):
        server.start()
        connection = http.client.HTTPConnection(*address, timeout=10)
        ages = []
        for _ in range(3):
            connection.request("GET", "/age")
            ages.append(float(connection.getresponse().read()))
        connection.close()
    assert all(0 <= age < 200 for age in ages), ages


def test_a_request_whose_client_left_unread_is_dropped_and_the_server_serves_on() -> None:
    app = AgeApp()
    unread: list[str] = []
    with bound_not_reading(app, on_unread=unread.append) as (server, address):
        client, _ = send_unread(address, REQUEST.replace(b"/age", b"/gone"))
        client.close()  # it gave up before any thread read its request
        server.start()
        status = get(address, "/next")
    assert status == 200
    assert app.paths == ["/next"]  # the abandoned request never reached the app
    assert unread == ["client_gone"]  # counted (rpckit serve --metrics)


def test_the_route_timeout_counts_the_unseen_wait_so_a_spent_request_does_no_work() -> None:
    """Worst input for the shim: an unchanged client whose request waited, unseen, longer than
    its route's timeout. It is answered 504 without running; a fresh one is served."""
    servicer = CountingInventory()
    shim = Shim([servicer], routes={"inventory.v1.Inventory.GetItem": RouteOptions(timeout_s=0.2)})
    with bound_not_reading(shim) as (server, address):
        spent, sent_at = send_unread(
            address, b"GET /items/late HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        with spent:
            unseen_for(sent_at)
            server.start()
            reply = read_reply(spent)
        assert reply.startswith(b"HTTP/1.1 504 "), reply[:80]
        assert servicer.calls == 0
        status = get(address, "/items/fresh")
    assert status == 200
    assert servicer.calls == 1
