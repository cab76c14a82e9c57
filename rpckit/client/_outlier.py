"""Outlier ejection: take failing backends out of rotation, then probe them back in.

The pure policy behind the balanced channel's passive health checking, in the
style of Envoy's outlier detection. The adapter reports each finished call as a
success or a failure (which gRPC codes count as the backend's fault is its
choice: typically UNAVAILABLE, INTERNAL, UNKNOWN, DEADLINE_EXCEEDED), asks for
the eligible backends before each pick and says which backend it picked.

Per backend, a state machine (``now`` decides the timed transitions lazily)::

    IN_SERVICE --(5 consecutive failures, or success rate < 80% over 30 s
                  with >= 20 calls, and fewer than half the backends out)--> EJECTED
    EJECTED    --(ejection time over)--> PROBE_DUE      eligible, for one call
    PROBE_DUE  --(on_pick)-------------> PROBING        not eligible
    PROBING    --(probe succeeds)------> IN_SERVICE     counters cleared
    PROBING    --(probe fails)---------> EJECTED        for longer
    PROBING    --(no result within probe_timeout_s)--> PROBE_DUE

The n-th ejection lasts ``base_ejection_s x multiplier^(n-1)`` stretched by up
to ``ejection_jitter`` at random and capped at ``max_ejection_s`` (5 s, 10 s,
20 s, ... 300 s), so a backend that keeps failing its probes is tried less and
less often, and clients that ejected it together do not all probe it in the
same instant. Each ``window_s`` spent back in service forgives one ejection.

At most ``floor(max_ejected_fraction x backends)`` backends are out at once
(ejected, awaiting or running their probe): with the default 0.5, one of two,
one of three, two of four, none of one. Ejecting the last backends would turn
a partial outage into a total one; when the cap is reached a failing backend
stays in, keeps its counters, and is ejected by its next failure once there is
room.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
from collections import deque
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

from rpckit.core._validate import check_fields, check_int

__all__ = ["BackendState", "OutlierConfig", "OutlierDetector"]

K = TypeVar("K", bound=Hashable)

_WINDOW_BUCKETS = 10
"""The success-rate window is kept as this many time buckets: memory is bounded
whatever the call rate, and the window covers the last 90-100% of ``window_s``."""


def _check_number(name: str, value: float, *, low: float, high: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"OutlierConfig.{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"OutlierConfig.{name} must be in [{low}, {high}], got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutlierConfig:
    """Parameters of :class:`OutlierDetector`; every field is validated on construction."""

    consecutive_failures: int = 5
    """Eject after this many failures in a row. 5: Envoy's ``consecutive_5xx``
    default (docs/architecture.md, "A call's path through the client")."""

    success_rate_threshold: float = 0.8
    """Eject when the success rate over ``window_s`` falls below this. 80%.
    Envoy's comparable ``failure_percentage_threshold`` is 85% failures; ours is
    stricter because only failures that are the backend's fault are counted."""

    window_s: float = 30.0
    """Length of the success-rate window; also the time back in service that
    forgives one past ejection. 30 s (Envoy evaluates every 10 s)."""

    min_window_calls: int = 20
    """The success rate is judged only over at least this many calls in the window.
    20 because below 80% of 20 means at least 5 failures, the same evidence the
    consecutive rule asks for, while 20 calls in 30 s (0.7/s) lets light
    clients use the rule. It also keeps noise low: a backend with a true 2%
    failure rate shows 5 or more failures in 20 calls with probability 5e-5.
    (Envoy asks 50-100 calls per 10 s, as a proxy that sees far more traffic.)"""

    base_ejection_s: float = 5.0
    """Length of a first ejection. 5 s (Envoy's base is 30 s, but it
    probes with real traffic; one probe call is cheap enough to try sooner)."""

    max_ejection_s: float = 300.0
    """No ejection lasts longer. 300 s: Envoy's ``max_ejection_time`` default."""

    ejection_multiplier: float = 2.0
    """Each further ejection (without forgiveness) lasts this much longer:
    5, 10, 20, 40, 80, 160, 300 s. Doubling reaches the cap in 7 ejections
    (Envoy grows linearly, base x count)."""

    ejection_jitter: float = 0.25
    """An ejection is stretched by a random 0 to 25%, before the cap, so clients
    that ejected a backend together do not probe it together."""

    max_ejected_fraction: float = 0.5
    """At most ``floor(fraction x backends)`` are out at once. 0.5: a partial outage never
    becomes a total one."""

    probe_timeout_s: float = 30.0
    """A probe with no result after this long is presumed lost and another one
    may be sent; a lost probe must not keep a backend out for good. 30 s: far
    beyond a unary call's deadline, and a streaming probe that outlives it
    merely lets one more probe through."""

    def __post_init__(self) -> None:
        check_fields(self)
        check_int("OutlierConfig", "consecutive_failures", self.consecutive_failures, low=1)
        _check_number("success_rate_threshold", self.success_rate_threshold, low=0.0, high=1.0)
        _check_number("window_s", self.window_s, low=1e-9)
        check_int("OutlierConfig", "min_window_calls", self.min_window_calls, low=1)
        _check_number("base_ejection_s", self.base_ejection_s, low=1e-9)
        _check_number("max_ejection_s", self.max_ejection_s, low=self.base_ejection_s)
        _check_number("ejection_multiplier", self.ejection_multiplier, low=1.0)
        _check_number("ejection_jitter", self.ejection_jitter, low=0.0)
        _check_number("max_ejected_fraction", self.max_ejected_fraction, low=0.0, high=1.0)
        _check_number("probe_timeout_s", self.probe_timeout_s, low=1e-9)

    def ejection_s(self, ejections: int, rng: random.Random) -> float:
        """How long the ``ejections``-th ejection (1 for the first) lasts, jitter included."""
        if ejections < 1:
            raise ValueError(f"ejections counts from 1, got {ejections}")
        # Cap the exponent: past the cap the nominal length no longer matters.
        steps = min(ejections - 1, 64)
        nominal = min(self.max_ejection_s, self.base_ejection_s * self.ejection_multiplier**steps)
        return min(self.max_ejection_s, nominal * (1.0 + self.ejection_jitter * rng.random()))


