"""The InventoryLegacy servicer: scan's stubs (migrate/example/scan) filled in.

Written by hand from ``migrate/example/scan/inventory_legacy_servicer.py``:
each method body replaces one Flask view of ``examples/legacy_inventory/app.py``
and reuses its domain code (``store.py``). Request parsing, type checks, JSON
rendering, statuses and headers are the proto's and the shim's business now.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import grpc
from google.protobuf import empty_pb2

import rpckit
from examples.legacy_inventory.store import (
    InvalidFieldError,
    InventoryStore,
    Item,
    ItemExistsError,
    ItemNotFoundError,
    check_item,
    check_restock_request,
    encode_page_token,
    plan_restock,
    resolve_page_request,
)
from examples.migrated_inventory._gen.inventory_legacy.v1 import inventory_legacy_pb2 as pb
from examples.migrated_inventory._gen.inventory_legacy.v1 import inventory_legacy_pb2_grpc

__all__ = ["InventoryLegacy"]


@contextlib.contextmanager
def _domain_errors() -> Iterator[None]:
    """The store's errors as gRPC statuses; the shim renders them as the old JSON errors."""
    try:
        yield
    except InvalidFieldError as exc:
        raise rpckit.StatusError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
    except ItemNotFoundError as exc:
        raise rpckit.StatusError(grpc.StatusCode.NOT_FOUND, f"item '{exc.sku}' not found") from None
    except ItemExistsError as exc:
        message = f"item '{exc.sku}' already exists"
        raise rpckit.StatusError(grpc.StatusCode.ALREADY_EXISTS, message) from None


def _to_pb(item: Item) -> pb.Item:
    return pb.Item(
        sku=item.sku, name=item.name, quantity=item.quantity, price_cents=item.price_cents,
        tags=item.tags,
    )  # fmt: skip


def _from_pb(item: pb.Item) -> Item:
    return Item(
        sku=item.sku, name=item.name, quantity=item.quantity, price_cents=item.price_cents,
        tags=tuple(item.tags),
    )  # fmt: skip


class InventoryLegacy(inventory_legacy_pb2_grpc.InventoryLegacyServicer):
    """inventory_legacy.v1.InventoryLegacy over an :class:`InventoryStore` (fresh by default)."""

    def __init__(
        self,
        store: InventoryStore | None = None,
        *,
        simulate_work: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = InventoryStore() if store is None else store
        self.simulate_work = simulate_work

    def GetItem(self, request: pb.GetItemRequest, context: grpc.ServicerContext) -> pb.Item:
        with _domain_errors():
            return _to_pb(self.store.get(request.sku))

    def ListItems(
        self, request: pb.ListItemsRequest, context: grpc.ServicerContext
    ) -> pb.ListItemsResponse:
        with _domain_errors():
            after, size = resolve_page_request(
                page_size=request.page_size, page_token=request.page_token
            )
        items, resume_after = self.store.page(after_sku=after, page_size=size)
        token = encode_page_token(resume_after) if resume_after else ""
        return pb.ListItemsResponse(items=[_to_pb(i) for i in items], next_page_token=token)

    def CreateItem(self, request: pb.CreateItemRequest, context: grpc.ServicerContext) -> pb.Item:
        item = _from_pb(request.item)
        with _domain_errors():
            check_item(item, new=True)
            self.store.create(item)
        return _to_pb(item)

    def UpdateItem(self, request: pb.UpdateItemRequest, context: grpc.ServicerContext) -> pb.Item:
        item = _from_pb(request.item)
        with _domain_errors():
            check_item(item, new=False)
            self.store.replace(item)
        return _to_pb(item)

    def DeleteItem(
        self, request: pb.DeleteItemRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        with _domain_errors():
            self.store.delete(request.sku)
        return empty_pb2.Empty()

    def ItemTags(
        self, request: pb.ItemTagsRequest, context: grpc.ServicerContext
    ) -> pb.ItemTagsResponse:
        with _domain_errors():
            return pb.ItemTagsResponse(items=self.store.get(request.sku).tags)

    def CreateRestockPlan(
        self, request: pb.CreateRestockPlanRequest, context: grpc.ServicerContext
    ) -> pb.CreateRestockPlanResponse:
        with _domain_errors():
            check_restock_request(
                threshold=request.threshold, work_ms_per_item=request.work_ms_per_item
            )
        items = self.store.snapshot()
        for _ in items if request.work_ms_per_item else ():
            rpckit.raise_if_cancelled()
            self.simulate_work(request.work_ms_per_item / 1000)
        lines = plan_restock(items, request.threshold)
        return pb.CreateRestockPlanResponse(
            lines=[pb.Line(sku=line.sku, order_quantity=line.order_quantity) for line in lines]
        )

    def Healthz(
        self, request: pb.HealthzRequest, context: grpc.ServicerContext
    ) -> pb.HealthzResponse:
        return pb.HealthzResponse(status="ok")

    def StockReport(
        self, request: pb.StockReportRequest, context: grpc.ServicerContext
    ) -> pb.StockReportResponse:
        """GET /reports/stock stays on Flask (migrate/README.md, "What stays")."""
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "StockReport is served by the Flask app")
