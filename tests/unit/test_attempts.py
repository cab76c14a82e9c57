"""Unit tests of the attempt engine (rpckit.client._attempts) under a fake clock, every call shape.

The engine is driven through the call objects stubs get (``_calls``' multicallables)
over a fake set of backends: each backend answers from a script, a fake clock
moves only when an attempt "takes" time or the engine sleeps, and a fake timer runs
a future's delayed retries. No sockets, threads or real sleeps; the same engine
runs the real channel (tests/integration/test_balancer.py).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpckit.client._attempts import AttemptEngine, LocalRpcError, Method, Plan
from rpckit.client._calls import StreamStream, StreamUnary, UnaryStream, UnaryUnary
from rpckit.client._config import BalancedChannelConfig
from rpckit.client._feedback import Feedback, Latency
from rpckit.client._retry import AdaptiveThrottleConfig, RetryBudgetConfig
from rpckit.core._load import encode_load
from rpckit.core._wire import PUSHBACK_METADATA_KEY, REJECTION_DETAILS_PREFIX
from rpckit.v1 import load_pb2

OK = grpc.StatusCode.OK
REPORT = encode_load(load_pb2.LoadReport(queue_depth=2, pid=99))
CONNECT_FAILED = "failed to connect to all addresses; last error: UNKNOWN: Connection refused"


# ---------------------------------------------------------------- fakes


class FakeClock:
    """Monotonic seconds that move only when told; ``sleep`` moves them."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self.closed = False  # a closed channel cuts every sleep short
        self.oversleep = 0.0  # a busy machine wakes sleepers late

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        if self.closed:
            return True
        self.now += seconds + self.oversleep
        return False


class FakeTimer:
    """The channel's scheduler, run by hand: ``run()`` fires due jobs in time order."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, list[Any]]] = []
        self._order = itertools.count()
        self.delays: list[float] = []

    def schedule(
        self, delay_s: float, fn: Callable[[], None], on_drop: Callable[[], None]
    ) -> Callable[[], None]:
        self.delays.append(delay_s)
        job = [fn, on_drop, False]
        heapq.heappush(self._heap, (self._clock.now + delay_s, next(self._order), job))

        def cancel() -> None:
            job[2] = True

        return cancel

    def run(self) -> None:
        while self._heap:
            due, _, job = heapq.heappop(self._heap)
            if not job[2]:
                self._clock.now = max(self._clock.now, due + self._clock.oversleep)
                job[0]()

    def close(self) -> None:
        """The channel closed: pending jobs are dropped (their ``on_drop`` runs)."""
        while self._heap:
            _, _, job = heapq.heappop(self._heap)
            if not job[2]:
                job[1]()

    @property
    def pending(self) -> int:
        return sum(1 for _, _, job in self._heap if not job[2])


@dataclasses.dataclass
class Step:
    """How a backend answers one attempt."""

    code: grpc.StatusCode = OK
    details: str = ""
    trailers: tuple[tuple[str, Any], ...] = (REPORT,)
    elapsed: float = 0.01  # fake seconds the attempt takes
    messages: int = 1  # for streams: messages sent before the status


def connect_failure(elapsed: float = 0.0) -> Step:
    """grpc core could not connect: made up in the client, no trailers."""
    return Step(grpc.StatusCode.UNAVAILABLE, CONNECT_FAILED, (), elapsed, 0)


def refusal(pushback_ms: int, elapsed: float = 0.0) -> Step:
    """An rpckit server's admission refusal: prefix, pushback and load report."""
    return Step(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"{REJECTION_DETAILS_PREFIX}queue full",
        (REPORT, (PUSHBACK_METADATA_KEY, str(pushback_ms))),
        elapsed,
        0,
    )


