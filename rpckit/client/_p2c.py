"""Power-of-two-choices picker over peak-EWMA cost: the pure brain of rpckit's balanced channel.

Each backend has a :class:`BackendLoad` that the channel adapter feeds with
call starts and finishes and with the queue depth the server reports in its
``rpckit-load-bin`` trailer. :func:`pick` draws two distinct eligible backends
at random and returns the cheaper one (Mitzenmacher, "The Power of Two Choices
in Randomized Load Balancing", 2001; Finagle's ``P2CPeakEwma``; Linkerd).

Cost (docs/architecture.md, "A call's path through the client", step 5)::

    cost = latency x (outstanding + fresh reported queue depth + 1)

``latency`` is a *peak*-EWMA of call latency (Finagle ``PeakEwma``, Linkerd /
tower ``PeakEwma``): a sample above the current estimate replaces it at once,
so a backend that turns slow is avoided at its first slow reply; a sample
below pulls the estimate toward it with weight ``1 - exp(-dt / decay_s)``,
where ``dt`` is the time since the previous sample. Like Finagle and tower,
the estimate also decays toward zero while no sample arrives, so a backend
penalised by one old peak is tried again instead of staying out of rotation
for good; its first new reply sets the estimate to what it really is.

Nothing here imports grpc, reads a clock or takes a lock: the adapter passes
``now`` (monotonic seconds) and ``rng``, and serialises access.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence

from rpckit.core._validate import check_fields, check_number

__all__ = ["BackendLoad", "PickerConfig", "pick"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PickerConfig:
    """Parameters of :class:`BackendLoad`; every field is validated on construction."""

    decay_s: float = 10.0
    """Time constant of the peak-EWMA: a sample's weight decays as exp(-age / decay_s).
    10 s: Finagle's ``PeakEwma`` default decay time (Linkerd uses the same)."""

    initial_latency_s: float = 0.030
    """Latency assumed for a backend before its first reply. 30 ms: Linkerd's
    (tower's) default RTT estimate, a typical in-datacenter RPC. The first real
    sample replaces it outright."""

    report_ttl_s: float = 2.0
    """A server-reported queue depth older than this is ignored: the server
    reports on every response, so a report this old describes a backend we
    have not talked to for a while. 2 s: docs/architecture.md, "A call's path
    through the client"."""

    def __post_init__(self) -> None:
        check_fields(self)
        check_number("PickerConfig", "decay_s", self.decay_s, low=0.0, strict=True)
        check_number(
            "PickerConfig", "initial_latency_s", self.initial_latency_s, low=0.0, strict=True
        )
        check_number("PickerConfig", "report_ttl_s", self.report_ttl_s, low=0.0, strict=False)


