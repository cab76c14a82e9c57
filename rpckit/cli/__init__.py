"""The ``rpckit`` command (``serve``, ``gen``, ``openapi``): thin argument parsing over the library.

Exports :func:`main`, the console entry point. Importing it loads no grpc: the
``serve --workers`` supervisor never does.
"""

from rpckit.cli._main import main

__all__ = ["main"]
