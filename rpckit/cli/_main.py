"""The ``rpckit`` command line: thin argument parsing over the library.

Every verb has ``--help`` with an example; bad input gives one line on stderr
and exit status 2; a verb's real work lives in its own module.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import importlib
import json
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rpckit.core._auth import AuthPolicy
from rpckit.core._http_limits import HttpLimits
from rpckit.server._config import ConfigError, ServerConfig, TlsConfig
from rpckit.server._cpu import usable_cpus
from rpckit.server._switch import SwitchConfig

__all__ = ["main"]

_log = logging.getLogger("rpckit.cli")

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line that says where to look."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rpckit",
        description="Typed, load-aware gRPC services for teams leaving JSON-over-HTTP.",
        epilog="Run 'rpckit VERB --help' for a verb's options and an example.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    verbs.required = True

    serve = verbs.add_parser(
        "serve",
        help="serve grpcio servicers with health, reflection, admission control and graceful drain",
        description=(
            "Serve the servicers that FACTORY gives. On startup one JSON line with the bound "
            'addresses is printed to stdout, e.g. {"grpc": "127.0.0.1:40123"} (with --http, also '
            '"http"). SIGTERM/SIGINT '
            "drain gracefully: health NOT_SERVING, --drain seconds of service, then up to "
            "--grace seconds for calls in flight; exit 0."
        ),
        epilog=(
            "example: rpckit serve examples.inventory.server:servicers --grpc 127.0.0.1:50051 "
            "--http 127.0.0.1:8080 --http-app examples.inventory.server:legacy_http"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument(
        "app",
        metavar="MODULE:FACTORY",
        help="a callable (or attribute) giving a servicer or a list of servicers",
    )
    serve.add_argument(
        "--grpc",
        metavar="HOST:PORT",
        default="127.0.0.1:50051",
        help="where to listen for gRPC; port 0 picks a free port",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=256,
        help="most handler threads (and calls running at once) per process; threads are "
        "made when calls need them",
    )
    serve.add_argument(
        "--fixed-threads",
        action="store_true",
        help="let up to --threads calls run at once; by default admission runs fewer while "
        "CPU-bound handlers make grpc's dispatch thread wait for the GIL "
        "(rpckit.server._concurrency)",
    )
    serve.add_argument(
        "--handler-nice",
        type=int,
        default=10,
        metavar="N",
        help="nice value (0-19) of the handler threads, Linux only: grpc's dispatch thread and "
        "the threads that refuse calls and answer health checks keep the process's priority, "
        "so they get a core first when the CPU is contended (0: no difference)",
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N|auto",
        help="processes sharing the port (SO_REUSEPORT); the app is imported once, then "
        "forked. auto: two per core this process may use (one Python process runs Python on "
        "one core at a time, and its dispatch thread waits behind its own handlers; with two "
        "a core, each runs few calls at once: bench/README.md, 'Processes and the switch "
        "interval'), e.g. --workers auto",
    )
    serve.add_argument(
        "--gil-switch-ms",
        type=_switch_ms,
        default="auto",
        metavar="MS|auto",
        help="Python's GIL switch interval (Python's default: 5). grpcio's single dispatch "
        "thread needs the GIL for every event; in one process with handlers burning CPU a "
        "5 ms interval starves it and calls queue inside grpc, out of admission control's "
        "sight, while 0.2 ms makes the handlers hand the GIL to each other every 0.2 ms "
        "(a seed call: 77 context switches against 29 at 5 ms, ~1 ms more CPU). auto: in one "
        "process, 0.2 ms while a call used 2 ms of CPU or more in the last 2 s (of a method "
        "whose calls do so at least 5%% of the time: a light method's rare outlier does not "
        "count), else 5 ms "
        "(rpckit.server._switch); with --workers 2 or more, 5 ms (each process runs few "
        "calls at once); a number: that interval throughout, e.g. 0.2",
    )
    serve.add_argument(
        "--queue-limit",
        type=int,
        default=1024,
        help="calls allowed to wait for a CPU slot before new ones are rejected",
    )
    serve.add_argument(
        "--drain",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="keep serving this long after a stop signal, with health NOT_SERVING",
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="then give calls in flight this long to finish",
    )
    serve.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics here (one endpoint: with --workers, the sum over "
        "all workers, the load gauges per worker); port 0 picks",
    )
    serve.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="also serve the legacy HTTP/JSON shim here (same handlers and admission control); "
        "port 0 picks",
    )
    serve.add_argument(
        "--http-app",
        metavar="MODULE:FACTORY",
        help="a callable taking the rpckit Server and returning the rpckit.http.Shim to serve "
        "with --http (fallback app, error renderer, guards); default: Shim(server=server)",
    )
    serve.add_argument(
        "--http-threads",
        type=int,
        default=64,
        help="HTTP request threads; calls still wait in the admission queue for --threads",
    )
    limits = HttpLimits()
    for flag, default, unit, what in (
        (
            "--http-max-request-line",
            limits.request_line_bytes,
            "BYTES",
            "request line (414 beyond)",
        ),
        (
            "--http-max-header-field",
            limits.header_field_bytes,
            "BYTES",
            "header field (431 beyond)",
        ),
        ("--http-max-header-fields", limits.header_fields, "N", "header fields (431 beyond)"),
        ("--http-max-head", limits.head_bytes, "BYTES", "request line + headers (431 beyond)"),
        ("--http-max-body", limits.body_bytes, "BYTES", "request body (413 beyond; 0: no limit)"),
    ):
        serve.add_argument(
            flag,
            type=int,
            default=default,
            metavar=unit,
            help=f"largest HTTP {what} (default: %(default)s)",
        )
    serve.add_argument(
        "--http-head-timeout",
        type=float,
        default=limits.head_timeout_s,
        metavar="SECONDS",
        help="a request head must arrive within this (408 beyond; slowloris) "
        "(default: %(default)s)",
    )
    serve.add_argument("--no-reflection", action="store_true", help="do not serve reflection")
    serve.add_argument("--no-health", action="store_true", help="do not serve grpc.health.v1")
    serve.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve TLS with this cert")
    serve.add_argument("--tls-key", type=Path, metavar="PEM", help="private key for --tls-cert")
    serve.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="PEM",
        help="require client certs signed by this CA (mTLS)",
    )
    _add_lockdown_flags(serve)
    serve.add_argument(
        "--max-message-mb", type=float, default=4.0, help="largest message accepted or sent, in MiB"
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (stderr)",
    )
    serve.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="json: one JSON object a line, with trace and span ids (rpckit.observe.JsonFormatter)",
    )
    serve.add_argument(
        "--call-log",
        action="store_true",
        help="log every call (method, status, peer, duration, trace ids) at INFO",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log every --http request as a JSON line (logger rpckit.http.access)",
    )
    serve.add_argument(
        "--trace",
        action="store_true",
        help="OpenTelemetry spans for calls, the shim and their next hops, on the global tracer "
        "provider (e.g. run under opentelemetry-instrument; needs rpckit[otel])",
    )
    serve.set_defaults(run=_serve)

    gen = verbs.add_parser(
        "gen",
        help="generate Python code from .proto files (package-relative imports, .pyi stubs)",
        description=(
            "Run grpcio-tools for every [[tool.rpckit.gen]] table in pyproject.toml: writes "
            "_pb2.py, _pb2_grpc.py and .pyi stubs (with mypy-protobuf installed) with imports "
            "made package-relative where they can be (see the README, 'Generated code'). "
            "--check writes nothing and exits 1 if any generated file is stale (for CI)."
        ),
        epilog=(
            "example: rpckit gen --check\n\n"
            "pyproject.toml:\n"
            "  [[tool.rpckit.gen]]\n"
            '  proto_path = "protos"\n'
            '  protos = ["protos/inventory/v1"]\n'
            '  out = "inventory/_gen"'
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument(
        "--check", action="store_true", help="exit 1 when generated code is stale, without writing"
    )
    gen.add_argument(
        "--project",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="directory holding pyproject.toml",
    )
    gen.set_defaults(run=_gen)

    openapi = verbs.add_parser(
        "openapi",
        help="print the OpenAPI 3 document of the legacy HTTP contract the shim serves",
        description=(
            "Build the shim 'rpckit serve --http' would serve for FACTORY's servicers (with "
            "--http-app, the shim that factory returns) and print its OpenAPI 3 document as "
            "JSON: paths from google.api.http rules, JSON shapes from the legacy profile, "
            "success statuses and headers, the error body. Nothing is served."
        ),
        epilog=(
            "example: rpckit openapi examples.inventory.server:servicers "
            "--http-app examples.inventory.server:legacy_http --out openapi.json"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    openapi.add_argument("app", metavar="MODULE:FACTORY", help="as for 'rpckit serve'")
    openapi.add_argument(
        "--http-app", metavar="MODULE:FACTORY", help="as for 'rpckit serve --http-app'"
    )
    openapi.add_argument("--title", default="Legacy HTTP API", help="info.title")
    openapi.add_argument("--version", default="1.0.0", help="info.version of the API")
    openapi.add_argument("--out", type=Path, metavar="FILE", help="write here instead of stdout")
    openapi.set_defaults(run=_openapi)

    from rpckit.migrate._cli import add_parser as add_migrate_parser
    from rpckit.scaffold import _command as scaffold_command

    scaffold_command.add_parser(verbs)  # rpckit new
    add_migrate_parser(verbs)  # rpckit migrate
    return parser


def _add_lockdown_flags(serve: argparse.ArgumentParser) -> None:
    """``rpckit serve``'s flags for HTTPS on --http, certificate reload and --auth."""
    serve.add_argument(
        "--http-tls-cert", type=Path, metavar="PEM", help="serve --http as HTTPS with this cert"
    )
    serve.add_argument(
        "--http-tls-key", type=Path, metavar="PEM", help="private key for --http-tls-cert"
    )
    serve.add_argument(
        "--http-tls-client-ca",
        type=Path,
        metavar="PEM",
        help="require HTTPS client certs signed by this CA (mTLS)",
    )
    serve.add_argument(
        "--tls-poll",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="check the certificate files for changes this often and serve new ones to new "
        "connections (0: only on SIGHUP) (default: %(default)s)",
    )
    serve.add_argument(
        "--auth",
        metavar="MODULE:CALLABLE",
        help="check every call before admission: a callable given an rpckit.Caller that "
        "returns rpckit.Allow/Deny or True/False (or an rpckit.AuthPolicy); refused calls get "
        "UNAUTHENTICATED/PERMISSION_DENIED, 401/403 on --http",
    )
    serve.add_argument(
        "--auth-health",
        choices=["open", "authenticated"],
        default="open",
        help="with --auth: whether health checks need credentials (default: %(default)s, "
        "load balancers probe without)",
    )
    serve.add_argument(
        "--auth-reflection",
        choices=["open", "authenticated"],
        default="authenticated",
        help="with --auth: whether reflection needs credentials (default: %(default)s; "
        "--no-reflection turns it off)",
    )


