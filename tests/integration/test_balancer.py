"""rpckit's BalancedChannel against real servers on 127.0.0.1: shapes, health, retries, restarts.

In-process servers (``rpckit.testing.running``) where the test needs to count or
steer what each backend sees; ``rpckit serve`` subprocesses where it needs
signals, ``kill -9`` or several worker processes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import itertools
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from rpckit import AdmissionConfig, BalancedChannel, BalancedChannelConfig
from rpckit.client._p2c import PickerConfig
from rpckit.testing import RunningServer, running
from tests.integration.balancer_app import BalancerProbe, Failure
from tests.integration.conftest import ServeProcess

Serve = Callable[..., ServeProcess]
APP = "tests.integration.balancer_app:servicers"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"

# Quick health polling so restarts and state changes show within a fraction of a second;
# a 1 s latency memory so one slow reply on a starved test machine does not keep a backend
# out of P2C's favour for the rest of the test.
FAST = BalancedChannelConfig(
    health_backoff_initial_s=0.05,
    health_backoff_max_s=0.5,
    wait_for_backend_s=20.0,
    picker=PickerConfig(decay_s=1.0),
)

GetItem = inventory_pb2.GetItemRequest


def _create(sku: str) -> inventory_pb2.CreateItemRequest:
    return inventory_pb2.CreateItemRequest(item=inventory_pb2.Item(sku=sku))


# ---------------------------------------------------------------- helpers


def balancer_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("rpckit-balancer")]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` every 10 ms until true; fail naming ``what`` after ``timeout``."""
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# These tests count attempts: the in-process servers' admission control must not shed
# (on a starved machine CoDel would, and a shed attempt is retried like any other).
NO_SHEDDING = AdmissionConfig(codel_target_s=60.0, codel_interval_s=60.0)


