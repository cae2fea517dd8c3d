"""What changed between two runs: result sets loaded from a report folder, golden changes, outcome and
message changes per test, and throughput figures that moved."""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.bench.ratios import DEFAULT_RATIO_THRESHOLD, RatioMove, diff_ratios, throughput_rows
from harness.report.goldens_file import GOLDENS_FILE
from harness.report.charts import bench_history, load_bench_run
from harness.report.messages import finding, same_finding


CATEGORIES = ("rendered prompt", "token ids", "tool calls", "generated text", "other")


OUTCOME_ORDER = {"passed": 0, "xfailed": 1, "skipped": 2, "xpassed": 3, "failed": 4, "error": 5}


# --- loading ---------------------------------------------------------------------------------
@dataclass
class ResultSet:
    label: str
    path: Path
    results: dict[str, Any] | None = None
    goldens: dict[str, str] | None = None
    bench: Any = None                          # report.BenchRun (with .doc) or None

    @cached_property
    def tests(self) -> dict[str, dict[str, Any]]:
        """By node id; built once (every status, message and snapshot comparison reads it)."""
        return {t["nodeid"]: t for t in (self.results or {}).get("tests", [])}


def _load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _bench(path: Path):
    run = load_bench_run(path)
    if run is None:
        raise ValueError(f"{path} is not a saved pytest-benchmark run")
    run.doc = _load_json(path)
    return run


def load_result_set(path: str | Path, *, bench: str | Path | None = None, label: str | None = None) -> ResultSet:
    p = Path(path)
    rs = ResultSet(label or str(path), p)
    if p.is_file():
        doc = _load_json(p)
        if isinstance(doc, dict) and "benchmarks" in doc:
            rs.bench = _bench(p)
        elif isinstance(doc, dict) and "tests" in doc:
            rs.results = doc
            if (p.parent / GOLDENS_FILE).is_file():
                rs.goldens = _load_json(p.parent / GOLDENS_FILE).get("files", {})
        else:
            raise ValueError(f"{p}: neither a results.json nor a saved benchmark run")
    elif p.is_dir():
        if (p / "results.json").is_file():
            rs.results = _load_json(p / "results.json")
        if (p / GOLDENS_FILE).is_file():
            rs.goldens = _load_json(p / GOLDENS_FILE).get("files", {})
        if bench is None and (p / "benchmarks").is_dir():
            history = bench_history(p / "benchmarks")
            if history:
                rs.bench = _bench(history[-1].path)
    else:
        raise FileNotFoundError(f"{p}: no such result set")
    if bench is not None:
        rs.bench = _bench(Path(bench))
    if rs.results is None and rs.bench is None:
        raise ValueError(f"{p}: no results.json and no saved benchmark run in it")
    return rs


# --- goldens ---------------------------------------------------------------------------------
def golden_category(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return "other"
    keys = set(data) if isinstance(data, dict) else set()
    if "tool_calls" in keys:
        return "tool calls"
    if "prompt" in keys:
        return "rendered prompt"
    if "ids" in keys or "tokens" in keys or "token_ids" in keys:
        return "token ids"
    if "text" in keys:
        return "generated text"
    return "other"


def text_diff(old: str, new: str, old_name: str, new_name: str, limit: int = 80) -> str:
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), old_name, new_name, n=2, lineterm=""))
    if len(lines) > limit:
        lines = lines[:limit] + [f"... ({len(lines) - limit} more diff lines)"]
    return "\n".join(lines)


@dataclass
class GoldenChange:
    path: str
    category: str
    kind: str                 # changed | only-old | only-new
    diff: str = ""


def diff_goldens(old: dict[str, str] | None, new: dict[str, str] | None) -> list[GoldenChange]:
    if old is None or new is None:
        return []
    out = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a is not None and b is not None:
            if a != b:
                out.append(GoldenChange(path, golden_category(b), "changed",
                                        text_diff(a, b, f"OLD/{path}", f"NEW/{path}")))
        elif a is None:
            out.append(GoldenChange(path, golden_category(b), "only-new"))
        else:
            out.append(GoldenChange(path, golden_category(a), "only-old"))
    return out


# --- statuses ---------------------------------------------------------------------------------
def is_snapshot_failure(test: dict[str, Any]) -> bool:
    msg = test.get("message") or ""
    return test.get("outcome") in ("failed", "error") and ("[- snapshot]" in msg or ("snapshot" in msg.lower()
                                                            and "[+ received]" in msg))


@dataclass
class StatusChange:
    nodeid: str
    old: str | None
    new: str | None
    check: str | None
    location: str | None
    message: str

    @property
    def direction(self) -> str:
        if self.old is None:
            return "new check"
        if self.new is None:
            return "check gone"
        return "worse" if OUTCOME_ORDER.get(self.new, 9) > OUTCOME_ORDER.get(self.old, 9) else "better"


def diff_statuses(old: ResultSet, new: ResultSet) -> list[StatusChange]:
    if old.results is None or new.results is None:
        return []
    a, b = old.tests, new.tests
    out = []
    for nodeid in sorted(set(a) | set(b)):
        ta, tb = a.get(nodeid), b.get(nodeid)
        oa, ob = ta and ta["outcome"], tb and tb["outcome"]
        if oa != ob:
            t = tb or ta
            out.append(StatusChange(nodeid, oa, ob, t.get("check"), t.get("location"),
                                    (tb or {}).get("message") or ""))
    return out


@dataclass
class MessageChange:
    """A check with the same outcome on both sides whose finding differs (harness/report/messages.py:
    what the check said, not where in the harness it was raised)."""
    nodeid: str
    outcome: str
    check: str | None
    location: str | None
    old: str
    new: str


