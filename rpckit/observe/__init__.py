"""Observability: tracing, structured logs and what keeps rpckit's own traffic out of them.

Everything here is optional and costs nothing when off: OpenTelemetry is imported
only when tracing is turned on (``pip install 'rpckit[otel]'``), never by
``import rpckit``. See docs/architecture.md, "Observability".
"""
