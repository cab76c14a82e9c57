"""Fixtures for the legacy inventory contract suite: one app under test, many ways to build it.

Every contract test reaches the app through ``legacy_client``, which wraps the one
``legacy_app`` fixture. ``legacy_app`` is parametrized by :data:`LEGACY_APP_FACTORIES`,
so the very same tests run, unchanged, against each entry:

  (a) ``flask``: the legacy Flask app itself (today's only entry);
  (b) the Flask app with its ``wsgi_app`` wrapped by rpckit's HTTP shim;
  (c) the migrated rpckit handlers served through the shim, Flask as fallback.

Adding (b) and (c) means adding a factory to the table: no test changes. A factory
takes no arguments and returns a new WSGI application over a freshly seeded store
(:func:`examples.legacy_inventory.store.seed_items`) that accepts
:data:`examples.legacy_inventory.app.DEV_API_TOKEN` as its bearer token. A Flask app
is driven through ``app.test_client()``, anything else through Werkzeug's ``Client``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from flask import Flask
from werkzeug.test import Client

from examples.legacy_inventory.app import create_app

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

#: Builds a fresh app under test (see the module docstring for the contract).
LegacyAppFactory = Callable[[], "WSGIApplication"]


def flask_legacy_app() -> Flask:
    """(a) The legacy Flask app as it runs in production, exceptions propagated to the test."""
    return create_app(config={"TESTING": True})


#: (id, factory) for every way the legacy contract is served. Ids appear in test names.
LEGACY_APP_FACTORIES: tuple[tuple[str, LegacyAppFactory], ...] = (("flask", flask_legacy_app),)


@pytest.fixture(
    params=[factory for _, factory in LEGACY_APP_FACTORIES],
    ids=[factory_id for factory_id, _ in LEGACY_APP_FACTORIES],
)
def legacy_app(request: pytest.FixtureRequest) -> WSGIApplication:
    """A fresh, freshly seeded app under test, once per entry of LEGACY_APP_FACTORIES."""
    factory: LegacyAppFactory = request.param
    return factory()


@pytest.fixture
def legacy_client(legacy_app: WSGIApplication) -> Client:
    """A test client for ``legacy_app`` (Flask's own when it is a Flask app)."""
    if isinstance(legacy_app, Flask):
        return legacy_app.test_client()
    return Client(legacy_app)
