"""The grpc-free core every other part builds on: no grpc, no web framework, no rpckit subpackage.

- ``_auth``: the authentication policy both ports share (``AuthPolicy``, ``Caller``,
  ``Allow``/``Deny``): which calls the user's hook decides and how its answers map.
- ``_deadline``: monotonic deadlines and cancellation of the call being served, carried
  across hops in a contextvar; the ``grpc-timeout`` codec.
- ``_http_limits``: what an HTTP request may send to the embedded server (``HttpLimits``)
  and the pure check of a request head against it.
- ``_load``: the ``rpckit-load-bin`` load report codec (a ``rpckit.v1.LoadReport``).
- ``_validate``: field checks shared by every config dataclass.
- ``_wire``: metadata keys and status conventions servers, shim and client share.

Exports nothing itself; its public names are re-exported by :mod:`rpckit`
(``cancelled``, ``time_remaining``, ``LOAD_METADATA_KEY``, ``load_from_metadata``,
``AuthPolicy``, ``Caller``, ``Allow``, ``Deny``) and
:mod:`rpckit.http` (``HttpLimits``).
Importing it loads no grpc.
"""
