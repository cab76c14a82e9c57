"""The embedded HTTP server (``rpckit serve --http``): cheroot, tuned, with turns and limits.

- ``_server``: ``HttpServer``, its lifecycle (start, drain, stop).
- ``_cheroot``: cheroot tuned for many small keep-alive requests.
- ``_turns``: request threads do their CPU work one at a time, in arrival order.
- ``_limits``: ``HttpLimits`` and the pure check of a request head against them.

``HttpServer`` is re-exported by :mod:`rpckit.http`; cheroot is imported only when a
server starts.
"""
