"""python -m bench.balance: rpckit's P2C client vs grpcio's round_robin vs random, one slow backend.

Starts N rpckit backends whose handler only sleeps (one of them 10x longer), offers the same
open-loop Poisson load (a share of the measured capacity) through each policy in turn from
several sender processes, and reports per policy goodput, latency percentiles, deadline misses
and the share of calls each backend got, with the issue's acceptance checks. Writes
results.md, results.json and balance.png into --out; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import random
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.balance import results
from bench.balance.clients import POLICIES, ClientSpec
from bench.balance.plot import plot_balance
from bench.balance.service import SLOWDOWN_ENV
from bench.harness import procs
from bench.harness.loadgen import LoadGenerator, poisson_schedule
from bench.harness.stats import Outcome, RequestRecord, percentile
from rpckit.server._cpu import machine_busy_s

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
DEFAULT_OUT = Path("bench/balance/results")
#: The backends' warm-up and the calibration run at this rate (or at --load x the backends'
#: thread capacity when that is lower).
CALIBRATION_RPS = 300.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """Durations of one mode. The backends get backend_warmup_s of load first (their first
    calls are slow); then each policy's clients get warmup_s (unmeasured: they learn the
    backends). Then ``rounds`` rounds run every policy in turn, the order reversed every
    other round, each time lead_in_s unmeasured and measure_s / rounds measured, all at the
    same rate and on the same arrival schedule within a round: a slow spell of the shared
    machine then weighs on every policy alike instead of on whichever ran during it."""

    backend_warmup_s: float
    warmup_s: float
    measure_s: float
    calibrate_s: float
    rounds: int = 1
    lead_in_s: float = 1.0
    max_requests: int = 400_000

    def __post_init__(self) -> None:
        durations = (
            self.backend_warmup_s,
            self.warmup_s,
            self.measure_s,
            self.calibrate_s,
            self.lead_in_s,
        )
        if min(durations) <= 0 or self.max_requests < 1 or self.rounds < 1:
            raise ValueError("durations must be > 0, rounds and max_requests >= 1")

    @property
    def round_s(self) -> float:
        """Measured seconds per policy per round."""
        return self.measure_s / self.rounds


# Quick: a smoke test under a minute; 8 s is too short for P2C's latency estimates (10 s
# decay) to forget the start-up of its client, so its numbers are not the acceptance run's.
QUICK = Plan(backend_warmup_s=2.0, warmup_s=8.0, measure_s=6.0, calibrate_s=4.0)
# Full: ~5 minutes. A new BalancedChannel redials its second connection to each
# single-process backend (worker_redials) in its first seconds; 30 s lets the latency
# peaks of that start-up decay out of P2C's estimates before measuring. Each round gives
# a policy 3 s of load again before its 10 s are measured (its clients sat idle meanwhile).
FULL = Plan(
    backend_warmup_s=5.0, warmup_s=30.0, measure_s=40.0, calibrate_s=10.0, rounds=4, lead_in_s=3.0
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.balance",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "example:\n"
            "  python -m bench.balance --quick --out /tmp/balance\n"
            f"  python -m bench.balance            # full mode, ~4 min, into {DEFAULT_OUT}"
        ),
    )
    parser.add_argument("--quick", action="store_true", help="short runs: under a minute")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"where results.md, results.json, balance.png go ({DEFAULT_OUT})",
    )
    parser.add_argument(
        "--policies",
        nargs="+",
        choices=POLICIES,
        default=list(POLICIES),
        metavar="NAME",
        help=f"policies to run, in order ({', '.join(POLICIES)})",
    )
    parser.add_argument("--backends", type=int, default=10, help="backend processes (10)")
    parser.add_argument("--slow-backend", type=int, default=0, help="index of the slow one (0)")
    parser.add_argument(
        "--slow-factor", type=float, default=10.0, help="how much slower it is (10)"
    )
    parser.add_argument("--service-ms", type=float, default=10.0, help="handler sleep (10)")
    parser.add_argument(
        "--threads", type=int, default=8, help="handler threads per backend (8, rpckit's default)"
    )
    parser.add_argument(
        "--load", type=float, default=0.5, help="offered load as a share of capacity (0.5)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="offered calls per second; skips the calibration (default: --load x capacity)",
    )
    parser.add_argument("--deadline-ms", type=float, default=500.0, help="client deadline (500)")
    parser.add_argument("--senders", type=int, default=4, help="sender processes (4)")
    parser.add_argument("--warmup-s", type=float, help="override the mode's warm-up per policy")
    parser.add_argument(
        "--backend-warmup-s", type=float, help="override the mode's backend warm-up (once)"
    )
    parser.add_argument(
        "--measure-s", type=float, help="override the mode's measured seconds per policy"
    )
    parser.add_argument(
        "--rounds", type=int, help="override the mode's rounds over the policies (full: 4)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the arrival schedule (1)")
    parser.add_argument(
        "--findings",
        type=Path,
        metavar="FILE",
        help="markdown bullets (one per line) to print under Findings in results.md",
    )
    parser.add_argument(
        "--rpckit-args",
        default="",
        metavar="ARGS",
        help="extra flags for every backend's rpckit serve, e.g. --rpckit-args='--queue-limit 64'",
    )
    return parser


def backend_argv(threads: int, extra: Sequence[str]) -> list[str]:
    return [
        str(VENV_BIN / "rpckit"),
        "serve",
        "bench.balance.service:servicers",
        "--grpc",
        "127.0.0.1:0",
        "--threads",
        str(threads),
        "--drain",
        "0.2",
        "--grace",
        "2",
        "--log-level",
        "WARNING",
        *extra,
    ]


def start_backends(
    args: argparse.Namespace, log_dir: Path, extra: Sequence[str]
) -> list[procs.SystemProcess]:
    """Start every backend (in parallel: each imports grpc for about a second of CPU)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )

    def start(index: int) -> procs.SystemProcess:
        slowdown = args.slow_factor if index == args.slow_backend else 1.0
        return procs.SystemProcess(
            f"backend-{index}",
            backend_argv(args.threads, extra),
            ready=procs.json_line_address,
            log_dir=log_dir,
            env={**env, SLOWDOWN_ENV: repr(slowdown)},
            cwd=REPO_ROOT,
            ready_timeout_s=60.0,
        )

    with ThreadPoolExecutor(max_workers=args.backends) as pool:
        futures = [pool.submit(start, index) for index in range(args.backends)]
        started: list[procs.SystemProcess] = []
        failure: BaseException | None = None
        for future in futures:
            try:
                started.append(future.result())
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            stop_backends(started)
            raise failure
    return started


