"""cheroot, tuned for many small keep-alive requests: the embedded HTTP server's engine.

Imported only by :class:`rpckit.http._server._server.HttpServer`, when cheroot is
installed. Stock cheroot spends more on each small request than the shim does
(bench/shim, measured on one core): a keep-alive connection goes back to the
selector thread after every request and waits for a request thread again (two
thread handoffs per request); the response head and body leave in two
``send`` calls; and beyond ``keep_alive_conn_limit`` (10) connections it
closes each connection after its request, so every request of the 11th client
on pays a new TCP connection. :class:`TunedWsgiServer` changes three things:

* **lingering**: a request thread that answered on a keep-alive connection
  waits up to ``linger_s`` on that connection for its next request and serves
  it itself (no handoff), before handing it back to the selector as usual.
  At most ``max_lingering`` threads linger, so the rest keep serving new
  connections and connections that come back through the selector;
* **one write per small response**: the response head is held and sent with
  the first body chunk (or alone at the end of an empty response); bodies
  still stream chunk by chunk;
* **buffered lines**: the request line and headers are sliced from the read
  buffer, not read a few bytes at a time by ``_pyio``'s generic ``readline``;
* **keep-alive limit**: idle keep-alive connections are cheap in the
  selector; the limit is the caller's (``keep_alive_connections``);
* **turns** (optional, :mod:`rpckit.http._server._turns`): each request is read,
  answered and written in a turn, handed out in arrival order; the environ
  carries the way to step outside it; a request refused from a standing line
  is answered 503 with ``Retry-After`` before it is parsed;
* **heads gathered, limits checked** (:mod:`rpckit.core._http_limits`): on
  plain TCP a request's head is read from whatever the socket has, without
  blocking; an incomplete head goes back to the selector (its bytes kept on
  the connection) instead of holding a request thread, so a hundred clients
  sending a byte a second cost no thread between their bytes; a head over a
  limit is answered 414/431 at once and a head slower than the timeout 408;
* **arrival stamps** (:mod:`rpckit.http._server._arrival`): a request's age counts
  from when the kernel received its bytes, however long they waited unread (accept
  queue, a busy selector), and a request whose client closed before it was read is
  dropped unserved;
* **every waiting connection accepted** (:class:`_Accepting`): one wake of the selector
  accepts all the connections in the kernel's queue (up to :data:`ACCEPTS_PER_WAKE`),
  not one;
* **a front door**: while the line of turns stands, the selector answers a request
  that has come 503 itself (``_Connection.turned_away``), before a request thread
  picks it up only to refuse it after its wait in line; a new connection whose
  request has not come yet waits for it in the selector, not in a request thread.

The hooks are cheroot's extension points -- ``ConnectionClass``,
``RequestHandlerClass``, ``gateway``, ``put_conn`` -- plus the worker's
contract that ``put_conn`` is where a kept-alive connection goes after a
request.
``tests/integration/test_http_server.py`` pins that behaviour.
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import logging
import select
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, cast

from cheroot import connections, errors, makefile, server, wsgi

from rpckit.core._http_limits import (
    HeadRefused,
    HttpLimits,
    body_to_gather,
    check_head,
    whole_request,
)
from rpckit.http._server._arrival import (
    arrival_on_monotonic,
    enable_receive_stamps,
    peer_closed,
    recv_stamped,
)
from rpckit.http._server._turns import (
    OUTSIDE_TURN_ENVIRON_KEY,
    RECEIVED_AT_ENVIRON_KEY,
    TurnHold,
    Turns,
)
from rpckit.server._bad_input import SharedLogInterval

__all__ = ["TunedWsgiServer"]

_log = logging.getLogger("rpckit.http")

#: The most connections the selector accepts each time it finds the listening socket
#: readable (:class:`_Accepting`); nginx's ``multi_accept`` takes them all.
ACCEPTS_PER_WAKE = 64

#: Why a request was answered before it was parsed (``TunedWsgiServer``'s ``on_unread``).
UNREAD_OVERLOADED = "overloaded"
UNREAD_CLIENT_GONE = "client_gone"

#: The answer to a request refused from a standing line of turns, before it is parsed.
OVERLOADED = HeadRefused(
    "503 Service Unavailable", "server overloaded: try again shortly", retry_after_s=1
)


class _HeadHoldingWriter(makefile.StreamWriter):
    """A connection's writer that can hold one write (the response head) for the next."""

    _held = b""
    _hold_next = False

    def hold_next_write(self) -> None:
        self._hold_next = True

    def write(self, b: Any) -> Any:
        if self._hold_next:
            self._hold_next = False
            self._held = bytes(b)
            return len(b)
        if self._held:
            head, self._held = self._held, b""
            self._send(head + bytes(b))
            return len(b)
        return self._send(b)

    def release_held(self) -> None:
        """Send a held head that no body followed (an empty response)."""
        self._hold_next = False
        if self._held:
            head, self._held = self._held, b""
            self._send(head)

    def _send(self, data: Any) -> Any:
        return cast(Any, super()).write(data)  # cheroot's write: buffer, then flush it all


