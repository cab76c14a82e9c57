"""A test servicer that exposes server-side behaviour to the tests.

It implements inventory.v1.Inventory; the SKU says what to do:

* ``slow``        -- work until the caller leaves, then record ``cancel-seen``;
* ``boom``        -- raise an exception carrying ``SECRET-MARKER``;
* ``hold:MS``     -- record ``started``, work MS milliseconds, return;
* ``deadline``    -- answer with the remaining deadline (ms) in ``quantity``;
* ``gc-frozen``   -- answer with how many objects ``gc.freeze()`` put out of the
  collector's reach (``gc.get_freeze_count()``) in ``quantity``;
* ``switch-us``   -- answer with the process's GIL switch interval (microseconds) in
  ``quantity``;
* ``relay:ADDR``  -- call ``deadline`` on ADDR through rpckit.connect and return
  its answer, with this hop's own remaining deadline (ms) in ``price_cents``.

Events go, one JSON object a line, to the file named by RPCKIT_TEST_EVENTS
(read when the factory is called, never at import).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time

import grpc

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc


class Probe(inventory_pb2_grpc.InventoryServicer):
    def __init__(self, events_path: str | None) -> None:
        self._events_path = events_path
        self._lock = threading.Lock()

    def _event(self, kind: str, **fields: object) -> None:
        if self._events_path is None:
            return
        with self._lock, open(self._events_path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"event": kind, **fields}) + "\n")

    def GetItem(
        self, request: inventory_pb2.GetItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        sku = request.sku
        if sku == "slow":
            give_up = time.monotonic() + 10.0
            while not rpckit.cancelled() and time.monotonic() < give_up:
                time.sleep(0.005)
            self._event("cancel-seen", cancelled=rpckit.cancelled())
            rpckit.raise_if_cancelled()
            return inventory_pb2.Item(sku=sku)
        if sku == "boom":
            raise RuntimeError("SECRET-MARKER: database password is hunter2")
        if sku.startswith("hold:"):
            self._event("started", pid=os.getpid())
            time.sleep(int(sku.split(":", 1)[1]) / 1000)
            return inventory_pb2.Item(sku=sku)
        if sku == "deadline":
            remaining = rpckit.time_remaining()
            return inventory_pb2.Item(
                sku=sku, quantity=-1 if remaining is None else int(remaining * 1000)
            )
        if sku == "gc-frozen":
            return inventory_pb2.Item(sku=sku, quantity=gc.get_freeze_count())
        if sku == "switch-us":
            return inventory_pb2.Item(sku=sku, quantity=round(sys.getswitchinterval() * 1e6))
        if sku.startswith("relay:"):
            own = rpckit.time_remaining()
            with rpckit.connect(sku.split(":", 1)[1]) as channel:
                stub = inventory_pb2_grpc.InventoryStub(channel)
                downstream = stub.GetItem(inventory_pb2.GetItemRequest(sku="deadline"))
            downstream.price_cents = -1 if own is None else int(own * 1000)
            return downstream
        raise rpckit.StatusError(grpc.StatusCode.NOT_FOUND, f"no probe behaviour for {sku!r}")


def servicers() -> list[object]:
    return [Probe(os.environ.get("RPCKIT_TEST_EVENTS"))]
