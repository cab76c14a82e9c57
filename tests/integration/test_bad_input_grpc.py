"""Hostile gRPC input against a real rpckit server on 127.0.0.1:0: the caller gets the
documented code (README, "Bad input"), the server logs no traceback and keeps serving.

The payload battery is seeded-random: 2,400 malformed payloads built from valid messages
(truncated, bit-flipped, lengths past the end, invalid UTF-8, runaway varints, bad tags,
groups never closed, 200-deep Structs, other messages' bytes, pure noise) plus one
oversized message. Hostile metadata the grpcio client refuses to send goes over raw
HTTP/2 (tests/integration/h2raw.py).
"""

from __future__ import annotations

import collections
import logging
import random
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import struct_pb2

from rpckit.server._config import ServerConfig
from rpckit.testing import running
from tests.integration.h2raw import grpc_frame, raw_call
from tests.protos._gen.shimtest.v1 import shimtest_pb2 as pb
from tests.protos._gen.shimtest.v1 import shimtest_pb2_grpc as pb_grpc

PAYLOADS = 2400
SEED = 1717
ECHO = "/shimtest.v1.Shop/Echo"
RECORD = "/shimtest.v1.Shop/RecordEvent"
GRPC_INVALID_ARGUMENT = 3
GRPC_INTERNAL = 13
GRPC_UNIMPLEMENTED = 12
GRPC_RESOURCE_EXHAUSTED = 8


class EchoShop(pb_grpc.ShopServicer):
    """Echoes what parsed; counts the calls that reached it."""

    def __init__(self) -> None:
        self.calls = 0

    def Echo(self, request: pb.EchoRequest, context: grpc.ServicerContext) -> pb.EchoRequest:
        self.calls += 1
        return request

    def RecordEvent(self, request: pb.Event, context: grpc.ServicerContext) -> pb.Event:
        self.calls += 1
        return request


def _valid_samples() -> dict[str, list[bytes]]:
    echo = pb.EchoRequest(i32=-5, i64=1 << 40, u64=7, flag=True, tags=["a", "bé"])
    echo.color = pb.Color.ValueType(2)
    echo.f64, echo.s32, echo.x32, echo.sx64 = 2.5, -9, 77, -(1 << 50)
    event = pb.Event(kind="restock")
    event.payload.update({"sku": "NUT-M8", "n": 3, "nested": {"deep": [1, "two", None]}})
    event.items.extend([1, "x", True])
    return {
        ECHO: [echo.SerializeToString(), pb.EchoRequest(tags=["x" * 40]).SerializeToString()],
        RECORD: [event.SerializeToString(), pb.Event(kind="k").SerializeToString()],
    }


def _deep_struct(depth: int) -> bytes:
    """An Event whose ``items`` ListValue nests ``depth`` lists (built as bytes: protobuf
    itself refuses to build one past its depth limit)."""
    values = struct_pb2.ListValue(values=[struct_pb2.Value(string_value="leaf")])
    inner = values.SerializeToString()
    for _ in range(depth):
        value = b"\x32" + _varint(len(inner)) + inner  # Value.list_value = 6
        inner = b"\x0a" + _varint(len(value)) + value  # ListValue.values = 1
    return b"\x1a" + _varint(len(inner)) + inner  # Event.items = 3


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


KINDS = (
    "truncated", "noise", "bitflip", "overrun", "utf8", "varint", "badtag", "group", "deep",
    "wrongtype",
)  # fmt: skip