class FakeCall(grpc.RpcError, grpc.Call, grpc.Future):  # type: ignore[type-arg]
    """One attempt: grpcio's call, its error, its future and its response stream at once."""

    def __init__(self, backend: FakeBackend, step: Step, *, streaming: bool) -> None:
        super().__init__(step.details)
        self.backend = backend
        self.step = step
        self._code = step.code
        self._left = step.messages if streaming else 0
        self._done = not streaming  # unary attempts end at once; streams when drained
        self._callbacks: list[Callable[[Any], None]] = []

    def _end(self) -> None:
        self._done = True
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)

    # grpc.Call
    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self.step.details

    def trailing_metadata(self) -> Any:
        return self.step.trailers

    def initial_metadata(self) -> tuple[tuple[str, Any], ...]:
        return ()

    def is_active(self) -> bool:
        return not self._done

    def time_remaining(self) -> float | None:  # type: ignore[override]
        return None

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False

    # grpc.Future
    def cancel(self) -> bool:
        if self._done:
            return False
        self._code = grpc.StatusCode.CANCELLED
        self._end()
        return True

    def cancelled(self) -> bool:
        return self._code is grpc.StatusCode.CANCELLED

    def running(self) -> bool:
        return not self._done

    def done(self) -> bool:
        return self._done

    def result(self, timeout: float | None = None) -> Any:
        if self._code is not OK:
            raise self
        return f"response@{self.backend.address}"

    def exception(self, timeout: float | None = None) -> Any:
        return None if self._code is OK else self

    def traceback(self, timeout: float | None = None) -> Any:
        return None

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        if self._done:
            fn(self)
        else:
            self._callbacks.append(fn)

    # a response stream
    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._left > 0:
            self._left -= 1
            return f"message@{self.backend.address}"
        self._end()
        if self._code is OK:
            raise StopIteration
        raise self


