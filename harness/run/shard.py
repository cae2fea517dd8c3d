"""`--shard K/N`: one slice of a run, for a CI matrix of many runners.

The unit of work is a case (the first field of a suite item's id; harness/families/items.py): all
checks of a case go to the same shard, since they share the models that case loads. Any other
test (a case file's own check) is its own unit.

Units are balanced by expected cost: the `duration` of each check in a previous results.json
(`--shard-durations`), or, for checks it does not hold, a stable estimate from the item (its
check family and backend) and the size of the case's model file. The assignment is greedy
(costliest unit first, to the least loaded shard, ties broken by name and shard number), so the
same collected items and the same durations file give the same shards on every machine. Every
shard computes the whole plan and keeps its own part: the union of the N shards is exactly the
unsharded run. The plan's digest is recorded with the shard in results.json, so that
`harness merge` can tell shards planned from different collections or durations apart.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")

# Seconds per check by family and backend, else by family: rounded means of one measured run
# (smollm2, two vocab-only cases, five templates; 2 cores), used where no durations are given.
CHECK_COST_S = {("templates", "hf"): 0.25, ("tokenizer", "llama-cpp-python"): 0.9, ("tokenizer", "llama-server"): 1.0,
                ("generation", "llama-cpp-python"): 1.5, ("generation", "llama-server"): 0.8,
                ("toolcalls", "llama-cpp-python"): 0.15, ("toolcalls", "llama-server"): 6.0}
FAMILY_COST_S = {"templates": 0.02, "tokenizer": 0.05, "generation": 0.5, "toolcalls": 0.15, "hostile": 0.05,
                 "case_files": 0.01}
LOAD_S_PER_MB = 0.02          # loading a case's model, once per backend that uses it


@dataclass(frozen=True)
class ShardSpec:
    index: int                 # 1-based
    total: int

    @classmethod
    def parse(cls, text: str) -> "ShardSpec":
        m = SPEC.match(str(text))
        if not m:
            raise ValueError(f"--shard {text!r}: expected K/N, e.g. 1/4 (shard K of N, 1 <= K <= N)")
        k, n = int(m.group(1)), int(m.group(2))
        if not 1 <= k <= n:
            raise ValueError(f"--shard {text}: K must be between 1 and N ({n}), got {k}")
        return cls(k, n)

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"


@dataclass(frozen=True)
class Unit:
    """What the planner needs of one collected test."""
    nodeid: str
    key: str                   # the shard unit: a case id, or the node id itself
    estimate_s: float
    check: str | None = None


def unit_of(nodeid: str, harness_item: Any | None) -> Unit:
    """The shard unit of a test: its harness item's case, else the test alone."""
    if harness_item is None:
        family = "case_files" if "test_case_file" in nodeid else "other"
        return Unit(nodeid, nodeid, FAMILY_COST_S.get(family, 0.1))
    case = harness_item.case
    family = harness_item.check.split(".")[0]
    cost = CHECK_COST_S.get((family, harness_item.backend or ""), FAMILY_COST_S.get(family, 0.5))
    return Unit(nodeid, case.id, cost, harness_item.check)


def model_load_estimate(case: Any, backends: Iterable[str]) -> float:
    size = ((getattr(case, "model", None) or {}).get("gguf") or {}).get("size") or 0
    return LOAD_S_PER_MB * size / 1e6 * max(1, len(set(backends)))


