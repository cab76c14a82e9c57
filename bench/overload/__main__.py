"""python -m bench.overload: rpckit beside gunicorn+gevent and plain grpcio, three load profiles.

For each load profile (``seed``: 5 ms CPU + 20 ms wait, 250 ms deadline; ``io``: 0.5 ms CPU +
200 ms wait, 500 ms deadline) a short open-loop ramp measures gunicorn+gevent's capacity
(1x), then every system gets the same Poisson schedules at 0.5x, 1x, 1.5x, 2x and 3x of it,
and each gRPC system one more step at 0.5x beside a CPU-bound neighbour process. The
``burst`` profile sends 200 calls that each wait 800 ms at once, then ordinary calls at
60/s, a few times. Last, the memory (PSS) of 1 and 4 workers. Reports goodput, latency of
the successful calls, refusals and their latency, handler CPU wasted on calls that ended
after their deadline, health checks, and the issue's acceptance checks. Writes results.md,
results.json and overload.png into --out; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import procs
from bench.harness.loadgen import LoadGenerator, Target, senders_for
from bench.harness.report import publish
from bench.overload import plot, results, systems
from bench.overload.profiles import (
    BURST,
    FULL,
    IO,
    PROFILE_NAMES,
    QUICK,
    SEED,
    BurstProfile,
    LoadProfile,
    parse_capacities,
    with_overrides,
)
from bench.overload.runner import OverloadBenchmark

DEFAULT_MULTIPLES = (0.5, 1.0, 1.5, 2.0, 3.0)
# One sender process per this many req/s of peak offered load (a Python sender fires ~400/s
# with headroom on one core), never more than the machine's cores.
PER_SENDER_RPS = 400.0
LOAD_PROFILES = {"seed": SEED, "io": IO}


def _parser() -> argparse.ArgumentParser:
    names = list(systems.overload_systems())
    parser = argparse.ArgumentParser(
        prog="python -m bench.overload",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  python -m bench.overload --quick                    # every profile, < 3 min\n"
            "  python -m bench.overload --profile burst --systems rpckit-default gunicorn\n"
            "  python -m bench.overload --out bench/overload/results   # full mode, ~25 min\n"
            f"systems: {', '.join(names)} (default: {', '.join(systems.DEFAULT_SYSTEMS)}; "
            "the burst profile adds rpckit-default)"
        ),
    )
    parser.add_argument("--quick", action="store_true", help="short steps: under 3 minutes")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--profile", choices=PROFILE_NAMES, help="run this profile only")
    which.add_argument(
        "--profiles",
        nargs="+",
        choices=PROFILE_NAMES,
        metavar="NAME",
        help=f"run these profiles, in this order (default: {' '.join(PROFILE_NAMES)})",
    )
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=names,
        metavar="NAME",
        help="systems to run in every profile (default: see below)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/overload/results"),
        help="where results.md, results.json, overload.png go",
    )
    parser.add_argument("--payload-bytes", type=int, default=16, help="echoed payload (16)")
    parser.add_argument("--cpu-ms", type=float, help="handler CPU per call (one load profile)")
    parser.add_argument("--wait-ms", type=float, help="handler wait per call (one load profile)")
    parser.add_argument("--deadline-ms", type=float, help="client deadline (one load profile)")
    parser.add_argument(
        "--multiples",
        type=float,
        nargs="+",
        default=list(DEFAULT_MULTIPLES),
        metavar="X",
        help="offered loads as multiples of 1x",
    )
    parser.add_argument(
        "--capacity",
        action="append",
        default=[],
        metavar="PROFILE=RPS",
        help="skip that profile's ramp and use this 1x, e.g. --capacity seed=280 (repeatable)",
    )
    parser.add_argument(
        "--capacity-system",
        choices=names,
        default="gunicorn",
        help="whose capacity sets 1x (gunicorn; falls back to the first system that runs)",
    )
    parser.add_argument("--senders", type=int, help="sender processes (default: by peak rate)")
    parser.add_argument("--bursts", type=int, help="bursts per system (quick 1, full 3)")
    parser.add_argument("--no-memory", action="store_true", help="skip the PSS measurements")
    parser.add_argument("--no-neighbour", action="store_true", help="skip the neighbour step")
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


def _profiles(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> list[LoadProfile | BurstProfile]:
    names = [args.profile] if args.profile else list(dict.fromkeys(args.profiles or PROFILE_NAMES))
    load_names = [name for name in names if name in LOAD_PROFILES]
    overrides = {"cpu_ms": args.cpu_ms, "wait_ms": args.wait_ms, "deadline_ms": args.deadline_ms}
    if any(value is not None for value in overrides.values()) and len(load_names) != 1:
        parser.error("--cpu-ms, --wait-ms and --deadline-ms change one load profile: add --profile")
    if any(value is not None and value < 0 for value in overrides.values()):
        parser.error("--cpu-ms, --wait-ms and --deadline-ms must be >= 0")
    if args.deadline_ms is not None and args.deadline_ms <= 0:
        parser.error("--deadline-ms must be > 0")
    chosen: list[LoadProfile | BurstProfile] = []
    for name in names:
        if name in LOAD_PROFILES:
            chosen.append(
                with_overrides(LOAD_PROFILES[name], payload_bytes=args.payload_bytes, **overrides)
            )
        else:
            chosen.append(BURST)
    return chosen


def _system_entry(spec: systems.SystemSpec, **fields: Any) -> dict[str, Any]:
    """A system's entry in a profile of the run: who it is, and ``fields``."""
    return {"name": spec.name, "label": spec.label, "protocol": spec.protocol, **fields}