class BackendState(enum.Enum):
    """Where a backend stands with the detector. The value is a stable label for metrics."""

    IN_SERVICE = "in_service"
    """Takes calls normally."""
    EJECTED = "ejected"
    """Takes no calls until its ejection ends."""
    PROBE_DUE = "probe_due"
    """Ejection over: eligible for exactly one call, the probe."""
    PROBING = "probing"
    """The probe is in flight; no other calls until its result."""


class _Backend:
    """Mutable per-backend record. Times are the adapter's monotonic seconds."""

    __slots__ = (
        "buckets",
        "consecutive",
        "ejected_until",
        "ejections",
        "probe_sent_at",
        "readmitted_at",
        "window_calls",
        "window_failures",
    )

    def __init__(self) -> None:
        self.consecutive = 0
        # [bucket index, calls, failures], oldest first; sums kept alongside.
        self.buckets: deque[list[int]] = deque()
        self.window_calls = 0
        self.window_failures = 0
        self.ejections = 0
        self.ejected_until: float | None = None  # None: in service
        self.probe_sent_at: float | None = None  # set while PROBING
        self.readmitted_at: float | None = None

    def state(self, now: float, probe_timeout_s: float) -> BackendState:
        if self.ejected_until is None:
            return BackendState.IN_SERVICE
        if self.probe_sent_at is not None:
            if now - self.probe_sent_at < probe_timeout_s:
                return BackendState.PROBING
            return BackendState.PROBE_DUE
        if now < self.ejected_until:
            return BackendState.EJECTED
        return BackendState.PROBE_DUE

    def clear_counters(self) -> None:
        self.consecutive = 0
        self.buckets.clear()
        self.window_calls = 0
        self.window_failures = 0


