"""The balanced channel's configuration and its status snapshots.

:class:`BalancedChannelConfig` says how a :class:`~rpckit.BalancedChannel`
balances, checks health, retries and discovers backends (frozen, keyword-only,
validated on construction); :class:`BackendStatus` and :class:`ConnectionStatus`
are what :meth:`~rpckit.BalancedChannel.backends` returns. No grpc import.
"""

from __future__ import annotations

import dataclasses

from rpckit.client._outlier import OutlierConfig
from rpckit.client._p2c import PickerConfig
from rpckit.client._retry import AdaptiveThrottleConfig, RetryBudgetConfig
from rpckit.core._deadline import OUTBOUND_MARGIN_S
from rpckit.core._validate import check_fields, check_int, check_number, conflict
from rpckit.observe._tracing import Tracing

__all__ = ["BackendStatus", "BalancedChannelConfig", "ConnectionStatus", "is_method_path"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class BalancedChannelConfig:
    """How a :class:`BalancedChannel` balances, checks health, retries and discovers backends.

    Every field is validated on construction; the nested configs carry the
    policies' own documented defaults.
    """

    connections_per_backend: int = 2
    """grpc channels (TCP connections) per backend. 2: reaches both processes of a
    ``--workers 2`` host (with ``worker_redials``) and keeps a backend in rotation
    through one broken connection (docs/architecture.md, "A call's path through the
    client")."""

    worker_redials: int = 10
    """A connection that reaches the same server process as another connection of
    its backend is closed and redialed, up to this many times in a row without
    finding a new process (a new process resets the count). SO_REUSEPORT places
    each connection on a random process, so with two processes a process is
    missed only with probability 2^-10. A fruitless round is tried again after
    1 s, then 2, 4... up to 60 s (a new process resets this too), so a worker
    replaced after a crash is reached again; a single-process host costs this
    many extra connects per extra connection at most once a minute."""

    max_attempts: int = 3
    """Attempts per call, the first included. 3: enough to pass one dead and one
    draining backend; the retry budget, not this, bounds the extra load in an
    outage (gRPC's own retry policy caps attempts at 5)."""

    retry_budget: RetryBudgetConfig = dataclasses.field(default_factory=RetryBudgetConfig)
    """Retries may be at most 20% of requests plus 10/s over 10 s (Finagle's ``RetryBudget``)."""

    adaptive_throttle: AdaptiveThrottleConfig | None = None
    """Client-side adaptive throttling (SRE book, K = 2), or None (the default) for
    none: it fails calls locally, which a caller should opt into."""

    picker: PickerConfig = dataclasses.field(default_factory=PickerConfig)
    """P2C's peak-EWMA parameters (10 s decay, 30 ms start, 2 s report TTL)."""

    outlier: OutlierConfig | None = dataclasses.field(default_factory=OutlierConfig)
    """Outlier ejection (5 consecutive failures or < 80% success over 30 s; at most
    half the backends out), or None to disable it."""

    health_check: bool = True
    """Watch ``grpc.health.v1.Health`` on every connection. False: every
    connection is taken as serving, and only outlier ejection removes backends."""

    health_service: str = ""
    """The service name to watch; "" is the whole server, which an rpckit server
    turns NOT_SERVING when it starts draining."""

    health_backoff_initial_s: float = 0.1
    """First wait before re-checking a connection that is not serving, doubled (with
    jitter) up to ``health_backoff_max_s``. Also grpc's reconnect backoff. 100 ms:
    a restarted backend is found quickly without polling a dead one hard."""

    health_backoff_max_s: float = 5.0
    """Longest wait between checks of a connection that is not serving, so a backend
    back from a restart is in rotation within ~5 s (grpc's own default reaches 120 s)."""

    health_check_timeout_s: float = 2.0
    """Timeout of one ``Health/Check`` while polling. rpckit servers answer health
    from a side pool, so a busy server still answers well within it."""

    wait_for_backend_s: float = 5.0
    """A call that finds no serving backend while some are still connecting (or DNS
    has not answered yet) waits this long at most (within its deadline) for one,
    instead of failing; with none connecting it fails at once (UNAVAILABLE). Like
    grpc's calls on a CONNECTING channel. 5 s covers a first connect and check."""

    resolve_interval_s: float = 30.0
    """DNS targets are re-resolved this often. 30 s: grpc's minimum re-resolution
    period and a common DNS TTL (Kubernetes headless services, Consul)."""

    deadline_margin_s: float = OUTBOUND_MARGIN_S
    """Taken off the inbound deadline for calls made inside a handler (5 ms, _deadline)."""

    idempotent_methods: frozenset[str] = frozenset()
    """Method paths (``/pkg.Service/Method``) to treat as idempotent in addition to
    those whose proto says so (for methods without a descriptor in the pool)."""

    tracing: Tracing | None = None
    """A span per attempt (backend, retry number, pushback), see ``rpckit.client._tracing``;
    None (default): no tracing, and OpenTelemetry is not imported."""

    def __post_init__(self) -> None:
        check_fields(self)  # types, nested configs; numbers finite and >= 0
        check_int(
            "BalancedChannelConfig", "connections_per_backend", self.connections_per_backend, low=1
        )
        check_int("BalancedChannelConfig", "worker_redials", self.worker_redials, low=0)
        check_int("BalancedChannelConfig", "max_attempts", self.max_attempts, low=1)
        if not self.health_check and self.health_service:
            raise conflict(
                "BalancedChannelConfig",
                f"health_service={self.health_service!r} is not watched with health_check=False; "
                "drop one of them",
            )
        check_number(
            "BalancedChannelConfig",
            "health_backoff_initial_s",
            self.health_backoff_initial_s,
            low=0,
            strict=True,
        )
        check_number(
            "BalancedChannelConfig",
            "health_backoff_max_s",
            self.health_backoff_max_s,
            low=self.health_backoff_initial_s,
            strict=False,
        )
        check_number(
            "BalancedChannelConfig",
            "health_check_timeout_s",
            self.health_check_timeout_s,
            low=0,
            strict=True,
        )
        check_number(
            "BalancedChannelConfig",
            "wait_for_backend_s",
            self.wait_for_backend_s,
            low=0,
            strict=False,
        )
        check_number(
            "BalancedChannelConfig",
            "resolve_interval_s",
            self.resolve_interval_s,
            low=0,
            strict=True,
        )
        check_number(
            "BalancedChannelConfig",
            "deadline_margin_s",
            self.deadline_margin_s,
            low=0,
            strict=False,
        )
        if isinstance(self.idempotent_methods, str):
            raise TypeError("BalancedChannelConfig.idempotent_methods must be a set of paths")
        methods = frozenset(self.idempotent_methods)
        for path in methods:
            if not is_method_path(path):
                raise ValueError(
                    "BalancedChannelConfig.idempotent_methods: expected /package.Service/Method, "
                    f"got {path!r}"
                )
        object.__setattr__(self, "idempotent_methods", methods)


def is_method_path(path: object) -> bool:
    if not isinstance(path, str) or not path.startswith("/"):
        return False
    service, sep, name = path[1:].partition("/")
    return bool(sep and service and name and "/" not in name)


# ---------------------------------------------------------------- status snapshot


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectionStatus:
    """One connection of a backend, as :meth:`BalancedChannel.backends` saw it."""

    health: str
    """"unknown" (no answer yet), "serving", "not_serving" or "unreachable"."""
    outstanding: int
    """Calls in flight on this connection."""
    worker_pid: int | None
    """The server process that last answered on it (from the load report), if known."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackendStatus:
    """One backend, as :meth:`BalancedChannel.backends` saw it."""

    address: str
    serving: bool
    """At least one connection says SERVING: the backend may get new calls."""
    ejected: bool
    """Out of rotation by outlier ejection (or awaiting its probe)."""
    outstanding: int
    """Calls in flight."""
    latency_s: float
    """The peak-EWMA latency estimate P2C uses."""
    connections: tuple[ConnectionStatus, ...]
