"""Fault: a client disconnects mid-call; the handler and its downstream call stop too.

Two ``rpckit serve`` processes: the client calls the front, whose handler calls
the next hop through ``rpckit.connect`` (deadline and cancellation propagated);
the next hop's handler checks ``rpckit.cancelled()`` every 20 ms. The client
cancels while both handlers run.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc

from examples.inventory._gen.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from tests.faults.fault_app import AWAIT_CANCEL_S
from tests.faults.harness import FaultReport, wait_for
from tests.faults.test_restarts import APP
from tests.integration.conftest import ServeProcess

Serve = Callable[..., ServeProcess]
GetItem = inventory_pb2.GetItemRequest


def _wait_any(server: ServeProcess, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def arrived() -> bool:
        found[:] = [e for e in server.events() if e["event"] in kinds]
        return bool(found)

    wait_for(arrived, f"one of {kinds}", timeout=AWAIT_CANCEL_S + 10)
    return found[:1]


def test_a_client_leaving_mid_call_cancels_the_handler_and_its_downstream_call(
    serve: Serve,
) -> None:
    """The client cancels its call (30 s deadline) while the front handler waits on the
    next hop: the next hop's handler sees the cancellation at its next check (within
    2 s, not at its 20 s limit or the 30 s deadline), the front's downstream call
    ends CANCELLED, and the front handler's one check after it says cancelled.
    Failed: the one call the client cancelled (CANCELLED, by the client); lost: 0
    (no handler left running)."""
    next_hop = serve(APP, "--drain", "0.2")
    front = serve(APP, "--drain", "0.2")
    with grpc.insecure_channel(front.address) as channel:
        stub = inventory_pb2_grpc.InventoryStub(channel)
        call: Any = stub.GetItem.future(GetItem(sku=f"forward:{next_hop.address}"), timeout=30)
        next_hop.wait_for_events("started", 1)
        front.wait_for_events("forward-started", 1)
        cancelled_at = time.monotonic()
        assert call.cancel()
        downstream = _wait_any(next_hop, ("cancelled", "not-cancelled"))[0]
        front_end = _wait_any(front, ("forward-ended",))[0]
        outcome = call.exception(timeout=10) if not call.cancelled() else None
    assert downstream["event"] == "cancelled", downstream
    seen_after = float(str(downstream["at"])) - cancelled_at
    report = FaultReport(
        "client cancels mid-call (front -> next hop)",
        calls=1,
        ok=0,
        failed=Counter({"CANCELLED": 1}),
        lost=0 if downstream["event"] == "cancelled" else 1,
        recover_s=seen_after,
        recovered="next hop's handler stopped in",
    ).show()
    print(f"[fault] the next hop's handler stopped after {downstream['checks']} checks")
    assert outcome is None  # the client's own future reports its cancellation
    assert report.recover_s is not None
    assert report.recover_s < 2.0, report
    assert front_end["code"] == "CANCELLED", front_end
    assert front_end["cancelled"] is True, front_end  # seen at its first check
    assert report.lost == 0
