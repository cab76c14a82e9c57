"""Whose CPU is it (rpckit.server._cpu): the share rule, and the sampler with fake clocks."""

from __future__ import annotations

import pytest

from rpckit.server._cpu import REFRESH_S, CpuShare, machine_busy_s, share


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
    )


def test_the_share_follows_who_uses_the_cpu_and_recovers() -> None:
    clocks = Clocks()
    cpu = sampler(clocks)
    assert cpu.fraction() == 1.0  # nothing measured yet
    clocks.advance(REFRESH_S, machine_busy=2 * REFRESH_S, own=0.1 * REFRESH_S)  # a neighbour
    assert cpu.fraction() == pytest.approx(0.05)
    clocks.advance(REFRESH_S, machine_busy=REFRESH_S, own=REFRESH_S)  # the neighbour left
    assert cpu.fraction() == pytest.approx(1.0)


def test_measured_at_most_every_refresh_interval() -> None:
    clocks = Clocks()
    cpu = sampler(clocks)
    clocks.advance(REFRESH_S, machine_busy=1.0, own=0.5)
    first = cpu.fraction()
    clocks.advance(REFRESH_S / 2, machine_busy=1.0, own=0.0)
    assert cpu.fraction() == first  # too soon: the last measurement stands


def test_no_proc_stat_counts_every_wait_as_ours() -> None:
    clocks = Clocks()
    clocks.machine = None
    cpu = sampler(clocks)
    clocks.advance(REFRESH_S, machine_busy=0.0, own=0.01)
    assert cpu.fraction() == 1.0


def test_reads_this_machine() -> None:
    busy = machine_busy_s()
    assert busy is None or busy > 0.0


def test_needs_a_process() -> None:
    with pytest.raises(ValueError, match="processes"):
        CpuShare(0)
