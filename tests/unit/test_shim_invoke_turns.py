"""LocalInvoker and the embedded server's turns: quick handlers that start at once run inside
the request's turn; unknown or slow ones, and every call that must queue, step outside it."""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from examples.inventory._gen.inventory.v1 import inventory_pb2
from rpckit.http._invoke import LocalInvoker
from rpckit.http._mapping._routes import Route, routes_for_service
from rpckit.server._executor import CallFacts

INVENTORY = inventory_pb2.DESCRIPTOR.services_by_name["Inventory"]
GET_ITEM = next(r for r in routes_for_service(INVENTORY) if r.grpc_method.endswith("/GetItem"))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Scene:
    """A handler taking ``handler_s`` of the fake clock; an executor whose slot may be busy."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.handler_s = 0.0001
        self.slot_free = True
        self.events: list[str] = []
        self.inside_turn = True

    def handler(self, request: Any, context: grpc.ServicerContext) -> inventory_pb2.Item:
        self.events.append("handler inside" if self.inside_turn else "handler outside")
        self.clock.now += self.handler_s
        return inventory_pb2.Item(sku=request.sku)

    def run_now(self, fn: Callable[[], Any], facts: CallFacts) -> bool:
        if not self.slot_free:
            return False
        fn()
        return True

    def submit(self, fn: Callable[[], Any], facts: CallFacts) -> concurrent.futures.Future[None]:
        self.events.append("queued")
        fn()  # as if a handler thread ran it
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        done.set_result(None)
        return done

    @contextlib.contextmanager
    def step_out(self) -> Iterator[None]:
        self.events.append("out")
        self.inside_turn = False
        try:
            yield
        finally:
            self.inside_turn = True
            self.events.append("back")

    def invoker(self, *, through_admission: bool = True) -> LocalInvoker:
        handlers = {GET_ITEM.grpc_method: grpc.unary_unary_rpc_method_handler(self.handler)}
        if not through_admission:
            return LocalInvoker(handlers, submit=None, clock=self.clock)
        return LocalInvoker(handlers, submit=self.submit, run_now=self.run_now, clock=self.clock)

    def call(self, invoker: LocalInvoker, route: Route = GET_ITEM) -> str:
        outcome = invoker.call(
            route,
            inventory_pb2.GetItemRequest(sku="A-1"),
            metadata=(),
            deadline=None,
            peer="ipv4:127.0.0.1:1",
            outside_turn=self.step_out,
        )
        assert outcome.ok
        assert outcome.response is not None
        return outcome.response.sku  # type: ignore[attr-defined, no-any-return]


def test_a_quick_handler_runs_inside_the_turn_once_known() -> None:
    scene = Scene()
    invoker = scene.invoker()
    assert scene.call(invoker) == "A-1"
    assert scene.events == ["out", "handler outside", "back"]  # not known yet
    scene.events.clear()
    scene.call(invoker)
    assert scene.events == ["handler inside"]


def test_a_slow_handler_runs_outside() -> None:
    scene = Scene()
    scene.handler_s = 0.05
    invoker = scene.invoker()
    scene.call(invoker)
    scene.events.clear()
    scene.call(invoker)
    assert scene.events == ["out", "handler outside", "back"]


def test_a_call_that_must_queue_waits_outside_the_turn() -> None:
    scene = Scene()
    invoker = scene.invoker()
    scene.call(invoker)  # now known to be quick
    scene.events.clear()
    scene.slot_free = False
    scene.call(invoker)
    assert scene.events == ["out", "queued", "handler outside", "back"]


def test_without_admission_the_same_rule_applies() -> None:
    scene = Scene()
    invoker = scene.invoker(through_admission=False)
    scene.call(invoker)
    scene.events.clear()
    scene.call(invoker)
    assert scene.events == ["handler inside"]


def test_without_turns_nothing_steps_out() -> None:
    scene = Scene()
    invoker = scene.invoker()
    outcome = invoker.call(
        GET_ITEM,
        inventory_pb2.GetItemRequest(sku="B-2"),
        metadata=(),
        deadline=None,
        peer="ipv4:127.0.0.1:1",
    )
    assert outcome.ok
    assert scene.events == ["handler inside"]