class _Request(server.HTTPRequest):
    def send_headers(self) -> None:
        date = getattr(self.server, "http_date", None)
        if date is not None and not any(name.lower() == b"date" for name, _ in self.outheaders):
            self.outheaders.append((b"Date", date()))  # else cheroot formats one each time
        wfile = self.conn.wfile
        if isinstance(wfile, _HeadHoldingWriter):
            wfile.hold_next_write()  # send_headers ends with one write of the whole head
        super().send_headers()

    def respond(self) -> None:
        try:
            super().respond()
        except (errors.MaxSizeExceeded, OSError, ValueError) as exc:
            # A chunked body past the limit or badly framed, found while the app read
            # it (cheroot would answer 500 and log a traceback). A Content-Length over
            # the limit was refused before the app ran.
            status = _body_error_status(exc)
            if status is None:
                raise
            self.close_connection = True
            if self.sent_headers:
                raise
            _log.debug("refused a request body: %s (%s)", status, exc)
            self.simple_response(status, f"{exc}")
        finally:
            wfile = self.conn.wfile
            if isinstance(wfile, _HeadHoldingWriter):
                wfile.release_held()


def _body_error_status(exc: Exception) -> str | None:
    """The status for an error cheroot's chunked-body reader raised; None for any other error."""
    text = str(exc.args[0]) if exc.args else ""
    if isinstance(exc, errors.MaxSizeExceeded) or (
        isinstance(exc, OSError) and text == "Request Entity Too Large"
    ):
        return "413 Request Entity Too Large"
    if isinstance(exc, ValueError) and text.startswith("Bad chunked transfer"):
        return "400 Bad Request"
    return None


class _LineReader(makefile.StreamReader):
    """cheroot's reader (pure-Python ``_pyio``), with ``readline`` from the buffer in one step.

    cheroot reads the request line and each header with ``readline``, which
    ``_pyio`` does a few bytes at a time in Python; a line already buffered
    (the usual case: a small request arrives in one segment) is sliced out
    here instead. The buffer is ``_pyio``'s own, as cheroot's ``has_data`` reads it.
    """

    def readline(self, size: Any = -1) -> Any:
        buffered: bytes = getattr(self, "_read_buf", b"")
        start: int = getattr(self, "_read_pos", 0)
        if start >= len(buffered):
            self.peek(1)  # one read from the socket into the (empty) buffer, as readline would
            buffered, start = getattr(self, "_read_buf", b""), getattr(self, "_read_pos", 0)
        stop = len(buffered) if size is None or size < 0 else min(len(buffered), start + size)
        newline = buffered.find(b"\n", start, stop)
        if newline < 0:
            return cast(Any, super()).readline(size)  # not all buffered (or at the limit)
        line = buffered[start : newline + 1]
        self._read_pos = newline + 1
        self.bytes_read += len(line)
        return line


def _make_file(sock: Any, mode: str = "r", bufsize: int = io.DEFAULT_BUFFER_SIZE) -> Any:
    """cheroot's ``MakeFile``, with a quick line reader and a head-holding writer."""
    if "r" in mode:
        return _LineReader(sock, mode, bufsize)
    return _HeadHoldingWriter(sock, mode, bufsize)


