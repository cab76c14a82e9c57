"""rpckit under interceptors that wrap every handler: OpenTelemetry's gRPC instrumentation
(server and client, as auto-instrumentation turns them on) and a plain one of our own.

Each wrapper hides rpckit's behaviour attributes from grpcio (the non-blocking health
Watch, the side pool, the method name the executor reads): health Watch, calls through a
BalancedChannel, admission's fast refusals, health under a full queue and the HTTP shim
must all keep working, on real servers on 127.0.0.1.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient, GrpcInstrumentorServer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from werkzeug.test import Client

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from examples.inventory.server import legacy_shim
from examples.inventory.service import Inventory
from rpckit.testing import running
from tests.integration.otel_setup import global_provider

GetItem = inventory_pb2.GetItemRequest
CONFIG = rpckit.BalancedChannelConfig(
    health_backoff_initial_s=0.05, health_backoff_max_s=0.5, wait_for_backend_s=20.0
)
WATCH = "/grpc.health.v1.Health/Watch"


@pytest.fixture
def otel() -> Iterator[InMemorySpanExporter]:
    """OpenTelemetry's gRPC server and client instrumentors on, spans kept in memory."""
    provider, exporter = global_provider()
    exporter.clear()
    server = GrpcInstrumentorServer()  # type: ignore[no-untyped-call]
    client = GrpcInstrumentorClient()  # type: ignore[no-untyped-call]
    server.instrument(tracer_provider=provider)
    client.instrument(tracer_provider=provider)
    try:
        yield exporter
        # Nothing the test started left a span current in this thread.
        assert not trace.get_current_span().get_span_context().is_valid
    finally:
        client.uninstrument()
        server.uninstrument()


class Gate(inventory_pb2_grpc.InventoryServicer):
    """GetItem('hold') blocks until the test opens the gate; anything else answers at once."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Semaphore(0)

    def GetItem(self, request: GetItem, context: grpc.ServicerContext) -> inventory_pb2.Item:
        if request.sku == "hold":
            self.entered.release()
            self.open.wait(timeout=30)
        return inventory_pb2.Item(sku=request.sku)


if TYPE_CHECKING:
    _Interceptor = grpc.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor  # grpc-stubs' generic is not subscriptable at runtime


class Wrapping(_Interceptor):
    """A well-behaved interceptor: replaces each behaviour with a function calling it."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        self.seen.append(details.method)
        for field in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, field)
            if behavior is not None:

                def wrapper(request: Any, context: Any, behavior: Any = behavior) -> Any:
                    return behavior(request, context)

                return handler._replace(**{field: wrapper})
        return handler


def _watch_statuses(channel: grpc.Channel, count: int) -> Generator[int]:
    call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
    try:
        for _, response in zip(range(count), call, strict=False):
            yield response.status
    finally:
        _close(call)


def _close(call: Any) -> None:
    """End a watch. OpenTelemetry's client hands back a generator (no cancel) that holds
    its span current in this thread until closed; grpc's own call object has cancel."""
    close = getattr(call, "cancel", None) or getattr(call, "close", None)
    if close is not None:
        close()


def _spans(exporter: InMemorySpanExporter, name: str, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name and s.kind is kind]


def test_health_watch_follows_status_changes_under_otel(otel: InMemorySpanExporter) -> None:
    with running([Gate()]) as live:
        assert live.server.health is not None
        watch = _watch_statuses(live.channel, 2)
        assert next(watch) == health_pb2.HealthCheckResponse.SERVING
        live.server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert next(watch) == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.close()
    # The instrumentation did wrap the Watch: a server span for it.
    assert _spans(otel, WATCH, SpanKind.SERVER)


def test_balanced_channel_calls_succeed_under_otel(otel: InMemorySpanExporter) -> None:
    with running([Gate()]) as first, running([Gate()]) as second:
        channel = rpckit.BalancedChannel([first.address, second.address], config=CONFIG)
        with channel:
            stub = inventory_pb2_grpc.InventoryStub(channel)
            answers = [stub.GetItem(GetItem(sku=f"s{i}"), timeout=10).sku for i in range(40)]
            # Every connection's health check and watch come through the instrumentation:
            # each turns SERVING (a connection may still be checking when the calls end).
            give_up = time.monotonic() + 30
            while True:
                serving = [c.health for b in channel.backends() for c in b.connections]
                if all(health == "serving" for health in serving) or time.monotonic() > give_up:
                    break
                time.sleep(0.01)
    assert answers == [f"s{i}" for i in range(40)]
    assert serving
    assert all(health == "serving" for health in serving), serving
    client_calls = _spans(otel, "/inventory.v1.Inventory/GetItem", SpanKind.CLIENT)
    assert len(client_calls) == 40
    # The balanced channel's own health traffic is background: no client span for it.
    health_clients = [
        s
        for s in otel.get_finished_spans()
        if s.kind is SpanKind.CLIENT and s.name.startswith("/grpc.health.v1.Health/")
    ]
    assert health_clients == []


