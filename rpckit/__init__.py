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
"""

from rpckit._admission import AdmissionConfig, Criticality
from rpckit._balancer import BalancedChannel
from rpckit._balancer_config import BackendStatus, BalancedChannelConfig, ConnectionStatus
from rpckit._channel import connect
from rpckit._config import ServerConfig, TlsConfig
from rpckit._deadline import cancelled, time_remaining
from rpckit._errors import ConfigError, StatusError, abort, raise_if_cancelled, status_details
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