class FakeMulticallable:
    """A backend's grpc multicallable: every call takes the backend's next scripted step."""

    def __init__(self, backend: FakeBackend, method: Method) -> None:
        self._backend = backend
        self._method = method

    def _attempt(
        self, request: Any, timeout: float | None, metadata: Any, *, streaming: bool
    ) -> FakeCall:
        backend = self._backend
        if self._method.kind in ("stream_unary", "stream_stream"):
            request = list(request)  # read the request stream, as grpc would
        backend.attempts.append((self._method.kind, request, timeout))
        backend.metadata.append(tuple(metadata or ()))
        if backend.refuse_send is not None:
            raise backend.refuse_send
        step = backend.script.pop(0) if backend.script else Step()
        backend.clock.now += step.elapsed
        return FakeCall(backend, step, streaming=streaming)

    def with_call(
        self, request: Any, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> Any:
        call = self._attempt(request, timeout, metadata, streaming=False)
        if call.code() is not OK:
            raise call
        return call.result(), call

    def future(
        self, request: Any, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> FakeCall:
        return self._attempt(request, timeout, metadata, streaming=False)

    def __call__(
        self, request: Any, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> FakeCall:
        return self._attempt(request, timeout, metadata, streaming=True)


class FakeBackend:
    """One backend (and the engine's Lease for an attempt on it)."""

    def __init__(self, address: str, clock: FakeClock, script: list[Step]) -> None:
        self.address = address
        self.clock = clock
        self.script = list(script)
        self.attempts: list[tuple[str, Any, float | None]] = []
        self.metadata: list[tuple[Any, ...]] = []  # each attempt's request metadata
        self.refuse_send: Exception | None = None  # grpcio raising instead of sending

    def callable(self, method: Method) -> FakeMulticallable:
        return FakeMulticallable(self, method)


class FakeBackends:
    """The channel as the engine sees it: picks the first untried backend, records feedback."""

    def __init__(self, clock: FakeClock, scripts: dict[str, list[Step]]) -> None:
        self.backends = {a: FakeBackend(a, clock, s) for a, s in scripts.items()}
        self.picks: list[tuple[frozenset[str], bool]] = []  # (tried before the pick, may_wait)
        self.released: list[tuple[str, Feedback, int | None]] = []
        self.closed = False
        self.serving_picks: int | None = None  # after this many picks no backend serves

    def pick(self, plan: Plan, *, may_wait: bool) -> FakeBackend:
        self.picks.append((frozenset(plan.tried), may_wait))
        if self.closed:
            raise LocalRpcError(grpc.StatusCode.CANCELLED, "rpckit: the channel was closed")
        untried = [b for a, b in self.backends.items() if a not in plan.tried]
        candidates = untried or list(self.backends.values())
        gone = self.serving_picks is not None and len(self.picks) > self.serving_picks
        if not candidates or gone:
            raise LocalRpcError(grpc.StatusCode.UNAVAILABLE, "rpckit: no backend")
        return candidates[0]

    def release(
        self, lease: Any, feedback: Feedback, report: load_pb2.LoadReport | None, now: float
    ) -> None:
        self.released.append((lease.address, feedback, None if report is None else report.pid))


@dataclasses.dataclass
class Rig:
    clock: FakeClock
    timer: FakeTimer
    backends: FakeBackends
    engine: AttemptEngine

    def timeouts(self) -> list[float | None]:
        """The timeout each attempt was sent with, in the order of the picks."""
        return [t for _, _, t in self.attempts()]

    def attempts(self) -> list[tuple[str, Any, float | None]]:
        seen: dict[str, int] = {}
        result = []
        for address in self.order:
            index = seen.get(address, 0)
            seen[address] = index + 1
            result.append(self.backends.backends[address].attempts[index])
        return result

    @property
    def order(self) -> list[str]:
        """Backends in the order the engine sent attempts to them."""
        return [address for address, _, _ in self.backends.released]


def rig(scripts: dict[str, list[Step]], **config: Any) -> Rig:
    clock = FakeClock()
    timer = FakeTimer(clock)
    backends = FakeBackends(clock, scripts)
    config.setdefault("health_check", False)
    engine = AttemptEngine(
        backends,
        BalancedChannelConfig(**config),
        schedule=timer.schedule,
        sleep=clock.sleep,
        clock=clock,
        rng=random.Random(13),
    )
    return Rig(clock, timer, backends, engine)


def method(kind: str, *, idempotent: bool = False) -> Method:
    return Method(
        kind=kind,
        path="/test.Inventory/Get",
        request_serializer=None,
        response_deserializer=None,
        registered=False,
        idempotent=idempotent,
        key=None,
    )


# ---------------------------------------------------------------- the call shapes

# Each shape runs one call to its end through the call objects a stub gets, and
# returns what the caller saw: the responses, or the RpcError it raised.
Shape = Callable[[Rig, float | None, bool], Any]


def unary(r: Rig, timeout: float | None, idempotent: bool) -> Any:
    call = UnaryUnary(r.engine, method("unary_unary", idempotent=idempotent))
    return call(b"req", timeout=timeout)


def unary_with_call(r: Rig, timeout: float | None, idempotent: bool) -> Any:
    call = UnaryUnary(r.engine, method("unary_unary", idempotent=idempotent))
    response, outcome = call.with_call(b"req", timeout=timeout)
    assert outcome.code() is OK
    return response


def unary_future(r: Rig, timeout: float | None, idempotent: bool) -> Any:
    call = UnaryUnary(r.engine, method("unary_unary", idempotent=idempotent))
    future = call.future(b"req", timeout=timeout)
    r.timer.run()  # the retries, at their fake times
    assert future.done()
    return future.result(timeout=0)


def server_stream(r: Rig, timeout: float | None, idempotent: bool) -> Any:
    call = UnaryStream(r.engine, method("unary_stream", idempotent=idempotent))
    return list(call(b"req", timeout=timeout))


def client_stream(r: Rig, timeout: float | None, idempotent: bool) -> Any:
    call = StreamUnary(r.engine, method("stream_unary", idempotent=idempotent))
    return call(iter([b"a", b"b"]), timeout=timeout)


def client_stream_future(r: Rig, timeout: float | None, idempotent: bool) -> Any:
    call = StreamUnary(r.engine, method("stream_unary", idempotent=idempotent))
    future = call.future(iter([b"a", b"b"]), timeout=timeout)
    r.timer.run()
    return future.result(timeout=0)


def bidi_stream(r: Rig, timeout: float | None, idempotent: bool) -> Any:
    call = StreamStream(r.engine, method("stream_stream", idempotent=idempotent))
    return list(call(iter([b"a"]), timeout=timeout))


RETRYING: dict[str, Shape] = {
    "unary": unary,
    "unary.with_call": unary_with_call,
    "unary.future": unary_future,
    "unary_stream": server_stream,
}
NOT_REPLAYABLE: dict[str, Shape] = {
    "stream_unary": client_stream,
    "stream_unary.future": client_stream_future,
    "stream_stream": bidi_stream,
}
ALL = RETRYING | NOT_REPLAYABLE

EXPECTED_B = {
    "unary": "response@b",
    "unary.with_call": "response@b",
    "unary.future": "response@b",
    "unary_stream": ["message@b"],
}


def outcome(shape: Shape, r: Rig, timeout: float | None = None, idempotent: bool = False) -> Any:
    """What the caller saw: the result, or the RpcError raised."""
    try:
        return shape(r, timeout, idempotent)
    except grpc.RpcError as error:
        return error


def failed_with(result: Any, code: grpc.StatusCode) -> grpc.RpcError:
    """``result`` is an RpcError with ``code``; returned for further checks."""
    assert isinstance(result, grpc.RpcError), result
    assert result.code() is code
    return result


def retry_delays(r: Rig) -> list[float]:
    """The waits before retries: slept by blocking calls and streams, timed by futures."""
    return r.clock.sleeps + r.timer.delays


# ---------------------------------------------------------------- retry, on another backend


@pytest.mark.parametrize("name", RETRYING)
def test_a_connect_failure_is_retried_on_another_backend(name: str) -> None:
    r = rig({"a": [connect_failure()], "b": [Step()]})
    assert outcome(RETRYING[name], r) == EXPECTED_B[name]
    assert r.order == ["a", "b"]
    # The retry's pick knew a was tried, and did not wait for a backend (only the first may).
    assert r.backends.picks == [(frozenset(), True), (frozenset({"a"}), False)]
    [delay] = retry_delays(r)
    assert 0.0 <= delay <= 0.025  # full jitter under the first retry's 25 ms ceiling
    # The failed attempt fed a fault and a reject; the answered one a success.
    (_, failed, _), (_, answered, pid) = r.backends.released
    assert (failed.outlier_success, failed.throttle_accepted) == (False, False)
    assert failed.latency is Latency.ABANDON  # a fast failure never looks fast
    assert (answered.outlier_success, pid) == (True, 99)


def test_a_retry_tells_the_server_how_many_attempts_came_before() -> None:
    """grpc-previous-rpc-attempts (gRPC proposal A6): a server counts the load its clients
    offer from first attempts; the caller's own metadata goes with every attempt."""
    r = rig({"a": [connect_failure()], "b": [connect_failure()], "c": [Step()]})
    call = UnaryUnary(r.engine, method("unary_unary"))
    assert call(b"req", metadata=(("x-team", "pets"),)) == "response@c"
    sent = [r.backends.backends[a].metadata[0] for a in r.order]
    assert sent == [
        (("x-team", "pets"),),
        (("x-team", "pets"), ("grpc-previous-rpc-attempts", "1")),
        (("x-team", "pets"), ("grpc-previous-rpc-attempts", "2")),
    ]


@pytest.mark.parametrize("name", RETRYING)
def test_each_retry_avoids_every_backend_already_tried(name: str) -> None:
    r = rig({"a": [connect_failure()], "b": [connect_failure()], "c": [Step()]})
    result = outcome(RETRYING[name], r)
    assert r.order == ["a", "b", "c"]
    assert [tried for tried, _ in r.backends.picks] == [
        frozenset(),
        frozenset({"a"}),
        frozenset({"a", "b"}),
    ]
    assert result in ("response@c", ["message@c"])


@pytest.mark.parametrize("name", RETRYING)
def test_attempts_stop_at_max_attempts_with_the_last_error(name: str) -> None:
    r = rig({a: [connect_failure()] for a in "abcd"}, max_attempts=3)
    error = failed_with(outcome(RETRYING[name], r), grpc.StatusCode.UNAVAILABLE)
    assert error.details() == CONNECT_FAILED  # the backend's error, not a local one
    assert r.order == ["a", "b", "c"]


@pytest.mark.parametrize("name", RETRYING)
def test_a_failure_that_may_have_run_is_retried_only_for_an_idempotent_method(name: str) -> None:
    reset = Step(grpc.StatusCode.UNAVAILABLE, "Socket closed", (REPORT,), 0.0, 0)
    r = rig({"a": [reset], "b": [Step()]})
    error = outcome(RETRYING[name], r)
    assert isinstance(error, grpc.RpcError)
    assert error.details() == "Socket closed"
    assert r.order == ["a"]

    r = rig({"a": [reset], "b": [Step()]})
    assert outcome(RETRYING[name], r, idempotent=True) == EXPECTED_B[name]
    assert r.order == ["a", "b"]


@pytest.mark.parametrize("name", NOT_REPLAYABLE)
def test_calls_with_a_request_stream_never_retry(name: str) -> None:
    r = rig({"a": [refusal(10)], "b": [Step()]})
    failed_with(outcome(NOT_REPLAYABLE[name], r), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert r.order == ["a"]
    assert retry_delays(r) == []
    [(_, feedback, _)] = r.backends.released
    assert feedback.latency is Latency.HOLD
    assert feedback.hold_s == pytest.approx(0.01)


def test_a_stream_is_not_retried_once_a_message_arrived() -> None:
    broken = Step(grpc.StatusCode.UNAVAILABLE, CONNECT_FAILED, (), 0.0, messages=1)
    r = rig({"a": [broken], "b": [Step()]})
    stream = UnaryStream(r.engine, method("unary_stream", idempotent=True))(b"req")
    assert next(stream) == "message@a"
    with pytest.raises(grpc.RpcError) as raised:
        next(stream)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert r.order == ["a"]


# ---------------------------------------------------------------- pushback


@pytest.mark.parametrize("name", RETRYING)
def test_the_servers_pushback_is_the_delay_before_the_retry(name: str) -> None:
    r = rig({"a": [refusal(400)], "b": [Step()]})
    start = r.clock.now
    assert outcome(RETRYING[name], r) == EXPECTED_B[name]
    assert retry_delays(r) == [0.4]
    assert r.clock.now - start == pytest.approx(0.4 + 0.01)  # the pushback, then b's 10 ms
    # The refusal held a's latency estimate at the pushback: a shedding backend is not sought.
    (_, refused, _), _ = r.backends.released
    assert (refused.latency, refused.hold_s) == (Latency.HOLD, 0.4)
    assert refused.outlier_success is True  # overload, not a fault


@pytest.mark.parametrize("name", RETRYING)
def test_a_negative_pushback_declines_the_retry(name: str) -> None:
    r = rig({"a": [refusal(-1)], "b": [Step()]})
    failed_with(outcome(RETRYING[name], r), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert r.order == ["a"]


# ---------------------------------------------------------------- deadlines


@pytest.mark.parametrize("name", RETRYING)
def test_each_attempt_gets_what_is_left_of_one_deadline(name: str) -> None:
    r = rig({"a": [refusal(200, elapsed=0.3)], "b": [Step()]})
    assert outcome(RETRYING[name], r, timeout=1.0) == EXPECTED_B[name]
    first, second = r.timeouts()
    assert first == pytest.approx(1.0)
    assert second == pytest.approx(1.0 - 0.3 - 0.2)  # minus the first attempt and the pushback


@pytest.mark.parametrize("name", RETRYING)
def test_the_deadline_expires_mid_retry(name: str) -> None:
    # a refuses after 0.3 s (pushback 0.5 s: fits in the 1 s), b refuses after 0.1 s with
    # the same pushback, which would outlast the 0.1 s left: the call ends with b's refusal.
    r = rig({"a": [refusal(500, elapsed=0.3)], "b": [refusal(500, elapsed=0.1)], "c": [Step()]})
    start = r.clock.now
    failed_with(outcome(RETRYING[name], r, timeout=1.0), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert r.order == ["a", "b"]
    assert retry_delays(r) == [0.5]
    assert r.clock.now - start == pytest.approx(0.9)  # no wait after the last attempt
    assert r.timeouts() == [pytest.approx(1.0), pytest.approx(0.2)]


@pytest.mark.parametrize("name", RETRYING)
def test_a_retry_that_wakes_after_the_deadline_is_not_sent(name: str) -> None:
    # Worst input: a busy machine. The pushback fits (0.5 s of 0.6 s left) but the wait
    # overruns by 0.2 s: sending now could only time out at once and look fast to P2C.
    r = rig({"a": [refusal(500, elapsed=0.4)], "b": [Step()]})
    r.clock.oversleep = 0.2
    error = failed_with(outcome(RETRYING[name], r, timeout=1.0), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert not isinstance(error, LocalRpcError)  # a's refusal, what the caller can act on
    assert r.order == ["a"]
    assert len(r.backends.picks) == 1  # no pick, no attempt for b


@pytest.mark.parametrize("name", ALL)
def test_an_explicit_timeout_is_each_shapes_attempt_timeout(name: str) -> None:
    r = rig({"a": [Step()]})
    outcome(ALL[name], r, timeout=2.5)
    assert r.timeouts() == [pytest.approx(2.5)]


@pytest.mark.parametrize("name", ALL)
def test_without_a_deadline_attempts_have_no_timeout(name: str) -> None:
    r = rig({"a": [Step()]})
    result = outcome(ALL[name], r)
    assert not isinstance(result, grpc.RpcError)
    assert r.timeouts() == [None]


def test_grpcios_no_deadline_value_means_no_deadline() -> None:
    r = rig({"a": [Step()]})
    outcome(unary, r, timeout=9.2e18)  # time_remaining() of a call without a deadline
    assert r.timeouts() == [None]


# ---------------------------------------------------------------- the retry budget


@pytest.mark.parametrize("name", RETRYING)
def test_an_exhausted_budget_ends_the_call_with_the_backends_error(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rpckit.client")
    # One retry per 10 s window whatever the traffic (min_per_s 0.1), none earned by requests.
    budget = RetryBudgetConfig(ratio=0.0, min_per_s=0.1, window_s=10.0)
    shape = RETRYING[name]
    r = rig({"a": [connect_failure()] * 3, "b": [Step()] * 3}, retry_budget=budget)

    assert outcome(shape, r) == EXPECTED_B[name]  # the window's one retry
    assert r.order == ["a", "b"]

    error = outcome(shape, r)  # the budget is spent: no retry, the backend's own error
    assert isinstance(error, grpc.RpcError)
    assert error.details() == CONNECT_FAILED
    assert r.order == ["a", "b", "a"]
    assert "retry of /test.Inventory/Get denied by the budget" in caplog.text

    r.clock.now += 10.0  # the window slides past the spent retry: the budget recovers
    assert outcome(shape, r) == EXPECTED_B[name]
    assert r.order == ["a", "b", "a", "a", "b"]


def test_a_retry_storm_is_bounded_by_the_budget() -> None:
    # Worst input: every backend refuses every call. 20% of requests + 10/s over 10 s.
    r = rig({a: [refusal(0)] * 1000 for a in "abc"}, max_attempts=3)
    calls = 200
    for _ in range(calls):
        r.clock.now += 0.01  # 100 calls/s for 2 s
        outcome(unary, r)
    retries = len(r.order) - calls
    assert retries <= 0.2 * calls + 10 * 10  # the budget's bound over the window
    assert retries >= 0.2 * calls  # and it does grant what it may


# ---------------------------------------------------------------- throttling


def test_adaptive_throttling_refuses_locally_then_recovers() -> None:
    # Worst input: a backend that refuses everything for a spell, then accepts again.
    throttle = AdaptiveThrottleConfig(accepts_multiplier=2.0, window_s=120.0)
    r = rig({"a": [refusal(-1)] * 200}, adaptive_throttle=throttle)
    local = 0
    for _ in range(200):
        r.clock.now += 0.05
        error = outcome(unary, r)
        assert isinstance(error, grpc.RpcError)
        if isinstance(error, LocalRpcError):
            assert error.code() is grpc.StatusCode.UNAVAILABLE
            assert "adaptive throttling" in error.details()
            local += 1
    assert local > 100  # most calls never left the client
    sent = len(r.order)
    assert sent == 200 - local
    r.backends.backends["a"].script = [Step()] * 20  # the backend recovers
    r.clock.now += 121.0  # and the refusals leave the window
    results = [outcome(unary, r) for _ in range(20)]
    assert results == ["response@a"] * 20


# ---------------------------------------------------------------- futures: cancel, close


def test_cancelling_a_future_while_its_retry_waits_sends_no_more_attempts() -> None:
    r = rig({"a": [refusal(300)], "b": [Step()]})
    future = UnaryUnary(r.engine, method("unary_unary")).future(b"req")
    assert r.timer.pending == 1  # the retry waits for a's pushback
    done: list[Any] = []
    future.add_done_callback(done.append)
    assert future.cancel()
    assert future.cancelled()
    assert future.done()
    assert done == [future]
    assert r.timer.pending == 0  # the retry's timer was cancelled
    r.timer.run()
    assert r.order == ["a"]
    with pytest.raises(grpc.FutureCancelledError):
        future.result(timeout=0)
    assert not future.cancel()  # once done, cancel does nothing


def test_a_future_whose_channel_closes_while_its_retry_waits_ends_with_the_last_error() -> None:
    r = rig({"a": [refusal(300)], "b": [Step()]})
    future = UnaryUnary(r.engine, method("unary_unary")).future(b"req")
    r.timer.close()
    assert future.done()
    error = future.exception(timeout=0)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert r.order == ["a"]


@pytest.mark.parametrize("name", ["unary", "unary_stream"])
def test_a_channel_closed_during_the_backoff_ends_the_call_with_its_error(name: str) -> None:
    r = rig({"a": [refusal(300)], "b": [Step()]})
    r.clock.closed = True
    failed_with(outcome(RETRYING[name], r), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert r.order == ["a"]


@pytest.mark.parametrize("name", RETRYING)
def test_no_backend_for_the_retry_ends_the_call_with_the_backends_error(name: str) -> None:
    r = rig({"a": [refusal(300)], "b": [Step()]})
    r.backends.serving_picks = 1  # every backend goes away during the backoff
    error = failed_with(outcome(RETRYING[name], r), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert not isinstance(error, LocalRpcError)  # the caller learns what the backend said
    assert r.order == ["a"]
    assert len(r.backends.picks) == 2


@pytest.mark.parametrize("name", ALL)
def test_a_request_grpc_cannot_send_raises_and_its_attempt_is_released(name: str) -> None:
    r = rig({"a": [Step()]})
    r.backends.backends["a"].refuse_send = TypeError("cannot serialize the request")
    with pytest.raises(TypeError, match="serialize"):
        ALL[name](r, None, False)
    # Released once, teaching nothing: no latency, not a fault, not a reject.
    assert r.backends.released == [("a", Feedback(latency=Latency.ABANDON), None)]


@pytest.mark.parametrize(
    ("refused", "code", "details"),
    [
        (ValueError("Cannot invoke RPC on closed channel!"), "CANCELLED", "channel was closed"),
        (RuntimeError("odd"), "INTERNAL", "retry not sent"),
    ],
)
def test_a_futures_retry_that_cannot_be_sent_ends_the_future(
    refused: Exception, code: str, details: str
) -> None:
    r = rig({"a": [refusal(100)], "b": [Step()]})
    r.backends.backends["b"].refuse_send = refused  # e.g. b's connection closed meanwhile
    future = UnaryUnary(r.engine, method("unary_unary")).future(b"req")
    r.timer.run()
    error = failed_with(future.exception(timeout=0), getattr(grpc.StatusCode, code))
    assert details in str(error.details())
    assert r.order == ["a", "b"]  # both attempts released


@pytest.mark.parametrize("name", ["unary.future", "unary_stream", "stream_stream"])
def test_throttled_calls_of_every_shape_fail_locally_without_a_pick(name: str) -> None:
    r = rig({"a": [refusal(-1)] * 40}, adaptive_throttle=AdaptiveThrottleConfig())
    results = [outcome(ALL[name], r) for _ in range(40)]
    local = [e for e in results if isinstance(e, LocalRpcError)]
    assert len(local) > 10  # the backend refuses everything: most calls stay home
    assert {e.code() for e in local} == {grpc.StatusCode.UNAVAILABLE}
    assert len(r.backends.picks) == len(results) - len(local)


def test_cancelling_a_stream_ends_it_cancelled_without_a_retry() -> None:
    r = rig({"a": [Step(messages=3)], "b": [Step()]})
    stream = UnaryStream(r.engine, method("unary_stream", idempotent=True))(b"req")
    assert next(stream) == "message@a"
    assert stream.cancel()
    assert stream.cancelled()
    assert stream.code() is grpc.StatusCode.CANCELLED
    assert r.order == ["a"]
    [(_, feedback, _)] = r.backends.released
    assert feedback.outlier_success is None  # the caller's doing, not the backend's


@pytest.mark.parametrize("name", ALL)
def test_no_backend_at_all_fails_locally_with_unavailable(name: str) -> None:
    r = rig({})
    error = outcome(ALL[name], r)
    assert isinstance(error, LocalRpcError)
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert r.backends.picks == [(frozenset(), True)]  # the first attempt may wait


@pytest.mark.parametrize("name", ALL)
def test_a_closed_channel_refuses_new_calls(name: str) -> None:
    r = rig({"a": [Step()]})
    r.backends.closed = True
    with pytest.raises(ValueError, match="closed channel"):
        ALL[name](r, None, False)


# ---------------------------------------------------------------- invariants, any script


def steps() -> st.SearchStrategy[Step]:
    elapsed = st.floats(0.0, 0.5)
    return st.one_of(
        st.builds(Step, elapsed=elapsed, messages=st.integers(0, 2)),
        st.builds(connect_failure, elapsed),
        st.builds(refusal, st.integers(-1, 800), elapsed),
        st.builds(
            Step,
            st.sampled_from(
                [
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.INTERNAL,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.INVALID_ARGUMENT,
                ]
            ),
            st.just("handler said no"),
            st.just((REPORT,)),
            elapsed,
            st.integers(0, 2),
        ),
    )


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(ALL)),
    scripts=st.lists(st.lists(steps(), max_size=3), min_size=1, max_size=4),
    timeout=st.one_of(st.none(), st.floats(0.05, 3.0)),
    idempotent=st.booleans(),
    max_attempts=st.integers(1, 5),
)
def test_invariants_for_any_backend_behaviour(
    name: str,
    scripts: list[list[Step]],
    timeout: float | None,
    idempotent: bool,
    max_attempts: int,
) -> None:
    r = rig({f"b{i}": s for i, s in enumerate(scripts)}, max_attempts=max_attempts)
    start = r.clock.now
    attempts_sent_at: list[float] = []
    original_pick = r.backends.pick

    def pick(plan: Plan, *, may_wait: bool) -> FakeBackend:
        backend = original_pick(plan, may_wait=may_wait)
        attempts_sent_at.append(r.clock.now)
        return backend

    r.backends.pick = pick  # type: ignore[method-assign]
    outcome(ALL[name], r, timeout=timeout, idempotent=idempotent)

    sent = len(attempts_sent_at)
    assert 1 <= sent <= max_attempts
    # Every attempt is released exactly once: P2C's outstanding counts cannot leak.
    assert len(r.backends.released) == sent
    if name in NOT_REPLAYABLE:
        assert sent == 1
    # Each retry goes to a backend not tried yet while there is one.
    tried: list[str] = []
    for address in r.order:
        assert address not in tried or len(set(tried)) == len(scripts)
        tried.append(address)
    # No attempt is sent once the deadline has passed; each gets only what is left.
    if timeout is not None:
        assert all(at - start < timeout for at in attempts_sent_at[1:])
        for at, attempt_timeout in zip(attempts_sent_at, r.timeouts(), strict=True):
            assert attempt_timeout == pytest.approx(max(0.0, start + timeout - at))
