"""The GIL switch interval rule (rpckit.server._switch), driven by synthetic calls."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import random
import time
from collections.abc import Callable, Iterator

import pytest

from rpckit.cli._main import _parser, _switch_ms, gil_switch
from rpckit.server._admission import AdmissionConfig, Criticality
from rpckit.server._executor import AdmissionExecutor, CallFacts
from rpckit.server._switch import SwitchConfig, SwitchInterval

CONFIG = SwitchConfig()  # 0.2 ms / 5 ms, heavy from 2 ms of CPU, held 2 s
SHORT, LONG = CONFIG.short_s, CONFIG.long_s
LIGHT_CPU = 0.0004  # a trivial call with grpcio's own work
HEAVY_CPU = 0.005  # bench/overload's seed handler


LIGHT, HEAVY = "/pkg.S/Light", "/pkg.S/Heavy"  # methods


def run_calls(
    rule: SwitchInterval,
    cpu_s: float,
    start: float,
    seconds: float,
    rate: float,
    method: str = LIGHT,
) -> list[float]:
    """Calls of ``cpu_s`` ending ``rate`` a second from ``start``: every change of interval."""
    changes = []
    for i in range(int(seconds * rate)):
        changed = rule.observe(cpu_s, start + i / rate, method)
        if changed is not None:
            changes.append(changed)
    return changes


def test_a_new_server_starts_short_and_goes_long_once_only_light_calls_came_for_the_hold() -> None:
    rule = SwitchInterval(CONFIG, now=100.0)
    assert rule.interval == SHORT
    assert rule.observe(LIGHT_CPU, 100.0 + CONFIG.hold_s - 0.01) is None  # still within the hold
    assert rule.observe(LIGHT_CPU, 100.0 + CONFIG.hold_s) == LONG
    assert rule.interval == LONG
    assert rule.observe(LIGHT_CPU, 200.0) is None  # unchanged: nothing to apply


def test_one_heavy_call_brings_the_short_interval_back_at_once_and_for_the_whole_hold() -> None:
    rule = SwitchInterval(CONFIG, now=0.0)
    run_calls(rule, LIGHT_CPU, 0.0, 3.0, 1000)
    assert rule.interval == LONG
    assert rule.observe(HEAVY_CPU, 3.0, HEAVY) == SHORT  # a method not seen light
    assert run_calls(rule, LIGHT_CPU, 3.0, CONFIG.hold_s - 0.01, 1000) == []  # held short
    assert rule.observe(LIGHT_CPU, 3.0 + CONFIG.hold_s) == LONG  # and then it recovers


def test_a_light_methods_outliers_keep_it_long() -> None:
    """Worst input for a rule on each call's CPU: a trivial method whose thread now and then
    uses 2-4.6 ms of CPU (kernel time in the GIL's futexes, a fault, a collection; measured
    about once in 2,000 calls in bench/overhead). Each held the short interval for 2 s, and
    the single process spent much of its time there. They are not its calls' rule."""
    rule = SwitchInterval(CONFIG, now=0.0)
    run_calls(rule, LIGHT_CPU, 0.0, 3.0, 1500)
    rng = random.Random(11)
    for i in range(30 * 1500):  # 30 s at 1,500 calls a second
        outlier = rng.randrange(2000) == 0
        cpu = rng.uniform(0.002, 0.0046) if outlier else LIGHT_CPU
        rule.observe(cpu, 3.0 + i / 1500, LIGHT)
        assert rule.interval == LONG


def test_a_method_heavy_often_enough_is_heavy() -> None:
    """After a light spell, one call in ten of the method burns 5 ms (a cache that stopped
    hitting): once its decayed heavy share passes 5% (within a half-life, 2 s) each heavy
    call brings the short interval back; a method turning all heavy, within 0.3 s."""
    for every, within_s in ((10, 2.0), (1, 0.3)):
        rule = SwitchInterval(CONFIG, now=0.0)
        run_calls(rule, LIGHT_CPU, 0.0, 3.0, 1000)
        assert rule.interval == LONG
        short_at = None
        for i in range(5000):
            now = 3.0 + i / 1000
            cpu = HEAVY_CPU if i % every == every - 1 else LIGHT_CPU
            if rule.observe(cpu, now, LIGHT) == SHORT and short_at is None:
                short_at = now
        assert short_at is not None
        assert short_at - 3.0 <= within_s
        assert rule.interval == SHORT


def test_rare_heavy_calls_among_light_ones_keep_it_short_throughout() -> None:
    """The worst input for the long interval: a heavy method called once or twice a second
    among a thousand light calls. Every heavy call may hold the GIL for milliseconds, so
    it stays short."""
    rule = SwitchInterval(CONFIG, now=0.0)
    rng = random.Random(7)
    for second in range(30):
        for i in range(1000):
            heavy = i == rng.randrange(1000) or i == 500
            rule.observe(
                HEAVY_CPU if heavy else LIGHT_CPU, second + i / 1000, HEAVY if heavy else LIGHT
            )
            assert rule.interval == SHORT