def auto_workers() -> int:
    """``--workers auto``: two processes per core this process may run on.

    Measured on the seed, I/O-heavy and HTTP profiles of bench/overload against three
    and five processes on two cores (bench/README.md, "Processes and the switch
    interval"): gunicorn's cores + 1 suits its single-threaded gevent workers, but a
    threaded rpckit process's dispatch thread waits for the GIL behind its own
    handlers, so more processes that each run fewer calls serve more.
    """
    return 2 * len(usable_cpus())


def gil_switch(switch_ms: float | None, workers: int) -> tuple[float | None, SwitchConfig | None]:
    """The GIL switch interval ``rpckit serve`` sets up front (seconds, None: leave it) and
    the by-call rule its servers follow (None: none), for ``--gil-switch-ms`` (None: auto).

    Auto with one process: the rule (0.2 ms while calls burn CPU, else Python's 5 ms).
    Auto with several: 5 ms throughout. A short interval serves the dispatch thread
    when one process's handlers hold its GIL most of the time; spread over several
    processes each runs few calls at once, and 0.2 ms then mostly makes a process's
    CPU-bound handlers take the GIL from each other: a seed call (5 ms of CPU) took
    77 context switches against plain grpcio's 27 and ~1.2 ms more CPU, and at 3x of
    the seed profile five and six processes served 105-111 req/s at 0.2 ms, four to
    six 150-210 at 5 ms (bench/README.md, "Processes and the switch interval").
    """
    if switch_ms is not None:
        return switch_ms / 1000, None
    if workers > 1:
        return SwitchConfig().long_s, None
    return None, SwitchConfig()


