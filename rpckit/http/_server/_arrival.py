"""When a request's bytes reached this machine: the kernel's receive timestamps.

A route's timeout counts from when the client's wait began. The HTTP server
first sees a request when a thread reads its connection, and before that the
request may have waited where no thread looks: in the listen socket's accept
queue, or in a connection's receive buffer while the selector thread waited
for the GIL. Under overload on the seed profile through the shim (bench/overload,
3x, four processes on two cores) that wait was 0.3-1 s for most requests: they
were stamped when read, admitted with their whole timeout apparently left, and
run for clients that had given up long before -- 79% of the handlers' CPU wasted,
goodput 19 req/s.

The kernel stamps every received segment (``SO_TIMESTAMPNS``, inherited by
accepted sockets; loopback included), and ``recvmsg`` returns the stamp of the
data it read. The stamp is on the wall clock; :func:`arrival_on_monotonic`
turns it into the monotonic clock the server's deadlines use. Segments that
wait unread are merged, and the merged one keeps the *latest* stamp: a request
sent in pieces counts from its last piece (later than its first: it is given
more time, never less). So does a request followed by its client's FIN -- a
client that gave up and closed -- and so that one would look fresh just when
it is dead: :func:`peer_closed` finds those, and the server drops them unserved
(nginx's "499 client closed request"). The price: a client that half-closes
its connection after sending a request, expecting an answer, gets none.

Linux turns stamping on for the whole host lazily, a moment after the first
socket asks (and off once the last such socket closes): segments received in
that moment carry no stamp, and their requests count from when they were read,
as without stamps.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Final

__all__ = [
    "MAX_ARRIVAL_AGE_S",
    "arrival_on_monotonic",
    "enable_receive_stamps",
    "peer_closed",
    "recv_stamped",
]

#: Linux's ``SO_TIMESTAMPNS`` (== ``SCM_TIMESTAMPNS``), when the socket module lacks it.
_SO_TIMESTAMPNS: Final = int(getattr(socket, "SO_TIMESTAMPNS", 35))
#: ``struct timespec``: seconds and nanoseconds, two native longs.
_TIMESPEC: Final = struct.Struct("@qq")
_ANCILLARY_BYTES: Final = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0

#: A stamp older than this is not believed (the wall clock stepped while the bytes
#: waited): the request counts from when it was read, as without stamps.
MAX_ARRIVAL_AGE_S = 60.0


def enable_receive_stamps(sock: Any) -> bool:
    """Ask the kernel to stamp what ``sock`` receives (a listening socket: every connection
    it accepts). False where it cannot (no such option, or not a socket that takes it)."""
    if not _ANCILLARY_BYTES:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def recv_stamped(sock: Any, size: int) -> tuple[bytes, float | None]:
    """``sock.recv(size)``, with the kernel's receive stamp of the data (wall clock, seconds)
    when the socket carries stamps; raises what ``recv`` raises."""
    data, ancillary, _flags, _address = sock.recvmsg(size, _ANCILLARY_BYTES)
    for level, kind, payload in ancillary:
        if (
            level == socket.SOL_SOCKET
            and kind == _SO_TIMESTAMPNS
            and len(payload) >= _TIMESPEC.size
        ):
            seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
            return data, seconds + nanoseconds / 1e9
    return data, None


def peer_closed(sock: Any) -> bool:
    """True when the peer of the non-blocking ``sock`` has closed its side: nothing more
    will come, and no one waits for an answer. A client that gives up closes its
    connection, and its FIN, arriving while the request was still unread, merges into the
    request's segment and moves the request's stamp to the moment it gave up.
    Data waiting (a pipelined request) or none yet: False."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK) == b"")
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # reset by the peer


def arrival_on_monotonic(stamp_wall: float, *, now_wall: float, now_monotonic: float) -> float:
    """The monotonic time at which data stamped ``stamp_wall`` arrived, read at ``now_wall``
    / ``now_monotonic``; ``now_monotonic`` itself when the stamp is implausible (in the
    future, or older than :data:`MAX_ARRIVAL_AGE_S`: the wall clock stepped)."""
    age = now_wall - stamp_wall
    if not 0.0 <= age <= MAX_ARRIVAL_AGE_S:
        return now_monotonic
    return now_monotonic - age