def malformed_payloads(rng: random.Random, count: int) -> Iterator[tuple[str, str, bytes]]:
    """``count`` (method, kind, payload) triples, each built to break a parser somewhere."""
    samples = _valid_samples()
    methods = sorted(samples)
    for i in range(count):
        method = methods[i % len(methods)]
        valid = rng.choice(samples[method])
        kind = KINDS[i % len(KINDS)]
        if kind == "truncated":
            payload = valid[: rng.randrange(1, len(valid))]
        elif kind == "noise":
            payload = rng.randbytes(rng.randrange(1, 64))
        elif kind == "bitflip":
            flipped = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            payload = bytes(flipped)
        elif kind == "overrun":  # a length-delimited field longer than what follows
            field = 6 if method == ECHO else 1
            payload = valid + bytes([field << 3 | 2]) + _varint(rng.randrange(10, 10_000)) + b"ab"
        elif kind == "utf8":  # a string field holding bytes that are not UTF-8
            field = 6 if method == ECHO else 1
            bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
            payload = bytes([field << 3 | 2]) + _varint(len(bad) + 1) + b"a" + bad
        elif kind == "varint":  # a varint that never ends within 10 bytes
            payload = b"\x08" + b"\xff" * rng.randrange(10, 20) + b"\x01"
        elif kind == "badtag":  # field number 0, or wire types 6 and 7
            payload = rng.choice([b"\x00\x01", b"\x0e\x01", b"\x0f\x01", b"\x07"]) + valid
        elif kind == "group":  # a group opened and never closed, or closed and never opened
            payload = valid + rng.choice([b"\x0b\x08\x01", b"\x0c"])
        elif kind == "deep":  # nesting past protobuf's recursion limit (100)
            payload = _deep_struct(rng.randrange(120, 200))
            method = RECORD
        else:  # another message's bytes, cut so that they do not parse as this one
            other = samples[RECORD if method == ECHO else ECHO][0]
            payload = other[: rng.randrange(1, len(other))] + b"\x80"
        yield method, kind, payload