class _Connection(server.HTTPConnection):
    RequestHandlerClass = _Request
    #: The turn of the request being served, while the server serves with turns.
    turn: TurnHold | None = None
    #: Set by whoever just saw data waiting on the socket (a lingering thread).
    readable = False
    #: When the next request was first seen coming (monotonic), set where cheroot
    #: queues the connection for a thread or a lingering thread sees data.
    waiting_since: float | None = None
    #: When the request being served was first seen coming (monotonic).
    received_at: float | None = None
    #: The part of a request head (and small body) received so far, while the rest is awaited.
    head_buffer = b""
    #: True while a request head is incomplete; since when (monotonic).
    head_pending = False
    head_started = 0.0

    def __init__(self, http_server: Any, sock: Any, make_file: Any = makefile.MakeFile) -> None:
        if make_file is makefile.MakeFile:  # plain TCP (a TLS adapter brings its own)
            make_file = _make_file
        super().__init__(http_server, sock, make_file)

    def communicate(self) -> Any:
        """Serve one request, in a turn when the server has :class:`Turns`."""
        since, self.waiting_since = self.waiting_since, None
        if not self.head_pending:  # a new request, not the rest of a head already begun
            self.received_at = time.monotonic() if since is None else since
        limits: HttpLimits | None = getattr(self.server, "limits", None)
        if limits is not None and type(self.rfile) is _LineReader:
            gathered = self._gather_head(limits)
            if gathered is not None:
                return gathered  # True: wait for more in the selector; False: close
        turns: Turns | None = getattr(self.server, "turns", None)
        readable, self.readable = self.readable, False
        if turns is None:
            return cast(Any, super()).communicate()
        if not (readable or self.rfile.has_data()) and not _wait_readable(
            self.socket, turns.lease_s
        ):
            # A slow client (one that connects, then waits): served as cheroot
            # would, without a turn -- a turn waiting on a socket holds up the line.
            return cast(Any, super()).communicate()
        turn = turns.hold()
        if turn.refused:  # the line stands: the front end is short of CPU (see _turns)
            self.server.note_refused_overloaded()
            return self._refuse_overloaded()
        self.turn = turn
        try:
            return cast(Any, super()).communicate()
        finally:
            turn.release()
            self.turn = None

    def _gather_head(self, limits: HttpLimits) -> bool | None:
        """Read what the socket has of the request head, without blocking.

        None: the head is complete (with a small body, :func:`body_to_gather`), in the
        reader's buffer for cheroot to parse.
        True: incomplete, its bytes kept here; wait for more in the selector.
        False: answered (over a limit, or too slow) or the peer left: close.
        """
        rfile: Any = self.rfile
        data = self.head_buffer + rfile._read_buf[rfile._read_pos :]
        rfile._read_buf, rfile._read_pos = b"", 0
        sock = self.socket
        timeout = sock.gettimeout()
        sock.settimeout(0.0)  # what is there now, no wait (a socket with a timeout polls first)
        try:
            data = self._read_head(data, limits, sock)
        finally:
            sock.settimeout(timeout)
        if isinstance(data, bool) or data is None:
            return data
        now = time.monotonic()
        if not self.head_pending:
            self.head_pending, self.head_started = True, now
        elif now - self.head_started > limits.head_timeout_s:
            self._refuse(
                HeadRefused(
                    "408 Request Timeout",
                    f"request not complete within {limits.head_timeout_s:g} s",
                )
            )
            return False
        self.head_buffer = data
        return True

    def _read_head(self, data: bytes, limits: HttpLimits, sock: Any) -> bytes | bool | None:
        """Read from the non-blocking ``sock`` until the head is whole, refused or all read.

        Returns what :meth:`_gather_head` returns, or the bytes so far (incomplete).
        """
        while True:
            verdict = check_head(data, limits) if data else None
            if isinstance(verdict, int) and len(data) >= verdict + body_to_gather(data[:verdict]):
                if peer_closed(sock):
                    self.server.note_client_gone()
                    return False
                self.head_buffer, self.head_pending = b"", False
                cast(Any, self.rfile)._read_buf = data  # cheroot parses it from here
                return None
            if isinstance(verdict, HeadRefused):
                self._refuse(verdict)
                return False
            try:
                chunk, stamp = recv_stamped(sock, 65536)
            except (BlockingIOError, InterruptedError):
                return data
            except OSError:
                return False
            if not chunk:
                return False  # the peer closed before a whole head
            if stamp is not None and not data and not self.head_pending:
                self._arrived(stamp)
            data += chunk

    def _arrived(self, stamp_wall: float) -> None:
        """A new request's first bytes carry the kernel's receive stamp: its client's wait
        began then, maybe well before a thread read it (see :mod:`._arrival`)."""
        arrived = arrival_on_monotonic(
            stamp_wall, now_wall=time.time(), now_monotonic=time.monotonic()
        )
        if self.received_at is None or arrived < self.received_at:
            self.received_at = arrived

    def turned_away(self) -> Literal["keep", "close", "wait"] | None:
        """At the front door, while the line of turns stands: answer the request that has
        come 503 now, from the selector thread, before it waits for a request thread and
        a turn only to be refused (``Turns.turning_away``). ``"wait"``: nothing has come yet
        (a new connection is handed over as soon as it is accepted, usually before its
        request): back to the selector, to come to the door again when it does -- handed
        to a request thread, it would wait in the line and be refused from it, slowly.
        None: TLS, whose handshake comes first: serve it as usual.
        ``"keep"``: answered, and the connection may carry the client's next
        request (:func:`~rpckit.core._http_limits.whole_request`: a client that reconnects
        after each refusal costs an accept and a handshake on both sides, and waits in the
        accept queue). ``"close"``: answered (or the client had left): close it.

        What the socket has is read first, without blocking: closing a socket with
        unread bytes resets the connection, and the reset can overtake the answer.
        The selector never waits here: a client that does not read its answer loses it.
        """
        limits: HttpLimits | None = getattr(self.server, "limits", None)
        if type(self.rfile) is not _LineReader or limits is None:
            return None
        sock = self.socket
        timeout = sock.gettimeout()
        sock.settimeout(0.0)
        try:
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return "wait"
            except OSError:
                return "close"
            if not chunk:
                return "close"  # the client left
            data, self.head_buffer, self.head_pending = self.head_buffer + chunk, b"", False
            keep = whole_request(data, limits) == len(data)
            _log.debug("refused a request: %s (%s)", OVERLOADED.status, OVERLOADED.reason)
            try:
                sock.send(_refusal(OVERLOADED, close=not keep))
            except OSError:  # the client left, or does not read
                return "close"
            return "keep" if keep else "close"
        finally:
            sock.settimeout(timeout)

    def _refuse_overloaded(self) -> bool:
        """Answer the request just gathered 503 (refused from a standing line of turns);
        True if the connection may carry the next request (as :meth:`turned_away`)."""
        limits: HttpLimits | None = getattr(self.server, "limits", None)
        if type(self.rfile) is _LineReader and limits is not None:
            rfile: Any = self.rfile  # (_pyio's buffer, as _gather_head reads it)
            data = rfile._read_buf[rfile._read_pos :]
            if whole_request(data, limits) == len(data):
                rfile._read_buf, rfile._read_pos = b"", 0  # the request, answered unread
                _log.debug("refused a request: %s (%s)", OVERLOADED.status, OVERLOADED.reason)
                try:
                    self.wfile.write(_refusal(OVERLOADED, close=False))
                except OSError:
                    return False
                return True
        self._refuse(OVERLOADED)
        return False

    def _refuse(self, refused: HeadRefused) -> None:
        """Answer ``refused`` (the connection is closed after it)."""
        _log.debug("refused a request: %s (%s)", refused.status, refused.reason)
        with contextlib.suppress(OSError):  # the client left: nothing to tell it
            self.wfile.write(_refusal(refused))


