"""Requests that do not parse (pure parts): the guard, the error text, the log interval."""

from __future__ import annotations

import logging
import threading

import pytest
from google.protobuf import struct_pb2

from rpckit.server._bad_input import (
    LogInterval,
    MalformedRequests,
    ParseGuard,
    SharedLogInterval,
    Unparsed,
    describe_parse_error,
    malformed_message,
)


def test_the_guard_parses_what_parses_and_marks_what_does_not() -> None:
    guard = ParseGuard(struct_pb2.Value.FromString)
    assert guard(struct_pb2.Value(string_value="x").SerializeToString()).string_value == "x"
    unparsed = guard(b"\xff\xff\xff")
    assert isinstance(unparsed, Unparsed)
    assert "google.protobuf.Value" in unparsed.error


def test_an_error_from_a_custom_deserializer_does_not_leak_the_bytes() -> None:
    def parse(data: bytes) -> object:
        return data.decode("utf-8")  # UnicodeDecodeError quotes the bytes

    unparsed = ParseGuard(parse)(b"secret\xff")
    assert isinstance(unparsed, Unparsed)
    assert "secret" not in unparsed.error
    assert unparsed.error == "UnicodeDecodeError in the request deserializer"
    assert describe_parse_error(RecursionError()) == "the message is nested too deeply"
    assert malformed_message("/a.B/C", "bad").startswith("/a.B/C: ")


def test_the_log_interval_lets_one_line_through_per_interval_and_counts_the_rest() -> None:
    interval = LogInterval(60.0)
    assert interval.admit(0.0) == 0
    assert [interval.admit(t) for t in (1.0, 30.0, 59.9)] == [None, None, None]
    assert interval.admit(60.0) == 3  # the next line says how many were held back
    assert interval.admit(61.0) is None
    assert interval.admit(500.0) == 1
    with pytest.raises(ValueError, match="interval_s"):
        LogInterval(-1.0)


def test_a_shared_log_interval_lets_one_of_many_threads_through_and_counts_the_rest() -> None:
    now = [100.0]
    shared = SharedLogInterval(60.0, clock=lambda: now[0])
    results: list[int | None] = []
    lock = threading.Lock()

    def report() -> None:
        held = shared.admit()
        with lock:
            results.append(held)

    threads = [threading.Thread(target=report) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(results, key=lambda held: held is None) == [0] + [None] * 15
    now[0] += 60.0  # the next interval: one line, with the 15 held back
    assert shared.admit() == 15


def test_malformed_requests_are_counted_every_time_and_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    counted: list[str] = []
    log = logging.getLogger("rpckit.test.bad_input")
    malformed = MalformedRequests(log=log, count=counted.append, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger=log.name):
        for step in range(10):
            now[0] = step * 10.0  # 0 .. 90 s
            malformed("/a.B/C", "Wire format was corrupt")
    assert counted == ["/a.B/C"] * 10
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # at 0 s and at 60 s
    assert "(5 more since the last report)" in lines[1]
    assert all(r.exc_info is None for r in caplog.records)