def run_load_profile(
    bench: OverloadBenchmark,
    profile: LoadProfile,
    specs: Sequence[systems.SystemSpec],
    *,
    capacity: float | None,
    capacity_system: str,
    multiples: Sequence[float],
    neighbour: bool,
) -> dict[str, Any]:
    """Ramp on the capacity system (unless given), then every system's steps."""
    entry: dict[str, Any] = {
        "name": profile.name,
        "kind": "load",
        "describe": profile.describe(),
        "work": dataclasses.asdict(profile.work),
        "deadline_ms": profile.deadline_ms,
        "deadline_reason": profile.deadline_reason,
        "multiples": list(multiples),
        "systems": [],
    }
    if capacity is not None:
        entry["capacity"] = {"system": "given", "rps": capacity, "source": "--capacity"}
    # The capacity system runs first (its process is reused for its steps); should it fail
    # to start, the next system sets 1x.
    ordered = sorted(specs, key=lambda spec: spec.name != capacity_system)
    for spec in ordered:
        system = _system_entry(spec, steps=[])
        entry["systems"].append(system)
        running = bench.start_for(spec, system, deadline_ms=profile.deadline_ms)
        if running is None:
            continue
        try:
            if capacity is None:
                if spec.name != capacity_system:
                    bench.notes.append(
                        f"{profile.name}: {capacity_system} did not run: 1x is the capacity "
                        f"of {spec.name}"
                    )
                entry["capacity"] = bench.ramp(running, profile)
                capacity = float(entry["capacity"]["rps"])
            else:
                bench.warm_up(running, profile, rate=0.25 * capacity)
            if not capacity:
                system["note"] = "capacity measured as 0: nothing to offer"
                continue
            system["serving_processes"] = running.processes
            system["steps"] = bench.steps(running, profile, capacity=capacity, multiples=multiples)
            if neighbour and spec.protocol == "grpc":
                system["neighbour"] = bench.neighbour_step(running, profile, capacity=capacity)
            system["pss_kib"] = procs.tree_pss_kib(running.process.pid)
            system["processes"] = len(procs.process_tree(running.process.pid))
        except RuntimeError as exc:  # a sender could not connect or did not answer
            system["note"] = f"failed: {str(exc)[:300]}"
            procs.progress(f"{spec.name}: {system['note']}")
        finally:
            bench.stop_soon(running.process, system)
    return entry


def run_burst_profile(
    bench: OverloadBenchmark, profile: BurstProfile, specs: Sequence[systems.SystemSpec]
) -> dict[str, Any]:
    """Every system's bursts (the shim's route timeout is the bursts' 10 s deadline)."""
    entry: dict[str, Any] = {
        "name": profile.name,
        "kind": "burst",
        "describe": profile.describe(),
        "size": profile.size,
        "work": dataclasses.asdict(profile.work),
        "deadline_ms": profile.deadline_ms,
        "recovery": {
            "profile": profile.recovery.name,
            "rps": profile.recovery_rps,
            "seconds": bench.plan.recovery_s,
            "deadline_ms": profile.recovery.deadline_ms,
        },
        "systems": [],
    }
    for spec in specs:
        system = _system_entry(spec, bursts=[])
        entry["systems"].append(system)
        running = bench.start_for(spec, system, deadline_ms=profile.deadline_ms)
        if running is None:
            continue
        try:
            system["serving_processes"] = running.processes
            system["bursts"] = bench.bursts(running, profile)
        except RuntimeError as exc:
            system["note"] = f"failed: {str(exc)[:300]}"
            procs.progress(f"{spec.name}: {system['note']}")
        finally:
            bench.stop_soon(running.process, system)
        if spec.route_timeout:
            bench.notes.append(
                f"burst, {spec.name}: one route has one timeout, so the ordinary calls after "
                f"each burst ran with the bursts' {profile.deadline_ms / 1000:g} s route timeout "
                f"(their client still gave up at {profile.recovery.deadline_ms:g} ms)"
            )
    return entry


