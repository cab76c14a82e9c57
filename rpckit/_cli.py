"""The ``rpckit`` command line: thin argument parsing over the library.

Every verb has ``--help`` with an example; bad input gives one line on stderr
and exit status 2; a verb's real work lives in its own module.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rpckit._config import ServerConfig, TlsConfig
from rpckit._errors import ConfigError

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
            'addresses is printed to stdout, e.g. {"grpc": "127.0.0.1:40123"}. SIGTERM/SIGINT '
            "drain gracefully: health NOT_SERVING, --drain seconds of service, then up to "
            "--grace seconds for calls in flight; exit 0."
        ),
        epilog="example: rpckit serve examples.inventory.server:servicers --grpc 127.0.0.1:50051",
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
    serve.add_argument("--threads", type=int, default=8, help="handler threads per process")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port (SO_REUSEPORT); the app is imported once, then forked",
    )
    serve.add_argument(
        "--gil-switch-ms",
        type=float,
        default=0.2,
        metavar="MS",
        help="Python's GIL switch interval (Python's default: 5). grpcio's single dispatch "
        "thread needs the GIL for every event; with handlers burning CPU a 5 ms interval "
        "starves it and calls queue inside grpc, out of admission control's sight "
        "(bench/overload: 0.2 ms keeps that backlog to a few ms)",
    )
    serve.add_argument(
        "--queue-limit",
        type=int,
        default=256,
        help="calls allowed to wait for a thread before new ones are rejected",
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
        help="serve Prometheus metrics here (with --workers, worker i uses PORT+i; 0 picks)",
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
    serve.add_argument(
        "--max-message-mb", type=float, default=4.0, help="largest message accepted or sent, in MiB"
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (stderr)",
    )
    serve.set_defaults(run=_serve)

    gen = verbs.add_parser(
        "gen",
        help="generate Python code from .proto files (package-relative imports, .pyi stubs)",
        description=(
            "Run grpcio-tools for every [[tool.rpckit.gen]] table in pyproject.toml: writes "
            "_pb2.py, _pb2_grpc.py and .pyi stubs with imports made package-relative. "
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
    return parser


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
    from rpckit import _codegen

    root = args.project.resolve()
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


def _serve(args: argparse.Namespace) -> int:
    from rpckit._server import Server
    from rpckit._signals import graceful_exit

    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    try:
        tls = (
            TlsConfig(cert=args.tls_cert, key=args.tls_key, client_ca=args.tls_client_ca)
            if args.tls_cert is not None
            else None
        )
        config = ServerConfig(
            threads=args.threads,
            queue_limit=args.queue_limit,
            drain_s=args.drain,
            grace_s=args.grace,
            reflection=not args.no_reflection,
            health=not args.no_health,
            max_message_bytes=int(args.max_message_mb * 1024 * 1024),
            tls=tls,
            metrics_address=args.metrics,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.gil_switch_ms <= 0:
        raise ConfigError(f"--gil-switch-ms must be > 0, got {args.gil_switch_ms}")
    sys.setswitchinterval(args.gil_switch_ms / 1000)
    if args.workers > 1:
        return _serve_workers(args, config)
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
    with graceful_exit([server]):
        server.start()
        announcement = {"grpc": server.addresses[0]}
        if server.metrics_address is not None:
            announcement["metrics"] = server.metrics_address
        print(json.dumps(announcement), flush=True)
        server.wait()
    return 0


def _serve_workers(args: argparse.Namespace, config: ServerConfig) -> int:
    from rpckit._server import Server
    from rpckit._signals import graceful_exit
    from rpckit._workers import WorkerPlan, supervise

    target = import_target(args.app)  # imported once, before fork: shared copy-on-write
    try:
        check_bindable(args.grpc)
    except ValueError as exc:
        raise ConfigError(f"--grpc {args.grpc}: {exc}") from exc

    def run_worker(index: int, address: str, ready: Callable[[], None]) -> int:
        metrics = config.metrics_address
        if metrics is not None:
            host, _, port = metrics.rpartition(":")
            metrics = f"{host}:{int(port) + index if int(port) else 0}"
        worker_config = dataclasses.replace(
            config, so_reuseport=True, worker_index=index, metrics_address=metrics
        )
        server = Server(make_servicers(args.app, target), config=worker_config)
        server.add_port(address)
        with graceful_exit([server]):
            server.start()
            ready()
            server.wait()
        return 0

    return supervise(WorkerPlan(workers=args.workers, address=args.grpc, run_worker=run_worker))
