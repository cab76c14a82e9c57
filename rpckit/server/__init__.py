"""The server: grpcio's sync server with admission control, health, metrics and a graceful drain.

- ``_server``: composes the parts and owns the lifecycle; ``_signals``: graceful exit and
  SIGHUP reload; ``_workers``: ``--workers N`` (fork, supervise, drain); ``_config``:
  ``ServerConfig``; ``_tls``: certificates from files, reloaded (both ports);
  ``_auth_gate``: the auth policy asked for every call before admission.
- ``_executor``: the executor grpcio runs handlers on; ``_handlers``: the wrapper around
  each handler; ``_bad_input``: requests that do not parse; ``_health``, ``_metrics``,
  ``_servicers``, ``_errors``; ``_grpc_internals``:
  the grpcio private APIs rpckit relies on, in one place.
- Pure policies (``now`` in, decisions out): ``_admission`` (the queue) and
  ``_concurrency`` (the adaptive limit).

Exports nothing itself, so that importing one module (``_workers``, ``_config``) loads no
grpc; the public names are re-exported by :mod:`rpckit` (``Server``, ``ServerConfig``,
``AdmissionConfig``, ``StatusError``, ``graceful_exit``...).
"""
