"""The Flask dialect through a real rpckit server's admission queue (127.0.0.1:0): a call
that waits in the queue runs on a handler thread, and still sees the app's request
context and the guard's identity there."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import flask
import grpc

import rpckit
from rpckit.http import RouteOptions, Shim, ShimConfig, guard_identity
from rpckit.testing import running
from tests.flask_dialect.petstore_app import PetStore, create_app
from tests.flask_dialect.petstore_shim import (
    SERVICE,
    PetStoreService,
    bearer_user,
    petstore_routes,
    render_like_the_app,
)
from tests.protos._gen.petstore.v1 import petstore_pb2 as pb

#: One handler slot, one queue place, CoDel out of the way: the second call must queue.
ONE_SLOT = rpckit.AdmissionConfig(
    workers=1,
    queue_limit=1,
    admit_within_allowance=False,
    codel_target_s=5.0,
    codel_interval_s=10.0,
)


class Gated(PetStoreService):
    """ListPets(limit=99) holds its slot until the gate opens; every call notes what it saw."""

    def __init__(self, store: PetStore) -> None:
        super().__init__(store)
        self.open = threading.Event()
        self.entered = threading.Semaphore(0)
        self.seen: list[tuple[int, str, object, str]] = []

    def ListPets(self, request: pb.ListPetsRequest, context: grpc.ServicerContext) -> Any:
        if request.limit == 99:
            self.entered.release()
            self.open.wait(timeout=30)
        self.seen.append(
            (request.limit, threading.current_thread().name, guard_identity(), flask.request.host)
        )
        return super().ListPets(request, context)


def test_a_queued_call_sees_the_request_context_and_identity_on_a_handler_thread() -> None:
    store = PetStore()
    service = Gated(store)
    routes = {**petstore_routes(), f"{SERVICE}.ListPets": RouteOptions(guard=bearer_user)}
    config = rpckit.ServerConfig(threads=1, drain_s=0)
    with (
        running([service], config=config, admission=ONE_SLOT) as live,
        ThreadPoolExecutor(2) as pool,
    ):
        app = create_app(store)
        app.wsgi_app = Shim(  # type: ignore[method-assign]
            server=live.server,
            fallback=app.wsgi_app,
            routes=routes,
            config=ShimConfig(error_renderer=render_like_the_app),
        )
        headers = {"Authorization": "Bearer bob-token", "Host": "pets.example"}

        def get(limit: int) -> int:
            response = app.test_client().get(f"/pets?limit={limit}", headers=headers)
            return response.status_code

        held = pool.submit(get, 99)
        assert service.entered.acquire(timeout=20)
        queued = pool.submit(get, 1)
        give_up = time.monotonic() + 10
        while live.server.load_report().queue_depth != 1:
            assert time.monotonic() < give_up, "the second call never queued"
            time.sleep(0.002)
        service.open.set()
        assert (held.result(timeout=30), queued.result(timeout=30)) == (200, 200)
    threads = {limit: thread for limit, thread, _, _ in service.seen}
    assert threads[99].startswith("ThreadPoolExecutor")  # admitted at once: the WSGI thread
    assert threads[1].startswith("rpckit-handler")  # queued: a handler thread
    assert [(who, host) for _, _, who, host in service.seen] == [("bob", "pets.example")] * 2
