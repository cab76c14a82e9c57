"""The embedded HTTP server (``rpckit serve --http``): cheroot, tuned, with turns and limits.

- ``_server``: ``HttpServer``, its lifecycle (start, drain, stop).
- ``_cheroot``: cheroot tuned for many small keep-alive requests.
- ``_turns``: request threads do their CPU work one at a time, in arrival order.
- ``_tls``: HTTPS, its certificates swapped for new connections when they are reloaded.

Its limits (``HttpLimits``, the pure check of a request head) live in
:mod:`rpckit.core._http_limits`, so that ``rpckit serve``'s flags can name their defaults
without loading the shim.

``HttpServer`` is re-exported by :mod:`rpckit.http`; cheroot is imported only when a
server starts.
"""