@contextlib.contextmanager
def probes(*probes: BalancerProbe) -> Iterator[list[RunningServer]]:
    """Serve each probe in its own in-process rpckit server."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(running([p], admission=NO_SHEDDING)) for p in probes]


class Load:
    """Threads calling ``call(i)`` until stopped, bounded by ``max_calls`` and ``max_s``."""

    def __init__(
        self,
        call: Callable[[int], object],
        *,
        threads: int = 3,
        max_calls: int = 3000,
        max_s: float = 90.0,
    ) -> None:
        self._call = call
        self._max_calls = max_calls
        self._give_up = time.monotonic() + max_s
        self._stop = threading.Event()
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self.ok = 0
        self.failures: list[tuple[int, grpc.RpcError]] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    @property
    def done(self) -> int:
        with self._lock:
            return self.ok + len(self.failures)

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._give_up:
            number = next(self._numbers)
            if number >= self._max_calls:
                return
            try:
                self._call(number)
            except grpc.RpcError as error:
                with self._lock:
                    self.failures.append((number, error))
            else:
                with self._lock:
                    self.ok += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in self._threads)


def _codes(failures: list[tuple[int, grpc.RpcError]]) -> Counter[str]:
    return Counter(error.code().name for _, error in failures)


# ---------------------------------------------------------------- call shapes


def test_generated_stubs_work_for_all_four_call_shapes() -> None:
    servers = [BalancerProbe("p0"), BalancerProbe("p1")]
    with probes(*servers) as live:
        channel = BalancedChannel([s.address for s in live], config=FAST)
        with channel:
            grpc.channel_ready_future(channel).result(timeout=20)
            stub = inventory_pb2_grpc.InventoryStub(channel)

            # unary-unary: __call__, with_call (trailers carry the load report), future
            assert stub.GetItem(GetItem(sku="A-1"), timeout=10).name in {"p0", "p1"}
            _, call = stub.GetItem.with_call(GetItem(sku="A-2"), timeout=10)
            assert call.code() is grpc.StatusCode.OK
            assert rpckit.load_from_metadata(call.trailing_metadata()) is not None
            future = stub.CreateItem.future(_create("B-1"), timeout=10)
            assert future.result(timeout=10).sku == "B-1"
            assert (future.done(), future.code()) == (True, grpc.StatusCode.OK)
            with pytest.raises(grpc.RpcError) as missing:
                stub.UpdateItem(inventory_pb2.UpdateItemRequest(), timeout=10)
            assert missing.value.code() is grpc.StatusCode.UNIMPLEMENTED

            # unary-stream
            watched = stub.WatchLowStock(
                inventory_pb2.WatchLowStockRequest(threshold=3), timeout=10
            )
            assert [i.sku for i in watched] == ["S-0", "S-1", "S-2"]
            assert watched.code() is grpc.StatusCode.OK

            # stream-unary: the reflection method with one request has one response
            list_services = reflection_pb2.ServerReflectionRequest(list_services="")
            reflect_once = channel.stream_unary(
                REFLECTION,
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            reply = reflect_once(iter([list_services]), timeout=10)
            names = {s.name for s in reply.list_services_response.service}
            assert "inventory.v1.Inventory" in names
            reply, call = reflect_once.with_call(iter([list_services]), timeout=10)
            assert call.code() is grpc.StatusCode.OK
            assert reflect_once.future(iter([list_services]), timeout=10).result(timeout=10)

            # stream-stream, through the generated reflection stub
            by_symbol = reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="inventory.v1.Inventory"
            )
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = list(reflection.ServerReflectionInfo(iter([list_services, by_symbol]), 10))
            assert len(replies) == 2
            assert replies[1].file_descriptor_response.file_descriptor_proto

            # health through the same channel, and calls spread over both backends
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert check.status == health_pb2.HealthCheckResponse.SERVING

            def spread() -> bool:
                held = [stub.GetItem.future(GetItem(sku="hold:50"), timeout=10) for _ in range(8)]
                return {f.result(timeout=10).name for f in held} == {"p0", "p1"}

            wait_for(spread, "concurrent calls answered by both backends")
            assert len(channel.backends()) == 2
        assert balancer_threads() == []
        with pytest.raises(ValueError, match="closed"):
            stub.GetItem(GetItem(sku="A-1"), timeout=10)


def test_bad_targets_and_config_are_rejected_naming_them() -> None:
    with pytest.raises(ValueError, match="no targets"):
        BalancedChannel([])
    with pytest.raises(ValueError, match=r"'127\.0\.0\.1'"):
        BalancedChannel(["127.0.0.1"])
    with pytest.raises(ValueError, match=r"dns://8\.8\.8\.8/x:1"):
        BalancedChannel("dns://8.8.8.8/x:1")
    with pytest.raises(TypeError, match="BalancedChannelConfig"):
        BalancedChannel("127.0.0.1:1", config=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="connections_per_backend"):
        BalancedChannelConfig(connections_per_backend=0)
    with pytest.raises(ValueError, match="idempotent_methods"):
        BalancedChannelConfig(idempotent_methods=frozenset({"GetItem"}))
    assert balancer_threads() == []


# ---------------------------------------------------------------- health


def test_a_not_serving_backend_gets_no_new_calls_within_1_s() -> None:
    servers = [BalancerProbe(f"p{i}") for i in range(3)]
    victim, others = servers[0], servers[1:]
    with probes(*servers) as live, BalancedChannel([s.address for s in live], config=FAST) as ch:
        stub = inventory_pb2_grpc.InventoryStub(ch)
        load = Load(lambda i: stub.GetItem(GetItem(sku="hold:10"), timeout=10), max_calls=2000)
        with load:
            wait_for(
                lambda: all(p.calls["GetItem"] >= 5 for p in servers), "calls on every backend"
            )
            flipped_at = time.monotonic()
            assert live[0].server.health is not None
            live[0].server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)

            def served_since_grace(probe: BalancerProbe) -> int:
                return sum(1 for t in list(probe.started_at) if t > flipped_at + 1.0)

            wait_for(
                lambda: all(served_since_grace(p) >= 60 for p in others),
                "steady load on the serving backends for a while after the grace second",
            )
        assert served_since_grace(victim) == 0
        assert load.failures == []
        assert not next(b for b in ch.backends() if b.address == live[0].address).serving


def test_watch_is_cancelled_on_not_serving_so_a_plain_grpc_server_stops_at_once() -> None:
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        server = grpc.server(pool)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        inventory_pb2_grpc.add_InventoryServicer_to_server(BalancerProbe("plain"), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            with BalancedChannel(f"127.0.0.1:{port}", config=FAST) as channel:
                stub = inventory_pb2_grpc.InventoryStub(channel)
                assert stub.GetItem(GetItem(sku="A-1"), timeout=10).name == "plain"
                wait_for(
                    lambda: all(c.health == "serving" for c in channel.backends()[0].connections),
                    "every connection watching",
                )
                servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
                wait_for(lambda: not channel.backends()[0].serving, "the backend out of rotation")
                # An open Watch would hold stop() for the whole 60 s grace period.
                assert server.stop(grace=60).wait(timeout=15)
        finally:
            server.stop(grace=None)
    assert balancer_threads() == []


# ---------------------------------------------------------------- retries


def test_retries_only_when_safe_and_on_another_backend() -> None:
    # Each call's first attempt fails, on whichever backend it lands; a retry succeeds.
    first_attempts: set[str] = set()
    broken = Failure(
        grpc.StatusCode.UNAVAILABLE, "handler lost its database", first_attempt_of=first_attempts
    )
    methods = ("GetItem", "CreateItem", "WatchLowStock")
    went_to: dict[str, list[str]] = {}
    pair = [
        BalancerProbe(name, failures=dict.fromkeys(methods, broken), attempts=went_to)
        for name in ("a", "b")
    ]
    config = dataclasses.replace(FAST, outlier=None)  # no ejection: both stay candidates
    calls = 15
    with probes(*pair) as live, BalancedChannel([s.address for s in live], config=config) as ch:
        stub = inventory_pb2_grpc.InventoryStub(ch)
        wait_for(lambda: all(b.serving for b in ch.backends()), "both backends serving")

        # Idempotent (NO_SIDE_EFFECTS in the proto): retried on the other backend, for
        # blocking calls, futures, and server streams (until their first message).
        for i in range(calls):
            assert stub.GetItem(GetItem(sku=f"get-{i}"), timeout=10).name == went_to[f"get-{i}"][1]
        futures = {
            f"future-{i}": stub.GetItem.future(GetItem(sku=f"future-{i}"), timeout=10)
            for i in range(calls)
        }
        for sku, future in futures.items():
            assert future.result(timeout=10).name == went_to[sku][1]
        for threshold in range(1, calls + 1):
            low = inventory_pb2.WatchLowStockRequest(threshold=threshold)
            names = [item.name for item in stub.WatchLowStock(low, timeout=10)]
            assert names == [went_to[f"low:{threshold}"][1]] * threshold

        # Not idempotent, and the handler ran: never retried.
        for i in range(calls):
            with pytest.raises(grpc.RpcError) as failed:
                stub.CreateItem(_create(f"create-{i}"), timeout=10)
            assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
            assert failed.value.details() == "handler lost its database"
    retried = {k: v for k, v in went_to.items() if not k.startswith("create-")}
    assert len(retried) == 3 * calls
    assert all(len(v) == 2 and v[0] != v[1] for v in retried.values()), retried
    assert all(len(v) == 1 for k, v in went_to.items() if k.startswith("create-"))

    # Rejected by admission control before any handler (rpckit's details, pushback): retried.
    shed = Failure(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "rpckit: server overloaded: queue full",
        pushback_ms=0,
        first_attempt_of=set(),
    )
    went_to.clear()
    pair = [BalancerProbe(name, failures={"CreateItem": shed}, attempts=went_to) for name in "ab"]
    with probes(*pair) as live, BalancedChannel([s.address for s in live], config=config) as ch:
        stub = inventory_pb2_grpc.InventoryStub(ch)
        wait_for(lambda: all(b.serving for b in ch.backends()), "both backends serving")
        held = {
            f"c-{i}": stub.CreateItem.future(_create(f"c-{i}"), timeout=10) for i in range(calls)
        }
        for sku, future in held.items():
            assert future.result(timeout=10).name == went_to[sku][1]
    assert all(len(v) == 2 and v[0] != v[1] for v in went_to.values())
    assert balancer_threads() == []


def test_a_backend_refusing_every_call_is_avoided_not_sought() -> None:
    # Admission refusals come back in a millisecond; learnt as latency they made a shedding
    # backend the cheapest one, so it drew every first attempt (and the retry budget).
    shed = Failure(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "rpckit: server overloaded: queued too long", 50
    )
    shedding, serving = BalancerProbe("shedding", failures={"GetItem": shed}), BalancerProbe("ok")
    config = dataclasses.replace(FAST, outlier=None)  # refusals are not faults anyway
    with (
        probes(shedding, serving) as live,
        BalancedChannel([s.address for s in live], config=config) as ch,
    ):
        stub = inventory_pb2_grpc.InventoryStub(ch)
        wait_for(lambda: all(b.serving for b in ch.backends()), "both backends serving")
        calls, end = 0, time.monotonic() + 3.0  # 3 decay times of FAST's picker
        while time.monotonic() < end:
            assert stub.GetItem(GetItem(sku="hold:5"), timeout=10).name == "ok"
            calls += 1
    # Probed again only as its estimate decays (then refused: +50 ms), about once a second.
    assert shedding.calls["GetItem"] <= 10, (shedding.calls, calls)
    assert calls > 50  # nearly every call went straight to the serving backend


def test_with_every_backend_failing_attempts_stay_within_the_retry_budget() -> None:
    broken = Failure(grpc.StatusCode.UNAVAILABLE, "down for maintenance")
    servers = [BalancerProbe(f"p{i}", failures={"GetItem": broken}) for i in range(3)]
    requests, threads = 500, 4
    with probes(*servers) as live, BalancedChannel([s.address for s in live], config=FAST) as ch:
        stub = inventory_pb2_grpc.InventoryStub(ch)
        wait_for(lambda: all(b.serving for b in ch.backends()), "every backend serving")
        started = time.monotonic()
        with Load(
            lambda i: stub.GetItem(GetItem(sku="x"), timeout=10),
            threads=threads,
            max_calls=requests,
        ) as load:
            wait_for(lambda: load.done == requests, "every request answered", timeout=60)
        elapsed = time.monotonic() - started
    attempts = sum(p.calls["GetItem"] for p in servers)
    budget = ch.config.retry_budget
    # Within any window the budget grants ratio x requests + min_per_s x window_s retries.
    bound = (1 + budget.ratio) * requests + budget.min_per_s * max(budget.window_s, elapsed)
    assert load.ok == 0
    assert _codes(load.failures) == {"UNAVAILABLE": requests}
    assert requests < attempts <= bound, (attempts, bound)


# ---------------------------------------------------------------- deadlines


def test_the_deadline_crosses_two_hops_and_an_explicit_timeout_only_shortens_it() -> None:
    with contextlib.ExitStack() as stack:
        (leaf,) = stack.enter_context(probes(BalancerProbe("leaf")))
        to_leaf = stack.enter_context(BalancedChannel(leaf.address))
        (middle,) = stack.enter_context(probes(BalancerProbe("middle", relay=to_leaf)))
        channel = stack.enter_context(BalancedChannel(middle.address))
        stub = inventory_pb2_grpc.InventoryStub(channel)
        # Below 1 s grpc sends the timeout to the millisecond: the margin shows.
        relayed = stub.GetItem(GetItem(sku="relay"), timeout=0.9)
        assert 0 < relayed.quantity < relayed.price_cents <= 900
        # Above, grpc rounds it up (by up to 100 ms): the next hop gets about the same.
        relayed = stub.GetItem(GetItem(sku="relay"), timeout=5)
        assert abs(relayed.quantity - relayed.price_cents) < 150
        assert 4000 < relayed.price_cents <= 5100
        shortened = stub.GetItem(GetItem(sku="relay:0.5"), timeout=5)
        assert 0 < shortened.quantity <= 500
        not_lengthened = stub.GetItem(GetItem(sku="relay:60"), timeout=5)
        assert 0 < not_lengthened.quantity <= 5100
        unbounded = stub.GetItem(GetItem(sku="relay"))
        assert (unbounded.quantity, unbounded.price_cents) == (-1, -1)
        # grpcio's "no deadline" value (context.time_remaining() without one) means none.
        assert stub.GetItem(GetItem(sku="deadline"), timeout=9.2e18).quantity == -1
    assert balancer_threads() == []


# ---------------------------------------------------------------- discovery


def test_dns_targets_are_re_resolved_with_an_injected_resolver() -> None:
    servers = [BalancerProbe(f"p{i}") for i in range(3)]
    with probes(*servers) as live:
        pairs = [("127.0.0.1", int(s.address.rsplit(":", 1)[1])) for s in live]
        answer: list[object] = [[pairs[0]]]
        asked: list[tuple[str, int]] = []

        def resolver(host: str, port: int) -> list[tuple[str, int]]:
            asked.append((host, port))
            current = answer[0]
            if isinstance(current, Exception):
                raise current
            assert isinstance(current, list)
            return current

        config = dataclasses.replace(FAST, resolve_interval_s=0.05)
        target = "dns:///inventory.test:50051"
        with BalancedChannel(target, config=config, resolver=resolver) as channel:
            stub = inventory_pb2_grpc.InventoryStub(channel)
            assert {stub.GetItem(GetItem(sku="x"), timeout=10).name for _ in range(5)} == {"p0"}
            assert asked[0] == ("inventory.test", 50051)

            in_flight = stub.GetItem.future(GetItem(sku="hold:1000"), timeout=20)
            wait_for(lambda: servers[0].calls["GetItem"] == 6, "the long call started on p0")
            answer[0] = [pairs[1], pairs[2]]
            wanted = {live[1].address, live[2].address}
            wait_for(
                lambda: {b.address for b in channel.backends() if b.serving} == wanted,
                "p0 replaced by p1 and p2, both serving",
            )

            def spread_over_new_backends() -> bool:
                held = [stub.GetItem.future(GetItem(sku="hold:50"), timeout=10) for _ in range(8)]
                names = {f.result(timeout=10).name for f in held}
                assert names <= {"p1", "p2"}
                return names == {"p1", "p2"}

            wait_for(spread_over_new_backends, "concurrent calls answered by p1 and p2")
            assert in_flight.result(timeout=20).name == "p0"  # removal dropped no call
            assert servers[0].calls["GetItem"] == 6

            failures: list[object] = [OSError("name server down"), []]
            for failure in failures:
                answer[0] = failure
                wanted_resolutions = len(asked) + 3

                def resolved_again(count: int = wanted_resolutions) -> bool:
                    return len(asked) >= count

                wait_for(resolved_again, "a few more resolutions")
                assert {b.address for b in channel.backends()} == wanted  # last answer kept
                assert stub.GetItem(GetItem(sku="x"), timeout=10).name in {"p1", "p2"}
        assert balancer_threads() == []


# ---------------------------------------------------------------- real processes


def reach_every_worker(channel: BalancedChannel, workers: set[int]) -> None:
    """Call until the channel's connections reach every one of ``workers`` (bounded)."""
    stub = inventory_pb2_grpc.InventoryStub(channel)

    def reached() -> set[int | None]:
        return {c.worker_pid for b in channel.backends() for c in b.connections}

    for _ in range(300):  # bounded warm-up: connections are redialed until all are reached
        stub.GetItem(GetItem(sku="warm"), timeout=10)
        if reached() == workers:
            break
    assert reached() == workers


