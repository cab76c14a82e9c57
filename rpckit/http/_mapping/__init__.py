"""The shim's pure mapping between HTTP/JSON and protobuf: no grpc, no web framework, no I/O.

- ``_routes``: ``google.api.http`` path templates, the router (Flask's answers for near
  misses) and request binding (path, query and body into the request message).
- ``_jsonmap``: the legacy JSON profile, messages <-> the JSON an old Flask service spoke.
- ``_openapi``: the OpenAPI 3 document of the contract as served.

Public names are re-exported by :mod:`rpckit.http` (``LegacyProfile``).
"""
