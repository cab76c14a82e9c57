"""ComputeShare: how many calls in flight keep a core computing (pure; no clocks or threads)."""

from __future__ import annotations

import pytest

from rpckit.server._compute import ComputeConfig, ComputeShare


def fed(cpu_s: float, fastest_s: float | None, *, calls: int, rate: float = 100.0) -> ComputeShare:
    share = ComputeShare()
    feed(share, cpu_s, fastest_s, calls=calls, rate=rate, start=0.0)
    return share


def feed(
    share: ComputeShare,
    cpu_s: float,
    fastest_s: float | None,
    *,
    calls: int,
    rate: float,
    start: float,
) -> float:
    """``calls`` calls ending ``rate`` a second from ``start``; returns the time after the last."""
    now = start
    for _ in range(calls):
        share.observe(cpu_s, fastest_s, now)
        now += 1.0 / rate
    return now


def test_before_any_call_every_call_counts_as_computing() -> None:
    share = ComputeShare()
    assert share.share == 1.0
    assert share.calls_per_slot() == 1.0
    assert share.floor(1.0, threads=64) == 1


def test_a_cpu_bound_method_keeps_one_call_per_core_share() -> None:
    share = fed(0.005, 0.005, calls=50)
    assert share.calls_per_slot() == pytest.approx(1.0)
    assert share.floor(1.0, threads=64) == 1
    assert share.floor(0.5, threads=64) == 1  # never below one call


def test_a_method_that_mostly_waits_gets_a_core_share_of_computing_calls() -> None:
    # bench/soak's method: ~1.3 ms of CPU in a run of 11.5 ms at best.
    share = fed(0.0013, 0.0115, calls=200)
    assert share.calls_per_slot() == pytest.approx(0.0115 / 0.0013)
    assert share.floor(1.0, threads=64) == 8  # rounded down: no more than the share computes
    assert share.floor(0.5, threads=64) == 4
    assert share.floor(1.0, threads=5) == 5  # never more than the threads


def test_the_seed_profile_on_four_processes_shares_out_what_rounding_leaves() -> None:
    share = fed(0.0055, 0.0255, calls=200)  # 5 ms CPU + 20 ms wait, grpcio's work included
    assert share.floor(0.5, threads=64) == 2  # one process alone: rounded down
    # 4.64 calls per computing call, half a core each: 2.32 per process, 9.27 in all. One
    # of the four takes the call the others' rounding left: 9, not 8 (nor 12).
    floors = [share.floor(0.5, threads=64, processes=4, index=i) for i in range(4)]
    assert floors == [3, 2, 2, 2]
    assert sum(floors) <= 4 * 0.5 * share.calls_per_slot()


@pytest.mark.parametrize("processes", [1, 2, 3, 5, 8, 16])
@pytest.mark.parametrize("cpu_ms", [0.3, 1.3, 2.0, 5.5, 9.0, 25.5])
def test_the_processes_floors_together_never_exceed_the_cores_nor_miss_a_whole_call(
    processes: int, cpu_ms: float
) -> None:
    """Worst inputs: fractions just under and over a whole call, many processes, and a
    CPU-bound method (one call each, the floor's own minimum)."""
    share = fed(cpu_ms / 1000, 0.0255, calls=200)
    core_share = min(1.0, 2 / processes)  # two cores
    exact = processes * core_share * share.calls_per_slot()
    floors = [
        share.floor(core_share, threads=256, processes=processes, index=i) for i in range(processes)
    ]
    assert all(f >= 1 for f in floors)
    if min(floors) > 1 or exact >= processes:  # not held up by the one-call minimum
        assert exact - 1 < sum(floors) <= exact + 1e-6
    assert max(floors) - min(floors) <= 1


def test_the_floor_rejects_impossible_process_counts() -> None:
    share = fed(0.0055, 0.0255, calls=10)
    with pytest.raises(ValueError, match="processes"):
        share.floor(0.5, threads=64, processes=0)
    with pytest.raises(ValueError, match="index"):
        share.floor(0.5, threads=64, processes=4, index=-1)


def test_contention_does_not_make_a_computing_call_look_asleep() -> None:
    # Runs stretched to 100 ms by calls around them still computed 5 of their fastest 25 ms:
    # the share is taken against the fastest run, not the call's own.
    share = fed(0.005, 0.025, calls=100)
    assert share.share == pytest.approx(0.2)


def test_an_unknown_fastest_run_counts_as_computing_throughout() -> None:
    share = fed(0.001, None, calls=10)
    assert share.share == 1.0
    assert fed(0.001, 0.0, calls=10).share == 1.0


def test_calls_that_only_sleep_are_capped() -> None:
    share = fed(0.0, 0.8, calls=50)
    assert share.calls_per_slot() == ComputeConfig().max_calls_per_slot
    capped = ComputeShare(ComputeConfig(max_calls_per_slot=4.0))
    feed(capped, 0.0, 0.8, calls=50, rate=100.0, start=0.0)
    assert capped.floor(1.0, threads=64) == 4


def test_calls_turning_cpu_bound_after_a_sleepy_spell_bring_the_floor_back() -> None:
    """The worst input: the floor was made for sleepers; then the calls compute. Within a few
    half-lives of CPU-bound calls the floor is one call a core share again."""
    share = ComputeShare()
    now = feed(share, 0.0005, 0.2, calls=500, rate=100.0, start=0.0)  # io-like: capped
    assert share.floor(1.0, threads=64) == 16
    now = feed(share, 0.005, 0.005, calls=100, rate=100.0, start=now)  # one second of them
    assert share.floor(1.0, threads=64) <= 2
    feed(share, 0.005, 0.005, calls=200, rate=100.0, start=now)
    assert share.floor(1.0, threads=64) == 1


def test_old_calls_fade_whatever_the_rate() -> None:
    # A thousand sleepy calls long ago weigh less than a few CPU-bound calls now.
    share = ComputeShare()
    feed(share, 0.0, 0.1, calls=1000, rate=1000.0, start=0.0)
    feed(share, 0.004, 0.004, calls=5, rate=10.0, start=20.0)
    assert share.share > 0.99


@pytest.mark.parametrize("cpu_s", [-0.001, float("nan"), float("inf")])
def test_a_bad_cpu_time_is_refused(cpu_s: float) -> None:
    with pytest.raises(ValueError, match="cpu_s"):
        ComputeShare().observe(cpu_s, 0.01, 0.0)


def test_a_core_share_must_be_positive() -> None:
    with pytest.raises(ValueError, match="core_share"):
        ComputeShare().floor(0.0, threads=8)


@pytest.mark.parametrize(
    ("field", "value"), [("half_life_s", 0.0), ("half_life_s", -1.0), ("max_calls_per_slot", 0.5)]
)
def test_config_is_validated(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        ComputeConfig(**{field: value})
