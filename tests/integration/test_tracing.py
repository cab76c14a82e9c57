"""rpckit's built-in tracing: one trace from a legacy HTTP request through every hop.

HTTP request with a traceparent -> the shim (RequestObserver) -> service A's handler
(in process, through A's admission queue) -> service B through a BalancedChannel of
two real servers on 127.0.0.1, the first attempt failing so that exactly one retry
goes to the other backend. Spans go to an in-memory exporter.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from werkzeug.test import Client

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from rpckit.http import Shim
from rpckit.observe import ACCESS_LOGGER, JsonFormatter, RequestObserver, Tracing
from rpckit.server._call_log import CALL_LOGGER
from rpckit.testing import running

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
GET = "inventory.v1.Inventory/GetItem"


class FailOnce:
    """Shared by both backends: the first call either of them gets fails UNAVAILABLE."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failed = False

    def take(self) -> bool:
        with self._lock:
            first, self.failed = not self.failed, True
            return first


class Back(inventory_pb2_grpc.InventoryServicer):
    def __init__(self, fail: FailOnce) -> None:
        self.fail = fail

    def GetItem(
        self, request: inventory_pb2.GetItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        if self.fail.take():
            context.abort(grpc.StatusCode.UNAVAILABLE, "forced: try another backend")
        return inventory_pb2.Item(sku=request.sku, quantity=7)


class Front(inventory_pb2_grpc.InventoryServicer):
    """Service A: answers GetItem by asking service B."""

    def __init__(self) -> None:
        self.next_hop: inventory_pb2_grpc.InventoryStub | None = None

    def GetItem(
        self, request: inventory_pb2.GetItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        assert self.next_hop is not None
        return self.next_hop.GetItem(request, timeout=10)


@pytest.fixture
def spans() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield Tracing(tracer_provider=provider), exporter
    finally:
        provider.shutdown()


def _wait_serving(channel: rpckit.BalancedChannel, count: int) -> None:
    give_up = time.monotonic() + 30
    while sum(b.serving for b in channel.backends()) < count:
        assert time.monotonic() < give_up, "backends did not turn SERVING"
        time.sleep(0.01)


def _one(spans: list[ReadableSpan], **attributes: object) -> ReadableSpan:
    found = [
        s for s in spans if all((s.attributes or {}).get(k) == v for k, v in attributes.items())
    ]
    assert len(found) == 1, (attributes, [s.name for s in found])
    return found[0]


def _parent_id(span: ReadableSpan) -> int:
    assert span.parent is not None, span.name
    return span.parent.span_id


def test_one_trace_from_http_through_a_retried_next_hop(
    spans: tuple[Tracing, InMemorySpanExporter], caplog: pytest.LogCaptureFixture
) -> None:
    tracing, exporter = spans
    fail = FailOnce()
    front = Front()
    traced = rpckit.ServerConfig(drain_s=0.0, grace_s=5.0, tracing=tracing, call_log=True)
    with (
        running([Back(fail)], config=traced) as b1,
        running([Back(fail)], config=traced) as b2,
        running([front], config=traced) as a,
    ):
        channel_config = rpckit.BalancedChannelConfig(
            tracing=tracing, health_backoff_initial_s=0.05, wait_for_backend_s=20.0
        )
        with rpckit.BalancedChannel([b1.address, b2.address], config=channel_config) as channel:
            front.next_hop = inventory_pb2_grpc.InventoryStub(channel)
            _wait_serving(channel, 2)
            app = RequestObserver(Shim(server=a.server), tracing=tracing, access_log=True)
            with (
                caplog.at_level(logging.INFO, logger=ACCESS_LOGGER),
                caplog.at_level(logging.INFO, logger=CALL_LOGGER),
            ):
                response = Client(app).get(
                    "/items/NUT-M8", headers={"traceparent": TRACEPARENT}, buffered=True
                )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["quantity"] == 7
    assert fail.failed

    finished = list(exporter.get_finished_spans())
    # No span for the balanced channel's health checks and watches, nor the servers' side.
    assert not [s for s in finished if "Health" in s.name], [s.name for s in finished]
    assert {f"{s.context.trace_id:032x}" for s in finished} == {TRACE_ID}
    assert len(finished) == 6, [(s.name, s.kind) for s in finished]

    shim = next(s for s in finished if s.kind is SpanKind.SERVER and s.name == "GET")
    assert _parent_id(shim) == int(PARENT_ID, 16)
    assert (shim.attributes or {})["http.response.status_code"] == 200
    assert (shim.attributes or {})["url.path"] == "/items/NUT-M8"

    servers = [s for s in finished if s.kind is SpanKind.SERVER and s.name == GET]
    server_a = next(s for s in servers if _parent_id(s) == shim.context.span_id)
    assert (server_a.attributes or {})["rpckit.admission"] == "admitted"
    assert "rpckit.queue_wait_ms" in (server_a.attributes or {})

    attempts = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert len(attempts) == 2
    first = _one(attempts, **{"rpckit.retry": 0})
    second = _one(attempts, **{"rpckit.retry": 1})
    for attempt in attempts:
        assert _parent_id(attempt) == server_a.context.span_id
    assert (first.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert (second.attributes or {})["rpc.grpc.status_code"] == 0
    picked = {
        (first.attributes or {})["rpckit.backend"],
        (second.attributes or {})["rpckit.backend"],
    }
    assert picked == {b1.address, b2.address}  # the retry went to the other backend

    b_servers = [s for s in servers if s is not server_a]
    assert sorted(_parent_id(s) for s in b_servers) == sorted(
        [first.context.span_id, second.context.span_id]
    )
    for b in b_servers:
        assert (b.attributes or {})["rpckit.admission"] == "admitted"

    # The access log line is JSON and carries the trace.
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    assert len(lines) == 1
    assert lines[0]["trace_id"] == TRACE_ID
    assert lines[0]["span_id"] == f"{shim.context.span_id:016x}"
    assert lines[0]["status"] == 200
    assert lines[0]["path"] == "/items/NUT-M8"

    # The call log, as JSON lines: every call of the request (A, and B's two attempts) in
    # the trace, with its own server span's id, method, status and peer.
    formatter = JsonFormatter()
    calls = [json.loads(formatter.format(r)) for r in caplog.records if r.name == CALL_LOGGER]
    assert len(calls) == 3, calls
    assert {c["trace_id"] for c in calls} == {TRACE_ID}
    assert {c["span_id"] for c in calls} == {f"{s.context.span_id:016x}" for s in servers}
    assert sorted(c["status"] for c in calls) == ["OK", "OK", "UNAVAILABLE"]
    assert {c["method"] for c in calls} == {"/" + GET}
    assert all(c["peer"] for c in calls)


def test_a_refused_call_gets_a_span_with_the_reason(
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    gate = threading.Event()
    entered = threading.Semaphore(0)

    class Hold(inventory_pb2_grpc.InventoryServicer):
        def GetItem(
            self, request: inventory_pb2.GetItemRequest, context: grpc.ServicerContext
        ) -> inventory_pb2.Item:
            entered.release()
            gate.wait(timeout=30)
            return inventory_pb2.Item(sku=request.sku)

    config = rpckit.ServerConfig(
        threads=1, queue_limit=1, drain_s=0.0, adaptive_concurrency=False, tracing=tracing
    )
    with running([Hold()], config=config) as live:
        stub = inventory_pb2_grpc.InventoryStub(live.channel)
        held = stub.GetItem.future(inventory_pb2.GetItemRequest(sku="a"), timeout=30)
        assert entered.acquire(timeout=20)
        queued = stub.GetItem.future(inventory_pb2.GetItemRequest(sku="b"), timeout=30)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetItem(
                inventory_pb2.GetItemRequest(sku="c"),
                timeout=10,
                metadata=(("traceparent", TRACEPARENT),),
            )
        gate.set()
        held.result(timeout=30)
        queued.exception(timeout=30)  # type: ignore[call-arg]
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    refused = _one(list(exporter.get_finished_spans()), **{"rpckit.admission": "rejected"})
    assert f"{refused.context.trace_id:032x}" == TRACE_ID
    assert _parent_id(refused) == int(PARENT_ID, 16)
    assert (refused.attributes or {})["rpckit.admission.reason"] == "queue_full"
    assert int((refused.attributes or {})["rpckit.pushback_ms"]) >= 1  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "traceparent", ["garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "00-xyz-" + "1" * 300]
)
def test_a_malformed_traceparent_starts_a_new_trace(
    spans: tuple[Tracing, InMemorySpanExporter], traceparent: str
) -> None:
    tracing, exporter = spans
    back = Back(FailOnce())
    back.fail.failed = True  # never fail
    config = rpckit.ServerConfig(drain_s=0.0, tracing=tracing)
    with running([back], config=config) as live:
        stub = inventory_pb2_grpc.InventoryStub(live.channel)
        reply = stub.GetItem(
            inventory_pb2.GetItemRequest(sku="x"),
            timeout=10,
            metadata=(("traceparent", traceparent),),
        )
    assert reply.quantity == 7
    (span,) = exporter.get_finished_spans()
    assert span.parent is None  # the hostile header was ignored, the call served
    assert span.context.is_valid