def test_a_slow_spell_of_heavy_calls_then_light_ones_recovers_within_the_hold() -> None:
    rule = SwitchInterval(CONFIG, now=0.0)
    assert run_calls(rule, LIGHT_CPU, 0.0, 5.0, 500) == [LONG]
    assert run_calls(rule, HEAVY_CPU, 5.0, 20.0, 200) == [SHORT]
    changes = run_calls(rule, LIGHT_CPU, 25.0, 5.0, 500)
    assert changes == [LONG]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("short_s", 0.0),
        ("long_s", -1.0),
        ("heavy_cpu_s", float("nan")),
        ("hold_s", 0.0),
        ("heavy_share", 0.0),
        ("heavy_share", 1.5),
    ],
)
def test_a_bad_config_names_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        SwitchConfig(**{field: value})


def test_long_below_short_is_refused() -> None:
    with pytest.raises(ValueError, match="long_s"):
        SwitchConfig(short_s=0.005, long_s=0.001)


# -- the executor applies the rule to the calls it runs (no sockets; a fake clock)


def burn_cpu(seconds: float) -> None:
    """Use ``seconds`` of this thread's CPU (the rule reads the thread's CPU clock)."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


FACTS = CallFacts(method="/pkg.S/M", deadline=None, criticality=Criticality.DEFAULT)


@contextlib.contextmanager
def running_executor(
    applied: list[float], switch: SwitchConfig | None, clock: Callable[[], float] = time.monotonic
) -> Iterator[AdmissionExecutor]:
    """An executor that records the intervals it sets in ``applied`` instead of setting them."""
    side = concurrent.futures.ThreadPoolExecutor(1)
    executor = AdmissionExecutor(
        threads=2,
        side_pool=side,
        admission=AdmissionConfig(workers=2),
        clock=clock,
        switch=switch,
        set_switch_interval=applied.append,
    )
    try:
        yield executor
    finally:
        executor.shutdown(wait=True)
        side.shutdown(wait=True)


def test_the_executor_sets_the_interval_by_the_cpu_of_the_calls_it_runs() -> None:
    now = [0.0]
    applied: list[float] = []
    with running_executor(applied, CONFIG, clock=lambda: now[0]) as executor:

        def call(cpu_s: float, on_thread: bool) -> None:
            if on_thread:  # a handler thread, as a gRPC call
                executor.submit_call(lambda: burn_cpu(cpu_s), FACTS).result(timeout=30)
            else:  # the caller's own thread, as the HTTP port runs a call it can start at once
                assert executor.run_now(lambda: burn_cpu(cpu_s), FACTS)

        assert applied == [SHORT]  # from the start
        for on_thread in (True, False):
            now[0] += CONFIG.hold_s + 1.0
            call(0.0, on_thread)
            assert applied[-1] == LONG  # only light calls for the hold
            call(CONFIG.heavy_cpu_s * 1.5, on_thread)
            assert applied[-1] == SHORT  # a heavy one
        assert applied == [SHORT, LONG, SHORT, LONG, SHORT]


def test_without_the_rule_the_executor_leaves_the_interval_alone() -> None:
    applied: list[float] = []
    with running_executor(applied, None) as executor:
        executor.submit_call(lambda: burn_cpu(0.003), FACTS).result(timeout=30)
        assert executor.run_now(lambda: burn_cpu(0.003), FACTS)
    assert applied == []


def test_the_cli_takes_auto_or_milliseconds_and_names_a_bad_value() -> None:
    assert _switch_ms("auto") is None
    assert _switch_ms("0.2") == 0.2
    for bad in ("0", "-1", "nan", "inf", "fast"):
        with pytest.raises(argparse.ArgumentTypeError, match=repr(bad)):
            _switch_ms(bad)


def test_rpckit_serve_adapts_the_interval_unless_given_one() -> None:
    auto = _parser().parse_args(["serve", "pkg.mod:factory"])
    fixed = _parser().parse_args(["serve", "pkg.mod:factory", "--gil-switch-ms", "1"])
    assert (auto.gil_switch_ms, fixed.gil_switch_ms) == (None, 1.0)


def test_auto_is_the_rule_in_one_process_and_pythons_interval_across_several() -> None:
    assert gil_switch(None, 1) == (None, SwitchConfig())
    for workers in (2, 4, 9):
        assert gil_switch(None, workers) == (0.005, None)
    # A number given is that interval, with any number of processes, and no rule.
    assert gil_switch(0.2, 1) == (0.0002, None)
    assert gil_switch(1.0, 4) == (0.001, None)
