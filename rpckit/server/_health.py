"""``grpc.health.v1.Health``: Check, List and Watch, with a drain that ends watches.

grpcio-health-checking's own servicer keeps ``Watch`` streams open until the
client leaves, so a draining server waits its whole grace period for them.
This one ends every open watch (after sending NOT_SERVING) when the server
drains, and answers ``Watch`` without holding a thread (grpcio's non-blocking
streaming behaviour).

That non-blocking form is grpcio's private calling convention: grpcio passes a
``send_response_callback`` only when the behaviour it runs is marked
``experimental_non_blocking``. A server interceptor (OpenTelemetry's, for one)
puts its own function in front, which carries no such mark, so grpcio calls
``Watch(request, context)`` and iterates what it returns. ``Watch`` then
answers as an ordinary generator: a queue per watcher, one thread held per open
watch (the server runs those on a pool of their own, see ``rpckit.server._server``).
Both forms share the watcher table, so ``set``, ``drain`` and ``close_watches``
reach every watch whichever way it came in.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["HealthService"]

_Status = int  # health_pb2.HealthCheckResponse.ServingStatus values
_SendResponse = Callable[[health_pb2.HealthCheckResponse | None], None]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthService(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Health status per service name ("" is the whole server)."""

    def __init__(self, services: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._status: dict[str, _Status] = {"": SERVING}
        self._status.update((name, SERVING) for name in services)
        self._watchers: dict[str, set[_SendResponse]] = {}
        self._draining = False

    def status(self, service: str = "") -> _Status | None:
        with self._lock:
            return self._status.get(service)

    def set(self, service: str, status: _Status) -> None:
        """Set a service's status and tell its watchers (ignored once draining)."""
        with self._lock:
            if self._draining:
                return
            self._status[service] = status
            watchers = list(self._watchers.get(service, ()))
        for send in watchers:
            send(health_pb2.HealthCheckResponse(status=status))

    def drain(self) -> None:
        """Every service NOT_SERVING, for good; watchers are told."""
        with self._lock:
            self._draining = True
            for name in self._status:
                self._status[name] = NOT_SERVING
            watchers = [(name, list(sends)) for name, sends in self._watchers.items()]
        for _name, sends in watchers:
            for send in sends:
                send(health_pb2.HealthCheckResponse(status=NOT_SERVING))

    def close_watches(self) -> None:
        """End every open Watch stream (status OK) so they do not hold the server's stop."""
        with self._lock:
            sends = [send for group in self._watchers.values() for send in group]
            self._watchers.clear()
        for send in sends:
            send(None)

    def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self.status(request.service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    def List(
        self, request: health_pb2.HealthListRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthListResponse:
        with self._lock:
            statuses = dict(self._status)
        response = health_pb2.HealthListResponse()
        for name, status in statuses.items():
            response.statuses[name].status = status
        return response

    def Watch(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.ServicerContext,
        send_response_callback: _SendResponse | None = None,
    ) -> Iterator[health_pb2.HealthCheckResponse] | None:
        if send_response_callback is None:  # called through an interceptor: a plain stream
            return self._watch_stream(request.service, context)
        self._subscribe(request.service, context, send_response_callback)
        return None

    # grpcio: call Watch with a send_response_callback instead of iterating a generator,
    # so an open watch holds no thread.
    Watch.experimental_non_blocking = True  # type: ignore[attr-defined]

    def _watch_stream(
        self, service: str, context: grpc.ServicerContext
    ) -> Iterator[health_pb2.HealthCheckResponse]:
        """The generator form of Watch: statuses until the client leaves or the server drains."""
        statuses: queue.SimpleQueue[health_pb2.HealthCheckResponse | None] = queue.SimpleQueue()
        self._subscribe(service, context, statuses.put)
        while (response := statuses.get()) is not None:
            yield response

    def _subscribe(self, service: str, context: grpc.ServicerContext, send: _SendResponse) -> None:
        """Send the current status now and every change later; ``send(None)`` ends the watch."""
        with self._lock:
            status = self._status.get(service, SERVICE_UNKNOWN)
            self._watchers.setdefault(service, set()).add(send)
        send(health_pb2.HealthCheckResponse(status=status))

        def forget() -> None:
            with self._lock:
                group = self._watchers.get(service)
                if group is not None and send in group:
                    group.discard(send)
                else:
                    return
            send(None)

        if not context.add_callback(forget):
            forget()
