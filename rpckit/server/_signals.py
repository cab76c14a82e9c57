"""Graceful exit on SIGTERM/SIGINT, installed only inside a ``with`` block.

    with rpckit.graceful_exit([server]):
        server.start()
        server.wait()

The first signal starts a graceful stop of every server (drain, then grace);
a second one is logged and ignored, so an impatient Ctrl-C does not lose calls
in flight. Previous handlers are restored on exit. Never installed at import.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Protocol

__all__ = ["graceful_exit"]

_log = logging.getLogger("rpckit.server")


class Stoppable(Protocol):
    def stop(self) -> None: ...


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
