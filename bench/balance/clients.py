"""The three ways bench/balance spreads calls over the backends, as load-generator clients.

Each sender process makes one `PolicyClient` from a picklable `ClientSpec`
(`bench.harness.loadgen.LoadGenerator.prepare_client`):

- ``p2c``: one ``rpckit.BalancedChannel`` over all the backends (its default config);
- ``round_robin``: one plain grpc channel to ``ipv4:127.0.0.1:p1,127.0.0.1:p2,...`` with the
  service config ``{"loadBalancingConfig": [{"round_robin": {}}]}`` (grpc core's own policy);
- ``random``: one grpc channel per backend, one picked uniformly at random per call.

Calls are ``.future()`` calls fired on schedule (open loop), with the time left of the
deadline as their timeout, like the harness's own gRPC client. Each record carries the pid of
the backend that answered: from the reply, or from the rpckit load report
(``rpckit-load-bin``) that an rpckit server puts on its errors too; 0 when nobody answered
(the client's own timeout, a connection error).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from typing import Any, Literal

from bench.harness.loadgen import CONNECT_TIMEOUT_S, WORK_METHOD, FutureCalls, check_loopback
from bench.harness.stats import Outcome

Policy = Literal["p2c", "round_robin", "random"]
POLICIES: tuple[Policy, ...] = ("p2c", "round_robin", "random")

ROUND_ROBIN_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientSpec:
    """What a sender needs to build its client; calling it builds one (in the sender)."""

    policy: Policy
    addresses: tuple[str, ...]  # loopback HOST:PORT of every backend
    wait_ms: float  # asked of each call (the backends multiply it by their slowdown)
    payload_bytes: int = 16
    seed: int = 0  # of the random policy's picks

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}")
        if not self.addresses:
            raise ValueError("need at least one backend address")
        for address in self.addresses:
            check_loopback(address)

    def __call__(self) -> PolicyClient:
        return PolicyClient(self)


def round_robin_target(addresses: tuple[str, ...]) -> str:
    """grpc's target naming every backend (``ipv4:`` takes a comma-separated address list)."""
    return "ipv4:" + ",".join(addresses)


class PolicyClient(FutureCalls):
    """One sender's client for one policy (see the module docstring)."""

    def __init__(self, spec: ClientSpec) -> None:
        import grpc

        import rpckit
        from bench._gen.benchwork.v1 import work_pb2

        self._grpc = grpc
        self._load_from_metadata = rpckit.load_from_metadata
        self._rng = random.Random(spec.seed)
        self._closables: list[Any] = []
        serializer = work_pb2.DoRequest.SerializeToString
        deserializer = work_pb2.DoResponse.FromString
        channels: list[grpc.Channel]
        if spec.policy == "p2c":
            balanced = rpckit.BalancedChannel(list(spec.addresses))
            self._closables.append(balanced)
            wait_all_serving(balanced, len(spec.addresses))
            channels = [balanced]
        elif spec.policy == "round_robin":
            channels = [
                grpc.insecure_channel(
                    round_robin_target(spec.addresses),
                    options=[("grpc.service_config", ROUND_ROBIN_SERVICE_CONFIG)],
                )
            ]
        else:
            channels = [grpc.insecure_channel(address) for address in spec.addresses]
        if spec.policy != "p2c":
            self._closables += channels
            for channel in channels:
                grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
        self._calls = [
            channel.unary_unary(
                WORK_METHOD, request_serializer=serializer, response_deserializer=deserializer
            )
            for channel in channels
        ]
        super().__init__(
            work_pb2.DoRequest(cpu_ms=0, wait_ms=spec.wait_ms, payload=b"x" * spec.payload_bytes)
        )

    def _pick(self) -> Any:
        return self._calls[0] if len(self._calls) == 1 else self._rng.choice(self._calls)

    def _pid(self, future: Any, outcome: Outcome) -> int:
        del outcome  # a late OK still names its backend
        if future.code() is self._grpc.StatusCode.OK:
            return int(future.result().pid)
        report = self._load_from_metadata(future.trailing_metadata())
        return int(report.pid) if report is not None else 0

    def close(self) -> None:
        for closable in self._closables:
            closable.close()


def wait_all_serving(channel: Any, backends: int) -> None:
    """Until the balanced channel sees every backend SERVING (bounded), like channel_ready."""
    give_up_at = time.monotonic() + CONNECT_TIMEOUT_S
    while time.monotonic() < give_up_at:
        statuses = channel.backends()
        if len(statuses) == backends and all(status.serving for status in statuses):
            return
        time.sleep(0.02)
    raise TimeoutError(f"not every backend was SERVING within {CONNECT_TIMEOUT_S:g} s")
