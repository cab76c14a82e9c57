"""rpckit's own spans, with OpenTelemetry: what to trace and how a trace crosses a hop.

Off unless a :class:`Tracing` is given (``ServerConfig(tracing=...)``,
``BalancedChannelConfig(tracing=...)``, :class:`rpckit.observe.TracingMiddleware`
for the shim); OpenTelemetry is imported only when one is made
(``pip install 'rpckit[otel]'``). One trace runs through every hop:

    shim request (SERVER, from the HTTP request's traceparent/tracestate)
      -> server call (SERVER, from the call's metadata; admission outcome, queue wait)
        -> balanced-channel attempt (CLIENT, one per attempt: backend, retry number, pushback)
          -> next hop's server call ...

The W3C ``traceparent``/``tracestate`` travel in gRPC metadata (OpenTelemetry's
configured propagator, W3C trace context by default). Span names and attributes
follow OpenTelemetry's RPC and HTTP semantic conventions (``rpc.system``,
``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code``, ``server.address``,
``http.request.method``, ``url.path``, ``http.response.status_code``); rpckit's
own facts are ``rpckit.*`` attributes. rpckit's background traffic (health
checks and watches) is not traced unless ``trace_background`` is set.

This module is grpc-free; the gRPC adapters are ``rpckit.server._tracing`` and
``rpckit.client._tracing``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["TRACER_NAME", "Tracing", "metadata_carrier"]

#: The instrumentation scope of rpckit's spans.
TRACER_NAME = "rpckit"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tracing:
    """Turns on rpckit's spans (needs ``rpckit[otel]``).

    Attributes:
        tracer_provider: an OpenTelemetry ``TracerProvider``; None (default) uses
            the global one (``opentelemetry.trace.set_tracer_provider``).
        trace_background: also trace rpckit's own health checks and watches
            (off by default: a balanced channel sends them to every backend,
            all the time, and they would drown the calls users make).
    """

    tracer_provider: Any = None
    trace_background: bool = False
    tracer: Any = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            from opentelemetry import trace
        except ImportError:
            raise ImportError(
                "rpckit tracing needs OpenTelemetry: pip install 'rpckit[otel]'"
            ) from None
        tracer = trace.get_tracer(TRACER_NAME, tracer_provider=self.tracer_provider)
        object.__setattr__(self, "tracer", tracer)

    def extract(self, carrier: Mapping[str, str]) -> Any:
        """The OpenTelemetry context a request's headers or metadata carry (W3C trace context)."""
        from opentelemetry import propagate

        return propagate.extract(carrier)

    def inject(self, context: Any = None) -> dict[str, str]:
        """The headers that carry ``context`` (default: the current one) to the next hop."""
        from opentelemetry import propagate

        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=context)
        return carrier


def metadata_carrier(metadata: Iterable[tuple[str, Any]] | None) -> dict[str, str]:
    """gRPC metadata as a propagation carrier (text values only; keys are lower case)."""
    carrier: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            carrier[key] = value
    return carrier


def rpc_names(method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> (``pkg.Service``, ``Method``); odd paths keep what they have."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name
