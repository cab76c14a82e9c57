"""The embedded HTTP server (rpckit.http.HttpServer on cheroot, tuned) on 127.0.0.1:0: keep-alive
connections served by lingering threads, one write per small response, streaming intact, many
keep-alive clients, turns in arrival order with a way out for code that blocks, prompt stop."""

from __future__ import annotations

import errno
import http.client
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from rpckit.http import HttpLimits, HttpServer
from rpckit.http._server._turns import OUTSIDE_TURN_ENVIRON_KEY, Turns
from tests.turns_driver import Clock, leave_line, wait_until_waiting

Environ = dict[str, Any]


def hello(environ: Environ, start_response: Any) -> list[bytes]:
    body = environ.get("PATH_INFO", "/").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@contextmanager
def serving(app: Any, **options: Any) -> Iterator[tuple[str, int]]:
    server = HttpServer(app, "127.0.0.1:0", **options)
    address = server.start()
    host, port = address.rsplit(":", 1)
    try:
        yield host, int(port)
    finally:
        server.stop()


def get(
    connection: http.client.HTTPConnection, path: str, method: str = "GET"
) -> http.client.HTTPResponse:
    connection.request(method, path)
    reply = connection.getresponse()
    reply.read()
    return reply


def answer_on(sock: socket.socket) -> http.client.HTTPResponse:
    """The next answer on a raw client socket, its head read."""
    reply = http.client.HTTPResponse(sock)
    reply.begin()
    return reply


def test_one_keep_alive_connection_serves_many_requests() -> None:
    with serving(hello, threads=4) as (host, port):
        connection = http.client.HTTPConnection(host, port, timeout=10)
        for i in range(50):
            reply = get(connection, f"/r{i}")
            assert reply.status == 200
            assert not reply.will_close
        sock = connection.sock
        time.sleep(0.2)  # past the linger: the connection goes back to the selector
        reply = get(connection, "/after-idle")
        assert reply.status == 200
        assert connection.sock is sock  # the same connection all along
        connection.close()


def test_many_keep_alive_clients_keep_their_connections() -> None:
    """cheroot's own limit (10) would close each further client's connection every time."""
    with serving(hello, threads=8) as (host, port):
        connections = [http.client.HTTPConnection(host, port, timeout=10) for _ in range(24)]
        for _ in range(3):
            for connection in connections:
                reply = get(connection, "/")
                assert reply.status == 200
                assert reply.getheader("Connection") != "close"
        for connection in connections:
            connection.close()


