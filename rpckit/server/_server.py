"""The rpckit server: grpcio's sync server composed with admission, health and drain.

    with rpckit.Server([Inventory()]) as server:
        port = server.add_port("127.0.0.1:0")
        server.start()
        server.wait()          # until stop(), e.g. from rpckit.graceful_exit

Parts, each in its own module: :class:`~rpckit.server._executor.AdmissionExecutor`
(OS threads behind admission control), :mod:`rpckit.server._handlers` (deadline
scope, error mapping, load trailers), :class:`~rpckit.server._health.HealthService`,
and grpcio-reflection. This class only wires them and owns the lifecycle:

    CREATED --start()--> SERVING --stop()--> DRAINING --> STOPPING --> STOPPED

``stop()`` is graceful: health turns NOT_SERVING, the server keeps serving for
``drain_s`` so balancers move away, open health watches are ended, new calls
are refused, and calls in flight get ``grace_s`` to finish.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, cast

import grpc
from google.protobuf import descriptor
from grpc_reflection.v1alpha import reflection

from rpckit.core._auth import AuthCode, AuthPolicy
from rpckit.core._validate import conflict
from rpckit.server._admission import AdmissionConfig, Rejection
from rpckit.server._auth_gate import AuthGate
from rpckit.server._bad_input import MalformedRequests
from rpckit.server._call_log import CallLog
from rpckit.server._concurrency import ConcurrencyConfig
from rpckit.server._config import ServerConfig
from rpckit.server._executor import AdmissionExecutor, CallFacts, rejection_status
from rpckit.server._grpc_internals import has_interceptors, read_call
from rpckit.server._handlers import BehaviorWrapper, wrap_method_handlers
from rpckit.server._health import HealthService
from rpckit.server._metrics import ServerMetrics
from rpckit.server._servicers import ServiceBinding, bind
from rpckit.server._tls import CertificateReloader, LoadedCertificates
from rpckit.server._tracing import ServerTracer, note_admitted
from rpckit.v1 import load_pb2

__all__ = ["LocalDispatch", "Server", "ServerState"]

_log = logging.getLogger("rpckit.server")

#: How often a waiting main thread wakes so Python signal handlers can run. Linux
#: hands a process's signal to its main thread when that thread does not block it,
#: and the signal interrupts the main thread's wait: the handler runs at once.
#: The slice only bounds the delay when a signal lands on another thread (grpc's
#: C threads run with their own masks). Each wake takes the GIL from whichever
#: request thread holds it; at 10 a second they were half of an idle `rpckit
#: serve --http`'s wake-ups, and a request they hit waits up to a switch interval.
WAKE_INTERVAL_S = 1.0
#: Threads for health watches run as plain streams (under a server interceptor, see
#: ``rpckit.server._health``): each open watch holds one while it waits. Threads for
#: waiting are cheap; made on demand, so none exist without interceptors.
WATCH_THREADS = 256
HEALTH_SERVICE = "grpc.health.v1.Health"


@dataclasses.dataclass(frozen=True)
class LocalDispatch:
    """An rpckit server's way in for in-process calls (see :meth:`Server.local_dispatch`).

    ``handlers`` are the wrapped method handlers (deadline scope, error mapping,
    load trailers, metrics) by full method name; ``submit(fn, facts)`` runs
    ``fn`` through the admission queue on the handler threads; ``run_now(fn,
    facts)`` runs it in the caller's thread when admission would start it at
    once (a free slot, nothing queued) and says whether it did. ``auth``: the
    server's auth policy, for the shim to apply before its calls;
    ``on_auth_denied(method, code)`` counts the shim's refusals with the server's.
    """

    services: tuple[descriptor.ServiceDescriptor, ...]
    handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    submit: Callable[[Callable[[], Any], CallFacts], concurrent.futures.Future[None]]
    run_now: Callable[[Callable[[], Any], CallFacts], bool] | None = None
    auth: AuthPolicy | None = None
    on_auth_denied: Callable[[str, AuthCode], None] | None = None


class ServerState(enum.Enum):
    """Where a :class:`Server` is in its lifecycle."""

    CREATED = "created"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Server:
    """Serve grpcio servicers with rpckit's admission control, health, reflection and drain."""

    def __init__(
        self,
        servicers: Sequence[object],
        *,
        config: ServerConfig | None = None,
        admission: AdmissionConfig | None = None,
    ) -> None:
        self.config = config or ServerConfig()
        self._servicers = tuple(servicers)
        self._bindings = [bind(s) for s in servicers]
        self._local_handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        names = [b.name for b in self._bindings]
        if len(set(names)) != len(names):
            raise ValueError(f"the same service is given twice: {sorted(names)}")
        self._lock = threading.Lock()
        self._state = ServerState.CREATED
        self._stopped = threading.Event()
        self._addresses: list[str] = []
        self._side_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.side_threads, thread_name_prefix="rpckit-side"
        )
        self._watch_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=WATCH_THREADS, thread_name_prefix="rpckit-watch"
        )
        self._executor = AdmissionExecutor(
            threads=self.config.threads,
            side_pool=self._side_pool,
            admission=_admission_config(self.config, admission),
            worker_index=self.config.worker_index,
            on_reject=self._on_reject,
            # Only the queue-wait metric and tracing need it: no call per handler without them.
            on_start=self._on_start
            if self.config.metrics_address is not None or self.config.tracing is not None
            else None,
            concurrency=ConcurrencyConfig() if self.config.adaptive_concurrency else None,
            handler_nice=self.config.handler_nice,
            processes=self.config.processes,
            switch=self.config.gil_switch,
        )
        self.metrics = (
            ServerMetrics(
                self._executor.load_report,
                shared_dir=self.config.metrics_dir,
                worker=self.config.worker_index,
            )
            if self.config.metrics_address is not None
            else None
        )
        self.metrics_address: str | None = None
        self._malformed = MalformedRequests(
            log=_log, count=self.metrics.malformed if self.metrics is not None else None
        )
        self.health = HealthService(names) if self.config.health else None
        tracing = self.config.tracing
        self._tracer = ServerTracer(tracing) if tracing is not None else None
        self._call_log = CallLog() if self.config.call_log else None
        auth = self.config.auth
        # Every call asks the auth policy before admission (rpckit.server._auth_gate).
        executor: concurrent.futures.Executor = (
            self._executor
            if auth is None
            else AuthGate(
                self._executor,
                auth,
                fallback_pool=self._side_pool,
                on_denied=self._on_auth_denied,
            )
        )
        self._tls = (
            CertificateReloader(self.config.tls, port="grpc")
            if self.config.tls is not None
            else None
        )
        self._tls_served: LoadedCertificates | None = None
        self._grpc = grpc.server(
            cast(concurrent.futures.ThreadPoolExecutor, executor),  # any Executor works
            options=self.config.grpc_options(),
            interceptors=list(self.config.interceptors) or None,
            maximum_concurrent_rpcs=self.config.max_concurrent_rpcs,
        )
        # Interceptors hide rpckit's behaviour attributes from the executor, which then
        # needs the method from the call: registered methods arrive without one.
        self._register_methods = not has_interceptors(self._grpc)
        for binding in self._bindings:
            self._register(binding, report_load=True)
        if self.health is not None:
            guarded = auth is not None and auth.applies_to(f"/{HEALTH_SERVICE}/Check")
            self._register(
                bind(self.health),
                report_load=False,
                # grpcio sends a behaviour with a pool of its own past the executor, and
                # so past the auth gate: guarded health goes through it (then routed below).
                thread_pool=None if guarded else self._side_pool,
                background=True,
            )
            for method in ("Check", "List"):
                self._executor.route(f"/{HEALTH_SERVICE}/{method}", self._side_pool)
            self._executor.route(f"/{HEALTH_SERVICE}/Watch", self._watch_pool)
        if self.config.reflection:
            reflected = [*names, reflection.SERVICE_NAME]
            if self.health is not None:
                reflected.append(HEALTH_SERVICE)
            self._register(bind(reflection.ReflectionServicer(reflected)), report_load=False)

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def services(self) -> list[str]:
        """Full names of the application services served."""
        return [b.name for b in self._bindings]

    @property
    def servicers(self) -> tuple[object, ...]:
        """The application servicer instances, as given."""
        return self._servicers

    def local_dispatch(self) -> LocalDispatch:
        """How an in-process front end (the HTTP shim) runs calls like gRPC ones:
        the wrapped handlers and the admission executor's entry point."""
        return LocalDispatch(
            services=tuple(b.service for b in self._bindings),
            handlers=dict(self._local_handlers),
            submit=self._executor.submit_call,
            run_now=self._executor.run_now,
            auth=self.config.auth,
            on_auth_denied=self._on_auth_denied,
        )

    @property
    def addresses(self) -> list[str]:
        """The bound ``host:port`` addresses (ports resolved when 0 was asked)."""
        return list(self._addresses)

    def load_report(self) -> load_pb2.LoadReport:
        return self._executor.load_report()

    def _register(
        self,
        binding: ServiceBinding,
        *,
        report_load: bool,
        thread_pool: concurrent.futures.ThreadPoolExecutor | None = None,
        background: bool = False,
    ) -> None:
        handlers = wrap_method_handlers(
            binding.name,
            binding.method_handlers,
            load=self._executor.load_pair if report_load else None,
            thread_pool=thread_pool,
            observer=self.metrics.call_done if self.metrics is not None else None,
            malformed=self._malformed,
            wrap=self._behavior_wrapper(background=background),
        )
        if report_load:  # an application service: the HTTP shim may call it in process
            self._local_handlers.update({f"/{binding.name}/{n}": h for n, h in handlers.items()})
        self._grpc.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(binding.name, handlers),)
        )
        if self._register_methods:
            # Matched in grpc core, skipping the generic lookup (grpcio >= 1.63).
            cast(Any, self._grpc).add_registered_method_handlers(binding.name, handlers)

    def _behavior_wrapper(self, *, background: bool) -> BehaviorWrapper | None:
        """The call log inside the tracing span, for what each traces; None when neither.

        Background traffic (health) is traced only with ``trace_background``, never logged.
        """
        tracer = self._tracer
        if tracer is not None and background and not tracer.tracing.trace_background:
            tracer = None
        call_log = None if background else self._call_log
        if tracer is None and call_log is None:
            return None

        def wrap(method: str, behavior: Any, *, streaming: bool) -> Any:
            if call_log is not None:
                behavior = call_log.wrap(method, behavior, streaming=streaming)
            if tracer is not None:
                behavior = tracer.wrap(method, behavior, streaming=streaming)
            return behavior

        return wrap

    def _on_reject(self, facts: CallFacts, rejection: Rejection[Any]) -> None:
        _log.debug("shed %s: %s", facts.method, rejection.reason.name)
        if self.metrics is not None:
            self.metrics.shed(facts.method, rejection.reason.name.lower())
            self.metrics.call_done(facts.method, rejection_status(rejection)[0].name, 0.0)
        if self._tracer is not None:
            args = getattr(rejection.ticket.item, "args", ())
            call = read_call(args) if args else None  # None: an in-process (shim) call
            self._tracer.rejected(
                facts.method,
                None if call is None else call.metadata,
                code=rejection_status(rejection)[0],
                reason=rejection.reason.name.lower(),
                pushback_ms=rejection.pushback_ms,
            )

    def _on_auth_denied(self, method: str, code: AuthCode) -> None:
        if self.metrics is not None:
            self.metrics.auth_denied(method, code.value)

    def reload_tls(self) -> bool:
        """Read the TLS files again (SIGHUP); True if new certificates are served to new
        connections. Unusable files are logged and the current ones kept (False)."""
        return self._tls.reload() if self._tls is not None else False

    def _fetch_certificates(self) -> grpc.ServerCertificateConfiguration | None:
        """grpc core's fetcher, asked before every TLS handshake: the newest set, or None
        (no change). Runs on a grpc core thread: it must not raise."""
        try:
            assert self._tls is not None
            loaded = self._tls.current
            if loaded is self._tls_served:
                return None
            self._tls_served = loaded
            return _certificate_configuration(loaded)
        except Exception:  # noqa: BLE001 - grpc core keeps the current certificates
            _log.exception("grpc port: the new certificates could not be handed to grpc")
            return None

    def _on_start(self, facts: CallFacts, waited_s: float) -> None:
        if self.metrics is not None:
            self.metrics.queue_wait(facts.method, waited_s)
        if self._tracer is not None:
            note_admitted(waited_s)

    def add_port(self, address: str) -> int:
        """Bind ``host:port`` (port 0 picks a free one); returns the port. Before start()."""
        if self._state is not ServerState.CREATED:
            raise RuntimeError("add_port() must be called before start()")
        if self._tls is None:
            port = self._grpc.add_insecure_port(address)
        else:
            initial = self._tls.current
            self._tls_served = initial
            credentials = grpc.dynamic_ssl_server_credentials(
                _certificate_configuration(initial),
                # grpc-stubs says the fetcher never returns None; grpcio documents None
                # as "no change".
                cast(Callable[[], grpc.ServerCertificateConfiguration], self._fetch_certificates),
                require_client_authentication=initial.client_ca is not None,
            )
            port = self._grpc.add_secure_port(address, credentials)
        if port == 0:
            raise OSError(f"cannot bind {address}: in use, or not an address of this host")
        host = address.rsplit(":", 1)[0]
        self._addresses.append(f"{host}:{port}")
        return port

    def start(self) -> None:
        with self._lock:
            if self._state is not ServerState.CREATED:
                raise RuntimeError(f"cannot start a server that is {self._state.value}")
            if not self._addresses:
                raise RuntimeError("no port bound: call add_port('HOST:PORT') before start()")
            if self.metrics is not None and self.config.metrics_address is not None:
                self.metrics_address = self.metrics.serve(
                    self.config.metrics_address, reuse_port=self.config.metrics_dir is not None
                )
            self._grpc.start()
            if self._tls is not None:
                self._tls.start()
            self._state = ServerState.SERVING
        _log.info("serving %s on %s", ", ".join(self.services), ", ".join(self._addresses))

    def stop(self, *, drain_s: float | None = None, grace_s: float | None = None) -> None:
        """Drain and stop (see the module docstring); safe to call twice or from any thread."""
        drain = self.config.drain_s if drain_s is None else drain_s
        grace = self.config.grace_s if grace_s is None else grace_s
        with self._lock:
            if self._state is ServerState.CREATED:
                self._state = ServerState.STOPPED
                self._shutdown_pools()
                self._stopped.set()
                return
            if self._state is not ServerState.SERVING:
                second_caller = True
            else:
                second_caller = False
                self._state = ServerState.DRAINING
        if second_caller:
            self._stopped.wait()
            return
        _log.info("draining for %.1fs (health NOT_SERVING), then %.1fs grace", drain, grace)
        if self.health is not None:
            self.health.drain()
        if drain > 0:
            threading.Event().wait(drain)
        if self.health is not None:
            self.health.close_watches()
        self._state = ServerState.STOPPING
        self._grpc.stop(grace).wait()
        self._shutdown_pools()
        self._state = ServerState.STOPPED
        _log.info("stopped")
        self._stopped.set()

    def _shutdown_pools(self) -> None:
        if self._tls is not None:
            self._tls.close()
        if self.metrics is not None:
            self.metrics.close()
        self._executor.shutdown(wait=True)
        self._side_pool.shutdown(wait=True)
        self._watch_pool.shutdown(wait=True)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped; False if ``timeout`` passed first.

        Waits in short slices: a signal delivered to one of grpc's threads only
        runs its Python handler once the main thread wakes up, so an endless
        wait could leave SIGTERM unhandled.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = WAKE_INTERVAL_S if deadline is None else deadline - time.monotonic()
            if self._stopped.wait(min(WAKE_INTERVAL_S, max(0.0, left))):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state is ServerState.SERVING:
            self.stop(drain_s=0.0)
        elif self._state is ServerState.CREATED:
            self.stop()
        self.wait()


