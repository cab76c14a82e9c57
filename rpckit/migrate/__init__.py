"""Moving a Flask app to rpckit route by route: scan it, record its traffic, diff, watch it go.

The ``rpckit migrate`` verbs (``scan``, ``record``, ``diff``, ``status``) are
built from these parts; the playbook is ``migrate/README.md``. Flask is needed
only to scan, record or replay a Flask app: ``pip install 'rpckit[migrate]'``.

* :class:`Recorder` (with :class:`RecordConfig`): WSGI middleware sampling
  legacy exchanges into JSON lines, bounded and redacted.
* :class:`Exchange` and :func:`read_samples`: the samples file.

Importing this package loads neither Flask nor grpc.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from rpckit.migrate._record import RecordConfig, Recorder
    from rpckit.migrate._samples import Exchange, read_samples

__all__ = ["Exchange", "RecordConfig", "Recorder", "read_samples"]

_WHERE = {
    "Exchange": "rpckit.migrate._samples",
    "RecordConfig": "rpckit.migrate._record",
    "Recorder": "rpckit.migrate._record",
    "read_samples": "rpckit.migrate._samples",
}


def __getattr__(name: str) -> object:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'rpckit.migrate' has no attribute {name!r}")
    value = getattr(_importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
