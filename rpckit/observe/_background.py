"""rpckit's background traffic (health checks and watches) stays out of traces.

A balanced channel checks and watches every backend's health for as long as it
lives: traced, that is a span per check and a span per watch on every backend,
drowning the calls a user made (37 spans for one user call, measured with
OpenTelemetry's gRPC instrumentation). :func:`background_traffic` marks the
calling thread's work as such: OpenTelemetry's instrumentations skip it (their
``suppress_instrumentation`` switch), and rpckit's own tracing, which honours
the same switch, does too. Tracing it anyway is ``trace_background=True`` on
:class:`rpckit.observe.TracingConfig`.

OpenTelemetry is never imported here: when no instrumentation has loaded its
utilities, there is nothing to suppress.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

__all__ = ["background_traffic"]

_INSTRUMENTATION_UTILS = "opentelemetry.instrumentation.utils"


@contextlib.contextmanager
def background_traffic(*, traced: bool = False) -> Iterator[None]:
    """Within the block (this thread), instrumentations do not trace (unless ``traced``)."""
    utils = None if traced else sys.modules.get(_INSTRUMENTATION_UTILS)
    if utils is None:
        yield
        return
    with utils.suppress_instrumentation():
        yield
