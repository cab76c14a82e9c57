"""Active health checking of one balanced-channel connection: ``grpc.health.v1`` Check, then Watch.

:class:`HealthWatch` is the body of a connection's health thread::

    Check --SERVING--> Watch (every status goes to ``report``) --anything else, or broken-->
      ^                                                                                   |
      +---- wait (jittered exponential backoff, health_backoff_initial_s .. max_s) <------+

A server without the health service (UNIMPLEMENTED) is reported SERVING once
and the watch ends. The channel decides what a status means for rotation;
this module only finds it out.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rpckit.client._config import BalancedChannelConfig
from rpckit.observe._background import background_traffic

__all__ = ["Health", "HealthWatch"]

_log = logging.getLogger("rpckit.client")

_WATCH_CANCEL_DELAY_S = 0.1
"""A watch that said NOT_SERVING is cancelled this long after (the connection is out of
rotation at once). grpcio-health-checking's HealthServicer.set() holds its lock while it
sends to each watcher, and a watch's close callback takes that lock on the server's only
event thread: a cancel arriving in the middle of set() deadlocks that server. 100 ms lets
set() finish; it is nothing next to a drain period."""


class Health(enum.Enum):
    """What a connection's health checks last said."""

    UNKNOWN = "unknown"
    SERVING = "serving"
    NOT_SERVING = "not_serving"
    UNREACHABLE = "unreachable"


class HealthWatch:
    """Follows one connection's health: :meth:`run` on its thread, :meth:`stop` from any other.

    ``label`` names the backend in logs. :meth:`stop` cancels the health call in
    flight, so the thread ends in milliseconds.
    """

    def __init__(self, channel: grpc.Channel, config: BalancedChannelConfig, *, label: str):
        self._channel = channel
        self._config = config
        self._label = label
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._call: Any = None  # the health call in flight, cancelled by stop()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            call = self._call
        if call is not None:
            _cancel(call)

    def run(self, report: Callable[[Health], None]) -> None:
        """Check until SERVING, then Watch; back off when not. Every status goes to ``report``.

        Health traffic is background traffic: not traced (see ``rpckit.observe._background``).
        """
        with background_traffic():
            self._run(report)

    def _run(self, report: Callable[[Health], None]) -> None:
        config = self._config
        stub = health_pb2_grpc.HealthStub(self._channel)
        request = health_pb2.HealthCheckRequest(service=config.health_service)
        rng = random.Random()  # noqa: S311 - jitter, not secrets
        delay = config.health_backoff_initial_s
        try:
            while not self._stop.is_set():
                status = self._check(stub, request)
                if status is Health.SERVING:
                    report(Health.SERVING)
                    delay = config.health_backoff_initial_s
                    status = self._follow_watch(stub, request, report)
                if status is None:
                    _log.info(
                        "rpckit balanced channel: %s serves no grpc.health.v1; taken as serving",
                        self._label,
                    )
                    report(Health.SERVING)
                    return
                if self._stop.is_set():
                    return
                report(status)
                if self._stop.wait(delay * rng.uniform(0.5, 1.0)):
                    return
                delay = min(delay * 2.0, config.health_backoff_max_s)
        except ValueError:
            # grpcio raises ValueError on a closed channel: the connection was shut.
            if not self._stop.is_set():
                raise

    def _track(self, call: Any) -> bool:
        """Record the current health call so it can be cancelled; False if stopping."""
        with self._lock:
            stopping = call is not None and self._stop.is_set()
            self._call = None if stopping else call
        if stopping:
            _cancel(call)
        return not stopping

    def _check(self, stub: Any, request: health_pb2.HealthCheckRequest) -> Health | None:
        """One Health/Check. None: the server has no health service (UNIMPLEMENTED)."""
        call = stub.Check.future(request, timeout=self._config.health_check_timeout_s)
        status: Health | None = Health.UNREACHABLE
        if self._track(call):
            try:
                serving = call.result().status == health_pb2.HealthCheckResponse.SERVING
                status = Health.SERVING if serving else Health.NOT_SERVING
            except grpc.FutureCancelledError:
                pass
            except grpc.RpcError as error:
                code = error.code()
                if code is grpc.StatusCode.UNIMPLEMENTED:
                    status = None
                elif code is grpc.StatusCode.NOT_FOUND:
                    status = Health.NOT_SERVING  # the server does not know this service
            finally:
                self._track(None)
        return status

    def _follow_watch(
        self,
        stub: Any,
        request: health_pb2.HealthCheckRequest,
        report: Callable[[Health], None],
    ) -> Health | None:
        """Follow a Health/Watch until it says anything but SERVING or breaks; the state it left in.

        On NOT_SERVING the watch is cancelled (after ``_WATCH_CANCEL_DELAY_S``): an open
        watch would hold a draining server's stop for its whole grace period.
        """
        call = stub.Watch(request)
        if not self._track(call):
            return Health.UNREACHABLE
        try:
            for response in call:
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    report(Health.SERVING)
                else:
                    report(Health.NOT_SERVING)
                    self._stop.wait(_WATCH_CANCEL_DELAY_S)
                    _cancel(call)
                    return Health.NOT_SERVING
            return Health.UNREACHABLE  # the server ended the watch
        except grpc.RpcError as error:
            if error.code() is grpc.StatusCode.UNIMPLEMENTED:
                return None
            return Health.UNREACHABLE
        finally:
            self._track(None)


def _cancel(call: Any) -> None:
    """Cancel a health call. A client interceptor may return a bare iterator for a stream
    (no ``cancel``): that call then ends when the server ends it or the channel closes."""
    cancel = getattr(call, "cancel", None)
    if cancel is not None:
        cancel()
