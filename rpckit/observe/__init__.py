"""Observability: tracing, structured logs and what keeps rpckit's own traffic out of them.

    from rpckit.observe import JsonFormatter, RequestObserver, Tracing

    tracing = Tracing()  # OpenTelemetry's global tracer provider
    server = rpckit.Server([Inventory()], config=rpckit.ServerConfig(tracing=tracing))
    channel = rpckit.BalancedChannel(targets, config=rpckit.BalancedChannelConfig(tracing=tracing))
    app = RequestObserver(Shim(server=server), tracing=tracing, access_log=True)

Everything here is optional and costs nothing when off: OpenTelemetry is imported
only when a :class:`Tracing` is made (``pip install 'rpckit[otel]'``), never by
``import rpckit`` or ``import rpckit.observe``. See docs/architecture.md, "Observability".
"""

from rpckit.observe._logs import JsonFormatter
from rpckit.observe._tracing import Tracing
from rpckit.observe._wsgi import ACCESS_LOGGER, RequestObserver

__all__ = ["ACCESS_LOGGER", "JsonFormatter", "RequestObserver", "Tracing"]
