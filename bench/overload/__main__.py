"""python -m bench.overload: four servers side by side, from half to three times capacity.

Measures rpckit's capacity with a short open-loop ramp, then offers each system the same
Poisson schedules at 0.5x, 1x, 1.5x, 2x and 3x of it, and reports goodput, latency of the
successful calls, rejections and their latency, and the handler CPU wasted on calls that ended
after their deadline; then the memory (PSS) of 1 and 4 workers. Writes results.md,
results.json and overload.png into --out; progress goes to stderr.
"""

from __future__ import annotations

import argparse
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
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from bench.harness import procs
from bench.harness.health_probe import HealthProbe, HealthSummary
from bench.harness.loadgen import LoadGenerator, Target, Work, poisson_schedule, senders_for
from bench.harness.report import plot_load_curves
from bench.harness.stats import (
    HandlerTotals,
    StepSummary,
    capacity_from_ramp,
    ramp_done,
    ramp_rates,
    summarize,
)
from bench.overload import results, systems
from bench.overload.handler import read_stats_dir

DEFAULT_MULTIPLES = (0.5, 1.0, 1.5, 2.0, 3.0)
# One sender process per this many req/s of peak offered load (a Python sender fires ~400/s
# with headroom on one core), never more than the machine's cores.
PER_SENDER_RPS = 400.0
# More connections for the memory warm-up, so SO_REUSEPORT hands every one of 4 workers some.
MEMORY_CHANNELS_PER_SENDER = 8
# A step whose senders fired later than this (p99) gets a note in the report.
LAG_NOTE_MS = 10.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """Durations and caps of one mode. Every step is bounded by these."""

    warmup_s: float  # start of each step excluded from the statistics
    measure_s: float  # measured part of each step
    ramp_level_s: float  # each capacity ramp level
    ramp_factor: float  # ramp growth per level
    ramp_max_levels: int
    quiesce_timeout_s: float  # longest wait for a server to go idle after a step
    memory_warm_s: float  # load before reading PSS
    system_warmup_s: float  # unmeasured light load after a system starts
    time_budget_s: float  # steps that would start after this are skipped (noted)
    max_requests_per_step: int = 200_000

    def __post_init__(self) -> None:
        durations = (
            self.warmup_s,
            self.measure_s,
            self.ramp_level_s,
            self.memory_warm_s,
            self.system_warmup_s,
        )
        if min(durations) <= 0:
            raise ValueError("durations must be > 0")
        if self.ramp_factor <= 1 or self.ramp_max_levels < 1 or self.max_requests_per_step < 1:
            raise ValueError("need ramp_factor > 1, ramp_max_levels >= 1, max_requests >= 1")


# Quick: < 2 minutes for all four systems on 2 cores (short steps, coarse ramp).
QUICK = Plan(
    warmup_s=0.5,
    measure_s=2.0,
    ramp_level_s=1.5,
    ramp_factor=1.25,
    ramp_max_levels=8,
    quiesce_timeout_s=3.0,
    memory_warm_s=1.0,
    system_warmup_s=1.0,
    time_budget_s=110.0,
)
# Full: long enough for queues to reach their steady state (collapse takes seconds to build).
FULL = Plan(
    warmup_s=3.0,
    measure_s=15.0,
    ramp_level_s=5.0,
    ramp_factor=1.12,
    ramp_max_levels=16,
    quiesce_timeout_s=15.0,
    memory_warm_s=5.0,
    system_warmup_s=3.0,
    time_budget_s=1800.0,
)


