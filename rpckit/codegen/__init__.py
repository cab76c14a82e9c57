"""``rpckit gen``: grpcio-tools code generation with package-relative imports, and ``--check``.

``_gen``: pure import rewriting (``rewrite_imports``), ``render`` (protoc into a scratch
directory, returning the files' text) and ``apply``/``stale`` (write them, or list the
stale ones). Used by :mod:`rpckit.cli`; exports nothing itself.
"""