class BackendLoad:
    """What the picker knows about one backend: calls in flight, latency, reported queue.

    Created when discovery adds the backend (``now`` stamps the initial
    estimate, which decays like any other so a new backend gets tried). The
    adapter calls :meth:`start` when a call is sent and exactly one of
    :meth:`finish`, :meth:`reject` or :meth:`abandon` when it ends.
    """

    __slots__ = (
        "_config",
        "_latency_s",
        "_outstanding",
        "_queue_depth",
        "_reported_at",
        "_sampled",
        "_stamp",
    )

    def __init__(self, now: float, config: PickerConfig | None = None) -> None:
        self._config = config if config is not None else PickerConfig()
        self._latency_s = self._config.initial_latency_s
        self._stamp = now
        self._sampled = False
        self._outstanding = 0
        self._queue_depth = 0
        self._reported_at: float | None = None

    @property
    def config(self) -> PickerConfig:
        """The parameters this backend's estimate follows."""
        return self._config

    @property
    def outstanding(self) -> int:
        """Calls started on this backend and not yet finished or abandoned."""
        return self._outstanding

    @property
    def latency(self) -> float:
        """The peak-EWMA latency (seconds) as of the last reply, before idle decay.

        ``initial_latency_s`` until the first reply. :meth:`latency_at` is the
        decayed value the cost uses.
        """
        return self._latency_s

    def latency_at(self, now: float) -> float:
        """The latency estimate at ``now``: :attr:`latency` decayed toward zero since then."""
        idle = max(0.0, now - self._stamp)
        return self._latency_s * math.exp(-idle / self._config.decay_s)

    def start(self, now: float) -> None:
        """A call to this backend began."""
        del now  # part of the adapter's uniform call shape; starting changes no estimate
        self._outstanding += 1

    def finish(self, latency_s: float, now: float) -> None:
        """A call ended after ``latency_s`` seconds; fold the sample into the peak-EWMA.

        Record calls that failed or timed out too, with their elapsed time: a
        timeout's elapsed time is a lower bound of the latency, and as a peak
        it is exactly what should make this backend expensive. Use
        :meth:`abandon` for calls that tell nothing about the backend (the
        caller cancelled, or the call never left the client).
        """
        if not math.isfinite(latency_s) or latency_s < 0:
            raise ValueError(f"latency_s must be finite and >= 0, got {latency_s!r}")
        self._end_call("finish")
        current = self.latency_at(now)
        if not self._sampled or latency_s >= current:
            # The first reply replaces the prior; a peak replaces the estimate.
            self._latency_s = latency_s
        else:
            weight = math.exp(-max(0.0, now - self._stamp) / self._config.decay_s)
            self._latency_s = current * weight + latency_s * (1.0 - weight)
        self._stamp = now
        self._sampled = True

    def abandon(self) -> None:
        """A call ended without a latency sample worth learning from (e.g. caller cancelled)."""
        self._end_call("abandon")

    def reject(self, wait_s: float, now: float) -> None:
        """A call ended refused by the backend's admission control, which said its queue
        needs ``wait_s`` seconds to drain (``grpc-retry-pushback-ms``).

        A refusal takes a millisecond, but it must not make the backend look fast:
        that would send more calls to a backend that is shedding them. Nor may the
        estimate keep decaying while the backend refuses, which ends the same way
        (the idle decay is there to try again a backend not heard from for a
        while; this one just said it is busy). So the estimate returns to its
        value before idle decay, or to ``wait_s`` if that is more, and its decay
        starts over: a refusal never makes a backend cheaper, and one that keeps
        refusing keeps the estimate its last reply gave it (its reported queue
        depth steers calls away). Not a latency sample: the first real reply
        still replaces the prior.
        """
        if not math.isfinite(wait_s) or wait_s < 0:
            raise ValueError(f"wait_s must be finite and >= 0, got {wait_s!r}")
        self._end_call("reject")
        self._latency_s = max(self._latency_s, wait_s)
        self._stamp = now

    def report(self, queue_depth: int, now: float) -> None:
        """The server reported (``rpckit-load-bin``) ``queue_depth`` calls waiting in its queue."""
        if isinstance(queue_depth, bool) or not isinstance(queue_depth, int) or queue_depth < 0:
            raise ValueError(f"queue_depth must be an int >= 0, got {queue_depth!r}")
        self._queue_depth = queue_depth
        self._reported_at = now

    def reported_queue_depth(self, now: float) -> int:
        """The last reported queue depth, or 0 when there is none younger than ``report_ttl_s``."""
        if self._reported_at is None or now - self._reported_at > self._config.report_ttl_s:
            return 0
        return self._queue_depth

    def cost(self, now: float) -> float:
        """Expected wait for one more call: latency x (outstanding + reported queue + 1)."""
        waiting = self._outstanding + self.reported_queue_depth(now) + 1
        return self.latency_at(now) * waiting

    def _end_call(self, what: str) -> None:
        if self._outstanding == 0:
            raise ValueError(f"{what}() without a matching start(): no call is outstanding")
        self._outstanding -= 1

    def __repr__(self) -> str:
        return (
            f"BackendLoad(latency={self._latency_s:.6f}, outstanding={self._outstanding}, "
            f"queue_depth={self._queue_depth})"
        )


def pick(
    loads: Sequence[BackendLoad],
    eligible: Sequence[int],
    rng: random.Random,
    now: float,
) -> int | None:
    """Choose the backend for the next call: the cheaper of two distinct random eligible ones.

    ``eligible`` holds indices into ``loads`` of the backends that may take
    the call (healthy, not ejected); an index out of range raises
    ``ValueError``. Returns ``None`` when ``eligible`` is empty and its only
    element when it has one. The two candidates are drawn without replacement
    (``rng.sample``), so they are always distinct and no redraw is needed; the
    first of the sample wins ties, which makes ties a fair coin.
    """
    count = len(eligible)
    if count == 0:
        return None
    if count == 1:
        return _checked(loads, eligible[0])
    first, second = rng.sample(range(count), 2)
    a, b = _checked(loads, eligible[first]), _checked(loads, eligible[second])
    return b if loads[b].cost(now) < loads[a].cost(now) else a


def _checked(loads: Sequence[BackendLoad], index: int) -> int:
    if not 0 <= index < len(loads):
        raise ValueError(f"eligible index {index} is outside loads (0..{len(loads) - 1})")
    return index