def diff_messages(old: ResultSet, new: ResultSet) -> list[MessageChange]:
    if old.results is None or new.results is None:
        return []
    a, b = old.tests, new.tests
    out = []
    for nodeid in sorted(set(a) & set(b)):
        ta, tb = a[nodeid], b[nodeid]
        if ta["outcome"] == tb["outcome"] and not same_finding(ta.get("message"), tb.get("message")):
            out.append(MessageChange(nodeid, tb["outcome"], tb.get("check"), tb.get("location"),
                                     finding(ta.get("message") or ""), finding(tb.get("message") or "")))
    return out


# --- throughput ---------------------------------------------------------------------------------
@dataclass
class Figure:
    benchmark: str
    metric: str
    old: float
    new: float
    noise: float
    higher_is_better: bool

    @property
    def change(self) -> float:
        return (self.new - self.old) / self.old if self.old else math.inf

    @property
    def verdict(self) -> str:
        better = (self.new > self.old) == self.higher_is_better
        return "better" if better else "worse"


def _sem(stdev: float | None, n: int | None) -> float:
    return (stdev or 0.0) / math.sqrt(n) if n else 0.0


def _metrics(b: dict[str, Any]) -> dict[str, tuple[float, float, bool]]:
    """metric -> (mean, standard error, higher is better)."""
    out = {}
    st = b.get("stats") or {}
    info = b.get("extra_info") or {}
    if st.get("mean") is not None:
        timer = info.get("timer") or "wall"
        out[f"benchmark {'CPU' if timer == 'cpu' else 'wall'} time s"] = (
            st["mean"], _sem(st.get("stddev"), st.get("rounds")), False)
    n = info.get("rounds")
    for key, label, hib in (("tg_tps", "generation tok/s", True), ("pp_tps", "prompt tok/s", True),
                            ("ttft_ms", "time to first token ms", False), ("backend_tg_tps", "backend generation tok/s", True),
                            ("backend_pp_tps", "backend prompt tok/s", True), ("cpu_s", "request CPU s", False)):
        v = info.get(key)
        if isinstance(v, dict) and v.get("mean") is not None:
            out[label] = (v["mean"], _sem(v.get("stdev"), n), hib)
    if info.get("kind") == "overhead" and info.get("figures"):
        f = info["figures"]
        out["outside-backend share"] = (f["outside_ratio"], 0.0, False)
    if info.get("kind") == "collection" and info.get("figures"):
        out["collection s"] = (info["figures"]["pytest_collection_s"], 0.0, False)
    return out


def diff_throughput(old: ResultSet, new: ResultSet, *, min_change: float = 0.05, noise_k: float = 3.0) -> tuple[list[Figure], int]:
    """Figures beyond noise, and how many figures were compared."""
    if old.bench is None or new.bench is None:
        return [], 0
    a = {b["fullname"]: b for b in old.bench.doc["benchmarks"]}
    b_ = {b["fullname"]: b for b in new.bench.doc["benchmarks"]}
    out, compared = [], 0
    for name in sorted(set(a) & set(b_)):
        ma, mb = _metrics(a[name]), _metrics(b_[name])
        for metric in ma.keys() & mb.keys():
            (va, sa, hib), (vb, sb, _) = ma[metric], mb[metric]
            compared += 1
            noise = noise_k * math.sqrt(sa ** 2 + sb ** 2)
            if va and abs(vb - va) / abs(va) >= min_change and abs(vb - va) > noise:
                out.append(Figure(name.split("::")[-1], metric, va, vb, noise, hib))
    return out, compared


# --- the comparison ---------------------------------------------------------------------------------
@dataclass
class Comparison:
    old: ResultSet
    new: ResultSet
    goldens: list[GoldenChange] = field(default_factory=list)
    statuses: list[StatusChange] = field(default_factory=list)
    throughput: list[Figure] = field(default_factory=list)
    throughput_compared: int = 0
    min_change: float = 0.05
    noise_k: float = 3.0
    ratios: list[RatioMove] = field(default_factory=list)    # cross-backend ratios that moved
    ratios_compared: int = 0
    ratio_threshold: float = DEFAULT_RATIO_THRESHOLD
    messages: list[MessageChange] = field(default_factory=list)   # same outcome, another finding

    @property
    def changed_goldens(self) -> list[GoldenChange]:
        return [g for g in self.goldens if g.kind == "changed"]

    @property
    def snapshot_failures(self) -> list[StatusChange]:
        tests = self.new.tests
        return [s for s in self.statuses if s.new in ("failed", "error") and is_snapshot_failure(tests[s.nodeid])]

    @property
    def has_changes(self) -> bool:
        return bool(self.goldens or self.statuses or self.messages or self.throughput or self.ratios)


def compare(old: ResultSet, new: ResultSet, *, min_change: float = 0.05, noise_k: float = 3.0,
            ratio_threshold: float = DEFAULT_RATIO_THRESHOLD) -> Comparison:
    figures, n = diff_throughput(old, new, min_change=min_change, noise_k=noise_k)
    moves, n_ratios = [], 0
    if old.bench is not None and new.bench is not None:
        moves, n_ratios = diff_ratios(throughput_rows(old.bench.doc), throughput_rows(new.bench.doc),
                                      threshold=ratio_threshold, noise_k=noise_k)
    return Comparison(old, new, diff_goldens(old.goldens, new.goldens), diff_statuses(old, new), figures, n,
                      min_change, noise_k, moves, n_ratios, ratio_threshold, diff_messages(old, new))
