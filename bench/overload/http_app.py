"""The ``--http-app`` of bench/overload's shim system: benchwork.v1.Work at its legacy URL.

    rpckit serve bench.overload.service:servicers --grpc 127.0.0.1:0 --http 127.0.0.1:0 \\
        --http-app bench.overload.http_app:legacy_http

``POST /work`` comes from the proto's ``google.api.http`` rule and answers what the Flask
baseline answers. An unchanged HTTP client sends no deadline that rpckit reads (it reads
``X-Request-Timeout`` and ``grpc-timeout``), so the route's timeout stands in for it:
``timeout_ms: 250`` in the proto, the seed profile's deadline. A profile with another
deadline sets ``BENCH_ROUTE_TIMEOUT_MS`` (read when the factory is called, in the serving
process), which becomes the route's `RouteOptions.timeout_s`.

The load generator's ``X-Request-Deadline`` header (epoch ms) is forwarded to the handler
as metadata for its wasted-CPU accounting only, as the Flask view reads it: it tells the
handler when the client gave up, which admission never sees.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import rpckit
from bench._gen.benchwork.v1 import work_pb2
from bench.harness.loadgen import DEADLINE_HEADER
from rpckit.http import RouteOptions, Shim, ShimConfig
from rpckit.v1 import http_pb2

ROUTE_TIMEOUT_ENV = "BENCH_ROUTE_TIMEOUT_MS"
METHOD_KEY = "benchwork.v1.Work.Do"


def proto_route_timeout_ms() -> int:
    """The ``(rpckit.v1.http).timeout_ms`` of benchwork.v1.Work.Do in the proto."""
    method = work_pb2.DESCRIPTOR.services_by_name["Work"].methods_by_name["Do"]
    return int(method.GetOptions().Extensions[http_pb2.http].timeout_ms)


def route_timeout_env(deadline_ms: float) -> dict[str, str]:
    """The environment that gives the route ``deadline_ms`` (none when the proto has it)."""
    if deadline_ms == proto_route_timeout_ms():
        return {}
    return {ROUTE_TIMEOUT_ENV: f"{deadline_ms:g}"}


def route_options(environ: Mapping[str, str]) -> dict[str, RouteOptions]:
    """The Python route options ``environ`` asks for (a clear error on a bad value)."""
    text = environ.get(ROUTE_TIMEOUT_ENV)
    if not text:
        return {}
    try:
        timeout_ms = float(text)
    except ValueError:
        raise ValueError(f"{ROUTE_TIMEOUT_ENV}={text!r} is not a number of ms") from None
    return {METHOD_KEY: RouteOptions(timeout_s=timeout_ms / 1000)}


def legacy_http(server: rpckit.Server) -> Shim:
    """The shim ``rpckit serve --http`` serves: the server's servicers, through admission."""
    forward = (*ShimConfig().forward_headers, DEADLINE_HEADER.lower())
    return Shim(
        server=server,
        config=ShimConfig(forward_headers=forward),
        routes=route_options(os.environ),
    )
