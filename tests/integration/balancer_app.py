"""A test Inventory servicer for the balanced-channel tests (in-process or ``rpckit serve``).

GetItem (NO_SIDE_EFFECTS: idempotent) and CreateItem (not idempotent) read a
command from the SKU (CreateItem from ``item.sku``):

* ``hold:MS``       -- record a ``started`` event, work MS milliseconds, answer;
* ``deadline``      -- answer with the remaining inbound deadline (ms) in ``quantity``;
* ``relay[:S]``     -- call ``deadline`` on the next hop through ``relay`` (a channel the
  test gives; explicit timeout S seconds if given); ``quantity`` is the next hop's
  remaining deadline, ``price_cents`` this hop's (ms, -1 without a deadline);
* anything else     -- answer at once.

Every answer names the server (``name``) and its process (``quantity`` = pid,
except for ``deadline``/``relay``). ``failures`` makes a method abort with a
given code, details and optional pushback trailer, so tests can stage every row
of the retry table (``Failure.first_attempt_of`` fails only the first attempt of
each call, wherever it lands; ``attempts`` records where each call went).
``WatchLowStock`` streams ``threshold`` items (after its failure, if any). Calls
are counted per method in ``calls`` and timestamped (monotonic) in ``started_at``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator

import grpc

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc


@dataclasses.dataclass(frozen=True, eq=False)
class Failure:
    """How a method fails: status code, details, and a ``grpc-retry-pushback-ms`` trailer.

    With ``first_attempt_of`` (a set shared by several probes) only the first
    attempt of each call fails, on whichever probe it lands: the call's key
    (its SKU, or ``low:THRESHOLD``) is added to the set then.
    """

    code: grpc.StatusCode
    details: str = "injected failure"
    pushback_ms: int | None = None
    first_attempt_of: set[str] | None = None


class BalancerProbe(inventory_pb2_grpc.InventoryServicer):
    def __init__(
        self,
        name: str,
        *,
        events_path: str | None = None,
        relay: grpc.Channel | None = None,
        failures: dict[str, Failure] | None = None,
        attempts: dict[str, list[str]] | None = None,
    ) -> None:
        self.name = name
        self.attempts = attempts  # call key -> names of the probes it reached, maybe shared
        self.calls: Counter[str] = Counter()
        self.started_at: list[float] = []
        self._events_path = events_path
        self._relay = relay
        self._failures = dict(failures or {})
        self._lock = threading.Lock()

    def _count(self, method: str, key: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls[method] += 1
            self.started_at.append(time.monotonic())
        if self.attempts is not None:
            self.attempts.setdefault(key, []).append(self.name)
        failure = self._failures.get(method)
        if failure is not None and failure.first_attempt_of is not None:
            if key in failure.first_attempt_of:
                return
            failure.first_attempt_of.add(key)
        if failure is not None:
            if failure.pushback_ms is not None:
                context.set_trailing_metadata(
                    (("grpc-retry-pushback-ms", str(failure.pushback_ms)),)
                )
            context.abort(failure.code, failure.details)

    def _event(self, kind: str, **fields: object) -> None:
        if self._events_path is None:
            return
        with self._lock, open(self._events_path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"event": kind, **fields}) + "\n")

    def _answer(self, method: str, sku: str) -> inventory_pb2.Item:
        if sku.startswith("hold:"):
            self._event("started", pid=os.getpid(), method=method, sku=sku)
            time.sleep(int(sku.split(":", 1)[1]) / 1000)
        elif sku == "deadline":
            remaining = rpckit.time_remaining()
            return inventory_pb2.Item(
                sku=sku, name=self.name, quantity=-1 if remaining is None else int(remaining * 1000)
            )
        elif sku.startswith("relay"):
            return self._relay_deadline(sku)
        return inventory_pb2.Item(sku=sku, name=self.name, quantity=os.getpid())

    def _relay_deadline(self, sku: str) -> inventory_pb2.Item:
        assert self._relay is not None, "this probe has no relay channel"
        own = rpckit.time_remaining()
        _, _, timeout_text = sku.partition(":")
        stub = inventory_pb2_grpc.InventoryStub(self._relay)
        downstream = stub.GetItem(
            inventory_pb2.GetItemRequest(sku="deadline"),
            timeout=float(timeout_text) if timeout_text else None,
        )
        return inventory_pb2.Item(
            sku=sku,
            name=self.name,
            quantity=downstream.quantity,
            price_cents=-1 if own is None else int(own * 1000),
        )

    def GetItem(
        self, request: inventory_pb2.GetItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        self._count("GetItem", request.sku, context)
        return self._answer("GetItem", request.sku)

    def CreateItem(
        self, request: inventory_pb2.CreateItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        self._count("CreateItem", request.item.sku, context)
        return self._answer("CreateItem", request.item.sku)

    def WatchLowStock(
        self, request: inventory_pb2.WatchLowStockRequest, context: grpc.ServicerContext
    ) -> Iterator[inventory_pb2.Item]:
        self._count("WatchLowStock", f"low:{request.threshold}", context)
        for i in range(request.threshold):
            yield inventory_pb2.Item(sku=f"S-{i}", name=self.name, quantity=os.getpid())


def servicers() -> list[object]:
    """For ``rpckit serve tests.integration.balancer_app:servicers`` (called in each worker)."""
    return [BalancerProbe(f"pid-{os.getpid()}", events_path=os.environ.get("RPCKIT_TEST_EVENTS"))]
