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
short while a call that used at least ``heavy_cpu_s`` of CPU ended within the last
``hold_s``, and from the start (a server's first calls are unknown); long once ``hold_s``
passed with only light calls. It is pure: the executor reports each call's thread CPU
time and applies the interval it returns.

Its worst input is a heavy call after a light spell: it runs under the long interval
until it ends, as under Python's default (then the next event waits up to 5 ms for the
GIL). How long a thread waits for the GIL does not tell a heavy call apart: with 5 ms
and 16 trivial calls at once, the executor's lag probe waited 2.5 ms at times.

The estimate decays with time (a heavy call counts for ``hold_s``), and every call is
measured whatever the interval, so it cannot lock itself in either state.
"""

from __future__ import annotations

import dataclasses

from rpckit.core._validate import check_fields, check_number

__all__ = ["SwitchConfig", "SwitchInterval"]


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
    """A heavy call keeps the short interval this long after it ended: a mix of rare
    heavy calls among light ones stays short throughout."""

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("short_s", "long_s", "heavy_cpu_s", "hold_s"):
            check_number("SwitchConfig", name, getattr(self, name), low=0.0, strict=True)
        if self.long_s < self.short_s:
            raise ValueError(
                f"SwitchConfig.long_s ({self.long_s!r}) must be >= short_s ({self.short_s!r})"
            )


class SwitchInterval:
    """The GIL switch interval for the calls seen so far (see the module docstring)."""

    __slots__ = ("_heavy_at", "config", "interval")

    def __init__(self, config: SwitchConfig, now: float) -> None:
        self.config = config
        self._heavy_at = now  # until measured, as if a heavy call had just ended
        self.interval = config.short_s

    def observe(self, cpu_s: float, now: float) -> float | None:
        """One call ended at ``now`` having used ``cpu_s`` of its thread's CPU; the new
        interval if it changed, else None."""
        config = self.config
        if cpu_s >= config.heavy_cpu_s:
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
