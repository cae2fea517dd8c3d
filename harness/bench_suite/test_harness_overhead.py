"""The harness's own cost, measured in the benchmark run (not in the conformance run):

* a suite run (`--overhead-scope`: quick, models or full; see _suite_args) in a fresh
  process with every backend call timed: wall time outside backend calls, by phase, and
  how often each GGUF was loaded;
* collection time of 1,000 generated case files.

Both are saved with the run, so `--benchmark-compare-fail` also guards them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.bench import core as bench


# The exhaustive tokenizer sweeps (every token id; thousands of generated strings) are
# almost entirely backend time: leaving them out of the quick scope makes the measured
# overhead ratio larger (conservative) and the benchmark command minutes shorter.
SWEEPS = "not test_every_id_detokenizes and not test_differential"


def _suite_args(config, scope: str, report_dir: Path) -> list[str]:
    """`harness run` arguments (harness.cli builds them) for the measured scope:
    quick   the smallest model that declares throughput, every family and backend, minus the sweeps;
    models  every model that declares throughput, everything;
    full    the whole default suite (`harness run` as is; long)."""
    from harness.cli import pytest_args
    from harness.session import caseset
    root = Path(config.rootpath)
    cases, extra = [], ["-p", "no:randomly"]
    if scope in ("quick", "models"):
        declared = [c for c in caseset(config).cases if bench.throughput_options(c)]
        if not declared:
            pytest.skip("no case declares checks.throughput")
        if scope == "quick":
            declared = [min(declared, key=lambda c: (c.model["gguf"].get("size") or 0, c.id))]
            extra += ["-k", SWEEPS]
        cases = [c.id for c in declared]
    ns = argparse.Namespace(root=str(root), report_dir=str(report_dir), case=cases,
                            backend=config.getoption("--backend") or None, update_goldens=False, workers=None)
    return pytest_args(ns, extra)


def test_suite_overhead(benchmark, request):
    config = request.config
    scope = config.getoption("--overhead-scope")
    if scope == "off":
        pytest.skip("--overhead-scope=off")
    out_dir = Path(config.getoption("--report-dir") or Path(config.rootpath) / "reports" / "bench") / "overhead"
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_file = out_dir / "figures.json"
    args = _suite_args(config, scope, out_dir)
    figures: dict = {}

    def once() -> None:
        fig_file.unlink(missing_ok=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "harness.bench", "overhead", "--out", str(fig_file), "--", *args],
                              capture_output=True, text=True, cwd=config.rootpath)
        if not fig_file.exists():
            raise RuntimeError(f"overhead run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        figures.update(json.loads(fig_file.read_text()))
        figures["process_wall_s"] = time.perf_counter() - t0
        # the fresh process's interpreter start, imports and figure writing: outside the suite's wall
        figures.setdefault("session_phases_s", {})["process start"] = round(
            figures["process_wall_s"] - figures["wall_s"], 3)
        figures["suite_summary"] = [ln for ln in proc.stdout.splitlines()[-12:] if ln.strip()]

    benchmark.group = "harness"
    if config.getoption("--bench-timer") == "cpu":
        benchmark._timer = bench.cpu_clock()     # includes the suite's process and its servers (waited for)
    benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=0)
    figures["scope"] = scope
    figures["args"] = args
    benchmark.extra_info.update(kind="overhead", figures=figures)


def test_collection_1000_cases(benchmark, request, tmp_path_factory):
    config = request.config
    n = config.getoption("--collect-cases")
    if n <= 0:
        pytest.skip("--collect-cases=0")
    work = tmp_path_factory.mktemp("collect")
    root = Path(config.rootpath)
    results: list[dict] = []

    def once() -> None:
        results.append(bench.collection_time(n, root / "cases", work))

    benchmark.group = "harness"
    if config.getoption("--bench-timer") == "cpu":
        benchmark._timer = bench.cpu_clock()
    benchmark.pedantic(once, rounds=2, iterations=1, warmup_rounds=0)
    best = min(results, key=lambda r: r["pytest_collection_s"])
    benchmark.extra_info.update(kind="collection", figures={**best, "rounds": results})
