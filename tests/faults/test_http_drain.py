"""Fault: SIGTERM while HTTP requests are in flight on ``rpckit serve --http``.

A graceful stop drains: the port keeps serving for ``--drain`` seconds, then
requests in flight get up to ``--grace`` to finish, then the process exits 0.
None of the requests in flight is lost.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import signal
import time
from collections import Counter
from collections.abc import Callable

from tests.faults.harness import FaultReport
from tests.faults.test_restarts import APP
from tests.integration.conftest import ServeProcess

Serve = Callable[..., ServeProcess]
IN_FLIGHT = 16
HOLD_MS = 2000


def get(address: str, path: str) -> tuple[int, dict[str, object]]:
    """GET ``path``: (status, JSON body). Raises if the answer is cut off or not JSON."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()  # IncompleteRead if the server dropped it mid-body
        return response.status, json.loads(body)
    finally:
        connection.close()


def test_sigterm_drains_the_http_port_without_losing_a_request_in_flight(serve: Serve) -> None:
    """16 requests of 2 s in flight, then SIGTERM (drain 1 s, grace 10 s), and 4 more
    requests during the drain: every one answered 200 with its whole JSON body
    (0 failed, 0 lost), and the server exits 0 within drain + grace."""
    server = serve(APP, "--http", "127.0.0.1:0", "--drain", "1.0", "--grace", "10")
    address = str(server.announcement["http"])
    path = f"/items/hold:{HOLD_MS}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=IN_FLIGHT + 4) as pool:
        in_flight = [pool.submit(get, address, path) for _ in range(IN_FLIGHT)]
        server.wait_for_events("started", IN_FLIGHT)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        during_drain = [pool.submit(get, address, "/items/drain") for _ in range(4)]
        outcomes: Counter[str] = Counter()
        for future in (*in_flight, *during_drain):
            error = future.exception(timeout=60)
            if error is not None:
                outcomes[f"lost: {type(error).__name__}"] += 1
                continue
            status, body = future.result()
            outcomes["OK" if status == 200 and body.get("sku") else f"HTTP {status}"] += 1
        assert server.proc.wait(timeout=30) == 0
        stopped_in = time.monotonic() - signalled
    report = FaultReport(
        "SIGTERM with HTTP requests in flight",
        calls=IN_FLIGHT + 4,
        ok=outcomes["OK"],
        failed=Counter({k: n for k, n in outcomes.items() if k.startswith("HTTP")}),
        lost=sum(n for k, n in outcomes.items() if k.startswith("lost")),
        recover_s=stopped_in,
        recovered="drained and exited 0 in",
    ).show()
    assert report.failed == Counter(), outcomes
    assert report.lost == 0, outcomes
    assert report.ok == IN_FLIGHT + 4
    assert report.recover_s is not None
    assert report.recover_s < 1.0 + 10.0 + 5.0, report
