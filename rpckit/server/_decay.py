"""A time-decayed mean: each sample weighs 1, and old samples fade by half every half-life.

Used where an estimate must follow what the calls do now at any call rate and forget a
spell within seconds: a method's service time (:mod:`rpckit.server._admission`), the share of
a run that computes (:mod:`rpckit.server._compute`), a method's share of heavy calls
(:mod:`rpckit.server._switch`). Pure: the caller passes ``now``.
"""

from __future__ import annotations

__all__ = ["DecayedMean"]


class DecayedMean:
    """Time-decayed mean of the samples given to :meth:`add` (the first one to the
    constructor)."""

    __slots__ = ("estimate", "updated_at", "weight", "weighted_sum")

    def __init__(self, value: float, now: float) -> None:
        self.weighted_sum = value
        self.weight = 1.0
        self.estimate = value
        self.updated_at = now

    def add(self, value: float, now: float, half_life_s: float) -> None:
        elapsed = now - self.updated_at
        if elapsed > 0.0:
            decay = 0.5 ** (elapsed / half_life_s)
            self.weighted_sum *= decay
            self.weight *= decay
            self.updated_at = now
        self.weighted_sum += value
        self.weight += 1.0
        self.estimate = self.weighted_sum / self.weight