def _workers(text: str) -> int:
    if text == "auto":
        return auto_workers()
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of processes or 'auto', got {text!r}"
        ) from None


def _switch_ms(text: str) -> float | None:
    """``--gil-switch-ms``: None for auto, else milliseconds > 0."""
    if text == "auto":
        return None
    try:
        ms = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected milliseconds (e.g. 0.2) or 'auto', got {text!r}"
        ) from None
    if not ms > 0 or ms == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of milliseconds > 0, got {text!r}")
    return ms


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"rpckit {args.verb}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return code


# ---------------------------------------------------------------- gen


def _gen(args: argparse.Namespace) -> int:
    from rpckit.codegen import _gen as _codegen

    root = args.project.resolve()
    if _codegen.stub_plugins() is None:
        print(
            "rpckit gen: note: writing no .pyi stubs (they need mypy-protobuf: "
            "pip install mypy-protobuf)",
            file=sys.stderr,
        )
    try:
        targets = _codegen.load_targets(root / "pyproject.toml")
        stale_files: list[str] = []
        for target in targets:
            rendered = _codegen.render(root, target)
            if args.check:
                stale_files += _codegen.stale(root, target, rendered)
            else:
                for path in _codegen.apply(root, target, rendered):
                    print(f"wrote {path}")
    except _codegen.GenError as exc:
        raise ConfigError(str(exc)) from exc
    if args.check and stale_files:
        for path in stale_files:
            print(f"stale: {path}", file=sys.stderr)
        print("generated code is out of date: run 'rpckit gen' and commit", file=sys.stderr)
        return 1
    if args.check:
        print(f"generated code is up to date ({len(targets)} targets)")
    return 0


