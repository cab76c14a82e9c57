"""The fault suite starts real ``rpckit serve`` processes, as the integration tests do."""

from tests.integration.conftest import _heap_frozen_as_at_start_up, serve

__all__ = ["_heap_frozen_as_at_start_up", "serve"]
