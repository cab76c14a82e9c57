"""Whose CPU is it: this server's share of the machine's busy CPU time.

The executor's overload signal is how late a sleeping thread gets the GIL back
(docs/architecture.md, "Executor"). Part of that lateness is the wait for a
*core* (the thread's scheduler run delay), and a core is taken either by this
server's own processes (its ``--workers`` siblings: fewer calls running here
shortens that wait) or by other processes on the machine (a neighbour, a load
generator, the host: running fewer calls here only refuses work the CPU could
still do). :class:`CpuShare` estimates the first part as this server's share of
the busy CPU over the last interval: ``processes`` x this process's CPU time,
over the machine's busy time (Linux ``/proc/stat``), at most 1. The estimate
assumes the sibling workers are about as busy as this one (SO_REUSEPORT spreads
connections evenly); an uneven spread overestimates our share, which errs on the
side of the old behaviour (all of a core's wait counted as ours).

:func:`share` is the pure rule; :class:`CpuShare` reads the clocks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

__all__ = ["CpuShare", "machine_busy_s", "share"]

#: How often the share is measured again; shorter intervals read more noise.
REFRESH_S = 0.25


def share(own_s: float, busy_s: float, processes: int) -> float:
    """This server's share of ``busy_s`` machine CPU seconds, from ``own_s`` CPU seconds of
    one of its ``processes``: in [0, 1]; 1 when nothing was measured."""
    if busy_s <= 0.0:
        return 1.0
    return max(0.0, min(1.0, processes * own_s / busy_s))


def machine_busy_s() -> float | None:
    """CPU seconds all cores spent busy since boot (``/proc/stat``), or None off Linux."""
    try:
        with open("/proc/stat", "rb") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if len(fields) < 8 or fields[0] != b"cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds this process (all its threads) has used."""
    times = os.times()
    return times.user + times.system


class CpuShare:
    """:func:`share` over the last :data:`REFRESH_S`, measured at most that often. Not
    thread-safe (the executor's probe thread alone asks)."""

    def __init__(
        self,
        processes: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        read_machine: Callable[[], float | None] = machine_busy_s,
        read_own: Callable[[], float] = own_cpu_s,
    ) -> None:
        if processes < 1:
            raise ValueError(f"CpuShare processes must be >= 1, got {processes!r}")
        self._processes = processes
        self._clock = clock
        self._read_machine = read_machine
        self._read_own = read_own
        self._at = clock()
        self._machine = read_machine()
        self._own = read_own()
        self._share = 1.0

    def fraction(self) -> float:
        """This server's share of the busy CPU lately (1.0 where it cannot be measured)."""
        now = self._clock()
        if now - self._at < REFRESH_S:
            return self._share
        machine, own = self._read_machine(), self._read_own()
        if machine is None or self._machine is None:
            self._share = 1.0
        else:
            self._share = share(own - self._own, machine - self._machine, self._processes)
        self._at, self._machine, self._own = now, machine, own
        return self._share