def _fill_then_refuse(
    live: Any, gate: Gate, *, metadata: tuple[tuple[str, str], ...] = ()
) -> grpc.RpcError:
    """Two held calls, two queued, then one more: refused at once. Returns its error."""
    stub = inventory_pb2_grpc.InventoryStub(live.channel)
    held = [stub.GetItem.future(GetItem(sku="hold"), timeout=30) for _ in range(2)]
    for _ in range(2):
        assert gate.entered.acquire(timeout=20)
    queued = [stub.GetItem.future(GetItem(sku="hold"), timeout=30) for _ in range(2)]
    health = health_pb2_grpc.HealthStub(live.channel)
    # Every handler thread is busy and the queue full: health still answers (side pool),
    # and a watch opens (its own pool), neither queued behind the held calls.
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == 1
    watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    _close(watch)
    with pytest.raises(grpc.RpcError) as info:
        stub.GetItem(GetItem(sku="one-too-many"), timeout=10, metadata=metadata)
    gate.open.set()
    assert [f.result(timeout=30).sku for f in held] == ["hold", "hold"]
    for future in queued:  # CoDel may shed a queued call: that is its job
        shed: Any = future.exception(timeout=30)
        assert shed is None or shed.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    return info.value


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        return str(response.read().decode())


@pytest.mark.parametrize("interceptor", ["otel", "plain"])
def test_fast_refusals_under_interceptors(interceptor: str, request: Any) -> None:
    plain = Wrapping()
    if interceptor == "otel":
        request.getfixturevalue("otel")
    interceptors = (plain,) if interceptor == "plain" else ()
    gate = Gate()
    config = rpckit.ServerConfig(
        threads=2,
        queue_limit=2,
        drain_s=0,
        adaptive_concurrency=False,
        metrics_address="127.0.0.1:0",
        interceptors=interceptors,
    )
    with running([gate], config=config) as live:
        error = _fill_then_refuse(live, gate)
        assert live.server.metrics_address is not None
        metrics = _scrape(live.server.metrics_address)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue is full" in str(error.details())
    trailers = {m.key: m.value for m in error.trailing_metadata()}
    assert int(trailers["grpc-retry-pushback-ms"]) >= 1
    assert rpckit.load_from_metadata(error.trailing_metadata()) is not None
    # The refusal is attributed to its method although the interceptor hid rpckit's handler.
    shed = 'rpckit_shed_total{grpc_method="/inventory.v1.Inventory/GetItem",reason="queue_full"}'
    assert shed in metrics
    if interceptor == "plain":
        assert "/inventory.v1.Inventory/GetItem" in plain.seen
        assert "/grpc.health.v1.Health/Check" in plain.seen


def test_plain_interceptor_health_watch_ends_on_drain() -> None:
    plain = Wrapping()
    config = rpckit.ServerConfig(drain_s=0.0, grace_s=5.0, interceptors=(plain,))
    with running([Gate()], config=config) as live:
        statuses = _watch_statuses(live.channel, 3)
        assert next(statuses) == health_pb2.HealthCheckResponse.SERVING
        stopper = threading.Thread(target=live.server.stop, kwargs={"drain_s": 0.2})
        stopper.start()
        assert next(statuses) == health_pb2.HealthCheckResponse.NOT_SERVING
        # The server ends the watch when it stops (the stream finishes, no 5 s grace wait).
        assert list(statuses) == []
        stopper.join(timeout=30)
        assert not stopper.is_alive()
        statuses.close()
    assert WATCH in plain.seen


def test_shim_through_balanced_channel_under_otel(otel: InMemorySpanExporter) -> None:
    inventory = Inventory()
    with running([inventory]) as live:
        channel = rpckit.BalancedChannel([live.address], config=CONFIG)
        with channel:
            shim = legacy_shim(Inventory(), channel=channel, services=["inventory.v1.Inventory"])
            client = Client(shim)
            response = client.get("/items/NUT-M8")
            missing = client.get("/items/NO-SUCH-SKU")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["sku"] == "NUT-M8"
    assert missing.status_code == 404
    assert _spans(otel, "/inventory.v1.Inventory/GetItem", SpanKind.SERVER)