def stop_backends(backends: Sequence[procs.SystemProcess]) -> list[int | None]:
    with ThreadPoolExecutor(max_workers=max(1, len(backends))) as pool:
        return list(pool.map(lambda backend: backend.stop(timeout_s=15), backends))


def backends_cpu_s(backends: Sequence[procs.SystemProcess]) -> float:
    return sum(procs.tree_cpu_seconds(backend.pid) for backend in backends)


def read_findings(path: Path | None) -> list[str]:
    """The findings file's bullets: a line starting "- " starts one, other lines continue it."""
    if path is None:
        return []
    findings: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith("- ") or (text and not findings):
            findings.append(text.removeprefix("- "))
        elif text:
            findings[-1] += " " + text
    return findings


def machine_busy_cpu_s() -> float:
    """CPU seconds the whole machine spent busy (not idle or waiting for I/O) since boot:
    the reading rpckit's own executor takes (:func:`rpckit.server._cpu.machine_busy_s`)."""
    busy = machine_busy_s()
    assert busy is not None, "/proc/stat starts with the all-CPU line"
    return busy


def _override(plan: Plan, args: argparse.Namespace) -> Plan:
    """The mode's plan with the command line's overrides (ValueError when invalid)."""
    return dataclasses.replace(
        plan,
        warmup_s=plan.warmup_s if args.warmup_s is None else args.warmup_s,
        measure_s=plan.measure_s if args.measure_s is None else args.measure_s,
        backend_warmup_s=plan.backend_warmup_s
        if args.backend_warmup_s is None
        else args.backend_warmup_s,
        rounds=plan.rounds if args.rounds is None else args.rounds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    try:
        plan = _override(plan, args)
    except ValueError as exc:
        parser.error(f"--warmup-s, --measure-s, --backend-warmup-s, --rounds: {exc}")

    if args.backends < 2 or not 0 <= args.slow_backend < args.backends:
        raise SystemExit("need --backends >= 2 and 0 <= --slow-backend < --backends")
    if args.threads < 1 or args.senders < 1 or args.service_ms <= 0 or args.slow_factor <= 0:
        raise SystemExit("--threads, --senders, --service-ms and --slow-factor must be > 0")
    if args.load <= 0 or args.deadline_ms <= 0 or (args.rate is not None and args.rate <= 0):
        raise SystemExit("--load, --rate and --deadline-ms must be > 0")
    service_s = [
        args.service_ms / 1000 * (args.slow_factor if i == args.slow_backend else 1.0)
        for i in range(args.backends)
    ]
    thread_capacity = results.nominal_capacity([args.threads] * args.backends, service_s)
    deadline_s = args.deadline_ms / 1000
    extra = shlex.split(args.rpckit_args)
    started = time.monotonic()
    run: dict[str, Any] = {
        "benchmark": "balance",
        "mode": "quick" if args.quick else "full",
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench.balance", *(argv or sys.argv[1:])]),
        "machine": procs.machine_description(("grpcio", "protobuf")),
        "config": {
            "backends": args.backends,
            "slow_backend": args.slow_backend,
            "slow_factor": args.slow_factor,
            "service_ms": args.service_ms,
            "threads": args.threads,
            "load": args.load,
            "deadline_ms": args.deadline_ms,
            "senders": args.senders,
            "backend_warmup_s": plan.backend_warmup_s,
            "warmup_s": plan.warmup_s,
            "measure_s": plan.measure_s,
            "rounds": plan.rounds,
            "lead_in_s": plan.lead_in_s,
            "seed": args.seed,
            "rpckit_args": extra,
            "backend_argv": backend_argv(args.threads, extra),
        },
        "capacity": {"threads_rps": thread_capacity, "calibration": None, "rps": None},
        "rate_rps": args.rate,
        "policies": [],
        "notes": [],
        "findings": read_findings(args.findings),
    }
    procs.progress(
        f"balance benchmark, {run['mode']} mode: {args.backends} backends x {args.threads} "
        f"thread(s) (thread capacity {thread_capacity:.0f}/s), {args.senders} senders, "
        f"policies: {', '.join(args.policies)}"
    )
    # Before the rate is known (calibration), the backends warm up at a rate they surely take.
    provisional = args.rate or min(CALIBRATION_RPS, args.load * thread_capacity)
    with tempfile.TemporaryDirectory(prefix="bench-balance-") as scratch:
        log_dir = Path(scratch) / "logs"
        procs.progress(f"starting {args.backends} backends")
        backends = start_backends(args, log_dir, extra)
        try:
            addresses = tuple(backend.address for backend in backends)
            backend_of_pid = {
                pid: index
                for index, backend in enumerate(backends)
                for pid in procs.process_tree(backend.pid)
            }
            run["config"]["addresses"] = list(addresses)
            procs.progress(f"backends ready: {', '.join(addresses)}")
            with contextlib.ExitStack() as stack:
                # One set of senders per policy: each keeps its clients (and what they have
                # learnt) from its warm-up through every round.
                generators = {
                    policy: stack.enter_context(LoadGenerator(senders=args.senders))
                    for policy in args.policies
                }
                generator = generators[args.policies[0]]
                procs.progress(f"backend warm-up: {plan.backend_warmup_s:g} s, random picks")
                generator.prepare_client(
                    ClientSpec(policy="random", addresses=addresses, wait_ms=args.service_ms)
                )
                generator.run(
                    poisson_schedule(
                        rate_rps=provisional,
                        duration_s=plan.backend_warmup_s,
                        max_requests=plan.max_requests,
                        rng=random.Random(args.seed - 2),
                    ),
                    deadline_s=deadline_s,
                )
                if args.rate is None:
                    run["capacity"] = calibrate(
                        generator,
                        ClientSpec(policy="p2c", addresses=addresses, wait_ms=args.service_ms),
                        rate_rps=provisional,
                        plan=plan,
                        seed=args.seed - 3,
                        deadline_s=deadline_s,
                        backends=backends,
                        thread_capacity=thread_capacity,
                    )
                    rate = args.load * run["capacity"]["rps"]
                else:
                    rate = args.rate
                run["rate_rps"] = rate
                procs.progress(f"offering {rate:.0f} req/s to every policy")
                runs = {
                    policy: PolicyRuns(
                        policy=policy,
                        generator=generators[policy],
                        spec=ClientSpec(
                            policy=policy,
                            addresses=addresses,
                            wait_ms=args.service_ms,
                            seed=args.seed,
                        ),
                    )
                    for policy in args.policies
                }
                warmup = poisson_schedule(
                    rate_rps=rate,
                    duration_s=plan.warmup_s,
                    max_requests=plan.max_requests,
                    rng=random.Random(args.seed - 1),
                )
                for policy_runs in runs.values():
                    policy_runs.start(warmup, deadline_s=deadline_s)
                for round_index in range(plan.rounds):
                    lead_in, measured = (
                        poisson_schedule(
                            rate_rps=rate,
                            duration_s=seconds,
                            max_requests=plan.max_requests,
                            rng=random.Random(args.seed + 1000 * round_index + offset),
                        )
                        for offset, seconds in ((1, plan.lead_in_s), (0, plan.round_s))
                    )
                    order = list(runs.values())
                    if round_index % 2:
                        order.reverse()
                    for policy_runs in order:
                        policy_runs.measure(
                            lead_in,
                            measured,
                            round_index=round_index,
                            plan=plan,
                            deadline_s=deadline_s,
                            backends=backends,
                        )
                for policy_runs in runs.values():
                    entry = policy_runs.entry(
                        plan=plan,
                        backend_of_pid=backend_of_pid,
                        backends=len(backends),
                        slow=args.slow_backend,
                    )
                    run["policies"].append(entry)
                    other = (entry.get("cpu") or {}).get("other_cores")
                    if other is not None and other > 0.1:
                        run["notes"].append(
                            f"{entry['policy']}: other processes used {other:.2f} cores during "
                            "the measured windows (the machine was not quiet)"
                        )
                    lag = (entry.get("summary") or {}).get("send_lag_p99_ms")
                    if lag is not None and lag > 10:
                        run["notes"].append(
                            f"{entry['policy']}: sender lag p99 {lag:.0f} ms (the senders were "
                            "short of CPU; OK-call latencies include it)"
                        )
                run["config"]["sender_niceness"] = generator.niceness
        finally:
            procs.progress("stopping the backends")
            codes = stop_backends(backends)
            bad = [f"#{i}: {code}" for i, code in enumerate(codes) if code != 0]
            if bad:
                run["notes"].append(f"backends that did not exit 0 on SIGTERM: {', '.join(bad)}")
    run["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    run["elapsed_s"] = round(time.monotonic() - started, 1)
    run["acceptance"] = [dataclasses.asdict(check) for check in results.acceptance(run)]
    run["plot"] = "balance.png"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    markdown = results.render_markdown(run)
    (args.out / "results.md").write_text(markdown, encoding="utf-8")
    plot_balance(run, args.out / "balance.png")
    procs.progress(
        f"done in {run['elapsed_s']} s: {args.out}/results.md, results.json, balance.png"
    )
    print(markdown)
    return 0


def calibrate(
    generator: LoadGenerator,
    spec: ClientSpec,
    *,
    rate_rps: float,
    plan: Plan,
    seed: int,
    deadline_s: float,
    backends: Sequence[procs.SystemProcess],
    thread_capacity: float,
) -> dict[str, Any]:
    """Measure what a call of ``spec``'s policy costs in CPU (backends + senders) and so how
    many calls per second the machine's cores could carry; capacity is the smaller of that
    and the backends' thread capacity. Runs ``plan.calibrate_s`` unmeasured, then as long
    measured."""
    seconds = plan.calibrate_s
    procs.progress(
        f"calibrating: {spec.policy} at {rate_rps:.0f} req/s, {seconds:g} s to settle, "
        f"{seconds:g} s measured"
    )
    generator.prepare_client(spec)
    # A new client's first seconds cost extra (connections, health watches): not counted.
    settle, schedule = (
        poisson_schedule(
            rate_rps=rate_rps,
            duration_s=seconds,
            max_requests=plan.max_requests,
            rng=random.Random(seed + offset),
        )
        for offset in (0, 1)
    )
    generator.run(settle, deadline_s=deadline_s)
    cpu_before = backends_cpu_s(backends)
    result = generator.run(schedule, deadline_s=deadline_s)
    cpu_s = backends_cpu_s(backends) - cpu_before + result.sender_cpu_s
    cores = os.cpu_count() or 1
    cpu_rps = results.cpu_capacity(cpu_s, len(schedule), cores)
    capacity = min(thread_capacity, cpu_rps)
    procs.progress(
        f"calibration: {1000 * cpu_s / len(schedule):.2f} ms CPU per call -> {cores} cores "
        f"carry {cpu_rps:.0f} req/s; capacity {capacity:.0f} req/s"
    )
    return {
        "threads_rps": thread_capacity,
        "calibration": {
            "policy": spec.policy,
            "rate_rps": rate_rps,
            "seconds": seconds,
            "calls": len(schedule),
            "cpu_s": round(cpu_s, 3),
            "cpu_ms_per_call": round(1000 * cpu_s / len(schedule), 3),
            "cpu_rps": round(cpu_rps, 1),
        },
        "rps": capacity,
    }


@dataclasses.dataclass(eq=False)
class PolicyRuns:
    """One policy through the run: its senders' clients, warm-up, and measured rounds."""

    policy: str
    generator: LoadGenerator
    spec: ClientSpec
    records: list[RequestRecord] = dataclasses.field(default_factory=list)
    backends_cpu_s: float = 0.0
    senders_cpu_s: float = 0.0
    busy_cpu_s: float = 0.0
    failure: str | None = None

    def start(self, warmup: Sequence[float], *, deadline_s: float) -> None:
        """Connect the senders' clients and warm them up (unmeasured)."""
        try:
            procs.progress(f"{self.policy}: connecting {self.generator.senders} senders")
            self.generator.prepare_client(self.spec)
            procs.progress(f"{self.policy}: warm-up {len(warmup)} calls")
            self.generator.run(warmup, deadline_s=deadline_s)
        except (RuntimeError, TimeoutError) as exc:
            self._fail(exc)

    def measure(
        self,
        lead_in: Sequence[float],
        measured: Sequence[float],
        *,
        round_index: int,
        plan: Plan,
        deadline_s: float,
        backends: Sequence[procs.SystemProcess],
    ) -> None:
        """One round: ``lead_in`` unmeasured, then ``measured`` (its records are kept)."""
        if self.failure is not None:
            return
        try:
            self.generator.run(lead_in, deadline_s=deadline_s)
            cpu_before, busy_before = backends_cpu_s(backends), machine_busy_cpu_s()
            result = self.generator.run(measured, deadline_s=deadline_s)
        except (RuntimeError, TimeoutError) as exc:
            self._fail(exc)
            return
        self.backends_cpu_s += backends_cpu_s(backends) - cpu_before
        self.busy_cpu_s += machine_busy_cpu_s() - busy_before
        self.senders_cpu_s += result.sender_cpu_s
        # Rounds are laid end to end: round r's calls are scheduled in [r, r + 1) x round_s.
        offset = round_index * plan.round_s
        self.records += [
            record._replace(scheduled_s=record.scheduled_s + offset) for record in result.records
        ]
        good = [r.latency_s for r in result.records if r.outcome is Outcome.OK]
        p99 = percentile(good, 99)
        procs.progress(
            f"{self.policy}, round {round_index + 1}/{plan.rounds}: {len(good)}/"
            f"{len(result.records)} OK, p99 {'-' if p99 is None else f'{1000 * p99:.1f}'} ms"
        )
        time.sleep(0.5)  # let the backends' queues empty before the next policy

    def entry(
        self, *, plan: Plan, backend_of_pid: dict[int, int], backends: int, slow: int
    ) -> dict[str, Any]:
        """The policy's entry of the run, over all its measured rounds."""
        entry: dict[str, Any] = {"policy": self.policy, "label": results.POLICY_LABELS[self.policy]}
        if self.failure is not None:
            entry["note"] = self.failure
            return entry
        summary = results.summarize_policy(
            self.records,
            window_s=plan.measure_s,
            backend_of_pid=backend_of_pid,
            backends=backends,
            slow=slow,
        )
        entry["summary"] = summary
        entry["cpu"] = {
            "backends_s": round(self.backends_cpu_s, 2),
            "senders_s": round(self.senders_cpu_s, 2),
            "cores_used": round((self.backends_cpu_s + self.senders_cpu_s) / plan.measure_s, 2),
            # Everything else the machine ran meanwhile (this runner, other work on the box).
            "other_cores": round(
                max(0.0, self.busy_cpu_s - self.backends_cpu_s - self.senders_cpu_s)
                / plan.measure_s,
                2,
            ),
        }
        share = summary["slow_share"]
        procs.progress(
            f"{self.policy}: goodput {summary['goodput_rps']:.1f}/s of "
            f"{summary['offered_rps']:.1f}/s, p50 {summary['p50_ms']} ms, p99 "
            f"{summary['p99_ms']} ms, p99.9 {summary['p999_ms']} ms, misses "
            f"{summary['misses']}, slow backend {'-' if share is None else f'{share:.2%}'}, "
            f"sender lag p99 {summary['send_lag_p99_ms']} ms, CPU "
            f"{entry['cpu']['cores_used']} cores (+ {entry['cpu']['other_cores']} other)"
        )
        return entry

    def _fail(self, exc: BaseException) -> None:
        self.failure = f"failed: {str(exc)[:300]}"
        procs.progress(f"{self.policy}: {self.failure}")


if __name__ == "__main__":
    sys.exit(main())
