"""One OpenTelemetry tracer provider for the test process, its spans kept in memory.

OpenTelemetry's gRPC *client* instrumentor ignores the ``tracer_provider`` given to
``instrument()`` and uses the global one (opentelemetry-instrumentation-grpc 0.66b2),
which can be set once per process: so it is set once, here, and each test clears
the exporter before it starts.
"""

from __future__ import annotations

import functools

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@functools.cache
def global_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider, exporter
