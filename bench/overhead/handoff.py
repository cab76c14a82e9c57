"""python -m bench.overhead.handoff: what handing a call to a handler thread costs, no network.

One submitting thread keeps 16 trivial calls in flight (a semaphore: a finished call lets the
next one in) on rpckit's :class:`~rpckit.server._executor.AdmissionExecutor` (the defaults
``rpckit serve`` uses: adaptive limit, GIL switch interval by call) and on a
``ThreadPoolExecutor(16)``, in alternating rounds. For each: calls/s, the process's CPU per
call and the context switches per call, summed over its threads (``/proc/self/task``, Linux).
This is the hand-off alone -- grpcio's own per-call work is what ``python -m bench.overhead``
adds -- so it shows what the executor's structure costs: the number of times a thread is
woken per call, each a trip through the scheduler and the GIL.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rpckit.server._admission import AdmissionConfig, Criticality
from rpckit.server._concurrency import ConcurrencyConfig
from rpckit.server._executor import AdmissionExecutor, CallFacts
from rpckit.server._switch import SwitchConfig

IN_FLIGHT = 16
METHOD = "/bench.Handoff/Do"
SYSTEMS = ("rpckit", "thread-pool")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reading:
    """What one round measured."""

    system: str
    calls: int
    seconds: float
    cpu_s: float
    switches: int  # voluntary and involuntary, all threads of the process


def per_call(readings: Sequence[Reading]) -> dict[str, dict[str, float]]:
    """Median calls/s, CPU us a call and context switches a call, by system (pure)."""
    by_system: dict[str, list[Reading]] = {}
    for reading in readings:
        if reading.calls < 1 or reading.seconds <= 0.0:
            raise ValueError(f"a round needs calls and time: {reading!r}")
        by_system.setdefault(reading.system, []).append(reading)
    return {
        system: {
            "calls_per_s": statistics.median(r.calls / r.seconds for r in rounds),
            "cpu_us_per_call": statistics.median(r.cpu_s / r.calls * 1e6 for r in rounds),
            "switches_per_call": statistics.median(r.switches / r.calls for r in rounds),
            "rounds": len(rounds),
        }
        for system, rounds in by_system.items()
    }


def table(summary: dict[str, dict[str, float]]) -> str:
    """The summary as a Markdown table (pure)."""
    lines = [
        "| executor | calls/s | CPU us a call | context switches a call | rounds |",
        "|---|---:|---:|---:|---:|",
    ]
    for system, row in summary.items():
        lines.append(
            f"| {system} | {row['calls_per_s']:.0f} | {row['cpu_us_per_call']:.1f} "
            f"| {row['switches_per_call']:.2f} | {row['rounds']:.0f} |"
        )
    return "\n".join(lines)


def context_switches(task_dir: Path = Path("/proc/self/task")) -> int:
    """Voluntary plus involuntary context switches of every thread of this process."""
    total = 0
    for status in task_dir.glob("*/status"):
        try:
            text = status.read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


#: Starts one call of a trivial function on the executor measured.
Submit = Callable[[Callable[[], object]], object]


def _round(system: str, submit: Submit, calls: int) -> Reading:
    room = threading.Semaphore(IN_FLIGHT)

    def wait_for_room() -> None:
        if not room.acquire(timeout=30.0):
            raise RuntimeError(f"{system}: a call did not finish within 30 s")

    switches = context_switches()
    cpu = time.process_time()
    started = time.perf_counter()
    for _ in range(calls):
        wait_for_room()
        submit(room.release)
    for _ in range(IN_FLIGHT):  # the last calls have finished
        wait_for_room()
    return Reading(
        system=system,
        calls=calls,
        seconds=time.perf_counter() - started,
        cpu_s=time.process_time() - cpu,
        switches=context_switches() - switches,
    )


def _executor(system: str) -> tuple[Submit, Callable[[], None]]:
    """How to start a call on ``system``'s executor, and how to shut it down."""
    if system == "thread-pool":
        pool = concurrent.futures.ThreadPoolExecutor(IN_FLIGHT)
        return pool.submit, lambda: pool.shutdown(wait=True)
    side = concurrent.futures.ThreadPoolExecutor(1)
    executor = AdmissionExecutor(
        threads=256,
        side_pool=side,
        admission=AdmissionConfig(),
        concurrency=ConcurrencyConfig(),
        switch=SwitchConfig(),
        set_switch_interval=lambda _interval: None,  # the process's interval stays
    )
    facts = CallFacts(method=METHOD, deadline=None, criticality=Criticality.DEFAULT)

    def close() -> None:
        executor.shutdown(wait=True)
        side.shutdown(wait=True)

    return lambda fn: executor.submit_call(fn, facts), close


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead.handoff",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m bench.overhead.handoff --rounds 4 --calls 30000   # ~20 s",
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds per executor (4)")
    parser.add_argument("--calls", type=int, default=30000, help="calls per round (30000)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < IN_FLIGHT:
        parser.error(f"--rounds must be >= 1 and --calls >= {IN_FLIGHT}")
    if not Path("/proc/self/task").is_dir():
        parser.error("needs Linux's /proc/self/task to count context switches")
    readings = []
    for index in range(args.rounds):
        order = SYSTEMS if index % 2 == 0 else tuple(reversed(SYSTEMS))
        for system in order:
            submit, close = _executor(system)
            try:
                _round(system, submit, min(args.calls, 2000))  # warm: threads made
                reading = _round(system, submit, args.calls)
            finally:
                close()
            readings.append(reading)
            print(
                f"round {index + 1}/{args.rounds} {system}: "
                f"{reading.calls / reading.seconds:.0f} calls/s",
                file=sys.stderr,
            )
    print(table(per_call(readings)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
