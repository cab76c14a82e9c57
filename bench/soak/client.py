"""The soak's client: one ``rpckit.BalancedChannel`` over every backend per sender process,
with ``benchwork.v1.Work/Do`` marked idempotent, firing ``.future()`` calls on schedule.

A call that never reported back is recorded by the harness as lost without its scheduled time;
`attribute_lost` gives each lost record the time of a call that was fired and never recorded, so
the soak's table puts lost calls in the seconds they were sent.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.balance.clients import wait_all_serving
from bench.harness.loadgen import WORK_METHOD, FutureCalls, RawRecord, check_loopback
from bench.harness.stats import Outcome
from bench.soak.results import LOST_CODE


@dataclasses.dataclass(frozen=True, kw_only=True)
class SoakClientSpec:
    """What a sender needs to build its client; calling it builds one (in the sender)."""

    addresses: tuple[str, ...]  # loopback HOST:PORT of every backend
    cpu_ms: float
    wait_ms: float
    payload_bytes: int = 16
    details: bool = False  # a failure's code carries its status message (for diagnosis)

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ValueError("need at least one backend address")
        for address in self.addresses:
            check_loopback(address)

    def __call__(self) -> SoakClient:
        return SoakClient(self)


def attribute_lost(fired: Sequence[float], records: Sequence[RawRecord]) -> list[RawRecord]:
    """``records`` with each lost record (code LOST_CODE) given the scheduled time of a fired
    call that has no other record (pure; calls are told apart by their scheduled time)."""
    unrecorded = Counter(fired)
    unrecorded.subtract(raw[0] for raw in records if raw[3] != LOST_CODE)
    missing = sorted(unrecorded.elements())
    out: list[RawRecord] = []
    for raw in records:
        if raw[3] == LOST_CODE:
            scheduled = missing.pop(0) if missing else raw[0]
            out.append((scheduled, raw[1], Outcome.ERROR.value, LOST_CODE, 0, raw[5]))
        else:
            out.append(raw)
    return out


class SoakClient(FutureCalls):
    """One sender's balanced client (see the module docstring)."""

    def __init__(self, spec: SoakClientSpec) -> None:
        import rpckit
        from bench._gen.benchwork.v1 import work_pb2

        self._channel = rpckit.BalancedChannel(
            list(spec.addresses),
            config=rpckit.BalancedChannelConfig(idempotent_methods=frozenset({WORK_METHOD})),
        )
        wait_all_serving(self._channel, len(spec.addresses))
        self._call = self._channel.unary_unary(
            WORK_METHOD,
            request_serializer=work_pb2.DoRequest.SerializeToString,
            response_deserializer=work_pb2.DoResponse.FromString,
        )
        self._fired: list[float] = []
        self._details = spec.details
        super().__init__(
            work_pb2.DoRequest(
                cpu_ms=spec.cpu_ms, wait_ms=spec.wait_ms, payload=b"x" * spec.payload_bytes
            )
        )

    def _pick(self) -> Any:
        return self._call

    def fire(self, scheduled_s: float, due: float, deadline_s: float) -> None:
        self._fired.append(scheduled_s)
        super().fire(scheduled_s, due, deadline_s)

    def _pid(self, future: Any, outcome: Outcome) -> int:
        return int(future.result().pid) if outcome is Outcome.OK else 0

    def _describe(self, future: Any, code_name: str) -> str:
        if not self._details:
            return code_name
        import rpckit

        report = rpckit.load_from_metadata(future.trailing_metadata() or ())
        where = f" [backend pid {report.pid}]" if report is not None else ""
        return f"{code_name}: {future.details()!s:.90}{where}"

    def wait_all(self, until: float) -> list[RawRecord]:
        fired, self._fired = self._fired, []
        return attribute_lost(fired, super().wait_all(until))

    def close(self) -> None:
        self._channel.close()
