"""The I/O side of bench/overload: start a system, offer it load, measure, stop it.

`OverloadBenchmark` owns the load generator, the scratch directory and the time budget. Its
methods are the bench's steps -- the capacity ramp, the load steps, the step beside a
CPU-bound neighbour, the bursts, the memory readings -- each bounded in time and count, each
returning the JSON-ready dict that `results` checks and renders.
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from bench.harness import procs
from bench.harness.health_probe import HealthProbe, HealthSummary
from bench.harness.loadgen import (
    LoadGenerator,
    RunResult,
    Target,
    Work,
    even_channels,
    poisson_schedule,
)
from bench.harness.neighbour import Neighbour, neighbour_core
from bench.harness.stats import (
    HandlerTotals,
    StepSummary,
    capacity_from_ramp,
    keeps_up,
    ramp_done,
    ramp_rates,
    summarize,
    summarize_burst,
)
from bench.overload import systems
from bench.overload.handler import read_stats_dir
from bench.overload.profiles import BurstProfile, LoadProfile, Plan, burst_schedule

# More connections for the memory warm-up, so SO_REUSEPORT hands every one of 4 workers some.
MEMORY_CHANNELS_PER_SENDER = 8
# A step whose senders fired later than this (p99) gets a note in the report.
LAG_NOTE_MS = 10.0
# A step during which the hypervisor took more than this share of the host's CPU time for
# other guests (steal, /proc/stat) gets a note: on this project's shared 2-core machines it
# reached ~20% at times, and steps then swung between holding and collapsing.
STEAL_NOTE_FRACTION = 0.05
# The capacity ramp starts at this share of what the cores would carry at the profile's
# nominal cost per call (well below capacity, so a cold server's first level keeps up).
RAMP_START = 0.25
# The neighbour step's load, as a multiple of 1x (the issue: "a server at 0.5x load").
NEIGHBOUR_MULTIPLE = 0.5


@dataclasses.dataclass(frozen=True)
class Running:
    """A started system: its process, its handler accounting, how many processes serve."""

    spec: systems.SystemSpec
    process: procs.SystemProcess
    stats_dir: Path
    processes: int

    def target(self, *, channels_per_sender: int = 4) -> Target:
        return Target(
            protocol=self.spec.protocol,
            address=self.process.address,
            channels_per_sender=even_channels(channels_per_sender, self.processes),
            processes=self.processes,
        )


class OverloadBenchmark:
    """One invocation: owns the load generator, the scratch directory and the time budget."""

    def __init__(
        self,
        generator: LoadGenerator,
        *,
        plan: Plan,
        scratch: Path,
        seed: int,
        rpckit_args: Sequence[str] = (),
    ) -> None:
        self.generator = generator
        self.rpckit_args = tuple(rpckit_args)
        self.plan = plan
        self.scratch = scratch
        self.seed = seed
        self.budget_end = time.monotonic() + plan.time_budget_s
        self.notes: list[str] = []
        self._stopper = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stop")
        self._stops: list[tuple[dict[str, Any], str, Future[int | None]]] = []

    def over_budget(self) -> bool:
        return time.monotonic() > self.budget_end

    # ------------------------------------------------------------ systems

    def start(self, spec: systems.SystemSpec, *, deadline_ms: float | None = None) -> Running:
        stats_dir = Path(tempfile.mkdtemp(prefix=f"stats-{spec.name}-", dir=self.scratch))
        self.generator.forget()  # a new server: the senders connect anew
        procs.progress(f"starting {spec.label}")
        process = systems.start(
            spec, stats_dir=stats_dir, log_dir=self.scratch / "logs", deadline_ms=deadline_ms
        )
        processes = systems.serving_processes(spec, process.pid)
        tree = procs.process_tree(process.pid)
        procs.progress(
            f"{spec.name} ready at {process.address} ({len(tree)} processes, {processes} serving)"
        )
        return Running(spec, process, stats_dir, processes)

    def start_for(
        self,
        spec: systems.SystemSpec,
        entry: dict[str, Any],
        *,
        deadline_ms: float,
        budgeted: bool = True,
    ) -> Running | None:
        """Start a system for one profile; None, with a note in its ``entry``, when it
        cannot (out of time, when ``budgeted``, or it did not start)."""
        if budgeted and self.over_budget():
            entry["note"] = "skipped (time budget)"
            return None
        try:
            return self.start(spec, deadline_ms=deadline_ms)
        except (RuntimeError, TimeoutError, OSError) as exc:
            entry["note"] = f"did not start: {str(exc).splitlines()[0][:300]}"
            procs.progress(f"{spec.name}: {entry['note']}")
            return None

    def stop_soon(self, process: procs.SystemProcess, entry: dict[str, Any]) -> None:
        """SIGTERM; an idle server drains in the background (it costs no CPU meanwhile), a busy
        one is waited for, so its backlog does not eat into the next system's measurements.
        The exit code lands in ``entry["exit_code"]`` at `finish`."""
        idle = procs.wait_idle(process.pid, max_cpu_share=0.05, window_s=0.2, timeout_s=0.2)
        stopping = self._stopper.submit(process.stop, timeout_s=30)
        if not idle:
            procs.progress(f"{process.name} is still busy: waiting for it to stop")
            wait([stopping], timeout=40)
        self._stops.append((entry, process.name, stopping))

    def finish(self) -> None:
        """Wait for every stop; record exit codes, note the unclean ones."""
        self._stopper.shutdown(wait=True)
        for entry, name, stopping in self._stops:
            entry["exit_code"] = stopping.result()
            if entry["exit_code"] != 0:
                self.notes.append(
                    f"{name} exited with {entry['exit_code']} on SIGTERM (expected 0)"
                )
        self._stops.clear()

    def quiesce(self, process: procs.SystemProcess) -> bool:
        """Wait (bounded) until the server stopped working off a backlog."""
        idle = procs.wait_idle(
            process.pid,
            max_cpu_share=0.05,
            window_s=self.plan.quiesce_window_s,
            timeout_s=self.plan.quiesce_timeout_s,
        )
        time.sleep(0.05)  # the last calls' stats file writes
        return idle

    # ------------------------------------------------------------ load

    def run_schedule(
        self,
        running: Running,
        work: Work,
        schedule: Sequence[float],
        *,
        deadline_s: float,
        channels_per_sender: int = 4,
    ) -> tuple[RunResult, HealthSummary | None]:
        """Fire one schedule; systems that want it get a Health/Check every 50 ms meanwhile,
        on a connection of its own."""
        self.generator.prepare(running.target(channels_per_sender=channels_per_sender), work)
        if not running.spec.health_probe:
            return self.generator.run(schedule, deadline_s=deadline_s), None
        with HealthProbe(running.process.address) as probe:
            result = self.generator.run(schedule, deadline_s=deadline_s)
        return result, probe.summary()

    def fire(
        self,
        running: Running,
        profile: LoadProfile,
        *,
        rate: float,
        duration_s: float,
        warmup_s: float,
        seed: int,
        channels_per_sender: int = 4,
    ) -> tuple[StepSummary, float, HealthSummary | None]:
        """One open-loop step: its measured window, the senders' CPU seconds, health probes."""
        schedule = poisson_schedule(
            rate_rps=rate,
            duration_s=duration_s,
            max_requests=self.plan.max_requests_per_step,
            rng=random.Random(seed),
        )
        result, health = self.run_schedule(
            running,
            profile.work,
            schedule,
            deadline_s=profile.deadline_s,
            channels_per_sender=channels_per_sender,
        )
        summary = summarize(result.records, window_start_s=warmup_s, window_end_s=duration_s)
        return summary, result.sender_cpu_s, health

    def warm_up(self, running: Running, profile: LoadProfile, *, rate: float) -> None:
        """Unmeasured light load, so first-call costs (lazy imports, pools) are not measured."""
        self.fire(
            running,
            profile,
            rate=rate,
            duration_s=self.plan.system_warmup_s,
            warmup_s=self.plan.system_warmup_s / 2,
            seed=self.seed - 1,
        )
        self.quiesce(running.process)

    def ramp(self, running: Running, profile: LoadProfile) -> dict[str, Any]:
        """Capacity: offer geometric rates until two levels in a row do not keep up."""
        ideal = profile.ideal_rps(os.cpu_count() or 1)
        self.warm_up(running, profile, rate=0.2 * ideal)
        rates = ramp_rates(
            start_rps=RAMP_START * ideal,
            factor=self.plan.ramp_factor,
            max_levels=self.plan.ramp_max_levels,
        )
        levels: list[StepSummary] = []
        for index, rate in enumerate(rates):
            if self.over_budget():
                self.notes.append(f"{profile.name}: capacity ramp cut short by the time budget")
                break
            duration = self.plan.ramp_level_s
            summary, _, _ = self.fire(
                running,
                profile,
                rate=rate,
                duration_s=duration,
                warmup_s=min(0.5, duration / 4),
                seed=self.seed * 7919 + index,
            )
            levels.append(summary)
            procs.progress(
                f"{profile.name} ramp {running.spec.name} {rate:.0f}/s: goodput "
                f"{summary.goodput_rps:.0f}/s ({summary.good}/{summary.sent} good), "
                f"p99 {summary.good_p99_ms} ms"
            )
            self.quiesce(running.process)
            if ramp_done(levels):
                break
        capacity = capacity_from_ramp(levels)
        if levels and not any(keeps_up(level) for level in levels):
            self.notes.append(
                f"{profile.name}: no level of {running.spec.name}'s capacity ramp kept up "
                f"(the first offered {rates[0]:.0f}/s): 1x is its best goodput on a "
                "ramp it never kept up with, and may be far off"
            )
        if levels and len(levels) == len(rates) and not ramp_done(levels):
            self.notes.append(
                f"{profile.name}: the capacity ramp ended at its last level, "
                f"{rates[-1]:.0f}/s, still keeping up: 1x may be underestimated"
            )
        procs.progress(f"{profile.name}: capacity of {running.spec.name}: {capacity:.0f} req/s")
        return {
            "system": running.spec.name,
            "rps": capacity,
            "source": "ramp",
            "ramp": [
                {"target_rps": rate, "summary": level.as_json()}
                for rate, level in zip(rates, levels, strict=False)
            ],
        }

    def measured_step(
        self, running: Running, profile: LoadProfile, *, multiple: float, rate: float, seed: int
    ) -> dict[str, Any]:
        """One measured step with its handler CPU accounting and the server's CPU."""
        handler_before = HandlerTotals.sum_of(read_stats_dir(running.stats_dir))
        cpu_before = procs.tree_cpu_seconds(running.process.pid)
        host_before = procs.host_ticks()
        summary, sender_cpu_s, health = self.fire(
            running,
            profile,
            rate=rate,
            duration_s=self.plan.warmup_s + self.plan.measure_s,
            warmup_s=self.plan.warmup_s,
            seed=seed,
        )
        host_after = procs.host_ticks()
        quiesced = self.quiesce(running.process)
        handler = HandlerTotals.sum_of(read_stats_dir(running.stats_dir)) - handler_before
        name = running.spec.name
        steal = (
            None
            if host_before is None or host_after is None
            else host_before.steal_share(host_after)
        )
        if steal is not None and steal > STEAL_NOTE_FRACTION:
            self.notes.append(
                f"{profile.name}, {name} {multiple:g}x: the hypervisor gave {steal:.0%} of the "
                "host's CPU time to other guests (steal) during the step: its numbers are "
                "low for a reason outside the systems compared"
            )
        lag = summary.send_lag_p99_ms
        if lag is not None and lag > LAG_NOTE_MS:
            self.notes.append(
                f"{profile.name}, {name} {multiple:g}x: sender lag p99 {lag:.0f} ms (the load "
                "generator was short of CPU; successful-call latencies include it)"
            )
        if not quiesced:
            self.notes.append(
                f"{profile.name}, {name} {multiple:g}x: still busy "
                f"{self.plan.quiesce_timeout_s:g} s after the step"
            )
        return {
            "multiple": multiple,
            "target_rps": rate,
            "summary": summary.as_json(),
            "handler": dataclasses.asdict(handler),
            "wasted_fraction": handler.wasted_fraction,
            "tree_cpu_s": round(procs.tree_cpu_seconds(running.process.pid) - cpu_before, 3),
            "sender_cpu_s": round(sender_cpu_s, 3),
            "host_steal_pct": None if steal is None else round(100 * steal, 1),
            "quiesced": quiesced,
            "health": None if health is None else health.as_json(),
        }

    def steps(
        self,
        running: Running,
        profile: LoadProfile,
        *,
        capacity: float,
        multiples: Sequence[float],
    ) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = []
        name = running.spec.name
        for index, multiple in enumerate(multiples):
            if self.over_budget():
                self.notes.append(
                    f"{profile.name}, {name}: steps from {multiple:g}x on skipped (time budget)"
                )
                break
            if not running.process.alive():
                self.notes.append(f"{profile.name}: {name} died before the {multiple:g}x step")
                break
            step = self.measured_step(
                running,
                profile,
                multiple=multiple,
                rate=multiple * capacity,
                seed=self.seed * 1000 + index,
            )
            steps.append(step)
            _progress_step(profile.name, name, step)
        return steps

    def neighbour_step(
        self, running: Running, profile: LoadProfile, *, capacity: float
    ) -> dict[str, Any] | None:
        """A step at 0.5x with a CPU-bound neighbour process spinning on one core."""
        name = running.spec.name
        if self.over_budget():
            self.notes.append(f"{profile.name}, {name}: neighbour step skipped (time budget)")
            return None
        core = neighbour_core()
        longest = self.plan.warmup_s + self.plan.measure_s + self.plan.quiesce_timeout_s + 30
        with Neighbour(
            cpu=core, max_s=longest, log_dir=self.scratch / "logs", cwd=systems.REPO_ROOT
        ) as neighbour:
            before = neighbour.cpu_seconds()
            step = self.measured_step(
                running,
                profile,
                multiple=NEIGHBOUR_MULTIPLE,
                rate=NEIGHBOUR_MULTIPLE * capacity,
                seed=self.seed * 1000 + 999,
            )
            step["neighbour"] = {
                "core": core,
                "cpu_s": round(neighbour.cpu_seconds() - before, 3),
                "niceness": neighbour.niceness(),
                "server_niceness": os.getpriority(os.PRIO_PROCESS, running.process.pid),
            }
        _progress_step(profile.name, f"{name} beside a busy core", step)
        return step

    def bursts(self, running: Running, profile: BurstProfile) -> list[dict[str, Any]]:
        """Bursts sent at once, each followed by ordinary calls at a light rate."""
        entries: list[dict[str, Any]] = []
        name = running.spec.name
        for index in range(self.plan.bursts):
            if self.over_budget():
                self.notes.append(f"burst, {name}: bursts from #{index + 1} on skipped")
                break
            result, burst_health = self.run_schedule(
                running,
                profile.work,
                burst_schedule(profile.size),
                deadline_s=profile.deadline_s,
            )
            burst = summarize_burst(result.records)
            recovery_schedule = poisson_schedule(
                rate_rps=profile.recovery_rps,
                duration_s=self.plan.recovery_s,
                max_requests=self.plan.max_requests_per_step,
                rng=random.Random(self.seed * 31 + index),
            )
            result, recovery_health = self.run_schedule(
                running,
                profile.recovery.work,
                recovery_schedule,
                deadline_s=profile.recovery.deadline_s,
            )
            recovery = summarize(
                result.records, window_start_s=0, window_end_s=self.plan.recovery_s
            )
            entries.append(
                {
                    "burst": burst.as_json(),
                    "recovery": recovery.as_json(),
                    "health": [
                        None if health is None else health.as_json()
                        for health in (burst_health, recovery_health)
                    ],
                }
            )
            procs.progress(
                f"burst #{index + 1} {name}: {burst.ok} OK, {burst.refused} refused, "
                f"{burst.failed} failed, finished in {burst.finish_ms} ms; then "
                f"{recovery.good}/{recovery.sent} ordinary calls good "
                f"({recovery.rejected} refused, {recovery.deadline} late)"
            )
            self.quiesce(running.process)
        return entries

    def memory(
        self, family: str, workers: int, profile: LoadProfile, *, rate: float
    ) -> dict[str, Any]:
        """PSS of one configuration after a short warm-up load."""
        spec = (
            systems.rpckit_spec(("--workers", str(workers)), self.rpckit_args)
            if family == "rpckit"
            else systems.gunicorn_spec(workers)
        )
        entry: dict[str, Any] = {"family": family, "workers": workers, "label": spec.label}
        running = self.start_for(spec, entry, deadline_ms=profile.deadline_ms, budgeted=False)
        if running is None:
            return entry
        try:
            duration = self.plan.memory_warm_s
            summary, _, _ = self.fire(
                running,
                profile,
                rate=rate,
                duration_s=duration,
                warmup_s=duration / 4,
                seed=self.seed,
                channels_per_sender=MEMORY_CHANNELS_PER_SENDER,
            )
            self.quiesce(running.process)
            entry["processes"] = len(procs.process_tree(running.process.pid))
            entry["pss_kib"] = procs.tree_pss_kib(running.process.pid)
            entry["replies_by_pid"] = summary.as_json()["replies_by_pid"]
            entry["processes_that_replied"] = len(summary.replies_by_pid)
            procs.progress(
                f"{spec.label}: PSS {entry['pss_kib'] / 1024:.1f} MiB "
                f"over {entry['processes']} processes"
            )
        except RuntimeError as exc:
            entry["note"] = f"failed: {str(exc)[:200]}"
        finally:
            self.stop_soon(running.process, entry)
        return entry


def _progress_step(profile: str, name: str, step: dict[str, Any]) -> None:
    summary = step["summary"]
    wasted = step["wasted_fraction"]
    procs.progress(
        f"{profile}, {name} {step['multiple']:g}x ({step['target_rps']:.0f}/s): goodput "
        f"{summary['goodput_rps']:.1f}/s, p99 {summary['good_p99_ms']} ms, rejected "
        f"{summary['rejected_rps']:.1f}/s (p99 {summary['rejected_p99_ms']} ms), timeouts "
        f"{summary['deadline']}, errors {summary['errors']}, wasted CPU "
        f"{'-' if wasted is None else f'{wasted:.0%}'}, sender lag p99 "
        f"{summary['send_lag_p99_ms']} ms"
    )