# ---------------------------------------------------------------- serve


def load_servicers(spec: str) -> list[object]:
    """Import ``module:attr`` (cwd first on sys.path); call it if callable; always a list."""
    return make_servicers(spec, import_target(spec))


def import_target(spec: str) -> Any:
    """Import ``module:attr`` (cwd first on sys.path) and return the attribute."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{spec!r} is not MODULE:FACTORY, e.g. myservice.server:servicers")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r}") from None


def make_servicers(spec: str, target: Any) -> list[object]:
    """Call the factory (unless it already is a servicer); always a list."""
    produced = target() if callable(target) and not _looks_like_servicer(target) else target
    servicers = list(produced) if isinstance(produced, (list, tuple)) else [produced]
    if not servicers:
        raise ConfigError(f"{spec} gave no servicers")
    return servicers


def check_bindable(address: str) -> None:
    """Fail early, with a plain message, when ``host:port`` cannot be bound.

    grpc core would only log a cryptic line; this says what is wrong.
    """
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError("expected HOST:PORT with a port from 0 to 65535, e.g. 127.0.0.1:50051")
    try:
        infos = socket.getaddrinfo(host, int(port_text), type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ValueError(f"cannot resolve host {host!r}") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            raise ValueError(f"cannot listen there: {exc.strerror}") from None


def _looks_like_servicer(obj: object) -> bool:
    return any(base.__name__.endswith("Servicer") for base in type(obj).__mro__[:-1])


#: glibc gives threads that allocate their own malloc arenas (up to 8 per core), and grpc's
#: threads and the handler threads each keep one, partly empty. Two arenas, measured in
#: bench.overload's memory step: --workers 4 59.2 -> 58.5 MiB, --workers 1 25.5 -> 25.2 MiB;
#: the GIL serializes most allocations anyway. MALLOC_ARENA_MAX in the environment overrides.
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # <malloc.h>


def _limit_malloc_arenas(arenas: int) -> None:
    """``mallopt(M_ARENA_MAX, arenas)`` on glibc, unless MALLOC_ARENA_MAX is set."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return  # glibc read it at startup
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(_M_ARENA_MAX, arenas)