def _parser() -> argparse.ArgumentParser:
    names = list(systems.overload_systems())
    parser = argparse.ArgumentParser(
        prog="python -m bench.overload",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "example:\n"
            "  python -m bench.overload --quick --systems gunicorn grpc-plain\n"
            "  python -m bench.overload --out bench/overload/results   # full mode, ~10 min\n"
            f"systems: {', '.join(names)}"
        ),
    )
    parser.add_argument("--quick", action="store_true", help="short steps: under 2 minutes")
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=names,
        default=names,
        metavar="NAME",
        help="systems to run (default: all four)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/overload/results"),
        help="where results.md, results.json, overload.png go",
    )
    parser.add_argument("--payload-bytes", type=int, default=16, help="echoed payload (16)")
    parser.add_argument("--cpu-ms", type=float, default=5.0, help="handler CPU per call (5)")
    parser.add_argument("--wait-ms", type=float, default=20.0, help="handler wait per call (20)")
    parser.add_argument("--deadline-ms", type=float, default=250.0, help="client deadline (250)")
    parser.add_argument(
        "--multiples",
        type=float,
        nargs="+",
        default=list(DEFAULT_MULTIPLES),
        metavar="X",
        help="offered loads as multiples of capacity",
    )
    parser.add_argument(
        "--capacity", type=float, metavar="RPS", help="skip the ramp and use this capacity (req/s)"
    )
    parser.add_argument(
        "--capacity-system",
        choices=names,
        default="rpckit-workers",
        help="whose capacity sets 1x (falls back to the first system that runs)",
    )
    parser.add_argument("--senders", type=int, help="sender processes (default: by peak rate)")
    parser.add_argument("--no-memory", action="store_true", help="skip the PSS measurements")
    parser.add_argument("--warmup-s", type=float, help="override the mode's per-step warm-up")
    parser.add_argument("--measure-s", type=float, help="override the mode's measured seconds")
    parser.add_argument("--seed", type=int, default=1, help="seed of the arrival schedules (1)")
    parser.add_argument(
        "--rpckit-args",
        default="",
        metavar="ARGS",
        help="extra flags for rpckit serve, e.g. --rpckit-args='--threads 6' (for tuning runs)",
    )
    return parser


