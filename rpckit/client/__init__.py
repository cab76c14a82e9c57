"""The client: a load-balanced ``grpc.Channel`` over many backends, and deadline-carrying channels.

- ``_balancer``: ``BalancedChannel``; ``_calls``: the call objects it returns;
  ``_attempts``: the attempt engine every call runs on (pick, attempt, classify,
  retry or finish); ``_config``: its configuration and status snapshots.
- ``_discovery`` (static and DNS targets), ``_backend_health`` (health checks per
  connection), ``_scheduler`` (its timer thread), ``_channel`` (``connect``: an
  outbound channel that carries the inbound deadline).
- Pure policies (``now``/``rng`` in, decisions out): ``_p2c`` (the picker),
  ``_outlier`` (ejection), ``_retry`` (retry decision, budget, throttling),
  ``_feedback`` (what an attempt's outcome feeds, and whether to retry it).

Exports nothing itself; the public names are re-exported by :mod:`rpckit`
(``BalancedChannel``, ``BalancedChannelConfig``, ``connect``, ``PickerConfig``...).
"""