def _tls_config(
    args: argparse.Namespace, prefix: str, cert: Path | None, key: Path | None, ca: Path | None
) -> TlsConfig | None:
    """The TLS files of one port from its flags (``--tls-*`` or ``--http-tls-*``)."""
    if (cert is None) != (key is None):
        raise ConfigError(f"--{prefix}cert and --{prefix}key go together")
    if ca is not None and cert is None:
        raise ConfigError(f"--{prefix}client-ca needs --{prefix}cert and --{prefix}key")
    if cert is None or key is None:
        return None
    from rpckit.server._tls import load_certificates

    try:
        tls = TlsConfig(cert=cert, key=key, client_ca=ca, poll_s=args.tls_poll)
        load_certificates(tls)  # a usage error now, not a worker failing later
    except ValueError as exc:
        raise ConfigError(f"--{prefix}*: {exc}") from exc
    return tls


def _auth_policy(args: argparse.Namespace) -> AuthPolicy | None:
    """``--auth MODULE:CALLABLE`` as a policy (a callable hook, or an AuthPolicy as it is)."""
    if args.auth is None:
        if args.auth_health != "open" or args.auth_reflection != "authenticated":
            raise ConfigError("--auth-health and --auth-reflection need --auth MODULE:CALLABLE")
        return None
    target = import_target(args.auth)
    if isinstance(target, AuthPolicy):
        return dataclasses.replace(target, health=args.auth_health, reflection=args.auth_reflection)
    if not callable(target):
        raise ConfigError(f"--auth {args.auth}: not callable; give a function taking a Caller")
    return AuthPolicy(hook=target, health=args.auth_health, reflection=args.auth_reflection)


def _serve(args: argparse.Namespace) -> int:
    _configure_logging(args.log_level, args.log_format)
    tls = _tls_config(args, "tls-", args.tls_cert, args.tls_key, args.tls_client_ca)
    args.http_tls = _tls_config(
        args, "http-tls-", args.http_tls_cert, args.http_tls_key, args.http_tls_client_ca
    )
    if args.http_tls is not None and args.http is None:
        raise ConfigError("--http-tls-cert needs --http HOST:PORT")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    switch_s, switch_rule = gil_switch(args.gil_switch_ms, args.workers)
    try:
        config = ServerConfig(
            threads=args.threads,
            adaptive_concurrency=not args.fixed_threads,
            handler_nice=args.handler_nice,
            queue_limit=args.queue_limit,
            drain_s=args.drain,
            grace_s=args.grace,
            reflection=not args.no_reflection,
            health=not args.no_health,
            max_message_bytes=int(args.max_message_mb * 1024 * 1024),
            tls=tls,
            auth=_auth_policy(args),
            metrics_address=args.metrics,
            call_log=args.call_log,
            tracing=_tracing() if args.trace else None,
            gil_switch=switch_rule,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if switch_s is not None:  # else each server process sets it as its calls go
        sys.setswitchinterval(switch_s)
    _limit_malloc_arenas(MALLOC_ARENAS)  # before any thread starts; forked workers inherit it
    if args.workers > 1:
        return _serve_workers(args, config)

    from rpckit.server._server import Server
    from rpckit.server._signals import graceful_exit, reload_on_hangup
    from rpckit.server._workers import freeze_start_up

    servicers = load_servicers(args.app)
    try:
        server = Server(servicers, config=config)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    try:
        check_bindable(args.grpc)
        server.add_port(args.grpc)
    except (OSError, RuntimeError, ValueError) as exc:
        server.stop()
        raise ConfigError(f"--grpc {args.grpc}: {exc}") from exc
    http = _http_server(args, server, config) if args.http is not None else None
    freeze_start_up()  # as the --workers zygote does before forking
    with (
        graceful_exit([server] if http is None else [server, http.drainer(config.drain_s)]),
        reload_on_hangup([server] if http is None else [server, http]),
    ):
        server.start()
        announcement = {"grpc": server.addresses[0]}
        if http is not None:
            announcement["http"] = http.start()
        if server.metrics_address is not None:
            announcement["metrics"] = server.metrics_address
        print(json.dumps(announcement), flush=True)
        server.wait()
        if http is not None:
            http.stop()
    return 0


def _configure_logging(level: str, form: str) -> None:
    """stderr logging for ``rpckit serve``: text lines, or JSON objects (``--log-format json``)."""
    handler = logging.StreamHandler(sys.stderr)
    if form == "json":
        from rpckit.observe._logs import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
        )
    logging.basicConfig(level=level, handlers=[handler])


