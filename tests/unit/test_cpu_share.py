"""Whose CPU is it, and is it short (rpckit.server._cpu): the pure rules, and the sampler
with fake clocks."""

from __future__ import annotations

import pytest

from rpckit.server._cpu import (
    REFRESH_S,
    SHORT_AT,
    SHORT_FROM,
    CpuShare,
    counted_fraction,
    machine_busy_s,
    share,
    shortage,
    usable_cpus,
)


def test_a_neighbour_busy_on_the_cores_is_not_our_share() -> None:
    # 2 cores busy for a second, of which this one process used a tenth of a core.
    assert share(own_s=0.1, busy_s=2.0, processes=1) == pytest.approx(0.05)


def test_sibling_workers_count_as_ours() -> None:
    # 3 workers, each ~0.66 of a core, fill 2 cores: it is all ours.
    assert share(own_s=0.66, busy_s=2.0, processes=3) == pytest.approx(0.99)
    assert share(own_s=0.9, busy_s=2.0, processes=3) == 1.0  # uneven: capped


def test_nothing_measured_counts_as_ours() -> None:
    # The old, conservative reading: every wait for a core is ours.
    assert share(own_s=0.0, busy_s=0.0, processes=1) == 1.0
    assert share(own_s=0.5, busy_s=-1.0, processes=1) == 1.0
    assert counted_fraction(0.5, 0.0, 1.0, processes=1, cores=2) == 1.0
    assert counted_fraction(0.5, 1.0, 0.0, processes=1, cores=2) == 1.0


def test_cores_with_idle_time_are_not_short() -> None:
    assert shortage(0.0) == 0.0
    assert shortage(SHORT_FROM) == 0.0
    assert shortage((SHORT_FROM + SHORT_AT) / 2) == pytest.approx(0.5)
    assert shortage(SHORT_AT) == 1.0
    assert shortage(1.3) == 1.0  # steal and rounding can read above 1


def test_our_own_workers_waiting_for_cores_that_idle_is_not_counted() -> None:
    # 3 workers at gunicorn's capacity on 2 cores: the cores 80% busy, all of it ours.
    # Waits for a core there are wake-up latency: counting them refused calls.
    assert counted_fraction(0.53, 1.6, 1.0, processes=3, cores=2) == 0.0
    # The same workers with the cores full: all of the wait is ours and counts.
    assert counted_fraction(0.66, 2.0, 1.0, processes=3, cores=2) == pytest.approx(0.99)
    # The cores full, but of a neighbour's doing: little of it is ours.
    assert counted_fraction(0.1, 2.0, 1.0, processes=1, cores=2) == pytest.approx(0.05)


class Clocks:
    def __init__(self) -> None:
        self.now = 0.0
        self.machine: float | None = 100.0
        self.own = 10.0

    def advance(self, seconds: float, *, machine_busy: float, own: float) -> None:
        self.now += seconds
        if self.machine is not None:
            self.machine += machine_busy
        self.own += own


def sampler(clocks: Clocks, processes: int = 1) -> CpuShare:
    return CpuShare(
        processes,
        clock=lambda: clocks.now,
        read_machine=lambda: clocks.machine,
        read_own=lambda: clocks.own,
        cores=2,
    )


def test_the_fraction_follows_who_uses_the_cpu_and_how_short_it_is_and_recovers() -> None:
    clocks = Clocks()
    cpu = sampler(clocks, processes=2)
    assert cpu.fraction() == 1.0  # nothing measured yet
    clocks.advance(REFRESH_S, machine_busy=2 * REFRESH_S, own=0.05 * REFRESH_S)  # a neighbour
    assert cpu.fraction() == pytest.approx(0.05)
    clocks.advance(REFRESH_S, machine_busy=2 * REFRESH_S, own=REFRESH_S)  # our workers, full
    assert cpu.fraction() == pytest.approx(1.0)
    clocks.advance(REFRESH_S, machine_busy=1.2 * REFRESH_S, own=0.6 * REFRESH_S)  # 60% busy
    assert cpu.fraction() == 0.0
    clocks.advance(REFRESH_S, machine_busy=2 * REFRESH_S, own=REFRESH_S)  # full again
    assert cpu.fraction() == pytest.approx(1.0)


def test_measured_at_most_every_refresh_interval() -> None:
    clocks = Clocks()
    cpu = sampler(clocks)
    clocks.advance(REFRESH_S, machine_busy=0.5, own=0.5)
    first = cpu.fraction()
    clocks.advance(REFRESH_S / 2, machine_busy=0.0, own=0.0)
    assert cpu.fraction() == first == 1.0  # too soon: the last measurement stands


def test_no_proc_stat_counts_every_wait_as_ours() -> None:
    clocks = Clocks()
    clocks.machine = None
    cpu = sampler(clocks)
    clocks.advance(REFRESH_S, machine_busy=0.0, own=0.01)
    assert cpu.fraction() == 1.0


def test_reads_this_machine_and_only_the_usable_cores() -> None:
    everything = machine_busy_s()
    cpus = usable_cpus()
    assert cpus
    mine = machine_busy_s(cpus)
    assert everything is not None  # Linux, as CI
    assert mine is not None
    assert 0.0 < mine <= everything + 1.0  # read a moment later
    assert machine_busy_s([10_000]) is None  # no such CPU: nothing measured


def test_needs_a_process() -> None:
    with pytest.raises(ValueError, match="processes"):
        CpuShare(0)
