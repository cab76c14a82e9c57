"""The Inventory servicer: plain grpcio, nothing rpckit-specific but the helpers it chooses to use.

State lives in an in-memory :class:`Store` owned by the servicer instance (no
module-level state), seeded deterministically so demos and tests see the same
data.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator

import grpc
from google.protobuf import empty_pb2
from google.rpc import error_details_pb2

import rpckit
from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 10


def seed_items() -> list[inventory_pb2.Item]:
    """Twenty deterministic items: A-001 .. A-020."""
    items = []
    for i in range(1, 21):
        items.append(
            inventory_pb2.Item(
                sku=f"A-{i:03d}",
                name=f"Widget {i}",
                quantity=(i * 7) % 23,
                price_cents=199 + i * 100,
                tags=["widget", "even" if i % 2 == 0 else "odd"],
            )
        )
    return items


class Store:
    """A thread-safe in-memory item table, ordered by SKU."""

    def __init__(self, items: list[inventory_pb2.Item] | None = None) -> None:
        self._lock = threading.Lock()
        self._items = {item.sku: item for item in (seed_items() if items is None else items)}

    def get(self, sku: str) -> inventory_pb2.Item | None:
        with self._lock:
            item = self._items.get(sku)
            return None if item is None else _copy(item)

    def page(self, after: str, size: int) -> tuple[list[inventory_pb2.Item], str]:
        with self._lock:
            skus = sorted(s for s in self._items if s > after)
            chosen = skus[:size]
            more = len(skus) > size
            return [_copy(self._items[s]) for s in chosen], (chosen[-1] if more else "")

    def put(self, item: inventory_pb2.Item, *, create: bool) -> bool:
        """Store ``item``; False if create and it exists, or update and it does not."""
        with self._lock:
            if (item.sku in self._items) == create:
                return False
            self._items[item.sku] = _copy(item)
            return True

    def delete(self, sku: str) -> bool:
        with self._lock:
            return self._items.pop(sku, None) is not None

    def all(self) -> list[inventory_pb2.Item]:
        with self._lock:
            return [_copy(self._items[s]) for s in sorted(self._items)]


def _copy(item: inventory_pb2.Item) -> inventory_pb2.Item:
    clone = inventory_pb2.Item()
    clone.CopyFrom(item)
    return clone


def _bad_request(field: str, description: str) -> rpckit.StatusError:
    violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
    return rpckit.StatusError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"invalid {field}: {description}",
        details=[error_details_pb2.BadRequest(field_violations=[violation])],
    )


def _not_found(sku: str) -> rpckit.StatusError:
    info = error_details_pb2.ResourceInfo(resource_type="item", resource_name=sku)
    return rpckit.StatusError(grpc.StatusCode.NOT_FOUND, f"item {sku!r} not found", details=[info])


def _validate(item: inventory_pb2.Item) -> None:
    if not item.sku:
        raise _bad_request("item.sku", "must not be empty")
    if item.quantity < 0:
        raise _bad_request("item.quantity", "must be >= 0")
    if item.price_cents < 0:
        raise _bad_request("item.price_cents", "must be >= 0")


class Inventory(inventory_pb2_grpc.InventoryServicer):
    """inventory.v1.Inventory over a :class:`Store`."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store or Store()

    def GetItem(
        self, request: inventory_pb2.GetItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        item = self.store.get(request.sku)
        if item is None:
            raise _not_found(request.sku)
        return item

    def ListItems(
        self, request: inventory_pb2.ListItemsRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.ListItemsResponse:
        size = request.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise _bad_request("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")
        try:
            after = base64.urlsafe_b64decode(request.page_token.encode()).decode()
        except ValueError:
            raise _bad_request("page_token", "not a token from a previous response") from None
        items, last = self.store.page(after, size)
        token = base64.urlsafe_b64encode(last.encode()).decode() if last else ""
        return inventory_pb2.ListItemsResponse(items=items, next_page_token=token)

    def CreateItem(
        self, request: inventory_pb2.CreateItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        _validate(request.item)
        if not self.store.put(request.item, create=True):
            raise rpckit.StatusError(
                grpc.StatusCode.ALREADY_EXISTS, f"item {request.item.sku!r} already exists"
            )
        return request.item

    def UpdateItem(
        self, request: inventory_pb2.UpdateItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        _validate(request.item)
        if not self.store.put(request.item, create=False):
            raise _not_found(request.item.sku)
        return request.item

    def DeleteItem(
        self, request: inventory_pb2.DeleteItemRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        if not self.store.delete(request.sku):
            raise _not_found(request.sku)
        return empty_pb2.Empty()

    def PlanRestock(
        self, request: inventory_pb2.PlanRestockRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.PlanRestockResponse:
        if request.work_ms_per_item < 0:
            raise _bad_request("work_ms_per_item", "must be >= 0")
        plan = inventory_pb2.PlanRestockResponse()
        for item in self.store.all():
            # The caller may have gone (deadline passed, cancelled): stop working for nobody.
            rpckit.raise_if_cancelled()
            time.sleep(request.work_ms_per_item / 1000)
            if item.quantity < request.threshold:
                plan.lines.add(sku=item.sku, order_quantity=request.threshold * 2 - item.quantity)
        return plan

    def WatchLowStock(
        self, request: inventory_pb2.WatchLowStockRequest, context: grpc.ServicerContext
    ) -> Iterator[inventory_pb2.Item]:
        for item in self.store.all():
            if item.quantity <= request.threshold:
                yield item
