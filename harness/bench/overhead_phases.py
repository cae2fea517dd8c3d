"""Where the suite's time outside backend calls goes: per check and per phase.

`harness bench --overhead` runs the suite in one process with every backend call timed
(harness.bench.OverheadProbe). This module splits the rest, the harness's own time, into
phases, for each check (test function) and for the session:

    input generation   the differential corpus, the special-text probes, stream split plans
    rendering          the harness's side of a render: building requests, the per-worker memo
    isolation          forking a rlimited child for a render or a risky load (calibrated per
                       call; the child's own work is the renderer's, counted as backend time,
                       as is a llama-server started on a hostile template)
    goldens            syrupy: reading, comparing and writing snapshots
    comparison         everything else inside a test: the harness's comparisons, messages,
                       pytest's per-test protocol (setup, teardown, reporting hooks)

and, once per run: process start (imports, configuration, plugin set-up), collection (case
files, validation, item expansion) and reporting (results.json, goldens.json, junit, report).

Phase timers are exclusive: time spent in backend calls or in a nested phase is not counted
twice. They wrap functions by module attribute, so they see every call made through the
module (`tk.differential_corpus(...)`), which is how the harness calls them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Callable

TEST_PHASES = ("input generation", "rendering", "isolation", "goldens", "comparison")
SESSION_PHASES = ("process start", "collection", "reporting")
OUTSIDE_TESTS = "(outside tests)"

# (module, attribute, phase): harness functions whose own time belongs to a phase
PHASE_FUNCTIONS = (
    ("harness.families.tokenizer.checks", "differential_corpus", "input generation"),
    ("harness.families.tokenizer.checks", "special_text_probes", "input generation"),
    ("harness.families.tokenizer.checks", "corpus_special_texts", "input generation"),
    ("harness.toolcalls.check", "split_plans", "input generation"),
    ("harness.run.runtime", "Runtime.render", "rendering"),
    ("harness.run.runtime", "Runtime.render_request", "rendering"),
    ("harness.families.hostile.checks", "Canary.__init__", "rendering"),
    ("harness.families.hostile.checks", "Canary.close", "rendering"),
)


def check_of(nodeid: str) -> str:
    """`harness/suite/test_tokenizer.py::test_differential[...]` -> `tokenizer.test_differential`."""
    path, _, name = nodeid.partition("::")
    module = path.rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")
    return f"{module}.{name.split('[')[0]}"


class PhaseTimer:
    """Exclusive wall time per (test, phase); `clock` is the backend clock (bench.Clock)."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.current = OUTSIDE_TESTS
        self.by_test: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._nested: list[float] = []
        self.fork_overhead_s: float | None = None
        self.one_child: Callable | None = None      # the unpatched isolation.run_isolated
        self.forks = 0

    def add(self, phase: str, seconds: float) -> None:
        self.by_test[self.current][phase] += seconds

    def timed(self, phase: str, fn: Callable, *args, **kwargs):
        t0, b0 = time.perf_counter(), self.clock.total
        self._nested.append(0.0)
        try:
            return fn(*args, **kwargs)
        finally:
            nested = self._nested.pop()
            outside = (time.perf_counter() - t0) - (self.clock.total - b0)
            self.add(phase, max(0.0, outside - nested))
            if self._nested:
                self._nested[-1] += outside

    # isolation ---------------------------------------------------------------------------
    def calibrate_fork(self, run_isolated: Callable) -> float:
        """What a fork costs this process, measured the first time one is needed (the process is
        then as big as it will be when it forks): the best of three no-op children."""
        if self.fork_overhead_s is None:
            best = min(_time(run_isolated, _noop, timeout_s=30) for _ in range(3))
            self.fork_overhead_s = best
        return self.fork_overhead_s

    def timed_fork(self, run_isolated: Callable, *args, forks: int = 1, **kwargs):
        """Forked children (`forks` of them, forked one after the other by this process): the
        wall time is the renderers' (backend) except the calibrated fork cost per child, which is
        the harness's (isolation)."""
        if self.clock.depth:                        # inside a backend call: counted there
            return run_isolated(*args, **kwargs)
        overhead = self.calibrate_fork(self.one_child or run_isolated) * forks
        t0 = time.perf_counter()
        try:
            return self.clock.timed("forked child (isolation.run_isolated)", run_isolated, *args, **kwargs)
        finally:
            dt = time.perf_counter() - t0
            share = min(overhead, dt)
            self.forks += forks
            self.clock.total -= share               # moved from backend time to the harness's
            self.clock.time_by["forked child (isolation.run_isolated)"] -= share
            self.add("isolation", share)
            if self._nested:
                self._nested[-1] += share

    # results --------------------------------------------------------------------------------
    def table(self, outside_by_test: dict[str, float], backend_by_test: dict[str, float]) -> dict[str, dict[str, float]]:
        """Per check: backend seconds, each test phase, tests; `comparison` is the remainder of
        each test's outside time once the measured phases are taken out."""
        rows: dict[str, dict[str, float]] = {}
        for nodeid, outside in outside_by_test.items():
            row = rows.setdefault(check_of(nodeid), {"tests": 0, "backend": 0.0, **{p: 0.0 for p in TEST_PHASES}})
            row["tests"] += 1
            row["backend"] += backend_by_test.get(nodeid, 0.0)
            measured = self.by_test.get(nodeid, {})
            for p in TEST_PHASES:
                if p != "comparison":
                    row[p] += measured.get(p, 0.0)
            row["comparison"] += max(0.0, outside - sum(v for p, v in measured.items() if p != "comparison"))
        return {k: {p: (round(v, 3) if isinstance(v, float) else v) for p, v in row.items()}
                for k, row in sorted(rows.items(), key=lambda kv: -(kv[1]["backend"] + _outside(kv[1])))}


