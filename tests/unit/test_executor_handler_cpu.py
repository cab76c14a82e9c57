"""HandlerCpu tells handler threads that compute from ones that wait (their CPU clocks)."""

from __future__ import annotations

import os
import threading
import time

from rpckit.server._executor import HandlerCpu, ThreadSchedStats


def burn(cpu_s: float) -> None:
    end = time.thread_time() + cpu_s
    while time.thread_time() < end:
        sum(range(100))


def test_a_thread_that_computed_counts_and_one_that_waited_does_not() -> None:
    go, burned, release = threading.Event(), threading.Event(), threading.Event()

    def computer_body() -> None:
        go.wait(timeout=30)
        burn(0.05)
        burned.set()
        release.wait(timeout=30)

    computer = threading.Thread(target=computer_body, daemon=True)
    waiter = threading.Thread(target=lambda: release.wait(timeout=30), daemon=True)
    computer.start()
    waiter.start()
    try:
        cpu = HandlerCpu(time.monotonic())
        t0 = time.monotonic()
        cpu.share([computer, waiter], t0)  # the baseline
        go.set()
        assert burned.wait(timeout=30)
        t1 = time.monotonic()
        used = cpu.share([computer, waiter], t1) * (t1 - t0)
        assert 0.045 <= used < 1.0, used  # the 50 ms it computed, in core-seconds
        t2 = time.monotonic() + 0.01
        assert cpu.share([waiter], t2) * (t2 - t1) < 0.005  # waiting costs no CPU
        assert cpu.due(t2 + 0.25)
        assert not cpu.due(t2)
    finally:
        release.set()
        computer.join(timeout=30)
        waiter.join(timeout=30)


def test_schedstat_files_are_opened_once_and_closed_when_their_thread_ends() -> None:
    release = threading.Event()
    thread = threading.Thread(target=lambda: release.wait(timeout=30), daemon=True)
    thread.start()
    stats = ThreadSchedStats()
    try:
        tid = thread.native_id
        assert tid is not None
        first = stats.demand_s(tid)
        assert first is not None
        assert first >= 0.0
        open_fds = len(os.listdir("/proc/self/fd"))
        for _ in range(50):  # read again: no file opened per read
            assert stats.demand_s(tid) is not None
        assert len(os.listdir("/proc/self/fd")) == open_fds
        me = threading.get_native_id()
        assert stats.demand_s(me) is not None
        assert len(os.listdir("/proc/self/fd")) == open_fds + 1
        release.set()
        thread.join(timeout=30)
        stats.forget_all_but({me})  # the thread ended: its file is closed, not kept
        assert len(os.listdir("/proc/self/fd")) == open_fds
        stats.forget_all_but(set())
        assert len(os.listdir("/proc/self/fd")) == open_fds - 1
    finally:
        release.set()
        stats.close()


def test_an_unknown_thread_has_no_demand() -> None:
    stats = ThreadSchedStats()
    assert stats.demand_s(2**22 + 12345) is None  # above any pid_max: no such task
    stats.close()
