"""Harness overhead: a pytest plugin that times every backend call of a suite run, the GGUF load count,
and the collection time of generated case files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable
import pytest

from . import overhead_phases


# --- overhead: a timing plugin for a suite run ---------------------------------------------------------
class Clock:
    """Wall time inside backend calls; nested calls count once."""

    def __init__(self) -> None:
        self.total = 0.0
        self.depth = 0
        self.calls: Counter[str] = Counter()
        self.time_by: defaultdict[str, float] = defaultdict(float)

    def timed(self, label: str, fn: Callable, *args, **kwargs):
        if self.depth:
            return fn(*args, **kwargs)
        self.depth += 1
        t0 = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        finally:
            self._add(label, time.perf_counter() - t0)
            self.depth -= 1
        if isinstance(result, types.GeneratorType):
            return self._timed_steps(label, result)       # streaming: the work happens while iterating
        return result

    def _add(self, label: str, dt: float) -> None:
        self.total += dt
        self.calls[label] += 1
        self.time_by[label] += dt

    def _timed_steps(self, label: str, gen):
        while True:
            outer = not self.depth
            self.depth += 1
            t0 = time.perf_counter()
            try:
                item = next(gen)
            except StopIteration as stop:
                return stop.value
            finally:
                if outer:
                    self.total += time.perf_counter() - t0
                    self.time_by[label] += time.perf_counter() - t0
                self.depth -= 1
            yield item


class OverheadProbe:
    """A pytest plugin object: times backend calls, phases and snapshots; counts GGUF loads."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.phase: dict[str, float] = defaultdict(float)
        self.loads: dict[str, Counter] = defaultdict(Counter)
        self.tests = 0
        self.outside_by_test: dict[str, float] = {}
        self.backend_by_test: dict[str, float] = {}
        self.phases = overhead_phases.PhaseTimer(self.clock)
        self._undo: list[Callable[[], None]] = []
        self._t_collect = self._t_finish = self._t_summary = 0.0

    # patching -------------------------------------------------------------------------------
    def _patch(self, obj: Any, attr: str, new: Any) -> None:
        old = getattr(obj, attr)
        setattr(obj, attr, new)
        self._undo.append(lambda: setattr(obj, attr, old))

    def wrap_class(self, name: str, cls: type) -> None:
        """Time every method of a backend class, however its instances are made (the runtime,
        a check family opening its own server, ...). Nested calls count once (Clock)."""
        import types
        clock = self.clock
        seen: set[str] = set()
        for klass in cls.__mro__:
            if klass is object:
                continue
            for attr, fn in list(vars(klass).items()):
                if attr in seen or not isinstance(fn, types.FunctionType) or (
                        attr.startswith("__") and attr != "__init__"):
                    continue
                seen.add(attr)

                def timed(*args, _fn=fn, _label=f"{name}.{attr}", **kwargs):
                    return clock.timed(_label, _fn, *args, **kwargs)
                own = attr in vars(cls)
                setattr(cls, attr, timed)
                self._undo.append((lambda c=cls, a=attr, f=fn: setattr(c, a, f)) if own
                                  else (lambda c=cls, a=attr: delattr(c, a)))

    def install(self) -> None:
        from harness.backends.base import backend_class, backend_names
        clock, loads = self.clock, self.loads
        for name in backend_names():
            try:
                self.wrap_class(name, backend_class(name))
            except ImportError:                  # a backend whose library is not installed
                continue

        try:
            import llama_cpp
            # check families also drive llama-cpp-python directly (a chat handler given
            # backend.llm): that is backend work too
            self.wrap_class("llama_cpp.Llama", llama_cpp.Llama)
            init = llama_cpp.Llama.__init__

            def llama_init(this, *args, **kwargs):
                path = kwargs.get("model_path", args[0] if args else "?")
                loads[str(Path(path).name)]["llama_cpp.Llama" + (" (vocab_only)" if kwargs.get("vocab_only") else "")] += 1
                return init(this, *args, **kwargs)
            self._patch(llama_cpp.Llama, "__init__", llama_init)
        except ImportError:
            pass
        try:
            import gguf
            reader_init = gguf.GGUFReader.__init__

            def reader(this, path, *args, **kwargs):
                loads[Path(str(path)).name]["gguf.GGUFReader (metadata, mmap)"] += 1
                return clock.timed("gguf.GGUFReader", reader_init, this, path, *args, **kwargs)
            self._patch(gguf.GGUFReader, "__init__", reader)
        except ImportError:
            pass

        popen_init = subprocess.Popen.__init__

        def popen(this, args, *a, **kw):
            argv = [str(x) for x in (args if isinstance(args, (list, tuple)) else [args])]
            flags = " ".join(f for f in ("--special", "--chat-template-file", "--jinja") if f in argv)
            for x in argv:
                if x.endswith(".gguf"):
                    loads[Path(x).name][f"child process ({Path(argv[0]).name}{' ' + flags if flags else ''})"] += 1
            return popen_init(this, args, *a, **kw)
        self._patch(subprocess.Popen, "__init__", popen)

        run = subprocess.run

        def timed_run(args, *a, **kw):
            argv = [str(x) for x in (args if isinstance(args, (list, tuple)) else [args])]
            if any(x.endswith(".gguf") for x in argv):      # a child running llama.cpp on a model
                return clock.timed("subprocess (GGUF)", run, args, *a, **kw)
            return run(args, *a, **kw)
        self._patch(subprocess, "run", timed_run)

        try:
            from syrupy.assertion import SnapshotAssertion
            assert_ = SnapshotAssertion._assert
            phase, phases = self.phase, self.phases

            def snap(this, data):
                t0 = time.perf_counter()
                try:
                    return phases.timed("goldens", assert_, this, data)
                finally:
                    phase["snapshots"] += time.perf_counter() - t0
            self._patch(SnapshotAssertion, "_assert", snap)
        except (ImportError, AttributeError):
            pass
        overhead_phases.install(self)     # input generation, rendering, isolation (per check)

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    # phases --------------------------------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_collection(self, session):
        t0 = time.perf_counter()
        yield
        self.phase["collection"] += time.perf_counter() - t0

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        t0, b0 = time.perf_counter(), self.clock.total
        self.phases.current = item.nodeid
        yield
        self.phases.current = overhead_phases.OUTSIDE_TESTS
        self.tests += 1
        dt, db = time.perf_counter() - t0, self.clock.total - b0
        self.phase["tests"] += dt
        self.phase["tests_backend"] += db
        self.outside_by_test[item.nodeid] = dt - db
        self.backend_by_test[item.nodeid] = db

    @pytest.hookimpl(hookwrapper=True)
    def pytest_sessionfinish(self, session, exitstatus):
        t0, b0 = time.perf_counter(), self.clock.total
        yield
        self.phase["sessionfinish (results.json, report, junit, goldens)"] += time.perf_counter() - t0
        self.phase["sessionfinish_backend"] += self.clock.total - b0

    @pytest.hookimpl(hookwrapper=True)
    def pytest_terminal_summary(self, terminalreporter, exitstatus, config):
        t0 = time.perf_counter()
        yield
        self.phase["terminal summary"] += time.perf_counter() - t0


