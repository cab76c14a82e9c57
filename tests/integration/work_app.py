"""A servicer for overload tests: ``GetItem`` burns CPU and waits, as the request's sku says.

    rpckit serve tests.integration.work_app:servicers --grpc 127.0.0.1:0
    python -m tests.integration.work_app    # the same servicer on a plain grpcio server

sku ``"wait:MS"`` waits MS milliseconds (a slow downstream, no CPU); ``"work:CPU:WAIT"``
burns CPU ms of this thread's CPU (holding the GIL) then waits WAIT ms; anything else
answers at once.
"""

from __future__ import annotations

import time

import grpc

from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc


def burn(cpu_s: float) -> None:
    """Spin in pure Python until this thread used ``cpu_s`` of CPU."""
    end = time.thread_time() + cpu_s
    while time.thread_time() < end:
        sum(range(100))


class Work(inventory_pb2_grpc.InventoryServicer):
    def GetItem(
        self, request: inventory_pb2.GetItemRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.Item:
        kind, _, rest = request.sku.partition(":")
        if kind == "wait":
            time.sleep(float(rest) / 1000)
        elif kind == "work":
            cpu_ms, _, wait_ms = rest.partition(":")
            burn(float(cpu_ms) / 1000)
            time.sleep(float(wait_ms) / 1000)
        return inventory_pb2.Item(sku=request.sku)


def servicers() -> list[object]:
    return [Work()]


def serve_plain() -> None:
    """The baseline: a plain grpcio server (8 threads, as grpcio's examples) on 127.0.0.1:0;
    prints its address, serves until killed."""
    from concurrent.futures import ThreadPoolExecutor

    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    inventory_pb2_grpc.add_InventoryServicer_to_server(Work(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"127.0.0.1:{port}", flush=True)  # the parent reads the address
    server.wait_for_termination()


if __name__ == "__main__":
    serve_plain()