class OutlierDetector(Generic[K]):
    """Tracks call outcomes per backend and ejects outliers (see the module docstring).

    Backends are identified by any hashable id (an address, an index) and
    must be registered with :meth:`add`; results for unknown ids are ignored,
    so a late result for a removed backend is harmless. Not thread-safe: the
    adapter serialises calls and passes ``now``; ``rng`` draws the jitter.
    """

    def __init__(self, config: OutlierConfig | None = None) -> None:
        self._config = config if config is not None else OutlierConfig()
        self._backends: dict[K, _Backend] = {}
        self._bucket_s = self._config.window_s / _WINDOW_BUCKETS

    @property
    def config(self) -> OutlierConfig:
        """The parameters in force."""
        return self._config

    # -------------------------------------------------------------- membership

    def add(self, backend_id: K) -> None:
        """Start tracking a backend (in service). Adding a known backend changes nothing."""
        self._backends.setdefault(backend_id, _Backend())

    def remove(self, backend_id: K) -> None:
        """Forget a backend (discovery dropped it). Removing an unknown one changes nothing.

        With fewer backends the cap on ejections may shrink below the number
        now out; the ones whose ejection ends soonest are then readmitted.
        """
        if self._backends.pop(backend_id, None) is None:
            return
        out = [b for b in self._backends.values() if b.ejected_until is not None]
        excess = len(out) - self.max_ejected()
        for backend in sorted(out, key=lambda b: b.ejected_until or 0.0)[: max(0, excess)]:
            backend.ejected_until = None
            backend.probe_sent_at = None
            backend.clear_counters()
            # Not counted as a readmission: nothing showed the backend has recovered.

    def __contains__(self, backend_id: object) -> bool:
        return backend_id in self._backends

    def __len__(self) -> int:
        return len(self._backends)

    # -------------------------------------------------------------- queries

    def max_ejected(self) -> int:
        """How many backends may be out at once: floor(max_ejected_fraction x backends)."""
        return math.floor(self._config.max_ejected_fraction * len(self._backends))

    def state(self, backend_id: K, now: float) -> BackendState:
        """The backend's state at ``now``; ``KeyError`` if it is unknown."""
        return self._backends[backend_id].state(now, self._config.probe_timeout_s)

    def ejected(self) -> frozenset[K]:
        """Backends out of normal rotation: ejected, awaiting or running their probe.

        These are the ones counted against the cap. (:meth:`eligible` says which
        of them may take a call right now.)
        """
        return frozenset(k for k, b in self._backends.items() if b.ejected_until is not None)

    def eligible(self, backend_ids: Iterable[K], now: float) -> list[K]:
        """Filter ``backend_ids`` (order kept) to those that may take a call at ``now``.

        Keeps backends in service and those whose probe is due; drops ejected
        ones and those with a probe in flight. Unknown ids are kept: nothing
        is known against them.
        """
        timeout = self._config.probe_timeout_s
        kept = []
        for backend_id in backend_ids:
            backend = self._backends.get(backend_id)
            if backend is None or backend.state(now, timeout) in _ELIGIBLE:
                kept.append(backend_id)
        return kept

    # -------------------------------------------------------------- events

    def on_pick(self, backend_id: K, now: float) -> bool:
        """The picker chose this backend for a call. Returns True if that call is its probe.

        Call it for every pick: if the backend's probe was due, this call
        becomes the probe and the backend is not eligible again until the
        probe's result is recorded (or ``probe_timeout_s`` passes).
        """
        backend = self._backends.get(backend_id)
        if backend is None:
            return False
        if backend.state(now, self._config.probe_timeout_s) is not BackendState.PROBE_DUE:
            return False
        backend.probe_sent_at = now
        return True

    def record(self, backend_id: K, ok: bool, now: float, rng: random.Random) -> None:
        """A call to ``backend_id`` ended: ``ok`` False if it failed through the backend's fault.

        In service, the result feeds both ejection rules. While a probe is in
        flight, the first result decides it: success readmits the backend
        with clean counters, failure ejects it again for longer. Results that
        arrive while the backend is ejected or waiting for its probe are late
        replies to calls sent before the ejection and are ignored.
        """
        backend = self._backends.get(backend_id)
        if backend is None:
            return
        state = backend.state(now, self._config.probe_timeout_s)
        if state is BackendState.PROBING:
            if ok:
                backend.ejected_until = None
                backend.probe_sent_at = None
                backend.readmitted_at = now
                backend.clear_counters()
            else:
                backend.ejections += 1
                self._eject(backend, now, rng)
            return
        if state is not BackendState.IN_SERVICE:
            return
        self._count(backend, ok, now)
        if not ok and self._is_outlier(backend) and len(self.ejected()) < self.max_ejected():
            if backend.readmitted_at is not None:
                forgiven = math.floor((now - backend.readmitted_at) / self._config.window_s)
                backend.ejections = max(0, backend.ejections - forgiven)
            backend.ejections += 1
            self._eject(backend, now, rng)

    # -------------------------------------------------------------- internals

    def _eject(self, backend: _Backend, now: float, rng: random.Random) -> None:
        backend.ejected_until = now + self._config.ejection_s(backend.ejections, rng)
        backend.probe_sent_at = None
        backend.clear_counters()

    def _count(self, backend: _Backend, ok: bool, now: float) -> None:
        backend.consecutive = 0 if ok else backend.consecutive + 1
        index = math.floor(now / self._bucket_s)
        oldest_kept = index - _WINDOW_BUCKETS + 1
        buckets = backend.buckets
        while buckets and buckets[0][0] < oldest_kept:
            _, calls, failures = buckets.popleft()
            backend.window_calls -= calls
            backend.window_failures -= failures
        if not buckets or buckets[-1][0] != index:
            buckets.append([index, 0, 0])
        failed = 0 if ok else 1
        buckets[-1][1] += 1
        buckets[-1][2] += failed
        backend.window_calls += 1
        backend.window_failures += failed

    def _is_outlier(self, backend: _Backend) -> bool:
        if backend.consecutive >= self._config.consecutive_failures:
            return True
        calls = backend.window_calls
        if calls < self._config.min_window_calls:
            return False
        successes = calls - backend.window_failures
        return successes < self._config.success_rate_threshold * calls


_ELIGIBLE = frozenset({BackendState.IN_SERVICE, BackendState.PROBE_DUE})
