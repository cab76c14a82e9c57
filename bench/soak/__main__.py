"""Soak: a minute at 80% of capacity through rpckit's balanced client, with a backend restarted
every ~15 s in turn and a 3x burst in the middle; every call accounted for, RSS over time.

    python -m bench.soak            # full: capacity ramp, then 60 s (~2 min in all)
    python -m bench.soak --quick    # smoke: 20 s soak, short ramp (~1 min)
    python -m bench.soak --capacity 600 --out /tmp/soak   # skip the ramp

Three ``rpckit serve bench.overload.service:servicers`` backends on 127.0.0.1 (each call ~1 ms
of CPU + ~10 ms waiting), driven by sender processes that each hold one
``rpckit.BalancedChannel`` over all three (`bench.soak.client`). Capacity is the best goodput of
a short open-loop ramp through that client; the soak offers 80% of it (Poisson), 3x during the
burst, with 2 s deadlines; before it, a prelude of the same load and burst (see
`bench.soak.plan`). A restart is SIGTERM (the backend goes NOT_SERVING, drains and exits) and
then the same command on the same port. RSS of every backend and sender, and each backend's
admission refusals by reason (its ``--metrics`` endpoint), are sampled every second. Writes
results.md, results.json and soak.png into --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import random
import shlex
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import procs
from bench.harness.loadgen import LoadGenerator, poisson_schedule
from bench.harness.report import publish
from bench.harness.stats import (
    RequestRecord,
    keeps_up,
    ramp_done,
    ramp_rates,
    summarize,
    sustained_capacity,
)
from bench.soak import results
from bench.soak.client import SoakClientSpec
from bench.soak.plan import (
    FULL,
    QUICK,
    Restart,
    SoakPlan,
    burst_schedule,
    burst_wait_s,
    burst_window,
    restart_plan,
)
from bench.soak.plot import plot_soak

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
DEFAULT_OUT = Path("bench/soak/results")
BACKEND_STOP_TIMEOUT_S = 30.0  # SIGTERM: drain + grace, well inside this


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__.split("\n\n", 1)[0],
        epilog="example: python -m bench.soak --quick --out /tmp/soak",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="20 s soak and a short ramp")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument("--backends", type=int, default=3)
    parser.add_argument("--senders", type=int, default=2, help="client processes")
    parser.add_argument("--cpu-ms", type=float, default=1.0, help="CPU per call")
    parser.add_argument("--wait-ms", type=float, default=10.0, help="wait per call")
    parser.add_argument(
        "--capacity", type=float, default=None, metavar="RPS", help="skip the ramp: 1x is RPS"
    )
    parser.add_argument("--duration-s", type=float, default=None, help="override the soak length")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument(
        "--details",
        action="store_true",
        help="count failures by code and status message (to find out why calls failed)",
    )
    return parser


def backend_argv(address: str) -> list[str]:
    return [
        str(VENV_BIN / "rpckit"),
        "serve",
        "bench.overload.service:servicers",
        "--grpc",
        address,
        "--drain",
        "1",
        "--grace",
        "5",
        "--log-level",
        "WARNING",
        "--metrics",
        "127.0.0.1:0",
    ]


class ShedCounter:
    """Admission refusals of every backend, by reason, from their ``--metrics`` endpoints.

    `scrape(slot, pid, address, at_s)` reads ``rpckit_shed_total`` and records what grew since
    that slot's last scrape of the same process (a restarted backend counts from zero)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[int, tuple[int, dict[str, float]]] = {}
        self.events: list[list[Any]] = []  # [at_s, slot, reason, count]
        self.gauges: list[list[Any]] = []  # [at_s, slot, {gauge: value}] (results.LOAD_GAUGES)
        self.failed_scrapes = 0

    def scrape(self, slot: int, pid: int, address: str, at_s: float) -> None:
        try:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=1.0) as reply:
                text = reply.read().decode("utf-8", "replace")
        except OSError:
            with self._lock:
                self.failed_scrapes += 1
            return
        counts = results.shed_by_reason(text)
        with self._lock:
            self.gauges.append([at_s, slot, results.load_gauges(text)])
            last_pid, last = self._last.get(slot, (pid, {}))
            if last_pid != pid:
                last = {}
            for reason, total in counts.items():
                grew = total - last.get(reason, 0.0)
                if grew > 0:
                    self.events.append([at_s, slot, reason, int(grew)])
            self._last[slot] = (pid, counts)


