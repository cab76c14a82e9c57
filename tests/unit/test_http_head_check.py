"""The request-head checks of the embedded HTTP server (pure): complete, incomplete, or refused
at exactly gunicorn's limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpckit.core._http_limits import (
    GATHERED_BODY_BYTES,
    HeadIncomplete,
    HeadRefused,
    HttpLimits,
    body_to_gather,
    check_head,
    whole_request,
)

LIMITS = HttpLimits()


def _head(line: bytes, fields: list[bytes]) -> bytes:
    return line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


def test_a_complete_head_ends_after_its_empty_line() -> None:
    head = _head(b"GET / HTTP/1.1", [b"Host: x"])
    assert check_head(head + b"body", LIMITS) == len(head)
    assert check_head(b"\r\n\n" + head, LIMITS) == 3 + len(head)  # empty lines first: skipped
    assert check_head(b"GET / HTTP/1.1\nHost: x\n\n", LIMITS) == 24  # bare LF endings


def test_incomplete_heads_wait() -> None:
    head = _head(b"GET / HTTP/1.1", [b"Host: x"])
    for cut in range(len(head)):
        assert isinstance(check_head(head[:cut], LIMITS), HeadIncomplete)


@pytest.mark.parametrize("complete", [True, False])
def test_the_request_line_limit_is_exact(complete: bool) -> None:
    end = b"\r\n\r\n" if complete else b""
    at = b"GET /" + b"a" * (4094 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(at) == 4094
    assert not isinstance(check_head(at + end, LIMITS), HeadRefused)
    over = check_head(at + b"a" + end, LIMITS)
    assert isinstance(over, HeadRefused)
    assert over.status.startswith("414")


@pytest.mark.parametrize("complete", [True, False])
def test_the_header_field_limit_is_exact(complete: bool) -> None:
    at = b"X-Big: " + b"v" * (8190 - 7)
    head = _head(b"GET / HTTP/1.1", [at]) if complete else b"GET / HTTP/1.1\r\n" + at
    assert not isinstance(check_head(head, LIMITS), HeadRefused)
    over_field = at + b"v"
    head = (
        _head(b"GET / HTTP/1.1", [over_field]) if complete else b"GET / HTTP/1.1\r\n" + over_field
    )
    over = check_head(head, LIMITS)
    assert isinstance(over, HeadRefused)
    assert over.status.startswith("431")


def test_the_field_count_limit_is_exact_and_continuations_are_not_fields() -> None:
    fields = [b"X-%d: v" % i for i in range(100)]
    assert isinstance(check_head(_head(b"GET / HTTP/1.1", [*fields, b" folded"]), LIMITS), int)
    over = check_head(_head(b"GET / HTTP/1.1", [*fields, b"X-100: v"]), LIMITS)
    assert isinstance(over, HeadRefused)
    assert over.status.startswith("431")
    assert "100 header fields" in over.reason


def test_the_whole_head_is_bounded_even_within_field_limits() -> None:
    limits = HttpLimits(head_bytes=1000)
    fields = [b"X-%d: " % i + b"v" * 90 for i in range(20)]
    over = check_head(b"".join([b"GET / HTTP/1.1\r\n", *(f + b"\r\n" for f in fields)]), limits)
    assert isinstance(over, HeadRefused)
    assert over.status.startswith("431")


@given(st.binary(max_size=300))
def test_any_bytes_get_a_verdict_and_a_complete_one_points_inside(data: bytes) -> None:
    small = HttpLimits(
        request_line_bytes=40, header_field_bytes=30, header_fields=3, head_bytes=120
    )
    verdict = check_head(data, small)
    if isinstance(verdict, int):
        assert 0 < verdict <= len(data)
        assert data[:verdict].endswith(b"\n\n") or data[:verdict].endswith(b"\n\r\n")


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="header_fields"):
        HttpLimits(header_fields=0)
    with pytest.raises(ValueError, match="head_timeout_s"):
        HttpLimits(head_timeout_s=0)


@pytest.mark.parametrize(
    ("fields", "gathered"),
    [
        ([b"Content-Length: 12"], 12),
        ([b"content-length:  7 "], 7),
        ([b"Content-Length: %d" % GATHERED_BODY_BYTES], GATHERED_BODY_BYTES),
        ([b"Content-Length: %d" % (GATHERED_BODY_BYTES + 1)], 0),  # large: streamed to the app
        ([b"Content-Length: 12", b"Expect: 100-continue"], 0),  # the client waits for us
        ([b"Transfer-Encoding: chunked"], 0),
        ([b"Content-Length: 5", b"Content-Length: 6"], 0),  # cheroot answers these
        ([b"Content-Length: -1"], 0),
        ([b"Content-Length: 1e3"], 0),
        ([], 0),
    ],
)
def test_small_bodies_with_a_length_are_gathered_with_the_head(
    fields: list[bytes], gathered: int
) -> None:
    assert body_to_gather(_head(b"POST / HTTP/1.1", [b"Host: x", *fields])) == gathered


def test_a_whole_request_that_may_keep_its_connection_is_measured() -> None:
    get = _head(b"GET / HTTP/1.1", [b"Host: x"])
    assert whole_request(get, LIMITS) == len(get)
    post = _head(b"POST /a HTTP/1.1", [b"Host: x", b"Content-Length: 4"])
    assert whole_request(post + b"body", LIMITS) == len(post) + 4
    assert whole_request(post + b"body" + get, LIMITS) == len(post) + 4  # the next one waits
    assert whole_request(b"\r\n" + get, LIMITS) == 2 + len(get)  # empty lines first


@pytest.mark.parametrize(
    "data",
    [
        _head(b"POST /a HTTP/1.1", [b"Content-Length: 4"]) + b"bo",  # body not all there
        _head(b"POST /a HTTP/1.1", [b"Transfer-Encoding: chunked"]) + b"4\r\nbody\r\n0\r\n\r\n",
        _head(b"POST /a HTTP/1.1", [b"Content-Length: 4", b"Expect: 100-continue"]),
        _head(b"GET / HTTP/1.1", [b"Connection: close"]),
        _head(b"GET / HTTP/1.1", [b"connection: keep-alive, CLOSE"]),
        _head(b"GET / HTTP/1.0", [b"Connection: keep-alive"]),  # 1.0: close, to be safe
        _head(b"POST /a HTTP/1.1", [b"Content-Length: 4", b"Content-Length: 4"]) + b"body",
        _head(b"POST /a HTTP/1.1", [b"Content-Length: +4"]) + b"body",
        _head(b"GET / HTTP/1.1", [b"Host: x"])[:-2],  # head not complete
        b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 9000 + b"\r\n\r\n",  # over a limit
    ],
)
def test_requests_whose_end_or_connection_is_in_doubt_are_not_whole(data: bytes) -> None:
    """The worst inputs: a body whose end is not known from the head, a client that asked
    to close, an old protocol, a smuggling-shaped length, a head cut short or too large."""
    assert whole_request(data, LIMITS) is None
