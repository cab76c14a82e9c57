"""Whose CPU is it, and is it short: the part of a wait for a core that this server's
own calls cause and could cure by running fewer.

The executor's overload signal is how late a sleeping thread gets the GIL back
(docs/architecture.md, "Executor"). Part of that lateness is the wait for a
*core* (the thread's scheduler run delay). Two questions decide how much of it
counts against the calls running here:

* **Whose is the CPU?** A core is taken either by this server's own processes
  (its ``--workers`` siblings: fewer calls running here shortens that wait) or by
  other processes on the machine (a neighbour, a load generator, the host: running
  fewer calls here only refuses work the CPU could still do). :func:`share`
  estimates the first part as ``processes`` x this process's CPU time over the
  busy time of the cores it may use (Linux ``/proc/stat``), at most 1. It assumes
  the sibling workers are about as busy as this one (clients spread their calls
  over them); an uneven spread overestimates our share, which errs on the side of
  counting the wait.
* **Are the cores short?** While the cores this process may use have idle time, a
  wait for one is the scheduler's latency in waking a thread among several
  runnable ones, not a shortage: running fewer calls does not make it shorter, it
  only leaves the cores idler. :func:`shortage` is 0 below ``SHORT_FROM`` busy and
  rises to 1 at ``SHORT_AT``. Measured on 2 cores, 3 workers at gunicorn's capacity
  (5 ms CPU + 20 ms wait per call): the cores were 75-90% busy, each worker's
  limit was driven 12 -> 3 by such waits, and 8% of the calls were refused; with
  the waits counted only as far as the cores are short, 0.4% were (bench/README.md,
  "Short of CPU, or only waiting for a core").

:func:`counted_fraction` is the pure rule (the product); :class:`CpuShare` reads the clocks.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Collection

__all__ = [
    "SHORT_AT",
    "SHORT_FROM",
    "CpuShare",
    "counted_fraction",
    "machine_busy_s",
    "share",
    "shortage",
    "usable_cpus",
]

#: How often the share is measured again; shorter intervals read more noise.
REFRESH_S = 0.25
#: Below this busy fraction of the usable cores a wait for a core is not a shortage.
SHORT_FROM = 0.80
#: At and above this busy fraction all of it is.
SHORT_AT = 0.95


def share(own_s: float, busy_s: float, processes: int) -> float:
    """This server's share of ``busy_s`` machine CPU seconds, from ``own_s`` CPU seconds of
    one of its ``processes``: in [0, 1]; 1 when nothing was measured."""
    if busy_s <= 0.0:
        return 1.0
    return max(0.0, min(1.0, processes * own_s / busy_s))


def shortage(busy_fraction: float) -> float:
    """How short of CPU cores this busy are, in [0, 1]: 0 up to ``SHORT_FROM``, 1 from
    ``SHORT_AT``, linear between."""
    return max(0.0, min(1.0, (busy_fraction - SHORT_FROM) / (SHORT_AT - SHORT_FROM)))


def counted_fraction(
    own_s: float, busy_s: float, elapsed_s: float, *, processes: int, cores: int
) -> float:
    """The part of a wait for a core that counts against this server's calls: its
    :func:`share` of the busy CPU times the cores' :func:`shortage`, over an interval of
    ``elapsed_s`` in which ``cores`` cores were ``busy_s`` busy and one of the server's
    ``processes`` used ``own_s``. 1 when nothing was measured (count it all, as before
    these measures)."""
    if busy_s <= 0.0 or elapsed_s <= 0.0 or cores < 1:
        return 1.0
    return share(own_s, busy_s, processes) * shortage(busy_s / (elapsed_s * cores))


def usable_cpus() -> frozenset[int]:
    """The CPUs this process may run on (its affinity; all online CPUs off Linux)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return frozenset(range(os.cpu_count() or 1))


def machine_busy_s(cpus: Collection[int] | None = None) -> float | None:
    """CPU seconds the given CPUs (all of them: None) spent busy since boot
    (``/proc/stat``), or None off Linux."""
    wanted = {b"cpu"} if cpus is None else {b"cpu%d" % cpu for cpu in cpus}
    ticks = 0
    found = False
    try:
        with open("/proc/stat", "rb") as stat:
            # The cpu lines come first; stop there, before the long interrupt counts.
            for line in stat:
                if not line.startswith(b"cpu"):
                    break
                fields = line.split()
                if fields[0] not in wanted or len(fields) < 9:
                    continue
                user, nice, system, _idle, _iowait, irq, softirq, steal = (
                    int(f) for f in fields[1:9]
                )
                ticks += user + nice + system + irq + softirq + steal
                found = True
    except OSError:
        return None
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


def own_cpu_s() -> float:
    """CPU seconds this process (all its threads) has used."""
    times = os.times()
    return times.user + times.system


class CpuShare:
    """:func:`counted_fraction` over the last :data:`REFRESH_S`, measured at most that
    often, over the CPUs this process may use. Not thread-safe (the executor's probe
    thread alone asks)."""

    def __init__(
        self,
        processes: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        read_machine: Callable[[], float | None] | None = None,
        read_own: Callable[[], float] = own_cpu_s,
        cores: int | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError(f"CpuShare processes must be >= 1, got {processes!r}")
        cpus = usable_cpus()
        if read_machine is None:
            read_machine = functools.partial(machine_busy_s, cpus)
        self._processes = processes
        self._cores = len(cpus) if cores is None else cores
        self._clock = clock
        self._read_machine = read_machine
        self._read_own = read_own
        self._at = clock()
        self._machine = read_machine()
        self._own = read_own()
        self._fraction = 1.0

    def fraction(self) -> float:
        """The part of a wait for a core that is this server's own shortage lately (1.0
        where it cannot be measured)."""
        now = self._clock()
        if now - self._at < REFRESH_S:
            return self._fraction
        machine, own = self._read_machine(), self._read_own()
        if machine is None or self._machine is None:
            self._fraction = 1.0
        else:
            self._fraction = counted_fraction(
                own - self._own,
                machine - self._machine,
                now - self._at,
                processes=self._processes,
                cores=self._cores,
            )
        self._at, self._machine, self._own = now, machine, own
        return self._fraction