def _memory(
    bench: OverloadBenchmark,
    profile: LoadProfile,
    rate: float,
    families: set[str],
) -> list[dict[str, Any]]:
    """PSS of 1 and 4 workers per family; short and bounded, so not cut by the time budget."""
    return [
        bench.memory(family, workers, profile, rate=rate)
        for family in ("rpckit", "gunicorn")
        if family in families
        for workers in (1, 4)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    plan = dataclasses.replace(
        plan,
        warmup_s=plan.warmup_s if args.warmup_s is None else args.warmup_s,
        measure_s=plan.measure_s if args.measure_s is None else args.measure_s,
        bursts=plan.bursts if args.bursts is None else args.bursts,
    )
    profiles = _profiles(args, parser)
    multiples = sorted(set(args.multiples))
    if not multiples or min(multiples) <= 0:
        parser.error("--multiples must be > 0")
    try:
        capacities = parse_capacities(args.capacity, tuple(LOAD_PROFILES))
    except ValueError as exc:
        parser.error(str(exc))
    rpckit_args = tuple(shlex.split(args.rpckit_args))
    all_specs = systems.overload_systems(rpckit_args)
    cores = os.cpu_count() or 1
    peak = max(
        (max(multiples) * p.ideal_rps(cores) for p in profiles if isinstance(p, LoadProfile)),
        default=BURST.size,
    )
    senders = args.senders or senders_for(peak, per_sender_rps=PER_SENDER_RPS, max_senders=cores)
    started = time.monotonic()
    run: dict[str, Any] = {
        "benchmark": "overload",
        "mode": "quick" if args.quick else "full",
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(
            ["python", "-m", "bench.overload", *(sys.argv[1:] if argv is None else argv)]
        ),
        "machine": procs.machine_description(("grpcio", "protobuf", "gunicorn", "gevent", "flask")),
        "config": {
            "profiles": [profile.name for profile in profiles],
            "multiples": multiples,
            "seed": args.seed,
            "warmup_s": plan.warmup_s,
            "measure_s": plan.measure_s,
            "bursts": plan.bursts,
            "senders": senders,
            "channels_per_sender": Target(
                protocol="grpc", address="127.0.0.1:1"
            ).channels_per_sender,
            "rpckit_workers_argv": list(systems.rpckit_workers_argv()),
            "rpckit_args": list(rpckit_args),
        },
        "profiles": {},
        "memory": [],
    }
    procs.progress(
        f"overload benchmark, {run['mode']} mode, {senders} senders, profiles: "
        f"{', '.join(run['config']['profiles'])}"
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-overload-") as scratch,
        LoadGenerator(senders=senders) as generator,
    ):
        bench = OverloadBenchmark(
            generator, plan=plan, scratch=Path(scratch), seed=args.seed, rpckit_args=rpckit_args
        )
        families: set[str] = set()
        for profile in profiles:
            names = args.systems or systems.default_systems(profile.name)
            chosen = [all_specs[name] for name in dict.fromkeys(names)]
            runnable = [spec for spec in chosen if spec.missing() is None]
            families |= {"rpckit" if s.name.startswith("rpckit") else s.name for s in runnable}
            if isinstance(profile, LoadProfile):
                entry = run_load_profile(
                    bench,
                    profile,
                    runnable,
                    capacity=capacities.get(profile.name),
                    capacity_system=args.capacity_system,
                    multiples=multiples,
                    neighbour=not args.no_neighbour,
                )
            else:
                entry = run_burst_profile(bench, profile, runnable)
            entry["systems"] += [
                _system_entry(spec, note=spec.missing())
                for spec in chosen
                if spec.missing() is not None
            ]
            run["profiles"][profile.name] = entry
        memory_profile = next((p for p in profiles if isinstance(p, LoadProfile)), SEED)
        memory_capacity = run["profiles"].get(memory_profile.name, {}).get("capacity", {})
        memory_rate = 0.5 * (memory_capacity.get("rps") or 2 * BURST.recovery_rps)
        if not args.no_memory:
            run["memory"] = _memory(bench, memory_profile, memory_rate, families)
            run["config"]["memory_profile"] = memory_profile.name
            run["config"]["memory_rps"] = round(memory_rate, 1)
        bench.finish()
        run["notes"] = bench.notes
        run["config"]["sender_niceness"] = generator.niceness
    run["elapsed_s"] = round(time.monotonic() - started, 1)
    run["acceptance"] = [dataclasses.asdict(check) for check in results.acceptance(run)]
    markdown = publish(
        run, args.out, render=results.render_markdown, plot=plot.plot_run, png="overload.png"
    )
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