def _raw_unary(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable[bytes, bytes]:
    """A unary callable that sends and returns bytes as they are."""
    return channel.unary_unary(method, None, None)


def test_malformed_payloads_get_invalid_argument_naming_method_and_error(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    shop = EchoShop()
    config = ServerConfig(drain_s=0.0, grace_s=5.0, metrics_address="127.0.0.1:0")
    codes: collections.Counter[str] = collections.Counter()
    by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    with running([shop], config=config) as live:
        raw = grpc.insecure_channel(live.address)
        payloads = list(malformed_payloads(random.Random(SEED), PAYLOADS))
        for start in range(0, len(payloads), 32):  # 32 calls in flight at a time
            batch = payloads[start : start + 32]
            futures = [_raw_unary(raw, m).future(p, timeout=30) for m, _, p in batch]
            for (method, kind, payload), future in zip(batch, futures, strict=True):
                code = future.code()
                codes[code.name] += 1
                by_kind[kind][code.name] += 1
                if code is grpc.StatusCode.INVALID_ARGUMENT:
                    details = future.details() or ""
                    assert details.startswith(f"{method}: the request message does not parse: ")
                    assert "Traceback" not in details
                    assert repr(payload)[2:-1] not in details or len(payload) < 3
        oversized = pb.EchoRequest(tags=["x" * (5 * 1024 * 1024)]).SerializeToString()
        with pytest.raises(grpc.RpcError) as too_big:
            _raw_unary(raw, ECHO)(oversized, timeout=30)
        assert too_big.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # Served afterwards, on the same connection.
        stub = pb_grpc.ShopStub(live.channel)
        assert stub.Echo(pb.EchoRequest(i32=42), timeout=10).i32 == 42
        assert live.server.metrics is not None
        counted = sum(
            live.server.metrics.registry.get_sample_value(
                "rpckit_malformed_requests_total", {"grpc_method": m}
            )
            or 0.0
            for m in (ECHO, RECORD)
        )
        raw.close()
    rejected = sum(n for name, n in codes.items() if name != "OK")
    with capfd.disabled():  # the tally, for the CI log (-s)
        print(f"{PAYLOADS} malformed payloads: {dict(codes)}; by kind: {dict(by_kind)}")
    assert sum(codes.values()) == PAYLOADS >= 2000
    assert codes["INVALID_ARGUMENT"] >= 0.99 * rejected
    assert set(codes) <= {"OK", "INVALID_ARGUMENT"}  # the oversized one is counted apart
    assert rejected >= 0.8 * PAYLOADS  # the battery is hostile, not mostly valid
    assert shop.calls == codes["OK"] + 1  # unparsed requests never reached the handler
    assert counted == codes["INVALID_ARGUMENT"]
    # Logged once per interval (60 s), without a traceback; grpcio printed none either.
    warnings = [r for r in caplog.records if "does not parse" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert all(r.exc_info is None for r in caplog.records if r.name.startswith(("rpckit", "grpc")))
    assert "Traceback" not in capfd.readouterr().err


def test_a_malformed_message_inside_a_request_stream_ends_the_call_invalid_argument() -> None:
    with running([EchoShop()]) as live:
        method = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        stream = live.channel.stream_stream(method, None, None)
        with pytest.raises(grpc.RpcError) as failed:
            list(stream(iter([b"\x12\x00", b"\xff\xff"]), timeout=10))
        assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert method in (failed.value.details() or "")
        stub = pb_grpc.ShopStub(live.channel)
        assert stub.Echo(pb.EchoRequest(i32=1), timeout=10).i32 == 1


#: (what, extra headers, the gRPC status the README documents). Codes from grpc core
#: (C, before any Python runs) are documented as such: rpckit cannot change them.
METADATA_CASES = [
    ("grpc-timeout not a number", [(b"grpc-timeout", b"abc")], GRPC_INTERNAL),
    ("grpc-timeout unknown unit", [(b"grpc-timeout", b"5X")], GRPC_INTERNAL),
    ("grpc-timeout negative", [(b"grpc-timeout", b"-5S")], GRPC_INTERNAL),
    ("grpc-timeout of 12 digits", [(b"grpc-timeout", b"999999999999S")], 0),
    ("non-ASCII value", [(b"x-name", "café".encode())], 0),
    ("control bytes in a value", [(b"x-c", b"a\x00b")], 0),
    ("non-ASCII key", [("x-é".encode(), b"v")], GRPC_INTERNAL),
    ("upper-case key", [(b"X-Up", b"v")], GRPC_INTERNAL),
    ("-bin value not base64", [(b"x-b-bin", b"!!!")], GRPC_INTERNAL),
    ("unknown grpc-encoding", [(b"grpc-encoding", b"nope")], GRPC_INTERNAL),
    ("rpckit-criticality garbage", [(b"rpckit-criticality", b"\xff\xfe")], 0),
    ("one 20 KB value", [(b"x-big", b"a" * 20_000)], GRPC_RESOURCE_EXHAUSTED),
    ("300 headers, 30 KB", [(b"x-%d" % i, b"v" * 100) for i in range(300)], 8),
]


@pytest.mark.parametrize(("what", "headers", "expected"), METADATA_CASES, ids=lambda c: c)
def test_bad_metadata_gets_the_documented_code(
    what: str, headers: list[tuple[bytes, bytes]], expected: int
) -> None:
    valid = grpc_frame(pb.EchoRequest(i32=7).SerializeToString())
    with running([EchoShop()]) as live:
        reply = raw_call(live.address, ECHO, valid, headers=headers)
        assert not reply.reset, what
        assert reply.grpc_status == expected, (what, reply)
        assert "Traceback" not in reply.grpc_message
        # The server still serves a valid call.
        assert raw_call(live.address, ECHO, valid).grpc_status == 0


@pytest.mark.parametrize(
    ("what", "path", "body", "expected"),
    [
        ("unknown service", "/nope.v1.Nope/Get", b"", GRPC_UNIMPLEMENTED),
        ("unknown method", "/shimtest.v1.Shop/Nope", b"", GRPC_UNIMPLEMENTED),
        ("not a path", "nopath", b"", GRPC_UNIMPLEMENTED),
        ("no message for a unary method", ECHO, None, GRPC_UNIMPLEMENTED),
        ("a truncated frame", ECHO, grpc_frame(b"\x08\x07")[:-1], GRPC_UNIMPLEMENTED),
        ("compressed flag, no encoding", ECHO, b"\x01" + grpc_frame(b"")[1:], GRPC_INTERNAL),
        ("another message's bytes", ECHO, pb.Event(kind="k").SerializeToString(), 0),
    ],
    ids=lambda c: c if isinstance(c, str) else None,
)
def test_unknown_methods_and_bad_framing_get_the_documented_code(
    what: str, path: str, body: bytes | None, expected: int
) -> None:
    with running([EchoShop()]) as live:
        data = b"" if body is None else body
        if body is not None and what == "another message's bytes":
            data = grpc_frame(body)
        reply = raw_call(live.address, path, data)
        assert reply.grpc_status == expected, (what, reply)
        assert "Traceback" not in reply.grpc_message
        assert raw_call(live.address, ECHO, grpc_frame(b"")).grpc_status == 0