def test_a_multi_process_backend_gets_load_on_both_workers(serve: Serve) -> None:
    server = serve(APP, "--workers", "2", "--drain", "0.2")
    workers = set(server.announcement["pids"])
    with BalancedChannel(server.address, config=FAST) as channel:
        stub = inventory_pb2_grpc.InventoryStub(channel)
        reach_every_worker(channel, workers)
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            answers = pool.map(
                lambda _: stub.GetItem(GetItem(sku="hold:5"), timeout=20).quantity, range(400)
            )
            per_worker = Counter(answers)
    assert set(per_worker) == workers
    assert max(per_worker.values()) / min(per_worker.values()) <= 1.2, per_worker
    assert server.terminate() == 0


def test_a_rolling_restart_under_steady_load_fails_no_call(serve: Serve) -> None:
    drain = ("--drain", "1.0")
    backends = [serve(APP, *drain) for _ in range(3)]
    with BalancedChannel([b.address for b in backends], config=FAST) as channel:
        stub = inventory_pb2_grpc.InventoryStub(channel)

        def call(i: int) -> object:
            if i % 2:
                return stub.CreateItem(_create("hold:40"), timeout=20)
            return stub.GetItem(GetItem(sku="hold:40"), timeout=20)

        with Load(call, threads=3, max_calls=4000) as load:
            for index, old in enumerate(backends):
                before = load.done
                old.proc.send_signal(signal.SIGTERM)
                assert old.proc.wait(timeout=30) == 0
                backends[index] = serve(APP, "--grpc", old.address, *drain)

                def back_in_rotation(address: str = old.address) -> bool:
                    return any(b.serving for b in channel.backends() if b.address == address)

                def calls_after_restart(before: int = before) -> bool:
                    return load.done >= before + 60

                wait_for(back_in_rotation, f"{old.address} back in rotation")
                wait_for(calls_after_restart, "calls after the restart")
        restarted = {b.proc.pid for b in backends}
        assert load.failures == [], _codes(load.failures)
        assert load.ok > 200
        answered_by = Counter(
            stub.GetItem(GetItem(sku="who"), timeout=10).quantity for _ in range(30)
        )
        assert set(answered_by) <= restarted