class OverloadBenchmark:
    """One invocation: owns the load generator, the scratch directory and the time budget."""

    def __init__(
        self,
        generator: LoadGenerator,
        *,
        plan: Plan,
        work: Work,
        deadline_s: float,
        scratch: Path,
        seed: int,
        rpckit_args: Sequence[str] = (),
    ) -> None:
        self.generator = generator
        self.rpckit_args = tuple(rpckit_args)
        self.plan = plan
        self.work = work
        self.deadline_s = deadline_s
        self.scratch = scratch
        self.seed = seed
        self.budget_end = time.monotonic() + plan.time_budget_s
        self.notes: list[str] = []
        self.stopper = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stop")

    def over_budget(self) -> bool:
        return time.monotonic() > self.budget_end

    def start(self, spec: systems.SystemSpec) -> tuple[procs.SystemProcess, Path]:
        stats_dir = Path(tempfile.mkdtemp(prefix=f"stats-{spec.name}-", dir=self.scratch))
        procs.progress(f"starting {spec.label}")
        process = systems.start(spec, stats_dir=stats_dir, log_dir=self.scratch / "logs")
        tree = procs.process_tree(process.pid)
        procs.progress(f"{spec.name} ready at {process.address} ({len(tree)} processes)")
        return process, stats_dir

    def fire(
        self,
        spec: systems.SystemSpec,
        process: procs.SystemProcess,
        *,
        rate: float,
        duration_s: float,
        warmup_s: float,
        seed: int,
        channels_per_sender: int = 4,
    ) -> tuple[StepSummary, float, HealthSummary | None]:
        """One open-loop step: its measured window, the senders' CPU seconds, health probes.

        gRPC systems get a Health/Check every 50 ms on a separate connection during the step.
        """
        schedule = poisson_schedule(
            rate_rps=rate,
            duration_s=duration_s,
            max_requests=self.plan.max_requests_per_step,
            rng=random.Random(seed),
        )
        target = Target(
            protocol=spec.protocol,
            address=process.address,
            channels_per_sender=channels_per_sender,
            processes=spec.processes,
        )
        self.generator.prepare(target, self.work)
        health: HealthSummary | None = None
        if spec.protocol == "grpc" and spec.name.startswith("rpckit"):
            with HealthProbe(process.address) as probe:
                result = self.generator.run(schedule, deadline_s=self.deadline_s)
            health = probe.summary()
        else:
            result = self.generator.run(schedule, deadline_s=self.deadline_s)
        summary = summarize(result.records, window_start_s=warmup_s, window_end_s=duration_s)
        return summary, result.sender_cpu_s, health

    def warm_up(
        self, spec: systems.SystemSpec, process: procs.SystemProcess, *, rate: float
    ) -> None:
        """Unmeasured light load, so first-call costs (lazy imports, pools) are not measured."""
        self.fire(
            spec,
            process,
            rate=rate,
            duration_s=self.plan.system_warmup_s,
            warmup_s=self.plan.system_warmup_s / 2,
            seed=self.seed - 1,
        )
        self.quiesce(process)

    def quiesce(self, process: procs.SystemProcess) -> bool:
        """Wait (bounded) until the server stopped working off a backlog."""
        idle = procs.wait_idle(
            process.pid, max_cpu_share=0.05, window_s=0.2, timeout_s=self.plan.quiesce_timeout_s
        )
        time.sleep(0.05)  # the last calls' stats file writes
        return idle

    def ramp(self, spec: systems.SystemSpec, process: procs.SystemProcess) -> dict[str, Any]:
        """Capacity: offer geometric rates until two levels in a row do not keep up."""
        cores = os.cpu_count() or 1
        ideal = cores * 1000 / self.work.cpu_ms if self.work.cpu_ms > 0 else 500.0
        self.warm_up(spec, process, rate=0.2 * ideal)
        rates = ramp_rates(
            start_rps=0.4 * ideal,
            factor=self.plan.ramp_factor,
            max_levels=self.plan.ramp_max_levels,
        )
        levels: list[StepSummary] = []
        for index, rate in enumerate(rates):
            if self.over_budget():
                self.notes.append("capacity ramp cut short by the time budget")
                break
            duration = self.plan.ramp_level_s
            summary, _, _ = self.fire(
                spec,
                process,
                rate=rate,
                duration_s=duration,
                warmup_s=min(0.5, duration / 4),
                seed=self.seed * 7919 + index,
            )
            levels.append(summary)
            procs.progress(
                f"ramp {spec.name} {rate:.0f}/s: goodput {summary.goodput_rps:.0f}/s "
                f"({summary.good}/{summary.sent} good), p99 {summary.good_p99_ms} ms"
            )
            self.quiesce(process)
            if ramp_done(levels):
                break
        capacity = capacity_from_ramp(levels)
        procs.progress(f"capacity of {spec.name}: {capacity:.0f} req/s")
        return {
            "system": spec.name,
            "rps": capacity,
            "source": "ramp",
            "ramp": [
                {"target_rps": rate, "summary": level.as_json()}
                for rate, level in zip(rates, levels, strict=False)
            ],
        }

    def steps(
        self,
        spec: systems.SystemSpec,
        process: procs.SystemProcess,
        stats_dir: Path,
        *,
        capacity: float,
        multiples: Sequence[float],
    ) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = []
        for index, multiple in enumerate(multiples):
            if self.over_budget():
                self.notes.append(f"{spec.name}: steps from {multiple:g}x on skipped (time budget)")
                break
            if not process.alive():
                self.notes.append(f"{spec.name} died before the {multiple:g}x step")
                break
            rate = multiple * capacity
            handler_before = HandlerTotals.sum_of(read_stats_dir(stats_dir))
            cpu_before = procs.tree_cpu_seconds(process.pid)
            summary, sender_cpu_s, health = self.fire(
                spec,
                process,
                rate=rate,
                duration_s=self.plan.warmup_s + self.plan.measure_s,
                warmup_s=self.plan.warmup_s,
                seed=self.seed * 1000 + index,
            )
            quiesced = self.quiesce(process)
            handler = HandlerTotals.sum_of(read_stats_dir(stats_dir)) - handler_before
            step = {
                "multiple": multiple,
                "target_rps": rate,
                "summary": summary.as_json(),
                "handler": dataclasses.asdict(handler),
                "wasted_fraction": handler.wasted_fraction,
                "tree_cpu_s": round(procs.tree_cpu_seconds(process.pid) - cpu_before, 3),
                "sender_cpu_s": round(sender_cpu_s, 3),
                "quiesced": quiesced,
                "health": None if health is None else health.as_json(),
            }
            steps.append(step)
            wasted = handler.wasted_fraction
            procs.progress(
                f"{spec.name} {multiple:g}x ({rate:.0f}/s): goodput {summary.goodput_rps:.1f}/s, "
                f"p99 {summary.good_p99_ms} ms, rejected {summary.rejected_rps:.1f}/s "
                f"(p99 {summary.rejected_p99_ms} ms), timeouts {summary.deadline}, "
                f"errors {summary.errors}, wasted CPU "
                f"{'-' if wasted is None else f'{wasted:.0%}'}, sender lag p99 "
                f"{summary.send_lag_p99_ms} ms"
            )
            lag = summary.send_lag_p99_ms
            if lag is not None and lag > LAG_NOTE_MS:
                self.notes.append(
                    f"{spec.name} {multiple:g}x: sender lag p99 {lag:.0f} ms (the load generator "
                    "was short of CPU; successful-call latencies include it)"
                )
            if not quiesced:
                self.notes.append(
                    f"{spec.name} {multiple:g}x: still busy "
                    f"{self.plan.quiesce_timeout_s:g} s after the step"
                )
        return steps

    def memory(self, family: str, workers: int, capacity: float) -> dict[str, Any]:
        """PSS of one configuration after a short warm-up load."""
        spec = (
            systems.rpckit_spec(workers, self.rpckit_args)
            if family == "rpckit"
            else systems.gunicorn_spec(workers)
        )
        entry: dict[str, Any] = {"family": family, "workers": workers, "label": spec.label}
        try:
            process, _ = self.start(spec)
        except (RuntimeError, TimeoutError, OSError) as exc:
            entry["error"] = f"did not start: {str(exc).splitlines()[0][:200]}"
            procs.progress(f"{spec.label}: {entry['error']}")
            return entry
        try:
            duration = self.plan.memory_warm_s
            summary, _, _ = self.fire(
                spec,
                process,
                rate=0.5 * capacity,
                duration_s=duration,
                warmup_s=duration / 4,
                seed=self.seed,
                channels_per_sender=MEMORY_CHANNELS_PER_SENDER,
            )
            self.quiesce(process)
            entry["processes"] = len(procs.process_tree(process.pid))
            entry["pss_kib"] = procs.tree_pss_kib(process.pid)
            entry["replies_by_pid"] = summary.as_json()["replies_by_pid"]
            entry["processes_that_replied"] = len(summary.replies_by_pid)
            procs.progress(
                f"{spec.label}: PSS {entry['pss_kib'] / 1024:.1f} MiB "
                f"over {entry['processes']} processes"
            )
        except RuntimeError as exc:
            entry["error"] = f"failed: {str(exc)[:200]}"
        finally:
            self.stop_soon(process)
        return entry

    def stop_soon(self, process: procs.SystemProcess) -> Future[int | None]:
        """SIGTERM; an idle server drains in the background (it costs no CPU meanwhile), a busy
        one is waited for, so its backlog does not eat into the next system's measurements."""
        idle = procs.wait_idle(process.pid, max_cpu_share=0.05, window_s=0.2, timeout_s=0.2)
        stopping = self.stopper.submit(process.stop, timeout_s=30)
        if not idle:
            procs.progress(f"{process.name} is still busy: waiting for it to stop")
            wait([stopping], timeout=40)
        return stopping

    def finish(self) -> None:
        self.stopper.shutdown(wait=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.warmup_s is not None or args.measure_s is not None:
        plan = dataclasses.replace(
            plan,
            warmup_s=plan.warmup_s if args.warmup_s is None else args.warmup_s,
            measure_s=plan.measure_s if args.measure_s is None else args.measure_s,
        )
    work = Work(cpu_ms=args.cpu_ms, wait_ms=args.wait_ms, payload_bytes=args.payload_bytes)
    deadline_s = args.deadline_ms / 1000
    multiples = sorted(set(args.multiples))
    if deadline_s <= 0 or not multiples or min(multiples) <= 0:
        raise SystemExit("--deadline-ms and --multiples must be > 0")
    all_specs = systems.overload_systems(shlex.split(args.rpckit_args))
    selected = [all_specs[name] for name in dict.fromkeys(args.systems)]
    cores = os.cpu_count() or 1
    ideal = cores * 1000 / work.cpu_ms if work.cpu_ms > 0 else 500.0
    senders = args.senders or senders_for(
        max(multiples) * ideal, per_sender_rps=PER_SENDER_RPS, max_senders=cores
    )
    started = time.monotonic()
    run: dict[str, Any] = {
        "benchmark": "overload",
        "mode": "quick" if args.quick else "full",
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": procs.machine_description(("grpcio", "protobuf", "gunicorn", "gevent", "flask")),
        "config": {
            "cpu_ms": work.cpu_ms,
            "wait_ms": work.wait_ms,
            "payload_bytes": work.payload_bytes,
            "deadline_ms": args.deadline_ms,
            "multiples": multiples,
            "seed": args.seed,
            "warmup_s": plan.warmup_s,
            "measure_s": plan.measure_s,
            "senders": senders,
            "channels_per_sender": Target(
                protocol="grpc", address="127.0.0.1:1"
            ).channels_per_sender,
            "systems": [spec.name for spec in selected],
        },
        "systems": [],
        "memory": [],
    }
    procs.progress(
        f"overload benchmark, {run['mode']} mode, {senders} senders, "
        f"systems: {', '.join(s.name for s in selected)}"
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-overload-") as scratch,
        LoadGenerator(senders=senders) as generator,
    ):
        bench = OverloadBenchmark(
            generator,
            plan=plan,
            work=work,
            deadline_s=deadline_s,
            scratch=Path(scratch),
            seed=args.seed,
            rpckit_args=tuple(shlex.split(args.rpckit_args)),
        )
        runnable = []
        stops: dict[str, Future[int | None]] = {}
        for spec in selected:
            why = spec.missing()
            if why is None:
                runnable.append(spec)
            else:
                run["systems"].append(
                    {
                        "name": spec.name,
                        "label": spec.label,
                        "protocol": spec.protocol,
                        "steps": [],
                        "note": why,
                    }
                )
        capacity_spec = all_specs[args.capacity_system]
        # The capacity system runs first (its process is reused for its steps); should it fail
        # to start, the next rpckit system sets 1x.
        ordered = sorted(
            runnable,
            key=lambda spec: (spec.name != capacity_spec.name, not spec.name.startswith("rpckit")),
        )
        capacity: float | None = args.capacity
        if capacity is not None:
            run["capacity"] = {"system": "given", "rps": capacity, "source": "--capacity"}
        for spec in ordered:
            entry: dict[str, Any] = {
                "name": spec.name,
                "label": spec.label,
                "protocol": spec.protocol,
                "steps": [],
            }
            run["systems"].append(entry)
            try:
                process, stats_dir = bench.start(spec)
            except (RuntimeError, TimeoutError, OSError) as exc:
                entry["note"] = f"did not start: {str(exc).splitlines()[0][:300]}"
                procs.progress(f"{spec.name}: {entry['note']}")
                continue
            try:
                if capacity is None:
                    if spec.name != capacity_spec.name:
                        bench.notes.append(
                            f"{capacity_spec.name} did not run: 1x is the capacity of {spec.name}"
                        )
                    run["capacity"] = bench.ramp(spec, process)
                    capacity = run["capacity"]["rps"]
                if not capacity:
                    entry["note"] = "capacity measured as 0: nothing to offer"
                    continue
                if spec.name != run["capacity"]["system"]:
                    bench.warm_up(spec, process, rate=0.25 * capacity)
                entry["steps"] = bench.steps(
                    spec, process, stats_dir, capacity=capacity, multiples=multiples
                )
                entry["pss_kib"] = procs.tree_pss_kib(process.pid)
                entry["processes"] = len(procs.process_tree(process.pid))
            except RuntimeError as exc:  # a sender could not connect or did not answer
                entry["note"] = f"failed: {str(exc)[:300]}"
                procs.progress(f"{spec.name}: {entry['note']}")
            finally:
                stops[spec.name] = bench.stop_soon(process)
        if not args.no_memory and capacity:
            families = {"rpckit" if s.name.startswith("rpckit") else s.name for s in runnable}
            for family in ("rpckit", "gunicorn"):
                if family not in families:
                    continue
                for workers in (1, 4):
                    if bench.over_budget():
                        bench.notes.append(f"memory of {family} x{workers} skipped (time budget)")
                        continue
                    run["memory"].append(bench.memory(family, workers, capacity))
        bench.finish()
        for entry in run["systems"]:
            if entry["name"] in stops:
                entry["exit_code"] = stops[entry["name"]].result()
                if entry["exit_code"] != 0:
                    bench.notes.append(
                        f"{entry['name']} exited with {entry['exit_code']} on SIGTERM (expected 0)"
                    )
        run["notes"] = bench.notes
        run["config"]["sender_niceness"] = generator.niceness
    run["elapsed_s"] = round(time.monotonic() - started, 1)
    run["acceptance"] = [dataclasses.asdict(check) for check in results.acceptance(run)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(run, indent=2) + "\n")
    markdown = results.render_markdown(run)
    (args.out / "results.md").write_text(markdown)
    curves = results.curves(run)
    if curves:
        plot_load_curves(
            curves,
            args.out / "overload.png",
            title=(
                f"Overload: {work.cpu_ms:g} ms CPU + {work.wait_ms:g} ms wait, "
                f"{args.deadline_ms:g} ms deadline, {cores} cores ({run['mode']})"
            ),
            deadline_ms=args.deadline_ms,
            capacity_rps=run.get("capacity", {}).get("rps"),
        )
    procs.progress(
        f"done in {run['elapsed_s']} s: {args.out}/results.md, results.json, overload.png"
    )
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