def _admission_config(config: ServerConfig, admission: AdmissionConfig | None) -> AdmissionConfig:
    """The admission policy's parameters: ``admission`` if given, else from ``config``.

    Nothing given is silently ignored. The queue bound may be set in either
    place; set in both (neither left at its default) they must agree. The
    queue's worker count is the executor's running limit, from
    ``ServerConfig.threads``: ``AdmissionConfig.workers`` must be left at its
    default or equal ``threads``.
    """
    if admission is None:
        return AdmissionConfig(queue_limit=config.queue_limit)
    defaults = AdmissionConfig()
    if config.queue_limit != admission.queue_limit:
        if admission.queue_limit == defaults.queue_limit:
            admission = dataclasses.replace(admission, queue_limit=config.queue_limit)
        elif config.queue_limit != ServerConfig().queue_limit:
            raise conflict(
                "Server",
                f"ServerConfig.queue_limit ({config.queue_limit}) and AdmissionConfig.queue_limit "
                f"({admission.queue_limit}) disagree: set it in one place",
            )
    if admission.workers not in (defaults.workers, config.threads):
        raise conflict(
            "Server",
            f"AdmissionConfig.workers ({admission.workers}) is ignored by a Server, which runs "
            f"up to ServerConfig.threads ({config.threads}) calls: set threads instead",
        )
    return admission


def _certificate_configuration(loaded: LoadedCertificates) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(loaded.key, loaded.cert)], root_certificates=loaded.client_ca
    )
