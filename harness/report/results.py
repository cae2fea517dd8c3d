"""The machine-readable result of a run: reports/results.json.

One record per test: node id, case, check, case file and line, parameters, backend
version, outcome, message. Plus the run's provenance: harness and library versions,
platform, determinism settings, where each model file came from.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness import cpu_target, lock
from harness.atomic import write_atomic

PACKAGES = ("llama-cpp-python", "transformers", "tokenizers", "torch", "jinja2", "syrupy", "pytest",
            "pytest-benchmark", "huggingface-hub")


def _versions() -> dict[str, str | None]:
    return {name: lock.installed_version(name) for name in PACKAGES}


def provenance(config) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "packages": _versions(),
        "threads": config.getoption("--threads"), "seed": config.getoption("--seed"),
        "args": list(config.invocation_params.args),
        "xdist_workers": getattr(config.option, "numprocesses", None),
        "lock": lock.provenance(config.rootpath),
        "cpu_target": _cpu_target(),
    }


def _cpu_target() -> dict[str, Any]:
    """The pinned CPU target (harness.cpu_target) and what the loaded llama-cpp-python was built
    with: a wheel built for another target (a stale native build) shows up here."""
    out: dict[str, Any] = {"cmake_args": cpu_target.cmake_args()}
    try:
        import llama_cpp
        out["llama_cpp_python_system_info"] = llama_cpp.llama_print_system_info().decode().strip()
    except Exception as e:   # not installed, or a build that cannot load: said, not hidden
        out["llama_cpp_python_system_info"] = f"unavailable: {type(e).__name__}: {e}"
    return out


def write_results(report_dir: Path, state: dict, config, exitstatus: int) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    tests = sorted(state["tests"], key=lambda t: t["nodeid"])
    doc = {
        "format": "llm-harness-results/1",
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "exitstatus": int(exitstatus),
        "provenance": provenance(config),
        "models": dict(sorted((state.get("models") or {}).items())),
        "memory": state.get("memory", {}),
        # run-level errors, each once: a backend that could not be built (its checks skip)
        "errors": list(state.get("errors") or []),
        # --shard K/N (harness/run/shard.py): which slice this is, and the digest of the whole plan
        **({"shard": state["shard"]} if state.get("shard") else {}),
        "counts": dict(Counter(t["outcome"] for t in tests)),
        "tests": tests,
    }
    return write_atomic(report_dir / "results.json", json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def merge_errors(merged: list[dict], errors: list[dict]) -> list[dict]:
    """Run-level errors (a backend that could not be built) added to `merged` once each: the
    same build log is one error, its skipped checks added up (xdist workers, merged shards)."""
    for e in errors:
        same = next((m for m in merged if (m.get("log") or m["message"]) == (e.get("log") or e["message"])), None)
        if same is None:
            merged.append(dict(e))
        else:
            same["skipped_checks"] = same.get("skipped_checks", 0) + e.get("skipped_checks", 0)
    return merged


def summary_lines(state: dict) -> list[str]:
    tests = state["tests"]
    by_family: dict[str, Counter] = {}
    for t in tests:
        family = (t.get("check") or "case_files").split(".")[0]
        by_family.setdefault(family, Counter())[t["outcome"]] += 1
    lines = []
    for family, counts in sorted(by_family.items()):
        parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        lines.append(f"{family:>12}: {parts}")
    return lines
