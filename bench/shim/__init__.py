"""bench/shim: the legacy inventory endpoints through rpckit's HTTP shim vs Flask under gunicorn."""