def measure_suite(pytest_args: list[str]) -> dict[str, Any]:
    """Run pytest in this process with the probe; return wall, backend and phase times."""
    import pytest
    t_proc = time.perf_counter()
    probe = OverheadProbe()
    probe.install()
    try:
        t0 = time.perf_counter()
        rc = int(pytest.main(list(pytest_args), plugins=[probe]))
        wall = time.perf_counter() - t0
    finally:
        probe.uninstall()
    backend = probe.clock.total
    phases = dict(probe.phase)
    tests_outside = phases.get("tests", 0.0) - phases.get("tests_backend", 0.0)
    breakdown = {
        "collection": phases.get("collection", 0.0),
        "tests outside backend calls (checks, rendering requests, comparison)": tests_outside
        - phases.get("snapshots", 0.0),
        "snapshots (syrupy)": phases.get("snapshots", 0.0),
        "reporting (sessionfinish + terminal summary)": phases.get(
            "sessionfinish (results.json, report, junit, goldens)", 0.0)
        - phases.get("sessionfinish_backend", 0.0) + phases.get("terminal summary", 0.0),
    }
    breakdown["startup, configuration, other"] = max(0.0, wall - backend - sum(breakdown.values()))
    return {
        "exit_code": rc, "wall_s": wall, "backend_s": backend, "outside_s": wall - backend,
        "outside_ratio": (wall - backend) / wall if wall else None, "tests": probe.tests,
        "breakdown_s": breakdown,
        "backend_calls": dict(probe.clock.calls.most_common()),
        "backend_time_by_call_s": {k: round(v, 4) for k, v in sorted(probe.clock.time_by.items(),
                                                                     key=lambda kv: -kv[1])},
        "gguf_loads": {k: dict(v) for k, v in sorted(probe.loads.items())},
        "outside_by_test_function_s": _by_function(probe.outside_by_test),
        "outside_top_tests_s": dict(sorted(((k, round(v, 3)) for k, v in probe.outside_by_test.items()),
                                           key=lambda kv: -kv[1])[:10]),
        "instrumented_calls": sum(probe.clock.calls.values()),
        "process_setup_s": t0 - t_proc,
        "by_check_phase_s": probe.phases.table(probe.outside_by_test, probe.backend_by_test),
        "session_phases_s": {"collection": round(breakdown["collection"], 3),
                             "reporting": round(breakdown["reporting (sessionfinish + terminal summary)"], 3),
                             "startup, configuration, other": round(breakdown["startup, configuration, other"], 3)},
        "forks": probe.phases.forks, "fork_overhead_s": probe.phases.fork_overhead_s,
    }


