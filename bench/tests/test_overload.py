"""Unit tests of bench/overload's pure parts: profiles, plans, systems' command lines, the
shim's route timeout, and issue 12's acceptance checks computed from a run's numbers."""

from __future__ import annotations

import os
from typing import Any

import pytest

from bench.harness.report import Check
from bench.overload import http_app, results, systems
from bench.overload.profiles import (
    BURST,
    FULL,
    IO,
    QUICK,
    SEED,
    LoadProfile,
    Plan,
    burst_schedule,
    parse_capacities,
    with_overrides,
)
from bench.overload.service import call_deadline

# ---------------------------------------------------------------- profiles and plans


def test_the_profiles_are_the_issues() -> None:
    assert (SEED.work.cpu_ms, SEED.work.wait_ms, SEED.deadline_ms) == (5.0, 20.0, 250.0)
    assert (IO.work.cpu_ms, IO.work.wait_ms) == (0.5, 200.0)
    # The io deadline leaves about as much room to queue as the seed profile's does.
    io_room = IO.deadline_ms - IO.work.cpu_ms - IO.work.wait_ms
    seed_room = SEED.deadline_ms - SEED.work.cpu_ms - SEED.work.wait_ms
    assert io_room >= seed_room
    assert "50 ms of slack" in IO.deadline_reason
    assert (BURST.size, BURST.work.cpu_ms, BURST.work.wait_ms) == (200, 0.0, 800.0)
    assert (BURST.deadline_ms, BURST.recovery, BURST.recovery_rps) == (10_000.0, SEED, 60.0)
    assert SEED.describe() == "5 ms CPU + 20 ms wait, 250 ms deadline"
    assert SEED.ideal_rps(2) == 400.0


def test_overrides_change_only_what_is_given() -> None:
    assert with_overrides(SEED) == SEED
    changed = with_overrides(SEED, deadline_ms=300, payload_bytes=64)
    assert (changed.deadline_ms, changed.work.payload_bytes) == (300, 64)
    assert changed.work.cpu_ms == SEED.work.cpu_ms
    assert changed.deadline_reason == "set on the command line"
    with pytest.raises(ValueError, match="> 0"):
        LoadProfile(name="x", work=SEED.work, deadline_ms=0, call_cost_ms=1)


def test_a_burst_is_sent_at_once() -> None:
    assert burst_schedule(3) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=">= 1"):
        burst_schedule(0)