def _refusal(refused: HeadRefused, *, close: bool = True) -> bytes:
    """The whole answer to a refused request; ``close``: its connection is closed after it."""
    body = f"{refused.reason}\n".encode("ascii")
    retry = "" if refused.retry_after_s is None else f"Retry-After: {refused.retry_after_s}\r\n"
    connection = "Connection: close\r\n" if close else ""
    head = (
        f"HTTP/1.1 {refused.status}\r\nContent-Type: text/plain\r\n{retry}"
        f"Content-Length: {len(body)}\r\n{connection}\r\n"
    )
    return head.encode("ascii") + body


class _Gateway(wsgi.Gateway_10):
    """WSGI 1.0, with :data:`OUTSIDE_TURN_ENVIRON_KEY` when the request holds a turn."""

    def get_environ(self) -> Any:
        environ = cast(Any, super()).get_environ()
        received_at = getattr(self.req.conn, "received_at", None)
        if received_at is not None:
            environ[RECEIVED_AT_ENVIRON_KEY] = received_at
        turn = getattr(self.req.conn, "turn", None)
        if turn is not None:
            environ[OUTSIDE_TURN_ENVIRON_KEY] = turn.outside
        return environ


def _wait_readable(sock: Any, timeout_s: float) -> bool:
    """True when ``sock`` has data (or EOF) within ``timeout_s``; the GIL is released meanwhile."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(timeout_s * 1000))
    readable, _, _ = select.select([sock], [], [], timeout_s)
    return bool(readable)


class _Accepting(connections.ConnectionManager):
    """cheroot's selector loop, accepting up to :data:`ACCEPTS_PER_WAKE` waiting connections
    each time the listening socket is readable instead of one.

    Stock cheroot accepts one connection per pass of its loop, and a pass waits for the
    GIL, which the request and handler threads hold most of the time under load. Clients
    that connect faster than that wait in the kernel's accept queue, unseen by anything
    that could refuse them: bench/overload's seed profile through the shim at 3x (clients
    that give up at 250 ms reconnect, ~150 new connections a second per process) had new
    connections' first bytes 100-190 ms old (p50) when the selector saw them, against
    10-50 ms for kept-alive ones. Plain TCP only: a TLS handshake runs in the selector
    thread, and more of them per pass would hold up its other connections.
    """

    def _from_server_socket(self, server_socket: Any) -> Any:
        accept = cast(Any, super())._from_server_socket  # (not in cheroot's stubs)
        conn = accept(server_socket)
        if conn is None:
            return None
        timeout = server_socket.gettimeout()
        server_socket.settimeout(0.0)  # the rest only if already waiting
        try:
            for _ in range(ACCEPTS_PER_WAKE - 1):
                more = accept(server_socket)
                if more is None:
                    break
                self.server.process_conn(conn)  # in the order they were accepted
                conn = more
        except OSError:
            # An error cheroot raises (out of descriptors, say): the connection in hand is
            # still served; the next pass's first accept meets the error and cheroot logs it.
            pass
        finally:
            server_socket.settimeout(timeout)
        return conn  # the caller hands the last one over


class TunedWsgiServer(wsgi.Server):
    """``cheroot.wsgi.Server`` with lingering request threads (see the module docstring)."""

    ConnectionClass = _Connection

    def __init__(
        self,
        bind_addr: tuple[str, int],
        wsgi_app: Any,
        *,
        numthreads: int,
        linger_s: float,
        max_lingering: int,
        keep_alive_connections: int,
        turns: Turns | None,
        limits: HttpLimits | None = None,
        on_unread: Callable[[str], None] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(bind_addr, wsgi_app, numthreads=numthreads, **options)
        self.gateway = _Gateway
        self.turns = turns
        self.limits = limits
        if limits is not None:
            # cheroot's own checks: the body, and the head where rpckit does not gather
            # it (TLS); within the limits above, so they never refuse what those pass.
            self.max_request_header_size = limits.head_bytes + 2
            self.max_request_body_size = limits.body_bytes
        self.keep_alive_conn_limit = keep_alive_connections
        self._linger_s = linger_s
        self._max_lingering = max_lingering
        self._lingering = 0
        self._linger_lock = threading.Lock()
        self._date = (0, b"")
        self._overload_log = SharedLogInterval()
        self._gone_log = SharedLogInterval()
        self._on_unread = on_unread

    def prepare(self) -> None:
        """Bind and listen; the connections accepted carry the kernel's receive stamps, and
        the selector accepts every connection waiting when it wakes (:class:`_Accepting`)."""
        super().prepare()
        if self.socket is not None:
            enable_receive_stamps(self.socket)
            if self.ssl_adapter is None:
                state = cast(Any, self)  # (cheroot's stubs do not declare _connections)
                one_at_a_time = state._connections
                state._connections = _Accepting(self)
                one_at_a_time.close()

    def note_client_gone(self) -> None:
        """Count a request dropped unread because its client had closed (``on_unread``) and
        log it, at most once per interval."""
        if self._on_unread is not None:
            self._on_unread(UNREAD_CLIENT_GONE)
        held = self._gone_log.admit()
        if held is not None:
            _log.warning(
                "HTTP clients closed their connections before their requests were read "
                "(%d more since the last such line): the requests waited unseen (accept "
                "queue, busy threads) past their clients' patience and were dropped unserved; "
                "add processes (--workers) or capacity",
                held,
            )

    def note_refused_overloaded(self) -> None:
        """Count a request refused unparsed for overload (``on_unread``; from a standing line
        of turns or at the front door) and log it, at most once per interval."""
        if self._on_unread is not None:
            self._on_unread(UNREAD_OVERLOADED)
        held = self._overload_log.admit()
        if held is not None:
            _log.warning(
                "HTTP front end short of CPU: its requests kept waiting over %g ms for their "
                "turn, so new ones are answered 503 with Retry-After before they are read "
                "(%d more since the last such line); add processes (--workers) or capacity",
                self.turns.max_wait_s * 1000 if self.turns is not None else 0,
                held,
            )

    def http_date(self) -> bytes:
        """The ``Date`` header value (RFC 9110 IMF-fixdate), formatted once a second."""
        now = int(time.time())
        second, text = self._date
        if second != now:
            text = email.utils.formatdate(now, usegmt=True).encode("ascii")
            self._date = (now, text)
        return text

    def process_conn(self, conn: Any) -> None:
        """cheroot's selector hands over a connection that connected or turned readable:
        from now on its client waits on us (see :data:`RECEIVED_AT_ENVIRON_KEY`). While
        the line of turns stands, a request that has come is answered 503 here, at the
        front door (:meth:`_Connection.turned_away`)."""
        conn.waiting_since = time.monotonic()
        turns = self.turns
        if turns is not None and turns.turning_away():
            answered = conn.turned_away()
            if answered == "wait":  # its request, when it comes, via the selector
                cast(Any, self)._connections.put(conn)
                return
            if answered is not None:
                self.note_refused_overloaded()
                if answered == "keep":
                    cast(Any, self)._connections.put(conn)  # its next request, via the selector
                else:
                    conn.close()
                return
        super().process_conn(conn)

    def put_conn(self, conn: Any) -> None:
        """Called by the request thread that just answered on ``conn`` (kept alive)."""
        if conn.head_pending:  # the rest of a head is awaited: from the selector, no thread
            super().put_conn(conn)
            return
        with self._linger_lock:
            linger = self._lingering < self._max_lingering
            if linger:
                self._lingering += 1
        if not linger:
            super().put_conn(conn)
            return
        try:
            while self.ready:
                if not conn.rfile.has_data() and not _wait_readable(conn.socket, self._linger_s):
                    break  # idle: back to the selector
                conn.readable = True
                conn.waiting_since = time.monotonic()
                if not conn.communicate():
                    conn.close()
                    return
                if conn.head_pending:
                    break  # a slow head: back to the selector
        except ConnectionError:
            conn.close()  # the peer went away, as cheroot's worker would treat it
            return
        except Exception:  # noqa: BLE001 - this runs in cheroot's worker cleanup: never kill it
            _log.exception("serving a kept-alive connection failed")
            conn.close()
            return
        except BaseException:
            conn.close()
            raise
        finally:
            with self._linger_lock:
                self._lingering -= 1
        super().put_conn(conn)