def load_durations(path: str | Path) -> tuple[dict[str, float], str]:
    """node id -> seconds from a results.json (or a reports folder holding one), and its sha256."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    raw = p.read_bytes()
    try:
        doc = json.loads(raw)
        tests = doc["tests"]
        out = {t["nodeid"]: float(t.get("duration") or 0.0) for t in tests}
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--durations {path}: not a results.json with tests and durations ({exc})") from None
    return out, hashlib.sha256(raw).hexdigest()


def unit_costs(units: list[Unit], loads: dict[str, float], durations: dict[str, float] | None) -> dict[str, float]:
    """Expected seconds per unit: measured durations where the file has the check, else the mean
    measured duration of the same check, else the estimate (plus the model loads)."""
    by_check: dict[str, list[float]] = {}
    if durations:
        for u in units:
            if u.nodeid in durations and u.check:
                by_check.setdefault(u.check, []).append(durations[u.nodeid])
    costs: dict[str, float] = {}
    for u in sorted(units, key=lambda u: u.nodeid):
        if durations and u.nodeid in durations:
            c = durations[u.nodeid]
        elif durations and u.check in by_check:
            c = sum(by_check[u.check]) / len(by_check[u.check])
        else:
            c = u.estimate_s
        costs[u.key] = costs.get(u.key, 0.0) + c
    if not durations:          # measured durations include the loads; estimates add them
        for key, load in loads.items():
            if key in costs:
                costs[key] += load
    return costs


def plan(costs: dict[str, float], total: int) -> dict[str, int]:
    """unit key -> shard (1-based): costliest first onto the least loaded shard."""
    load = [0.0] * total
    out: dict[str, int] = {}
    for key in sorted(costs, key=lambda k: (-round(costs[k], 6), k)):
        i = min(range(total), key=lambda s: (round(load[s], 6), s))
        out[key] = i + 1
        load[i] += costs[key]
    return out


def plan_digest(assignment: dict[str, int], total: int) -> str:
    text = json.dumps({"total": total, "units": sorted(assignment.items())}, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ShardPlan:
    spec: ShardSpec
    assignment: dict[str, int]
    costs: dict[str, float]
    durations_sha256: str | None
    durations_file: str | None

    def keeps(self, unit: Unit) -> bool:
        return self.assignment[unit.key] == self.spec.index

    def record(self, items: int) -> dict[str, Any]:
        """What results.json says about this shard."""
        per_shard = [0.0] * self.spec.total
        for key, s in self.assignment.items():
            per_shard[s - 1] += self.costs[key]
        return {"index": self.spec.index, "total": self.spec.total, "spec": str(self.spec),
                "plan": plan_digest(self.assignment, self.spec.total), "units": sum(
                    1 for s in self.assignment.values() if s == self.spec.index),
                "units_total": len(self.assignment), "items": items,
                "expected_s": [round(c, 1) for c in per_shard],
                "durations": ({"file": self.durations_file, "sha256": self.durations_sha256}
                              if self.durations_sha256 else None)}


def make_plan(spec: ShardSpec, units: list[Unit], loads: dict[str, float],
              durations_path: str | None = None) -> ShardPlan:
    durations, digest = load_durations(durations_path) if durations_path else (None, None)
    costs = unit_costs(units, loads, durations)
    return ShardPlan(spec, plan(costs, spec.total), costs, digest,
                     Path(durations_path).name if durations_path else None)


# --- pytest binding (called from harness/plugin.py at the end of collection) ------------------
def _harness_item(item: Any) -> Any | None:
    callspec = getattr(item, "callspec", None)
    return next((v for v in (callspec.params.values() if callspec else ())
                 if hasattr(v, "check") and hasattr(v, "case")), None)


def select(config: Any, items: list[Any]) -> dict[str, Any] | None:
    """Keep this shard's items (the others are reported deselected); the shard's record, or None
    when the run is not sharded."""
    value = config.getoption("--shard", None)
    if not value:
        return None
    try:
        spec = ShardSpec.parse(value)
    except ValueError as exc:
        import pytest
        raise pytest.UsageError(str(exc)) from None
    units, loads, backends = [], {}, {}
    for it in items:
        h = _harness_item(it)
        units.append(unit_of(it.nodeid, h))
        if h is not None:
            backends.setdefault(h.case.id, (h.case, set()))[1].add(h.backend or "")
    for key, (case, names) in backends.items():
        loads[key] = model_load_estimate(case, names)
    try:
        shard_plan = make_plan(spec, units, loads, config.getoption("--shard-durations", None))
    except (OSError, ValueError) as exc:
        import pytest
        raise pytest.UsageError(f"--shard-durations: {exc}") from None
    kept = [it for it, u in zip(items, units) if shard_plan.keeps(u)]
    dropped = [it for it, u in zip(items, units) if not shard_plan.keeps(u)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept
    return shard_plan.record(len(kept))
