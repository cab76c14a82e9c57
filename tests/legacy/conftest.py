"""Fixtures for the legacy inventory contract suite: one app under test, many ways to build it.

Every contract test reaches the app through ``legacy_client``, which wraps the one
``legacy_app`` fixture. ``legacy_app`` is parametrized by :data:`LEGACY_APP_FACTORIES`,
so the very same tests run, unchanged, against each entry:

  (a) ``flask``: the legacy Flask app itself;
  (b) ``shim-passthrough``: the Flask app with its ``wsgi_app`` wrapped by rpckit's
      HTTP shim serving nothing itself (``Shim(services=[], fallback=app.wsgi_app)``);
  (c) the migrated rpckit handlers (``examples.inventory.service.Inventory``) served
      through the shim, with the Flask app as fallback for the unmigrated routes
      (``/healthz``, ``/reports/stock``) and sharing its store:
      ``shim-inprocess`` calls the servicer in the WSGI thread; ``shim-server`` goes
      through a real rpckit server's admission queue and handler threads;
      ``shim-proxy`` makes real gRPC calls over a plain channel to that server
      (127.0.0.1, port 0); ``shim-proxy-balanced`` makes them through an
      ``rpckit.BalancedChannel`` over two rpckit servers (sharing one servicer,
      so one store).

A factory takes the session's :class:`SharedBackends` (servers started once, on
first use) and returns a new WSGI application over a freshly seeded store
(:func:`examples.legacy_inventory.store.seed_items`) that accepts
:data:`examples.legacy_inventory.app.DEV_API_TOKEN` as its bearer token. A Flask
app is driven through ``app.test_client()``, anything else through Werkzeug's ``Client``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import grpc
import pytest
from flask import Flask
from werkzeug.test import Client

from examples.inventory.server import legacy_shim
from examples.inventory.service import Inventory
from examples.legacy_inventory.app import create_app
from examples.legacy_inventory.store import InventoryStore
from rpckit import BalancedChannel
from rpckit.http import Shim
from rpckit.testing import RunningServer, running

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication


class SharedBackends:
    """An rpckit server with the migrated Inventory, started on first use, stopped at the end.

    Each factory call gives the servicer a fresh store, so tests stay independent
    while the server (and its channel) are started once per session.
    """

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._live: tuple[Inventory, RunningServer, grpc.Channel] | None = None
        self._balanced: tuple[Inventory, BalancedChannel] | None = None

    def inventory_server(self) -> tuple[Inventory, RunningServer, grpc.Channel]:
        """The servicer (with a fresh store), its running server and a plain channel to it."""
        if self._live is None:
            inventory = Inventory()
            live = self._stack.enter_context(running([inventory]))
            channel = self._stack.enter_context(grpc.insecure_channel(live.address))
            self._live = (inventory, live, channel)
        inventory = self._live[0]
        inventory.store = InventoryStore()
        return self._live

    def balanced_backends(self) -> tuple[Inventory, BalancedChannel]:
        """One servicer (fresh store) behind two rpckit servers, and a BalancedChannel to them."""
        if self._balanced is None:
            inventory = Inventory()
            first = self._stack.enter_context(running([inventory]))
            second = self._stack.enter_context(running([inventory]))
            channel = self._stack.enter_context(BalancedChannel([first.address, second.address]))
            self._balanced = (inventory, channel)
        inventory = self._balanced[0]
        inventory.store = InventoryStore()
        return self._balanced

    def close(self) -> None:
        self._stack.close()


#: Builds a fresh app under test (see the module docstring for the contract).
LegacyAppFactory = Callable[[SharedBackends], "WSGIApplication"]


def flask_legacy_app(backends: SharedBackends) -> Flask:
    """(a) The legacy Flask app as it runs in production, exceptions propagated to the test."""
    return create_app(config={"TESTING": True})


def shim_passthrough_app(backends: SharedBackends) -> Flask:
    """(b) The Flask app behind a shim that serves nothing itself."""
    app = create_app(config={"TESTING": True})
    app.wsgi_app = Shim(services=[], fallback=app.wsgi_app)  # type: ignore[method-assign]
    return app


def shim_inprocess_app(backends: SharedBackends) -> Shim:
    """(c) The migrated servicer called in process by the shim; Flask for the rest."""
    return legacy_shim(Inventory())


def shim_server_app(backends: SharedBackends) -> Shim:
    """(c) Through a running rpckit server's admission queue and handler threads."""
    inventory, live, _ = backends.inventory_server()
    return legacy_shim(inventory, server=live.server)


def shim_proxy_app(backends: SharedBackends) -> Shim:
    """(c) Proxy mode: real gRPC calls over a plain channel to the rpckit server."""
    inventory, _, channel = backends.inventory_server()
    return legacy_shim(inventory, channel=channel, services=["inventory.v1.Inventory"])


def shim_proxy_balanced_app(backends: SharedBackends) -> Shim:
    """(c) Proxy mode over a BalancedChannel to two rpckit servers."""
    inventory, channel = backends.balanced_backends()
    return legacy_shim(inventory, channel=channel, services=["inventory.v1.Inventory"])


def _migration_stage(name: str) -> LegacyAppFactory:
    """(d) A stage of the worked migration (migrate/README.md): scan's proto, shim in front."""

    def factory(backends: SharedBackends) -> Shim:
        from examples.migrated_inventory import stages

        shim: Shim = getattr(stages, f"stage_{name}")()
        return shim

    return factory


#: (id, factory) for every way the legacy contract is served. Ids appear in test names.
LEGACY_APP_FACTORIES: tuple[tuple[str, LegacyAppFactory], ...] = (
    ("flask", flask_legacy_app),
    ("shim-passthrough", shim_passthrough_app),
    ("shim-inprocess", shim_inprocess_app),
    ("shim-server", shim_server_app),
    ("shim-proxy", shim_proxy_app),
    ("shim-proxy-balanced", shim_proxy_balanced_app),
    *((f"migration-stage-{name}", _migration_stage(name)) for name in ("0", "1", "3", "all")),
)


@pytest.fixture(scope="session")
def shared_backends() -> Iterator[SharedBackends]:
    backends = SharedBackends()
    try:
        yield backends
    finally:
        backends.close()


@pytest.fixture(
    params=[factory for _, factory in LEGACY_APP_FACTORIES],
    ids=[factory_id for factory_id, _ in LEGACY_APP_FACTORIES],
)
def legacy_app(request: pytest.FixtureRequest, shared_backends: SharedBackends) -> WSGIApplication:
    """A fresh, freshly seeded app under test, once per entry of LEGACY_APP_FACTORIES."""
    factory: LegacyAppFactory = request.param
    return factory(shared_backends)


@pytest.fixture
def legacy_client(legacy_app: WSGIApplication) -> Client:
    """A test client for ``legacy_app`` (Flask's own when it is a Flask app)."""
    if isinstance(legacy_app, Flask):
        return legacy_app.test_client()
    return Client(legacy_app)