def test_kill_9_fails_only_the_non_idempotent_calls_that_were_on_it(serve: Serve) -> None:
    backends = [serve(APP, "--drain", "0.2", "--threads", "16") for _ in range(3)]
    by_pid = {b.proc.pid: b for b in backends}
    with BalancedChannel([b.address for b in backends], config=FAST) as channel:
        stub = inventory_pb2_grpc.InventoryStub(channel)
        wait_for(lambda: sum(b.serving for b in channel.backends()) == 3, "three backends")
        steady = Load(lambda i: stub.GetItem(GetItem(sku="hold:20"), timeout=30), threads=3)
        with steady:
            creates: list[Any] = []
            gets: list[Any] = []
            for _ in range(long_calls := 8):  # interleaved, so P2C puts both kinds everywhere
                creates.append(stub.CreateItem.future(_create("hold:4000"), timeout=30))
                gets.append(stub.GetItem.future(GetItem(sku="hold:4000"), timeout=30))

            def long_calls_on(pid: int) -> Counter[str]:
                return Counter(
                    str(e["method"])
                    for e in by_pid[pid].events()
                    if e["event"] == "started" and e["sku"] == "hold:4000"
                )

            def victim_found() -> bool:
                placed = sum(sum(long_calls_on(pid).values()) for pid in by_pid)
                return placed == 2 * long_calls and any(
                    long_calls_on(pid)["CreateItem"] and long_calls_on(pid)["GetItem"]
                    for pid in by_pid
                )

            wait_for(victim_found, "long calls of both kinds on one backend")
            victim = next(
                pid
                for pid in by_pid
                if long_calls_on(pid)["CreateItem"] and long_calls_on(pid)["GetItem"]
            )
            on_victim = long_calls_on(victim)["CreateItem"]
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            by_pid[victim].proc.wait(timeout=30)

            failed_at: list[float] = []
            for f in creates:
                f.add_done_callback(lambda _: failed_at.append(time.monotonic()))
            create_errors = [f.exception(timeout=30) for f in creates]
            get_items = [f.result(timeout=30) for f in gets]  # idempotent: retried elsewhere
            steady_count = steady.done
            wait_for(lambda: steady.done >= steady_count + 30, "steady load after the kill")
        failed = [e for e in create_errors if e is not None]
        assert len(failed) == on_victim
        assert {e.code() for e in failed} == {grpc.StatusCode.UNAVAILABLE}
        # Promptly: long before the 4 s the handler would have worked (times are of all creates;
        # the failed ones ended first).
        assert sorted(failed_at)[on_victim - 1] - killed_at < 2.5
        assert all(item.quantity != victim for item in get_items)
        assert steady.failures == [], _codes(steady.failures)
