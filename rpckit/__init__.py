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
supervisor never does (see ``rpckit._workers``).
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from rpckit._admission import AdmissionConfig, Criticality
    from rpckit._balancer import BalancedChannel
    from rpckit._balancer_config import BackendStatus, BalancedChannelConfig, ConnectionStatus
    from rpckit._channel import connect
    from rpckit._config import ConfigError, ServerConfig, TlsConfig
    from rpckit._deadline import cancelled, time_remaining
    from rpckit._errors import StatusError, abort, raise_if_cancelled, status_details
    from rpckit._load import LOAD_METADATA_KEY, load_from_metadata
    from rpckit._outlier import OutlierConfig
    from rpckit._p2c import PickerConfig
    from rpckit._retry import AdaptiveThrottleConfig, RetryBudgetConfig
    from rpckit._server import Server, ServerState
    from rpckit._signals import graceful_exit

__all__ = [
    "LOAD_METADATA_KEY",
    "AdaptiveThrottleConfig",
    "AdmissionConfig",
    "BackendStatus",
    "BalancedChannel",
    "BalancedChannelConfig",
    "ConfigError",
    "ConnectionStatus",
    "Criticality",
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
    "status_details",
    "time_remaining",
]

# Where each public name is defined.
_SOURCES = {
    "AdaptiveThrottleConfig": "rpckit._retry",
    "AdmissionConfig": "rpckit._admission",
    "BackendStatus": "rpckit._balancer_config",
    "BalancedChannel": "rpckit._balancer",
    "BalancedChannelConfig": "rpckit._balancer_config",
    "ConfigError": "rpckit._config",
    "ConnectionStatus": "rpckit._balancer_config",
    "Criticality": "rpckit._admission",
    "LOAD_METADATA_KEY": "rpckit._load",
    "OutlierConfig": "rpckit._outlier",
    "PickerConfig": "rpckit._p2c",
    "RetryBudgetConfig": "rpckit._retry",
    "Server": "rpckit._server",
    "ServerConfig": "rpckit._config",
    "ServerState": "rpckit._server",
    "StatusError": "rpckit._errors",
    "TlsConfig": "rpckit._config",
    "abort": "rpckit._errors",
    "cancelled": "rpckit._deadline",
    "connect": "rpckit._channel",
    "graceful_exit": "rpckit._signals",
    "load_from_metadata": "rpckit._load",
    "raise_if_cancelled": "rpckit._errors",
    "status_details": "rpckit._errors",
    "time_remaining": "rpckit._deadline",
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
