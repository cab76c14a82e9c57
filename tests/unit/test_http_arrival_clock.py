"""The kernel's receive stamp (wall clock) on the server's monotonic clock (pure)."""

from __future__ import annotations

import pytest

from rpckit.http._server._arrival import MAX_ARRIVAL_AGE_S, arrival_on_monotonic

NOW_WALL = 1_800_000_000.0
NOW_MONO = 5_000.0


@pytest.mark.parametrize("age_s", [0.0, 0.003, 0.3, 12.5, MAX_ARRIVAL_AGE_S])
def test_a_stamp_is_as_old_on_the_monotonic_clock_as_on_the_wall_clock(age_s: float) -> None:
    arrived = arrival_on_monotonic(NOW_WALL - age_s, now_wall=NOW_WALL, now_monotonic=NOW_MONO)
    assert arrived == pytest.approx(NOW_MONO - age_s)


@pytest.mark.parametrize(
    "stamp_wall",
    [
        NOW_WALL + 0.5,  # the wall clock stepped back while the bytes waited
        NOW_WALL - MAX_ARRIVAL_AGE_S - 1,  # ... or forward by more than any wait
        NOW_WALL - 3600 * 24,
    ],
)
def test_an_implausible_stamp_counts_the_request_from_now(stamp_wall: float) -> None:
    assert arrival_on_monotonic(stamp_wall, now_wall=NOW_WALL, now_monotonic=NOW_MONO) == NOW_MONO
