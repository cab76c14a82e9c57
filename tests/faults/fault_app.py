"""The backend the fault suite runs under ``rpckit serve`` (one per process, real sockets).

    rpckit serve tests.faults.fault_app:servicers --grpc 127.0.0.1:0

It is :class:`~tests.integration.balancer_app.BalancerProbe` (``hold:MS``, events,
answers naming the process) with three more commands in the SKU:

* ``slow:FACTOR`` (CreateItem, sent to one backend directly) -- every later
  ``hold:MS`` takes FACTOR times as long (``slow:1`` restores it);
* ``await-cancel`` (GetItem) -- record ``started``, check ``rpckit.cancelled()``
  every 20 ms for up to 20 s, then record ``cancelled`` (or ``not-cancelled``)
  with the time (``time.monotonic()``, one clock for every process on the host);
* ``forward:ADDRESS`` (GetItem) -- call ``await-cancel`` on ADDRESS through
  ``rpckit.connect`` (deadline and cancellation propagated); when that call ends,
  record ``forward-ended`` with its status and ``rpckit.cancelled()`` checked once.
"""

from __future__ import annotations

import os
import time

import grpc

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from tests.integration.balancer_app import BalancerProbe

#: How long ``await-cancel`` waits for its cancellation before giving up.
AWAIT_CANCEL_S = 20.0
#: How often it checks: a handler doing work in steps checks between them.
CHECK_EVERY_S = 0.02


class FaultProbe(BalancerProbe):
    def __init__(self, name: str, *, events_path: str | None = None) -> None:
        super().__init__(name, events_path=events_path)
        self._slow_factor = 1.0

    def _held(self, sku: str) -> str:
        """``hold:MS`` stretched by the slow factor."""
        if not sku.startswith("hold:") or self._slow_factor == 1.0:
            return sku
        return f"hold:{round(int(sku.split(':', 1)[1]) * self._slow_factor)}"

    def GetItem(
        self, request: inventory_pb2.GetItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        sku = request.sku
        if sku == "await-cancel":
            return self._await_cancel()
        if sku.startswith("forward:"):
            return self._forward(sku.split(":", 1)[1])
        return super().GetItem(inventory_pb2.GetItemRequest(sku=self._held(sku)), context)

    def CreateItem(
        self, request: inventory_pb2.CreateItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        sku = request.item.sku
        if sku.startswith("slow:"):
            self._slow_factor = float(sku.split(":", 1)[1])
            self._event("slow", factor=self._slow_factor)
            return inventory_pb2.Item(sku=sku, name=self.name, quantity=os.getpid())
        held = inventory_pb2.CreateItemRequest(item=inventory_pb2.Item(sku=self._held(sku)))
        return super().CreateItem(held, context)

    def _await_cancel(self) -> inventory_pb2.Item:
        """Check ``rpckit.cancelled()`` every ``CHECK_EVERY_S`` until it says so (bounded)."""
        started = time.monotonic()
        self._event("started", pid=os.getpid(), method="GetItem", sku="await-cancel", at=started)
        checks = 1
        while not rpckit.cancelled() and time.monotonic() - started < AWAIT_CANCEL_S:
            time.sleep(CHECK_EVERY_S)
            checks += 1
        seen = time.monotonic()
        kind = "cancelled" if rpckit.cancelled() else "not-cancelled"
        self._event(kind, pid=os.getpid(), at=seen, checks=checks)
        return inventory_pb2.Item(sku="await-cancel", name=self.name, quantity=os.getpid())

    def _forward(self, address: str) -> inventory_pb2.Item:
        self._event("forward-started", pid=os.getpid())
        code = "OK"
        with rpckit.connect(address) as channel:
            try:
                inventory_pb2_grpc.InventoryStub(channel).GetItem(
                    inventory_pb2.GetItemRequest(sku="await-cancel")
                )
            except grpc.RpcError as error:
                code = error.code().name
        # One check, right after the downstream call ended.
        self._event("forward-ended", code=code, cancelled=rpckit.cancelled(), at=time.monotonic())
        return inventory_pb2.Item(sku="forward", name=self.name, quantity=os.getpid())


def servicers() -> list[object]:
    """For ``rpckit serve tests.faults.fault_app:servicers`` (called in each worker)."""
    return [FaultProbe(f"pid-{os.getpid()}", events_path=os.environ.get("RPCKIT_TEST_EVENTS"))]
