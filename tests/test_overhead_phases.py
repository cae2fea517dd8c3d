"""harness/bench/overhead_phases.py: exclusive phase times, per check, with backend time kept apart."""

from __future__ import annotations

import time

from harness.bench import overhead_phases as op
from harness.bench.overhead import Clock


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_check_of_names_module_and_function():
    assert op.check_of("harness/suite/test_tokenizer.py::test_differential[a,plain,hf]") == "tokenizer.test_differential"


def test_phases_are_exclusive_of_backend_calls_and_nested_phases():
    clock = Clock()
    timer = op.PhaseTimer(clock)
    timer.current = "harness/suite/test_x.py::test_y[a]"

    def inner():
        _spin(0.05)
        clock.timed("backend.call", _spin, 0.1)

    def outer():
        _spin(0.05)
        timer.timed("rendering", inner)
    timer.timed("input generation", outer)
    row = timer.by_test[timer.current]
    assert 0.04 < row["input generation"] < 0.09 and 0.04 < row["rendering"] < 0.09
    assert 0.09 < clock.total < 0.15
    table = timer.table({timer.current: 0.3}, {timer.current: clock.total})
    got = table["x.test_y"]
    assert got["tests"] == 1 and abs(got["comparison"] - (0.3 - row["input generation"] - row["rendering"])) < 1e-3
    lines = op.format_table({"by_check_phase_s": table, "session_phases_s": {"collection": 1.0}})
    assert "x.test_y" in lines[2] and "collection 1.00s" in lines[-1]


def test_a_forked_child_is_backend_time_except_the_calibrated_fork_cost():
    from harness.run.fork import run_isolated
    clock = Clock()
    timer = op.PhaseTimer(clock)
    out = timer.timed_fork(run_isolated, _spin, 0.2, timeout_s=30)
    assert out.status == "ok"
    assert timer.fork_overhead_s is not None and timer.forks == 1
    assert clock.total >= 0.2 - 0.01
    assert abs(timer.by_test[op.OUTSIDE_TESTS]["isolation"] - timer.fork_overhead_s) < 1e-9