def test_pipelined_requests_are_answered_in_order() -> None:
    with serving(hello, threads=2) as (host, port), socket.create_connection((host, port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while received.count(b"HTTP/1.1 200") < 2 or not received.endswith(b"/two"):
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        assert received.index(b"/one") < received.index(b"/two")


def test_requests_split_across_segments_and_long_headers() -> None:
    def echo_header(environ: Environ, start_response: Any) -> list[bytes]:
        body = environ.get("HTTP_X_LONG", "").encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    long_value = "v" * 20_000  # more than the read buffer
    with (
        serving(echo_header, threads=2, limits=HttpLimits(header_field_bytes=30_000)) as (
            host,
            port,
        ),
        socket.create_connection((host, port)) as sock,
    ):
        sock.settimeout(10)
        for piece in (b"GET /split HT", b"TP/1.1\r\nHo", b"st: x\r\nX-Long: ", long_value.encode()):
            sock.sendall(piece)
            time.sleep(0.02)
        sock.sendall(b"\r\n\r\n")
        received = b""
        while not received.endswith(long_value.encode()):
            chunk = sock.recv(65536)
            assert chunk, received[:200]
            received += chunk
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")


def test_head_and_empty_responses_are_complete() -> None:
    def empty(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("204 No Content", [])
        return []

    with serving(empty, threads=2) as (host, port):
        connection = http.client.HTTPConnection(host, port, timeout=10)
        assert get(connection, "/").status == 204
        assert get(connection, "/", method="HEAD").status == 204
        assert get(connection, "/again").status == 204  # the connection is still usable
        connection.close()
    with serving(hello, threads=2) as (host, port):
        connection = http.client.HTTPConnection(host, port, timeout=10)
        head = get(connection, "/abc", method="HEAD")
        assert (head.status, head.getheader("Content-Length")) == (200, "4")
        assert get(connection, "/next").status == 200
        connection.close()


def test_a_streamed_body_leaves_chunk_by_chunk() -> None:
    first_read = threading.Event()

    def stream(environ: Environ, start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        assert first_read.wait(timeout=10), "the first chunk never reached the client"
        yield b"second"

    with serving(stream, threads=2) as (host, port):
        connection = http.client.HTTPConnection(host, port, timeout=10)
        connection.request("GET", "/")
        reply = connection.getresponse()
        assert reply.getheader("Transfer-Encoding") == "chunked"
        assert reply.read1(5) == b"first"  # while the app still waits
        first_read.set()
        assert reply.read() == b"second"
        connection.close()


def test_responses_carry_a_current_date() -> None:
    with serving(hello, threads=2) as (host, port):
        connection = http.client.HTTPConnection(host, port, timeout=10)
        date = get(connection, "/").getheader("Date")
        connection.close()
    assert date is not None
    assert abs(parsedate_to_datetime(date).timestamp() - time.time()) < 5


class TurnAware:
    """A WSGI app that yields its turn around /slow, and blocks inside it on /stuck."""

    yields_turns = True

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.saw_key: list[bool] = []
        self.paths: list[str] = []

    def __call__(self, environ: Environ, start_response: Any) -> list[bytes]:
        outside = environ.get(OUTSIDE_TURN_ENVIRON_KEY)
        self.saw_key.append(outside is not None)
        path = environ["PATH_INFO"]
        self.paths.append(path)
        if path == "/slow":
            assert outside is not None
            with outside():
                self.entered.set()
                self.release.wait(timeout=20)
        elif path == "/stuck":
            self.entered.set()
            self.release.wait(timeout=20)  # blocks while holding the turn
        return hello(environ, start_response)


def fetch(host: str, port: int, path: str) -> tuple[int, float]:
    started = time.monotonic()
    connection = http.client.HTTPConnection(host, port, timeout=20)
    try:
        return get(connection, path).status, time.monotonic() - started
    finally:
        connection.close()


def test_only_apps_that_yield_turns_get_them() -> None:
    app = TurnAware()
    with serving(app, threads=2) as (host, port):
        assert fetch(host, port, "/")[0] == 200
    seen_by_plain: list[bool] = []

    def plain(environ: Environ, start_response: Any) -> list[bytes]:
        seen_by_plain.append(OUTSIDE_TURN_ENVIRON_KEY in environ)
        return hello(environ, start_response)

    with serving(plain, threads=2) as (host, port):
        assert fetch(host, port, "/")[0] == 200
    with serving(app, threads=2, turn_lease_s=None) as (host, port):
        assert fetch(host, port, "/")[0] == 200
    assert app.saw_key == [True, False]
    assert seen_by_plain == [False]


@pytest.mark.parametrize("path", ["/slow", "/stuck"])
def test_a_request_that_waits_does_not_hold_up_the_others(path: str) -> None:
    """Outside its turn it costs the others nothing; stuck inside, at most the lease."""
    app = TurnAware()
    with serving(app, threads=4, turn_lease_s=0.2) as (host, port):
        waiting = threading.Thread(target=fetch, args=(host, port, path))
        waiting.start()
        assert app.entered.wait(timeout=10)
        status, took = fetch(host, port, "/quick")
        app.release.set()
        waiting.join(timeout=20)
    assert status == 200
    assert took < (0.15 if path == "/slow" else 2.0)


def test_a_standing_line_of_turns_is_refused_503_unparsed_and_the_server_serves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worst input for turns: a line that never drains (here a holder stuck in its
    turn; under overload, a front end short of CPU). Requests leaving it get a fast 503
    with Retry-After instead of piling onto the GIL; once the line moves, all is served.
    A whole request's connection stays open for the client's next one; a client that
    asked to close gets its connection closed."""
    app = TurnAware()
    unread: list[str] = []
    options = {"turn_lease_s": 30.0, "turn_max_wait_s": 0.001, "turn_standing_s": 0.0}
    with serving(app, threads=4, on_unread=unread.append, **options) as (host, port):
        stuck = threading.Thread(target=fetch, args=(host, port, "/stuck"))
        stuck.start()
        assert app.entered.wait(timeout=10)
        connection = http.client.HTTPConnection(host, port, timeout=20)
        connection.request("POST", "/quick", body=b'{"a": 1}')
        reply = connection.getresponse()
        body = reply.read()
        closing = http.client.HTTPConnection(host, port, timeout=20)
        closing.request("GET", "/closing", headers={"Connection": "close"})
        closed = closing.getresponse()
        closed.read()
        closing.close()
        app.release.set()
        stuck.join(timeout=20)
        again = get(connection, "/again")  # the same connection, once the line moved
        connection.close()
    assert reply.status == 503
    assert reply.getheader("Retry-After") == "1"
    assert not reply.will_close
    assert body == b"server overloaded: try again shortly\n"
    assert (closed.status, closed.will_close) == (503, True)
    assert again.status == 200
    assert app.paths == ["/stuck", "/again"]  # the refused never reached the app
    assert unread == ["overloaded", "overloaded"]  # counted (rpckit serve --metrics)
    warnings = [r for r in caplog.records if "HTTP front end short of CPU" in r.getMessage()]
    assert len(warnings) == 1  # the operator hears of it (once per interval)


def test_while_a_standing_line_waits_a_new_request_is_answered_503_at_the_front_door(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under overload the line of turns stands and every request in it is refused after
    its longest wait; a newcomer is answered at once by the selector, before a request
    thread or the app sees it. The line here is driven by a clock the test moves (no
    timing races); the sockets and threads are real. Once the line has gone, all is served."""
    app = TurnAware()
    clock = Clock()
    turns = Turns(lease_s=60.0, max_wait_s=0.005, standing_s=0.1, clock=clock)
    unread: list[str] = []
    server = HttpServer(app, "127.0.0.1:0", threads=4, on_unread=unread.append)
    server._server.turns = turns
    host, port = server.start().rsplit(":", 1)
    try:
        holder = turns.acquire()  # the line cannot move
        for at in (0.0, 0.05, 0.1):  # requests kept leaving it: it stands
            leave_line(turns, clock, at)
        in_line = threading.Thread(target=lambda: turns.release(turns.acquire()))
        in_line.start()
        wait_until_waiting(turns, 1)
        assert turns.turning_away()
        # Head and body in one segment, so the door finds the request whole (http.client
        # sends them apart, and a request whose body is still on its way closes).
        connection = socket.create_connection((host, int(port)), timeout=20)
        connection.sendall(
            b'POST /door HTTP/1.1\r\nHost: door\r\nContent-Length: 8\r\n\r\n{"a": 1}'
        )
        reply = answer_on(connection)
        body = reply.read()
        turns.release(holder)
        in_line.join(timeout=10)
        clock.now = 1.0  # nobody left the line for standing_s: the door opens
        connection.sendall(b"GET /after HTTP/1.1\r\nHost: door\r\n\r\n")  # the same one
        after = answer_on(connection)
        after.read()
        connection.close()
    finally:
        # Should a request have reached the line after all, the test's clock would keep
        # it there for good, and stop() would wait for its thread: let the line go first.
        clock.now = max(clock.now, 1e6)
        turns.release(holder)
        server.stop()
    assert reply.status == 503
    assert reply.getheader("Retry-After") == "1"
    assert not reply.will_close
    assert body == b"server overloaded: try again shortly\n"
    assert after.status == 200
    assert app.paths == ["/after"]  # the refused request never reached the app
    assert unread == ["overloaded"]
    warnings = [r for r in caplog.records if "HTTP front end short of CPU" in r.getMessage()]
    assert len(warnings) == 1


@contextmanager
def waiting_to_be_accepted(count: int) -> Iterator[tuple[Any, list[socket.socket]]]:
    """A bound server whose selector loop is not started (a test plays its part), and
    ``count`` clients whose requests (GET /c0, /c1, ...) wait in the kernel's accept queue.
    Yields cheroot's server (its stubs do not declare what the tests reach) and the clients."""
    server = HttpServer(hello, "127.0.0.1:0", threads=4)
    host, port = server.bind().rsplit(":", 1)
    clients = [socket.create_connection((host, int(port)), timeout=20) for _ in range(count)]
    try:
        for index, client in enumerate(clients):
            client.sendall(f"GET /c{index} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        yield server._server, clients
    finally:
        for client in clients:
            client.close()
        server.stop()


def replies_of(clients: list[socket.socket]) -> list[tuple[int, bytes]]:
    return [(reply.status, reply.read()) for reply in map(answer_on, clients)]


def test_one_wake_of_the_selector_accepts_every_connection_waiting() -> None:
    """The worst input for the accept queue: a burst of new connections (under overload,
    clients that gave up reconnect) arriving while the selector waits for the GIL. cheroot
    accepts one per pass; here one readable event takes them all, each with its request,
    in order."""
    with waiting_to_be_accepted(5) as (engine, clients):
        listening = engine.socket
        last = engine._connections._from_server_socket(listening)
        assert last is not None
        engine.process_conn(last)  # what the loop does with the one returned
        assert listening.gettimeout() == 1.0  # cheroot's own, back after the extra accepts
        replies = replies_of(clients)
    assert replies == [(200, f"/c{index}".encode()) for index in range(5)]


class OutOfDescriptorsAfterOne:
    """A listening socket whose accepts after the first fail as at the descriptor limit."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.accepted = 0

    def accept(self) -> tuple[socket.socket, Any]:
        if self.accepted:
            raise OSError(errno.EMFILE, "Too many open files")
        self.accepted += 1
        return self.real.accept()

    def gettimeout(self) -> float | None:
        return self.real.gettimeout()

    def settimeout(self, timeout: float | None) -> None:
        self.real.settimeout(timeout)


def test_an_accept_that_fails_after_the_first_loses_no_connection() -> None:
    """The worst input for accepting many at once: the kernel refusing a further accept
    (out of descriptors) with a connection already in hand. That one is served; the one
    left waiting is accepted on a later pass."""
    with waiting_to_be_accepted(2) as (engine, clients):
        failing = OutOfDescriptorsAfterOne(engine.socket)
        first = engine._connections._from_server_socket(failing)
        assert first is not None
        assert failing.accepted == 1
        engine.process_conn(first)
        second = engine._connections._from_server_socket(engine.socket)  # a later pass
        assert second is not None
        engine.process_conn(second)
        replies = replies_of(clients)
    assert replies == [(200, b"/c0"), (200, b"/c1")]


def test_a_client_that_connects_and_waits_does_not_hold_up_the_others() -> None:
    app = TurnAware()
    with (
        serving(app, threads=4, turn_lease_s=1.0) as (host, port),
        socket.create_connection((host, port)),
    ):
        time.sleep(0.1)  # a request thread now waits on the silent connection
        status, took = fetch(host, port, "/quick")
    assert status == 200
    assert took < 0.5


def test_stop_is_prompt_with_lingering_connections() -> None:
    server = HttpServer(hello, "127.0.0.1:0", threads=4, grace_s=5)
    host, port = server.start().rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    assert get(connection, "/").status == 200  # its thread now lingers on the connection
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.0
    connection.close()


def test_linger_is_validated() -> None:
    with pytest.raises(ValueError, match="linger_s"):
        HttpServer(hello, "127.0.0.1:0", linger_s=-1)