def _by_function(per_test: dict[str, float]) -> dict[str, float]:
    out: defaultdict[str, float] = defaultdict(float)
    for nodeid, v in per_test.items():
        out[nodeid.split("[")[0].split("/")[-1]] += v
    return {k: round(v, 3) for k, v in sorted(out.items(), key=lambda kv: -kv[1])[:12]}


def max_inprocess_loads(gguf_loads: dict[str, dict[str, int]]) -> int:
    """Most in-process llama.cpp loads (Llama objects with weights) of any one GGUF."""
    return max((n for per in gguf_loads.values() for kind, n in per.items() if kind == "llama_cpp.Llama"),
               default=0)


# --- collection time for generated cases ---------------------------------------------------------------
GENERATED_CASE = """\
schema: 1
id: gen-{i:04d}
description: Generated case {i} (collection timing); SmolLM2's GGUF pins, two contexts.
model:
  gguf:
    file: SmolLM2-135M-Instruct.Q4_1.gguf
    sha256: b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    size: 98362432
  weights: true
  chat_template: embedded
  tokenizer: {{from_gguf: true}}
contexts: [single-user, tool-round-trip]
"""


def generate_cases(dest: Path, n: int, source_cases: Path) -> Path:
    """n model case files plus the shared contexts and tool sets: a cases/ folder."""
    import shutil
    root = Path(dest) / "cases"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for sub in ("contexts", "tools"):
        shutil.copytree(Path(source_cases) / sub, root / sub)
    for i in range(n):
        (root / f"gen-{i:04d}.yaml").write_text(GENERATED_CASE.format(i=i), encoding="utf-8")
    return root


def collection_time(n_cases: int, source_cases: Path, workdir: Path, suite: Path | None = None) -> dict[str, Any]:
    """Time `pytest --collect-only` over n generated case files, in a fresh process."""
    import re
    suite = suite or Path(__file__).parent.parent / "suite"
    cases = generate_cases(workdir, n_cases, source_cases)
    cmd = [sys.executable, "-m", "pytest", str(suite), "--collect-only", "-q", "-p", "no:cacheprovider",
           f"--rootdir={workdir}", f"--cases={cases}", f"--golden-dir={workdir / 'golden'}",
           f"--report-dir={workdir / 'reports'}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    m = re.search(r"(\d+) tests? collected in ([\d.]+)s", proc.stdout)
    if m is None:
        raise RuntimeError(f"collection failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return {"cases": n_cases, "items": int(m.group(1)), "pytest_collection_s": float(m.group(2)),
            "process_wall_s": wall, "exit_code": proc.returncode}