def _outside(row: dict[str, float]) -> float:
    return sum(row.get(p, 0.0) for p in TEST_PHASES)


def _noop() -> None:
    return None


def _time(fn: Callable, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def install(probe: Any) -> None:
    """Wrap PHASE_FUNCTIONS and run_isolated for `probe` (bench.OverheadProbe, whose _patch
    undoes everything at uninstall)."""
    import importlib
    timer: PhaseTimer = probe.phases
    for module_name, attr, phase in PHASE_FUNCTIONS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        owner, _, name = attr.rpartition(".")
        obj = getattr(module, owner) if owner else module
        fn = getattr(obj, name, None)
        if fn is None:
            continue

        def wrapped(*args, _fn=fn, _phase=phase, **kwargs):
            return timer.timed(_phase, _fn, *args, **kwargs)
        probe._patch(obj, name, wrapped)
    from harness.families.hostile import checks as hostile
    from harness.run import fork
    render_server = hostile.render_server

    def served(*args, **kwargs):     # llama-server started on a hostile template: the server's work
        return probe.clock.timed("llama-server (hostile.render_server, own process)", render_server, *args, **kwargs)
    probe._patch(hostile, "render_server", served)
    from harness.families.hostile import batch as hostile_batch
    server_many = hostile_batch.render_server_many

    def served_many(*args, **kwargs):   # its threads' render_server calls run inside this one
        return probe.clock.timed("llama-server (hostile_batch.render_server_many)", server_many, *args, **kwargs)
    probe._patch(hostile_batch, "render_server_many", served_many)
    many = hostile_batch.run_isolated_many

    def forked_many(calls, **kwargs):
        return timer.timed_fork(many, calls, forks=len(calls), **kwargs)
    probe._patch(hostile_batch, "run_isolated_many", forked_many)
    run_isolated = timer.one_child = fork.run_isolated

    def forked(*args, **kwargs):
        return timer.timed_fork(run_isolated, *args, **kwargs)
    probe._patch(fork, "run_isolated", forked)


def format_table(fig: dict[str, Any], limit: int = 25) -> list[str]:
    """The per-check, per-phase table as text lines (harness bench; the report renders the same
    figures as a table)."""
    rows = fig.get("by_check_phase_s") or {}
    if not rows:
        return []
    cols = ("backend", *TEST_PHASES)
    head = f"    {'check':<42} {'tests':>6} " + " ".join(f"{c[:11]:>11}" for c in cols) + f" {'harness %':>9}"
    out = ["time per check and phase (s; harness % = outside backend calls / the check's time):", head]
    for check, row in list(rows.items())[:limit]:
        total = row["backend"] + _outside(row)
        share = _outside(row) / total if total else 0.0
        out.append(f"    {check[:42]:<42} {row['tests']:>6} " + " ".join(f"{row[c]:>11.2f}" for c in cols)
                   + f" {share * 100:>8.1f}%")
    session = fig.get("session_phases_s") or {}
    if session:
        out.append("    session: " + ", ".join(f"{k} {v:.2f}s" for k, v in session.items()))
    return out
