"""Servicer stubs for inventory_legacy.v1.InventoryLegacy, written by `rpckit migrate scan`.

Copy this file into your service and fill the methods in. A method left as it is
answers UNIMPLEMENTED: keep its routes on the Flask fallback until it is done
(``RouteOptions(rollout_percent=0)``, see migrate/README.md).
"""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from examples.migrated_inventory._gen.inventory_legacy.v1 import (
    inventory_legacy_pb2,
    inventory_legacy_pb2_grpc,
)


class InventoryLegacy(inventory_legacy_pb2_grpc.InventoryLegacyServicer):
    """inventory_legacy.v1.InventoryLegacy: the Flask views it replaces are named below."""

    def GetItem(
        self, request: inventory_legacy_pb2.GetItemRequest, context: grpc.ServicerContext
    ) -> inventory_legacy_pb2.Item:
        """GET /items/<sku>: was examples.legacy_inventory.app.get_item."""
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "GetItem is not migrated yet")

    def ListItems(
        self, request: inventory_legacy_pb2.ListItemsRequest, context: grpc.ServicerContext
    ) -> inventory_legacy_pb2.ListItemsResponse:
        """GET /items: was examples.legacy_inventory.app.list_items."""
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "ListItems is not migrated yet")

    def CreateItem(
        self, request: inventory_legacy_pb2.CreateItemRequest, context: grpc.ServicerContext
    ) -> inventory_legacy_pb2.Item:
        """POST /items: was examples.legacy_inventory.app.create_item."""
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "CreateItem is not migrated yet")

    def UpdateItem(
        self, request: inventory_legacy_pb2.UpdateItemRequest, context: grpc.ServicerContext
    ) -> inventory_legacy_pb2.Item:
        """PUT /items/<sku>: was examples.legacy_inventory.app.update_item."""
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "UpdateItem is not migrated yet")

    def DeleteItem(
        self, request: inventory_legacy_pb2.DeleteItemRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        """DELETE /items/<sku>: was examples.legacy_inventory.app.delete_item."""
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "DeleteItem is not migrated yet")

    def ItemTags(
        self, request: inventory_legacy_pb2.ItemTagsRequest, context: grpc.ServicerContext
    ) -> inventory_legacy_pb2.ItemTagsResponse:
        """GET /items/<sku>/tags: was examples.legacy_inventory.app.item_tags."""
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "ItemTags is not migrated yet")

    def CreateRestockPlan(
        self, request: inventory_legacy_pb2.CreateRestockPlanRequest, context: grpc.ServicerContext
    ) -> inventory_legacy_pb2.CreateRestockPlanResponse:
        """POST /restock-plans: was examples.legacy_inventory.app.create_restock_plan."""
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "CreateRestockPlan is not migrated yet")

    def Healthz(
        self, request: inventory_legacy_pb2.HealthzRequest, context: grpc.ServicerContext
    ) -> inventory_legacy_pb2.HealthzResponse:
        """GET /healthz: was examples.legacy_inventory.app.healthz."""
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Healthz is not migrated yet")

    def StockReport(
        self, request: inventory_legacy_pb2.StockReportRequest, context: grpc.ServicerContext
    ) -> inventory_legacy_pb2.StockReportResponse:
        """GET /reports/stock: was examples.legacy_inventory.app.stock_report."""
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "StockReport is not migrated yet")