def _tracing() -> Any:
    """``--trace``: rpckit's spans on OpenTelemetry's global tracer provider."""
    try:
        from rpckit.observe._tracing import Tracing

        return Tracing()
    except ImportError as exc:
        raise ConfigError(f"--trace: {exc}") from None


def _http_app(spec: str | None, server: Any) -> Any:
    """The WSGI app ``--http`` serves: ``--http-app``'s factory(server), or Shim(server=server)."""
    from rpckit.http._app import Shim

    try:
        if spec is None:
            return Shim(server=server)
        factory = import_target(spec)
        if not callable(factory):
            raise ConfigError(f"--http-app {spec}: not callable")
        return factory(server)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--http-app {spec or '(default)'}: {exc}") from exc


def _http_server(args: argparse.Namespace, server: Any, config: ServerConfig) -> Any:
    """The embedded HTTP server for ``--http``, bound, not started; its shim counted in --metrics.

    With ``config.so_reuseport`` (``--workers``) the port is the parent's reservation,
    shared by every worker, so it is not probed first.
    """
    from rpckit.http._server._server import HttpServer

    try:
        if args.http_threads < 1:
            raise ConfigError(f"--http-threads must be >= 1, got {args.http_threads}")
        try:
            if not config.so_reuseport:
                check_bindable(args.http)
        except ValueError as exc:
            raise ConfigError(f"--http {args.http}: {exc}") from exc
        app = _http_app(args.http_app, server)
    except ConfigError:
        server.stop()
        raise
    if config.tracing is not None or args.access_log:
        from rpckit.observe._wsgi import RequestObserver

        app = RequestObserver(app, tracing=config.tracing, access_log=args.access_log)
    if server.metrics is not None and hasattr(app, "traffic"):
        server.metrics.registry.register(app.traffic)
    try:
        limits = HttpLimits(
            request_line_bytes=args.http_max_request_line,
            header_field_bytes=args.http_max_header_field,
            header_fields=args.http_max_header_fields,
            head_bytes=args.http_max_head,
            body_bytes=args.http_max_body,
            head_timeout_s=args.http_head_timeout,
        )
    except ValueError as exc:
        server.stop()
        raise ConfigError(f"{exc}: change the --http-max-* / --http-head-timeout flag") from exc
    http = HttpServer(
        app,
        args.http,
        threads=args.http_threads,
        limits=limits,
        grace_s=config.grace_s,
        reuse_port=config.so_reuseport,
        tls=args.http_tls,
        on_unread=None if server.metrics is None else server.metrics.http_refused_unread,
    )
    try:
        http.bind()
    except OSError as exc:
        server.stop()
        raise ConfigError(f"--http {args.http}: {exc}") from exc
    return http


