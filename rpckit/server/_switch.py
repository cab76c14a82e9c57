"""How often Python should switch the GIL: often only while some call holds it for long.

grpcio's single dispatch thread needs the GIL for every network event. A handler that
burns CPU in Python holds the GIL until the interpreter forces a switch, so the switch
interval bounds how long the dispatch thread (and the admission that refuses calls)
waits behind it: 0.2 ms keeps that wait short where Python's 5 ms lets calls pile up
inside grpcio, out of admission's sight (bench/README.md, "Knobs tried against the 1x
capacity gap": 5 ms cost a third of the seed profile's goodput).

The short interval has a price when no handler holds the GIL for long: every thread
waiting for the GIL wakes each interval to ask for it, and a thread that holds it is
made to drop it mid-work, so calls of a fraction of a millisecond pay in context
switches (bench/overhead, alternating runs: 9-16% more trivial calls at 5 ms).
Then the long interval costs nothing the short one protects: no call holds the GIL
longer than its own CPU time, which is short.

:class:`SwitchInterval` is the rule (docs/architecture.md, "GIL switch interval"):
short while a heavy call (at least ``heavy_cpu_s`` of CPU) *of a heavy method* ended
within the last ``hold_s``, and from the start (a server's first calls are unknown);
long once ``hold_s`` passed without one. A method is heavy while at least
``heavy_share`` of its calls are (a time-decayed share, half-life ``hold_s``). A
method's rare heavy call is not enough: a trivial call's thread now and then used 2-4.6
ms of CPU (kernel time in the GIL's futexes under contention, a page fault, a
collection), about once in 2,000 calls, and each such outlier held the short interval
for 2 s: bench/overhead's single process spent ~40% of its run at 0.2 ms, where trivial
calls run ~15% slower (bench/README.md, "Outliers held the short interval"). It is
pure: the executor reports each call's method and thread CPU time and applies the
interval it returns.

Its worst input is a heavy call after a light spell: it runs under the long interval
until it ends, as under Python's default (then the next event waits up to 5 ms for the
GIL); so does a method's rare heavy call among its light ones (a cache miss), once in
more than 20 calls. How long a thread waits for the GIL does not tell a heavy call
apart: with 5 ms and 16 trivial calls at once, the executor's lag probe waited 2.5 ms
at times.

The estimate decays with time (a heavy call counts for ``hold_s``), and every call is
measured whatever the interval, so it cannot lock itself in either state.
"""

from __future__ import annotations

import dataclasses

from rpckit.core._validate import check_fields, check_number
from rpckit.server._decay import DecayedMean

__all__ = ["SwitchConfig", "SwitchInterval"]

#: Methods whose heavy share is kept (the services' methods; a server has few).
MAX_METHODS = 1024


@dataclasses.dataclass(frozen=True, kw_only=True)
class SwitchConfig:
    """Parameters of :class:`SwitchInterval`; validated on construction."""

    short_s: float = 0.0002
    """The interval while calls hold the CPU for long (``--gil-switch-ms``' old default)."""

    long_s: float = 0.005
    """The interval while every call is light: Python's own default."""

    heavy_cpu_s: float = 0.002
    """A call whose thread used this much CPU (grpcio's own work on the call included,
    0.3-0.6 ms for a trivial call on this project's 2-core machines) is heavy: it may
    hold the GIL this long at a stretch."""

    hold_s: float = 2.0
    """A heavy call of a heavy method keeps the short interval this long after it ended:
    a heavy method called rarely among light ones keeps it short throughout. Also the
    half-life of each method's heavy share."""

    heavy_share: float = 0.05
    """A method is heavy while at least this share of its calls are: its outliers are
    not (a trivial call's thread used 2-4.6 ms of CPU about once in 2,000 calls)."""

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("short_s", "long_s", "heavy_cpu_s", "hold_s", "heavy_share"):
            check_number("SwitchConfig", name, getattr(self, name), low=0.0, strict=True)
        if self.heavy_share > 1.0:
            raise ValueError(f"SwitchConfig.heavy_share must be <= 1, got {self.heavy_share!r}")
        if self.long_s < self.short_s:
            raise ValueError(
                f"SwitchConfig.long_s ({self.long_s!r}) must be >= short_s ({self.short_s!r})"
            )


class SwitchInterval:
    """The GIL switch interval for the calls seen so far (see the module docstring)."""

    __slots__ = ("_heavy_at", "_methods", "config", "interval")

    def __init__(self, config: SwitchConfig, now: float) -> None:
        self.config = config
        self._heavy_at = now  # until measured, as if a heavy call had just ended
        self.interval = config.short_s
        # method -> the decayed share of its calls that were heavy
        self._methods: dict[str, DecayedMean] = {}

    def observe(self, cpu_s: float, now: float, method: str = "") -> float | None:
        """One call of ``method`` ended at ``now`` having used ``cpu_s`` of its thread's
        CPU; the new interval if it changed, else None."""
        config = self.config
        heavy = cpu_s >= config.heavy_cpu_s
        share = self._methods.get(method)
        if share is None:
            if len(self._methods) >= MAX_METHODS:
                self._methods.clear()  # a bound, not a policy: methods are few
            share = self._methods[method] = DecayedMean(float(heavy), now)
        else:
            share.add(float(heavy), now, config.hold_s)
        if heavy and share.weighted_sum >= config.heavy_share * share.weight:
            self._heavy_at = now
            wanted = config.short_s
        elif now - self._heavy_at >= config.hold_s:
            wanted = config.long_s
        else:
            wanted = config.short_s
        return self._set(wanted)

    def _set(self, wanted: float) -> float | None:
        if wanted == self.interval:
            return None
        self.interval = wanted
        return wanted
