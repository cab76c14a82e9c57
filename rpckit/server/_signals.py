"""Graceful exit on SIGTERM/SIGINT and certificate reload on SIGHUP, only inside ``with`` blocks.

    with rpckit.graceful_exit([server]), reload_on_hangup([server]):
        server.start()
        server.wait()

The first stop signal starts a graceful stop of every server (drain, then grace);
a second one is logged and ignored, so an impatient Ctrl-C does not lose calls
in flight. SIGHUP makes every server read its TLS files again
(``reload_tls()``; new connections get the new certificates, open ones keep
theirs). Previous handlers are restored on exit. Never installed at import.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Protocol

__all__ = ["graceful_exit", "reload_on_hangup"]

_log = logging.getLogger("rpckit.server")


class Stoppable(Protocol):
    def stop(self) -> None: ...


class Reloadable(Protocol):
    def reload_tls(self) -> bool: ...


@contextlib.contextmanager
def graceful_exit(
    servers: Sequence[Stoppable],
    *,
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> Iterator[threading.Event]:
    """Stop ``servers`` gracefully on the first of ``signals``.

    Yields the event set when a stop was requested.
    """
    requested = threading.Event()

    def stop_all() -> None:
        threads = [threading.Thread(target=s.stop, name="rpckit-stop") for s in servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if requested.is_set():
            _log.warning("%s received again: still draining, calls in flight are kept", name)
            return
        _log.info("%s received: stopping gracefully", name)
        requested.set()
        threading.Thread(target=stop_all, name="rpckit-graceful-exit", daemon=True).start()

    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def reload_on_hangup(servers: Sequence[Reloadable]) -> Iterator[None]:
    """Reload the TLS certificates of ``servers`` on SIGHUP (in a thread, not the handler)."""

    def reload_all() -> None:
        for server in servers:
            try:
                server.reload_tls()
            except Exception:  # noqa: BLE001 - a failed reload must not end the process
                _log.exception("reloading the certificates of %r failed", server)

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        _log.info("SIGHUP received: reading the TLS certificate files again")
        threading.Thread(target=reload_all, name="rpckit-reload", daemon=True).start()

    previous = signal.signal(signal.SIGHUP, on_hangup)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)