def _serve_workers(args: argparse.Namespace, config: ServerConfig) -> int:
    """Supervise --workers processes; this process imports neither the app nor grpc."""
    from rpckit.server._workers import WorkerPlan, forget_worker_gauges, supervise

    try:
        check_bindable(args.grpc)
    except ValueError as exc:
        raise ConfigError(f"--grpc {args.grpc}: {exc}") from exc

    with contextlib.ExitStack() as held:
        reserved: list[socket.socket] = []  # the supervisor's port reservations
        if args.http is not None:  # port 0 -> one port for all
            args.http = _reserve("--http", args.http, reserved, held)
        metrics_dir = None
        if args.metrics is not None:
            args.metrics = _reserve("--metrics", args.metrics, reserved, held)
            # The workers' shared metric files (rpckit.server._metrics), removed when we stop.
            metrics_dir = held.enter_context(tempfile.TemporaryDirectory(prefix="rpckit-metrics-"))
            config = dataclasses.replace(
                config, metrics_address=args.metrics, metrics_dir=metrics_dir
            )
        loaded: list[Any] = []  # the app's FACTORY, once preload ran (in the zygote)

        def preload() -> None:
            loaded.append(_preload_worker(args))

        def run_worker(index: int, address: str, ready: Callable[[], None]) -> int:
            for sock in reserved:
                sock.close()  # the supervisor's reservation; this worker binds its own
            return _run_worker(args, config, loaded[0], index=index, address=address, ready=ready)

        def announce(line: str) -> None:
            announcement = json.loads(line)
            for name in ("http", "metrics"):
                if getattr(args, name) is not None:
                    announcement[name] = getattr(args, name)
            print(json.dumps(announcement), flush=True)

        def worker_exited(pid: int) -> None:
            if metrics_dir is not None:
                forget_worker_gauges(metrics_dir, pid)

        try:
            plan = WorkerPlan(
                workers=args.workers,
                address=args.grpc,
                preload=preload,
                run_worker=run_worker,
                on_exit=worker_exited,
            )
            return supervise(plan, announce=announce)
        except OSError as exc:  # not Linux: no PR_SET_CHILD_SUBREAPER
            raise ConfigError(f"--workers: {exc}") from exc


def _reserve(
    flag: str, address: str, reserved: list[socket.socket], held: contextlib.ExitStack
) -> str:
    """Reserve ``address`` for the workers to share (``reserve_port``); its resolved address."""
    from rpckit.server._workers import reserve_port

    try:
        check_bindable(address)
        sock, resolved = reserve_port(address)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{flag} {address}: {exc}") from exc
    held.callback(sock.close)
    reserved.append(sock)
    return resolved


def _preload_worker(args: argparse.Namespace) -> Any:
    """In the zygote: import what every worker runs, so they share it; returns the FACTORY."""
    import rpckit.server._server
    import rpckit.server._signals

    if args.http is not None:
        import rpckit.http._app
        import rpckit.http._server._server  # noqa: F401 - imported for the workers to share
    return import_target(args.app)


def _run_worker(
    args: argparse.Namespace,
    config: ServerConfig,
    target: Any,
    *,
    index: int,
    address: str,
    ready: Callable[[], None],
) -> int:
    """One worker of --workers: its own server (and HTTP shim) on the shared ports."""
    from rpckit.server._server import Server
    from rpckit.server._signals import graceful_exit, reload_on_hangup

    worker_config = dataclasses.replace(
        config, so_reuseport=True, worker_index=index, processes=args.workers
    )
    server = Server(make_servicers(args.app, target), config=worker_config)
    server.add_port(address)
    http = _http_server(args, server, worker_config) if args.http is not None else None
    stoppers = [server] if http is None else [server, http.drainer(worker_config.drain_s)]
    with graceful_exit(stoppers), reload_on_hangup([server] if http is None else [server, http]):
        server.start()
        if http is not None:
            http.start()
        ready()
        server.wait()
        if http is not None:
            http.stop()
    return 0


# ---------------------------------------------------------------- openapi


def _openapi(args: argparse.Namespace) -> int:
    from rpckit.http._app import Shim
    from rpckit.server._server import Server

    servicers = load_servicers(args.app)
    try:
        server = Server(servicers, config=ServerConfig(health=False, reflection=False, drain_s=0))
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    try:  # the server is never started: it only lends its servicers to the shim
        app = _http_app(args.http_app, server)
        if not isinstance(app, Shim):
            raise ConfigError(
                f"--http-app {args.http_app}: returned {type(app).__name__}, not an "
                "rpckit.http.Shim (mount other apps as the shim's fallback)"
            )
        document = app.openapi(title=args.title, version=args.version)
    finally:
        server.stop()
    text = json.dumps(document, indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        try:
            args.out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--out {args.out}: {exc.strerror or exc}") from exc
        print(f"wrote {args.out}")
    return 0
