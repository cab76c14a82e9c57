"""rpckit: typed, load-aware gRPC services for teams leaving JSON-over-HTTP.

Handlers are plain grpcio servicers; rpckit serves them with admission control,
health, reflection, deadlines that cross hops and a graceful drain::

    import rpckit
    from myservice import Inventory

    server = rpckit.Server([Inventory()])
    server.add_port("127.0.0.1:50051")
    with rpckit.graceful_exit([server]):
        server.start()
        server.wait()

The implementation lives in private modules; this is the public surface.

The names are imported on first use (PEP 562), so ``import rpckit`` -- and the
``rpckit`` command, whose modules live in this package -- loads neither grpc
nor protobuf until something needs them: ``rpckit serve --workers``'s
supervisor never does (see ``rpckit.server._workers``).
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from rpckit.client._balancer import BalancedChannel
    from rpckit.client._channel import connect
    from rpckit.client._config import BackendStatus, BalancedChannelConfig, ConnectionStatus
    from rpckit.client._outlier import OutlierConfig
    from rpckit.client._p2c import PickerConfig
    from rpckit.client._retry import AdaptiveThrottleConfig, RetryBudgetConfig
    from rpckit.core._auth import Allow, AuthPolicy, Caller, Deny
    from rpckit.core._deadline import cancelled, time_remaining
    from rpckit.core._load import load_from_metadata
    from rpckit.core._wire import LOAD_METADATA_KEY
    from rpckit.server._admission import AdmissionConfig, Criticality
    from rpckit.server._config import ConfigError, ServerConfig, TlsConfig
    from rpckit.server._errors import StatusError, abort, raise_if_cancelled, status_details
    from rpckit.server._server import Server, ServerState
    from rpckit.server._signals import graceful_exit, reload_on_hangup

__all__ = [
    "LOAD_METADATA_KEY",
    "AdaptiveThrottleConfig",
    "AdmissionConfig",
    "Allow",
    "AuthPolicy",
    "BackendStatus",
    "BalancedChannel",
    "BalancedChannelConfig",
    "Caller",
    "ConfigError",
    "ConnectionStatus",
    "Criticality",
    "Deny",
    "OutlierConfig",
    "PickerConfig",
    "RetryBudgetConfig",
    "Server",
    "ServerConfig",
    "ServerState",
    "StatusError",
    "TlsConfig",
    "abort",
    "cancelled",
    "connect",
    "graceful_exit",
    "load_from_metadata",
    "raise_if_cancelled",
    "reload_on_hangup",
    "status_details",
    "time_remaining",
]

# Where each public name is defined.
_SOURCES = {
    "AdaptiveThrottleConfig": "rpckit.client._retry",
    "AdmissionConfig": "rpckit.server._admission",
    "Allow": "rpckit.core._auth",
    "AuthPolicy": "rpckit.core._auth",
    "BackendStatus": "rpckit.client._config",
    "BalancedChannel": "rpckit.client._balancer",
    "BalancedChannelConfig": "rpckit.client._config",
    "Caller": "rpckit.core._auth",
    "ConfigError": "rpckit.server._config",
    "ConnectionStatus": "rpckit.client._config",
    "Criticality": "rpckit.server._admission",
    "Deny": "rpckit.core._auth",
    "LOAD_METADATA_KEY": "rpckit.core._wire",
    "OutlierConfig": "rpckit.client._outlier",
    "PickerConfig": "rpckit.client._p2c",
    "RetryBudgetConfig": "rpckit.client._retry",
    "Server": "rpckit.server._server",
    "ServerConfig": "rpckit.server._config",
    "ServerState": "rpckit.server._server",
    "StatusError": "rpckit.server._errors",
    "TlsConfig": "rpckit.server._config",
    "abort": "rpckit.server._errors",
    "cancelled": "rpckit.core._deadline",
    "connect": "rpckit.client._channel",
    "graceful_exit": "rpckit.server._signals",
    "load_from_metadata": "rpckit.core._load",
    "raise_if_cancelled": "rpckit.server._errors",
    "reload_on_hangup": "rpckit.server._signals",
    "status_details": "rpckit.server._errors",
    "time_remaining": "rpckit.core._deadline",
}


def __getattr__(name: str) -> object:
    """Import a public name's module the first time the name is used."""
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'rpckit' has no attribute {name!r}")
    value = getattr(_importlib.import_module(source), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
