"""An inventory servicer that answers at once and counts the GetItem calls its handler ran."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc

from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc


class CountingInventory(inventory_pb2_grpc.InventoryServicer):
    """GetItem echoes the sku (name "counted") and counts; WatchLowStock streams
    ``threshold`` items named low-0, low-1, ..."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def GetItem(
        self, request: inventory_pb2.GetItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        with self._lock:
            self.calls += 1
        return inventory_pb2.Item(sku=request.sku, name="counted")

    def WatchLowStock(
        self, request: inventory_pb2.WatchLowStockRequest, context: grpc.ServicerContext
    ) -> Iterator[inventory_pb2.Item]:
        for i in range(request.threshold):
            yield inventory_pb2.Item(sku=f"low-{i}")