def test_capacities_come_as_profile_equals_rate() -> None:
    assert parse_capacities(["seed=280", "io=900.5"], ("seed", "io")) == {
        "seed": 280.0,
        "io": 900.5,
    }
    for bad, message in (
        ("seed", "PROFILE=RPS"),
        ("burst=10", "PROFILE=RPS"),
        ("seed=fast", "not a number"),
        ("seed=0", "> 0"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_capacities([bad], ("seed", "io"))


def test_plans_are_bounded_and_quick_fits_three_minutes() -> None:
    assert QUICK.time_budget_s <= 150  # + start-up, the last stops and the memory readings
    assert QUICK.bursts >= 1
    assert FULL.bursts >= QUICK.bursts
    assert FULL.recovery_s == 6.0  # the issue's recovery window
    fields = {f: getattr(QUICK, f) for f in QUICK.__dataclass_fields__}
    with pytest.raises(ValueError, match="durations"):
        Plan(**(fields | {"recovery_s": 0}))
    with pytest.raises(ValueError, match="bursts"):
        Plan(**(fields | {"bursts": 0}))


# ---------------------------------------------------------------- systems


def test_rpckit_runs_as_two_processes_per_core_from_one_place() -> None:
    workers = systems.rpckit_workers_argv()
    assert workers == ("--workers", "auto")  # two per usable core
    specs = systems.overload_systems(("--threads", "6"))
    for name in ("rpckit", "rpckit-http"):
        argv = specs[name].argv
        at = argv.index("--workers")
        assert argv[at : at + 2] == workers
        assert argv[-2:] == ("--threads", "6")  # extra flags last, so they may override
        assert specs[name].processes is None  # counted once it runs
    assert "--workers" not in specs["rpckit-default"].argv
    assert specs["gunicorn"].argv[specs["gunicorn"].argv.index("-w") + 1] == str(
        len(os.sched_getaffinity(0)) + 1
    )
    assert specs["rpckit"].health_probe
    assert not specs["grpc-plain"].health_probe


def test_the_shim_system_serves_the_handler_at_its_legacy_url() -> None:
    spec = systems.overload_systems()["rpckit-http"]
    argv = spec.argv
    assert (spec.protocol, spec.route_timeout) == ("http", True)
    assert argv[argv.index("--http") + 1] == "127.0.0.1:0"
    assert argv[argv.index("--http-app") + 1] == "bench.overload.http_app:legacy_http"
    assert spec.ready('{"grpc": "127.0.0.1:1", "http": "127.0.0.1:2"}\n', "") == "127.0.0.1:2"


def test_every_profile_runs_the_default_systems_and_the_burst_adds_the_default_server() -> None:
    assert systems.default_systems("seed") == systems.DEFAULT_SYSTEMS
    assert systems.default_systems("io") == systems.DEFAULT_SYSTEMS
    assert systems.default_systems("burst") == (*systems.DEFAULT_SYSTEMS, "rpckit-default")
    assert set(systems.DEFAULT_SYSTEMS) <= set(systems.overload_systems())


def test_a_system_with_a_known_process_count_is_not_counted() -> None:
    spec = systems.overload_systems()["grpc-plain"]
    assert systems.serving_processes(spec, root_pid=-1) == 1


# ---------------------------------------------------------------- the shim's route timeout


def test_the_route_timeout_is_the_protos_unless_the_profile_needs_another() -> None:
    assert http_app.proto_route_timeout_ms() == SEED.deadline_ms == 250
    assert http_app.route_timeout_env(250) == {}
    assert http_app.route_timeout_env(500) == {http_app.ROUTE_TIMEOUT_ENV: "500"}
    assert http_app.route_options({}) == {}
    options = http_app.route_options({http_app.ROUTE_TIMEOUT_ENV: "500"})
    assert options[http_app.METHOD_KEY].timeout_s == 0.5
    with pytest.raises(ValueError, match="not a number"):
        http_app.route_options({http_app.ROUTE_TIMEOUT_ENV: "half a second"})


def test_the_handler_takes_the_earlier_of_the_calls_deadline_and_the_clients() -> None:
    now = 1000.0
    assert call_deadline(None, (), now) is None
    assert call_deadline(9.2e18, (), now) is None  # grpcio's "no deadline"
    assert call_deadline(0.25, (), now) == 1000.25
    client = (("x-request-deadline", "1000100"),)  # epoch ms: 100 ms from now
    assert call_deadline(0.25, client, now) == 1000.1
    assert call_deadline(None, client, now) == 1000.1
    assert call_deadline(0.05, client, now) == 1000.05
    assert call_deadline(None, (("x-request-deadline", "soon"),), now) is None


# ---------------------------------------------------------------- acceptance


def step(
    multiple: float,
    goodput: float,
    *,
    wasted: float | None = 0.0,
    refusal_p99: float | None = 5.0,
    sent: int = 1000,
    rejected: int = 0,
    deadline: int = 0,
    health: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "multiple": multiple,
        "target_rps": 100 * multiple,
        "summary": {
            "window_s": 10.0,
            "sent": sent,
            "offered_rps": 100.0 * multiple,
            "good": int(goodput * 10),
            "goodput_rps": float(goodput),
            "deadline": deadline,
            "rejected": rejected,
            "rejected_rps": rejected / 10,
            "errors": 0,
            "good_p50_ms": 30.0,
            "good_p99_ms": 60.0,
            "rejected_p99_ms": refusal_p99,
            "rejected_codes": {},
            "error_codes": {},
            "send_lag_p99_ms": 1.0,
            "send_lag_max_ms": 2.0,
            "replies_by_pid": {},
        },
        "handler": {"cpu_total_s": 1.0, "cpu_wasted_s": 0.0, "calls": 1, "late_calls": 0},
        "wasted_fraction": wasted,
        "tree_cpu_s": 1.0,
        "sender_cpu_s": 0.1,
        "health": health,
    }


HEALTHY = {"probes": 100, "serving": 100, "p99_ms": 5.0, "max_ms": 12.0}


def load_entry(name: str, systems_steps: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "load",
        "describe": f"{name} calls",
        "deadline_ms": 250.0,
        "deadline_reason": "why",
        "capacity": {"system": "gunicorn", "rps": 100.0, "source": "ramp"},
        "systems": [
            {"name": system, "label": f"label {system}", "protocol": "grpc", "steps": steps}
            for system, steps in systems_steps.items()
        ],
    }


def burst(ok: int, *, recovery_good: int = 120, sent: int = 200) -> dict[str, Any]:
    recovery = step(1, 60, sent=120)["summary"] | {"sent": 120, "good": recovery_good}
    return {
        "burst": {
            "sent": sent,
            "ok": ok,
            "refused": sent - ok,
            "failed": 0,
            "finish_ms": 850.0,
            "ok_max_ms": 840.0,
            "codes": {"RESOURCE_EXHAUSTED": sent - ok} if ok < sent else {},
        },
        "recovery": recovery,
        "health": [None, None],
    }


def a_run(**changes: Any) -> dict[str, Any]:
    """A run that passes every gate; ``changes`` replace parts of it."""
    loads = (0.5, 1.0, 1.5, 2.0, 3.0)
    gunicorn = [step(m, g) for m, g in zip(loads, (50, 100, 120, 90, 60), strict=True)]
    rpckit = [
        step(m, g, health=HEALTHY) for m, g in zip(loads, (50, 100, 150, 145, 140), strict=True)
    ]
    shim = [step(m, g) for m, g in zip(loads, (50, 100, 130, 125, 120), strict=True)]
    seed = load_entry("seed", {"gunicorn": gunicorn, "rpckit": rpckit, "rpckit-http": shim})
    seed["systems"][1]["neighbour"] = step(0.5, 50, sent=500, rejected=2) | {
        "neighbour": {"core": 1, "cpu_s": 9.8, "niceness": 0, "server_niceness": 0}
    }
    io = load_entry(
        "io",
        {
            "gunicorn": [step(1, 500), step(3, 400)],
            "rpckit": [step(1, 520), step(3, 480)],
        },
    )
    burst_entry = {
        "name": "burst",
        "kind": "burst",
        "describe": "bursts",
        "size": 200,
        "deadline_ms": 10_000.0,
        "recovery": {"profile": "seed", "rps": 60.0, "seconds": 6.0, "deadline_ms": 250.0},
        "systems": [
            {"name": "rpckit-default", "label": "rpckit serve (defaults)", "bursts": [burst(200)]},
            {"name": "gunicorn", "label": "gunicorn", "bursts": [burst(200)]},
        ],
    }
    run: dict[str, Any] = {
        "mode": "full",
        "config": {
            "profiles": ["seed", "io", "burst"],
            "warmup_s": 3,
            "measure_s": 15,
            "senders": 2,
            "rpckit_workers_argv": ["--workers", "3"],
        },
        "machine": {
            "cpu_model": "x",
            "cores": 2,
            **dict.fromkeys(
                ("kernel", "python", "grpcio", "protobuf", "gunicorn", "gevent", "flask"), "1"
            ),
        },
        "profiles": {"seed": seed, "io": io, "burst": burst_entry},
        "memory": [
            {"family": "rpckit", "workers": 1, "label": "r1", "pss_kib": 30_000},
            {"family": "rpckit", "workers": 4, "label": "r4", "pss_kib": 60_000},
            {"family": "gunicorn", "workers": 1, "label": "g1", "pss_kib": 40_000},
            {"family": "gunicorn", "workers": 4, "label": "g4", "pss_kib": 80_000},
        ],
        "notes": [],
    }
    run.update(changes)
    return run


def by_name(checks: list[Check]) -> dict[str, bool | None]:
    verdicts: dict[str, bool | None] = {}
    for check in checks:
        key = f"{check.name} [{check.target}]"
        assert key not in verdicts, f"two checks named {key}"
        verdicts[key] = check.passed
    return verdicts


def test_a_run_that_meets_every_target_passes_every_gate() -> None:
    checks = results.acceptance(a_run())
    failed = [c for c in checks if c.passed is not True]
    assert failed == []
    names = {c.name for c in checks}
    for expected in (
        "seed: goodput vs gunicorn+gevent",
        "seed: goodput at 2x",
        "seed: goodput at 3x",
        "seed: wasted CPU, worst step",
        "seed: refusal p99",
        "seed: health Check, every step",
        "HTTP: goodput vs gunicorn+gevent",
        "HTTP: refusal p99",
        "io: goodput at 1x",
        "io: goodput at 3x",
        "burst: rpckit serve (defaults)",
        "burst: recovery, rpckit serve (defaults)",
        "neighbour: seed at 0.5x beside a busy core",
        "memory: PSS per extra worker",
    ):
        assert expected in names
    goals = [c for c in checks if not c.gate]
    assert {c.name for c in goals} == {"seed: refusal p99 (goal)", "HTTP: refusal p99 (goal)"}


def test_an_empty_run_decides_nothing() -> None:
    checks = results.acceptance({"profiles": {}, "memory": []})
    assert checks
    assert all(c.passed is None for c in checks)


def test_goodput_must_match_gunicorn_at_every_load_even_one_call_short() -> None:
    base = [step(0.5, 50.0), step(3, 60.0)]
    assert results.goodput_at_every_load([step(0.5, 50.0), step(3, 90.0)], base, name="g").passed
    check = results.goodput_at_every_load([step(0.5, 49.9), step(3, 90.0)], base, name="g")
    assert check.passed is False
    assert "closest at 0.5x: 49.9 vs 50.0/s" in check.value
    assert results.goodput_at_every_load([step(1, 10)], base, name="g").passed is None


def test_overload_must_hold_ninety_percent_of_the_own_best() -> None:
    steps = [step(1, 100), step(1.5, 200), step(2, 180), step(3, 179)]
    assert results.share_of_best(steps, 2.0, name="x").passed is True  # 90%
    assert results.share_of_best(steps, 3.0, name="x").passed is False  # 89.5%
    assert results.share_of_best(steps, 0.5, name="x").passed is None  # not measured


def test_wasted_cpu_and_refusal_latency_limits() -> None:
    assert results.worst_wasted([step(1, 1, wasted=0.02)], name="w").passed is True
    assert results.worst_wasted([step(1, 1, wasted=0.021)], name="w").passed is False
    assert results.worst_wasted([step(1, 1, wasted=None)], name="w").passed is None
    steps = [step(1, 1, refusal_p99=None), step(2, 1, refusal_p99=24.9)]
    assert results.refusal_p99(steps, name="r", limit_ms=25).passed is True
    goal = results.refusal_p99(steps, name="r", limit_ms=10, gate=False)
    assert (goal.passed, goal.gate) == (False, False)
    quiet = results.refusal_p99([step(1, 1, refusal_p99=None)], name="r", limit_ms=25)
    assert (quiet.passed, quiet.value) == (True, "no refusals")
    assert results.refusal_p99([], name="r", limit_ms=25).passed is None


def test_health_must_answer_serving_within_50ms_at_every_step() -> None:
    slow = HEALTHY | {"max_ms": 50.1}
    down = HEALTHY | {"serving": 99}
    assert results.health_throughout([step(1, 1, health=HEALTHY)], name="h").passed is True
    assert results.health_throughout([step(1, 1, health=slow)], name="h").passed is False
    assert results.health_throughout([step(1, 1, health=down)], name="h").passed is False
    unprobed = [step(1, 1, health=HEALTHY), step(2, 1, health=None)]
    assert results.health_throughout(unprobed, name="h").passed is None


def test_io_is_judged_against_gunicorn_at_1x_and_both_readings_at_3x() -> None:
    def io_checks(rpckit_1x: float, rpckit_3x: float) -> dict[str, bool | None]:
        run = a_run()
        run["profiles"]["io"]["systems"][1]["steps"] = [step(1, rpckit_1x), step(3, rpckit_3x)]
        return {
            f"{c.name} [{c.target}]": c.passed
            for c in results.acceptance(run)
            if c.name.startswith("io")
        }

    assert all(io_checks(520, 480).values())
    worse_at_1x = io_checks(499, 480)
    assert worse_at_1x["io: goodput at 1x [>= gunicorn's at 1x]"] is False
    # gunicorn serves 400 at 3x: 360 is 90% of that, but not 90% of rpckit's own 500 at 1x.
    both = io_checks(500, 360)
    assert both["io: goodput at 3x [>= 90% of gunicorn's at 3x]"] is True
    assert both["io: goodput at 3x [>= 90% of its own at 1x]"] is False


def test_every_burst_must_be_served_whole_and_the_server_recover() -> None:
    assert results.bursts_all_ok([burst(200), burst(200)], 200, name="b").passed is True
    one_short = results.bursts_all_ok([burst(200), burst(199)], 200, name="b")
    assert (one_short.passed, one_short.value) == (False, "200, 199 OK of 200 (2 bursts)")
    assert results.bursts_all_ok([], 200, name="b").passed is None
    assert results.bursts_all_ok([burst(8)], 200, name="b").value == "8 OK of 200 (1 burst)"
    # 1% of the calls after a burst may be refused or late, in every window.
    assert results.recovery_after_bursts([burst(200, recovery_good=119)], name="r").passed
    locked_out = results.recovery_after_bursts([burst(200), burst(8, recovery_good=0)], name="r")
    assert locked_out.passed is False
    assert locked_out.value.startswith("worst 100.0%")


def test_beside_a_neighbour_refusals_and_timeouts_both_count() -> None:
    assert results.neighbour_refusals(step(0.5, 1, sent=1000, rejected=10), name="n").passed
    assert not results.neighbour_refusals(step(0.5, 1, sent=1000, rejected=11), name="n").passed
    late = results.neighbour_refusals(step(0.5, 1, sent=1000, rejected=5, deadline=6), name="n")
    assert (late.passed, late.value) == (False, "0.50% refused, 0.60% late (1000 calls)")
    assert results.neighbour_refusals(None, name="n").passed is None


def test_memory_per_extra_worker_is_compared_with_gunicorns() -> None:
    run = a_run()
    assert results.per_extra_worker_kib(run, family="rpckit") == 10_000
    assert results.memory_ratio(run, family="gunicorn") == 2.0
    assert results.memory_per_extra_worker(run, name="m").passed is True
    run["memory"][1]["pss_kib"] = 71_000  # 13.7 MiB per extra worker vs gunicorn's 13.3
    assert results.memory_per_extra_worker(run, name="m").passed is False
    run["memory"] = run["memory"][:3]
    assert results.memory_per_extra_worker(run, name="m").passed is None


def test_the_report_shows_each_profile_the_bursts_and_the_tally() -> None:
    run = a_run(notes=["a note"], command="python -m bench.overload --quick")
    run["profiles"]["seed"]["systems"].append(
        {"name": "grpc-plain", "label": "plain", "steps": [], "note": "did not start: x"}
    )
    checks = results.acceptance(run)
    run["acceptance"] = [
        {"name": c.name, "value": c.value, "target": c.target, "passed": c.passed, "gate": c.gate}
        for c in checks
    ]
    text = results.render_markdown(run)
    assert "Command: `python -m bench.overload --quick`." in text
    assert "## Profile `seed`: seed calls" in text
    assert "| label rpckit | 50.0 | 100.0 | 150.0 | 145.0 | 140.0 |" in text
    assert "### Beside a CPU-bound neighbour, `seed` at 0.5x" in text
    assert "| label rpckit | 50.0 | 50.0 | 0.4 | 0.0 | 5.0 | 60.0 | 9.8 |" in text
    assert "## Profile `burst`: bursts" in text
    assert "| rpckit serve (defaults) | 1 | 200 | 0 | 0 | 850.0 |" in text
    assert "rpckit: 4 workers / 1 worker = **2.00x**, **9.8 MiB** per extra worker" in text
    gates = sum(1 for c in checks if c.gate)
    assert f"{gates} pass, 0 fail, 0 n/a (of {gates} gates)" in text
    assert "| seed: refusal p99 (goal) | 5.0 ms | <= 10 ms at every load | goal met |" in text
    assert "- a note" in text
    assert "- seed, plain: did not start: x" in text


def test_the_tally_counts_gates_only() -> None:
    checks: list[dict[str, Any]] = [
        {"passed": True},
        {"passed": False},
        {"passed": None},
        {"passed": False, "gate": False},
    ]
    assert results.acceptance_tally(checks) == "1 pass, 1 fail, 1 n/a (of 3 gates)"