class Backends:
    """The backend slots: start, restart one on its port, sample RSS, stop all."""

    def __init__(self, count: int, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
        self._lock = threading.Lock()
        self._starts = 0
        self.slots: list[procs.SystemProcess | None] = []
        self.metrics: list[str | None] = []
        self.shed = ShedCounter()
        self.t0: float | None = None  # the soak's start (monotonic): shed counted from then
        try:
            for _ in range(count):
                proc = self._start("127.0.0.1:0")
                self.slots.append(proc)
                self.metrics.append(self._metrics_address(proc))
        except BaseException:
            self.stop_all()
            raise
        self.addresses = tuple(p.address for p in self.slots if p is not None)

    def _start(self, address: str) -> procs.SystemProcess:
        self._starts += 1
        return procs.SystemProcess(
            f"backend-start{self._starts}",
            backend_argv(address),
            ready=procs.json_line_address,
            log_dir=self._log_dir,
            env=self._env,
            cwd=REPO_ROOT,
            ready_timeout_s=60.0,
        )

    @staticmethod
    def _metrics_address(proc: procs.SystemProcess) -> str | None:
        return procs.announced_address(proc.stdout(), "metrics")

    def scrape_shed(self, index: int | None = None) -> None:
        """Count the admission refusals of slot ``index`` (every slot if None) since the last
        scrape; nothing before the soak starts (`t0`)."""
        if self.t0 is None:
            return
        at = round(time.monotonic() - self.t0, 2)
        with self._lock:
            slots = list(enumerate(zip(self.slots, self.metrics, strict=True)))
        for slot, (proc, address) in slots:
            if proc is not None and address is not None and index in (None, slot):
                self.shed.scrape(slot, proc.pid, address, at)

    def restart(self, index: int) -> dict[str, Any]:
        """SIGTERM slot ``index`` (it drains and exits), then start it on the same port."""
        self.scrape_shed(index)  # what it refused since the last scrape, before it goes
        with self._lock:
            old = self.slots[index]
            self.slots[index] = None
        assert old is not None
        began = time.monotonic()
        code = old.stop(timeout_s=BACKEND_STOP_TIMEOUT_S)
        stopped = time.monotonic()
        new = self._start(self.addresses[index])
        with self._lock:
            self.slots[index] = new
            self.metrics[index] = self._metrics_address(new)
        return {
            "pid": new.pid,
            "exit_code": code,
            "stop_s": round(stopped - began, 2),
            "down_s": round(time.monotonic() - began, 2),
        }

    def rss_kib(self) -> list[int | None]:
        with self._lock:
            slots = list(self.slots)
        return [None if p is None else procs.tree_rss_kib(p.pid) for p in slots]

    def stop_all(self) -> list[int | None]:
        with self._lock:
            slots, self.slots = list(self.slots), []
        return [p.stop(timeout_s=BACKEND_STOP_TIMEOUT_S) for p in slots if p is not None]


def measure_capacity(generator: LoadGenerator, plan: SoakPlan, *, seed: int) -> dict[str, Any]:
    """Best goodput of an open-loop ramp through the balanced client, among the levels served
    with their p99 within ``plan.ramp_p99_s`` (stops after two levels in a row that did not
    keep up)."""
    rates = ramp_rates(
        start_rps=plan.ramp_start_rps, factor=plan.ramp_factor, max_levels=plan.ramp_max_levels
    )
    levels = []
    ramp = []
    for index, rate in enumerate(rates):
        schedule = poisson_schedule(
            rate_rps=rate,
            duration_s=plan.ramp_level_s,
            max_requests=plan.max_requests,
            rng=random.Random(seed * 7919 + index),
        )
        records = generator.run(schedule, deadline_s=plan.deadline_s).records
        summary = summarize(records, window_start_s=0.0, window_end_s=plan.ramp_level_s)
        levels.append(summary)
        ramp.append({"target_rps": rate, "summary": summary.as_json()})
        procs.progress(
            f"ramp {rate:.0f}/s: {summary.good}/{summary.sent} OK, "
            f"p99 {summary.good_p99_ms} ms{'' if keeps_up(summary) else ' (did not keep up)'}"
        )
        time.sleep(0.5)  # let queues empty between levels
        if ramp_done(levels):
            break
    p99_ms = 1000.0 * plan.ramp_p99_s
    rps = sustained_capacity(levels, p99_ms=p99_ms)
    if rps <= 0:
        raise SystemExit(
            f"no level of the capacity ramp kept up with its p99 within {p99_ms:g} ms (see the "
            "ramp above): the machine may be busy; try again, or give --capacity"
        )
    return {"rps": rps, "source": "ramp", "p99_ms": p99_ms, "ramp": ramp}


def run_prelude(
    generator: LoadGenerator, plan: SoakPlan, *, rate: float, seed: int
) -> dict[str, Any]:
    """The soak's load and burst for ``plan.prelude_s``, before the soak and outside its figures
    (see `SoakPlan.prelude_s`); its calls are accounted for on their own."""
    window, schedule = burst_schedule(
        plan, rate_rps=rate, duration_s=plan.prelude_s, rng=random.Random(seed + 1)
    )
    procs.progress(f"prelude: {plan.prelude_s:g} s with a burst at {window[0]:g} s")
    records = generator.run(schedule, deadline_s=plan.deadline_s).records
    return {"burst": list(window), "totals": results.account(records)}


def run_soak(
    generator: LoadGenerator,
    backends: Backends,
    plan: SoakPlan,
    *,
    rate: float,
    seed: int,
) -> tuple[list[RequestRecord], dict[str, list[list[float | None]]], list[dict[str, Any]]]:
    """The soak: load in one thread, restarts in another, RSS sampled every second here."""
    _, schedule = burst_schedule(
        plan, rate_rps=rate, duration_s=plan.duration_s, rng=random.Random(seed)
    )
    restarts = restart_plan(
        duration_s=plan.duration_s, every_s=plan.restart_every_s, backends=len(backends.addresses)
    )
    outcome: dict[str, Any] = {}
    done_restarts: list[dict[str, Any]] = []
    t0 = time.monotonic() + 0.2  # LoadGenerator.run starts its schedule 0.2 s from its call
    backends.t0 = t0
    backends.scrape_shed()  # the baseline: what they refused before the soak is not counted
    backends.shed.events.clear()
    backends.shed.gauges.clear()

    def load() -> None:
        try:
            outcome["records"] = generator.run(schedule, deadline_s=plan.deadline_s).records
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    def restart_all(plan_: Sequence[Restart]) -> None:
        for restart in plan_:
            time.sleep(max(0.0, t0 + restart.at_s - time.monotonic()))
            procs.progress(f"restarting backend #{restart.backend} at {restart.at_s:g} s")
            try:
                entry = backends.restart(restart.backend)
            except Exception as exc:
                done_restarts.append({**restart._asdict(), "error": repr(exc)})
                return
            done_restarts.append(
                {**restart._asdict(), **entry, "ready_s": round(restart.at_s + entry["down_s"], 2)}
            )

    names = [f"backend-{i}" for i in range(len(backends.addresses))]
    names += [f"client-{i}" for i in range(len(generator.pids))]
    rss: dict[str, list[list[float | None]]] = {name: [] for name in names}
    loader = threading.Thread(target=load, name="soak-load")
    restarter = threading.Thread(target=restart_all, args=(restarts,), name="soak-restarts")
    loader.start()
    restarter.start()
    tick = 0
    while loader.is_alive():
        time.sleep(max(0.0, t0 + tick - time.monotonic()))
        at = round(time.monotonic() - t0, 2)
        values = backends.rss_kib() + [procs.tree_rss_kib(pid) for pid in generator.pids]
        backends.scrape_shed()
        for name, kib in zip(names, values, strict=True):
            rss[name].append([at, kib])
        if tick % 5 == 0 and tick <= plan.duration_s:
            procs.progress(f"soak {tick} s / {plan.duration_s:g} s")
        tick += 1
    loader.join()
    restarter.join()
    backends.scrape_shed()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["records"], rss, done_restarts


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    try:
        if args.duration_s is not None:
            plan = dataclasses.replace(plan, duration_s=args.duration_s)
        if args.backends < 2 or args.senders < 1 or args.cpu_ms < 0 or args.wait_ms < 0:
            raise ValueError("need --backends >= 2, --senders >= 1, --cpu-ms and --wait-ms >= 0")
        if args.capacity is not None and args.capacity <= 0:
            raise ValueError("--capacity must be > 0")
    except ValueError as exc:
        parser.error(str(exc))
    started = time.monotonic()
    run: dict[str, Any] = {
        "benchmark": "soak",
        "mode": "quick" if args.quick else "full",
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench.soak", *(argv or sys.argv[1:])]),
        "machine": procs.machine_description(("grpcio", "protobuf")),
        "plan": dataclasses.asdict(plan),
        "config": {
            "backends": args.backends,
            "senders": args.senders,
            "cpu_ms": args.cpu_ms,
            "wait_ms": args.wait_ms,
            "seed": args.seed,
            "details": args.details,
            "backend_argv": backend_argv("127.0.0.1:PORT"),
        },
        "burst": list(burst_window(duration_s=plan.duration_s, burst_s=plan.burst_s)),
        "burst_wait_s": round(
            burst_wait_s(load=plan.load, burst_factor=plan.burst_factor, burst_s=plan.burst_s), 3
        ),
        "notes": [],
    }
    procs.progress(
        f"soak, {run['mode']} mode: {args.backends} backends, {args.senders} senders, "
        f"{plan.duration_s:g} s at {plan.load:.0%} of capacity"
    )
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as scratch:
        backends = Backends(args.backends, Path(scratch) / "logs")
        try:
            procs.progress(f"backends ready: {', '.join(backends.addresses)}")
            with LoadGenerator(senders=args.senders) as generator:
                generator.prepare_client(
                    SoakClientSpec(
                        addresses=backends.addresses,
                        cpu_ms=args.cpu_ms,
                        wait_ms=args.wait_ms,
                        details=args.details,
                    )
                )
                procs.progress("warm-up: 2 s")
                generator.run(
                    poisson_schedule(
                        rate_rps=plan.ramp_start_rps,
                        duration_s=2.0,
                        max_requests=plan.max_requests,
                        rng=random.Random(args.seed - 1),
                    ),
                    deadline_s=plan.deadline_s,
                )
                if args.capacity is None:
                    run["capacity"] = measure_capacity(generator, plan, seed=args.seed)
                else:
                    run["capacity"] = {"rps": args.capacity, "source": "--capacity", "ramp": []}
                rate = plan.load * run["capacity"]["rps"]
                run["rate_rps"] = round(rate, 1)
                procs.progress(
                    f"capacity {run['capacity']['rps']:.0f} req/s: soaking at {rate:.0f} req/s"
                )
                run["prelude"] = run_prelude(generator, plan, rate=rate, seed=args.seed)
                records, rss, restarts = run_soak(
                    generator, backends, plan, rate=rate, seed=args.seed
                )
                run["config"]["sender_niceness"] = generator.niceness
        finally:
            procs.progress("stopping the backends")
            codes = backends.stop_all()
            bad = [f"#{i}: {code}" for i, code in enumerate(codes) if code != 0]
            if bad:
                run["notes"].append(f"backends that did not exit 0 on SIGTERM: {', '.join(bad)}")
    run["restarts"] = restarts
    run["rss"] = rss
    run["totals"] = results.account(records)
    run["buckets"] = results.buckets(
        records, rss, bucket_s=plan.bucket_s, duration_s=plan.duration_s
    )
    run["by_phase"] = results.account_by_phase(
        records, restarts=restarts, burst=run["burst"], settle_s=plan.deadline_s
    )
    run["per_second"] = results.buckets(records, {}, bucket_s=1.0, duration_s=plan.duration_s)
    shed = backends.shed.events
    run["shed"] = shed
    run["server_load"] = backends.shed.gauges  # each scrape's load gauges, for diagnosis
    run["load_when_refusing"] = results.load_when_refusing(shed, backends.shed.gauges)
    run["shed_buckets"] = results.shed_buckets(
        shed, bucket_s=plan.bucket_s, duration_s=plan.duration_s
    )
    run["shed_by_phase"] = results.shed_by_phase(
        shed, restarts=restarts, burst=run["burst"], settle_s=plan.deadline_s
    )
    if backends.shed.failed_scrapes:
        run["notes"].append(
            f"{backends.shed.failed_scrapes} scrapes of a backend's metrics failed "
            "(its refusals since the previous scrape are not counted)"
        )
    run["rss_growth"] = {
        name: results.rss_growth(
            samples, warmup_s=plan.warmup_s, window_s=plan.rss_window_s, end_s=plan.duration_s
        )
        for name, samples in rss.items()
    }
    for restart in restarts:
        if restart.get("error") or restart.get("exit_code") != 0:
            run["notes"].append(f"restart of backend #{restart['backend']}: {restart}")
    run["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    run["elapsed_s"] = round(time.monotonic() - started, 1)
    run["acceptance"] = [dataclasses.asdict(check) for check in results.checks(run)]
    markdown = publish(
        run, args.out, render=results.render_markdown, plot=plot_soak, png="soak.png"
    )
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
