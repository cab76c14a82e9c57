"""Handler threads run below the process's CPU priority; the others keep it."""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading

import pytest

from rpckit.server._admission import AdmissionConfig, Criticality
from rpckit.server._config import ServerConfig
from rpckit.server._executor import AdmissionExecutor, CallFacts

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")


def thread_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def nice_in_a_handler(handler_nice: int) -> tuple[int, int]:
    """(this thread's nice, a handler thread's nice) for an executor with ``handler_nice``."""
    side = concurrent.futures.ThreadPoolExecutor(1)
    executor = AdmissionExecutor(
        threads=1, side_pool=side, admission=AdmissionConfig(workers=1), handler_nice=handler_nice
    )
    seen: list[int] = []
    facts = CallFacts(method="/p.S/M", deadline=None, criticality=Criticality.DEFAULT)
    try:
        executor.submit_call(lambda: seen.append(thread_nice()), facts).result(timeout=30)
    finally:
        executor.shutdown(wait=True)
        side.shutdown(wait=True)
    return thread_nice(), seen[0]


def test_handler_threads_run_at_a_lower_priority() -> None:
    mine, handler = nice_in_a_handler(5)
    assert handler == min(19, mine + 5)
    assert thread_nice() == mine  # the caller's own priority is untouched


def test_zero_keeps_the_handlers_level_with_the_process() -> None:
    mine, handler = nice_in_a_handler(0)
    assert handler == mine


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (20, ValueError), (True, TypeError)]
)
def test_server_config_bounds_handler_nice(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="handler_nice"):
        ServerConfig(handler_nice=value)  # type: ignore[arg-type]


def test_server_config_lowers_handlers_by_default() -> None:
    assert ServerConfig().handler_nice == 10
