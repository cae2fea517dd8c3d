"""The human report of a run: reports/report.html and reports/report.md (plus throughput.svg).

Written after every suite run (the plugin calls `write_report` right after results.json) and
refreshed by `harness bench`:

* a matrix of model x check family x backend with pass, fail, expected-failure and skip
  counts; every cell links to a section listing its failures (case file and line, the
  message with its diff), expected failures and skip reasons;
* throughput per model and backend from the saved benchmark runs (reports/benchmarks/),
  with a chart of their history (throughput.svg);
* goldens.json: the content of every golden the run's tests used, so that
  `harness compare` can diff goldens between two result sets later.

Template-set cases (`llama-cpp-templates@<template>`) are one matrix row per set; the
failure list names each template.
"""

from __future__ import annotations

import html
import json
import os
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from harness.report import sections
from harness.atomic import write_atomic
from harness.families import FAMILY_ORDER
from harness.report.matrix import matrix_html
from harness.report import timing as report_timing

OUTCOME_CLASS = {"passed": "pass", "failed": "fail", "error": "fail", "xpassed": "fail",
                 "xfailed": "xfail", "skipped": "skip"}
CLASSES = ("pass", "fail", "xfail", "skip")
NO_BACKEND = "-"
GOLDENS_FILE = "goldens.json"
GOLDENS_FORMAT = "llm-harness-goldens/1"


_write = write_atomic   # harness/atomic.py


# --- the matrix ------------------------------------------------------------------------------
def _param_id(nodeid: str) -> str:
    return nodeid[nodeid.index("[") + 1:-1] if "[" in nodeid and nodeid.endswith("]") else nodeid.split("::")[-1]


def classify(test: dict[str, Any]) -> tuple[str, str, str]:
    """(model, family, backend) of one result record."""
    case = test.get("case")
    if case:
        model = case.split("@", 1)[0]
    elif "test_case_file" in test["nodeid"]:  # test_case_file[x.yaml]: the case file's own row
        model = re.sub(r"\.ya?ml$", "", _param_id(test["nodeid"]))
    else:                                     # e.g. an empty parametrization ([NOTSET]): no case at all
        model = "(no case)"
    module = Path(test["nodeid"].split("::")[0]).stem.removeprefix("test_")
    check = test.get("check") or ("case_files.valid" if "test_case_file" in test["nodeid"] else f"{module}.other")
    family = check.split(".")[0]
    backend = (test.get("params") or {}).get("backend") or NO_BACKEND
    return model, family, backend


def anchor(model: str, family: str, backend: str) -> str:
    return "c-" + re.sub(r"[^a-z0-9]+", "-", f"{model}--{family}--{backend}".lower()).strip("-")


@dataclass
class Cell:
    counts: Counter = field(default_factory=Counter)
    tests: list[dict[str, Any]] = field(default_factory=list)

    def by(self, cls: str) -> list[dict[str, Any]]:
        return [t for t in self.tests if OUTCOME_CLASS.get(t["outcome"], "fail") == cls]


@dataclass
class Matrix:
    models: list[str]
    families: list[str]
    backends: dict[str, list[str]]          # family -> backends seen
    cells: dict[tuple[str, str, str], Cell]
    totals: Counter

    def cell(self, model: str, family: str, backend: str) -> Cell | None:
        return self.cells.get((model, family, backend))

    def present(self):
        """(model, family, backend, cell) for every cell with checks, in report order."""
        for model in self.models:
            for fam in self.families:
                for b in self.backends[fam]:
                    c = self.cell(model, fam, b)
                    if c is not None:
                        yield model, fam, b, c


BACKEND_ORDER = ("hf", "llama-cpp-python", "llama-cpp-python-eval", "llama.cpp-builtin", "llama-server", "openai",
                 NO_BACKEND)


def _order(values: Iterable[str], preferred: tuple[str, ...]) -> list[str]:
    values = set(values)
    return [v for v in preferred if v in values] + sorted(values - set(preferred))


def build_matrix(tests: list[dict[str, Any]]) -> Matrix:
    cells: dict[tuple[str, str, str], Cell] = defaultdict(Cell)
    totals: Counter = Counter()
    for t in tests:
        key = classify(t)
        cls = OUTCOME_CLASS.get(t["outcome"], "fail")
        cells[key].counts[cls] += 1
        cells[key].tests.append(t)
        totals[cls] += 1
    families = _order({f for _, f, _ in cells}, FAMILY_ORDER)
    backends = {f: _order({b for _, ff, b in cells if ff == f}, BACKEND_ORDER) for f in families}
    models = sorted({m for m, _, _ in cells}, key=lambda m: (m.startswith("vocab-"), m))
    return Matrix(models, families, backends, dict(cells), totals)


def _skip_reason(message: str) -> str:
    msg = (message or "").strip()
    msg = re.sub(r"^Skipped:\s*", "", msg)
    return msg.splitlines()[0][:300] if msg else "(no reason given)"


# --- goldens snapshot ---------------------------------------------------------------------------
def golden_files_for(tests: list[dict[str, Any]], golden_dir: Path) -> dict[str, str]:
    """{relative path: text} of the goldens of these tests (golden/<module>/<test name>[.N].json)."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for t in tests:
        path, _, name = t["nodeid"].partition("::")
        if name:
            wanted[Path(path).stem].add(name)
    out: dict[str, str] = {}
    for module, names in sorted(wanted.items()):
        folder = Path(golden_dir) / module
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for fname in entries:
            if not fname.endswith(".json"):
                continue
            base = fname[:-5]
            if base not in names:
                head, _, idx = base.rpartition(".")
                if not (idx.isdigit() and head in names):
                    continue
            try:
                out[f"{module}/{fname}"] = (folder / fname).read_text(encoding="utf-8")
            except OSError:
                continue
    return dict(sorted(out.items()))


def write_goldens(report_dir: Path, tests: list[dict[str, Any]], golden_dir: Path) -> Path:
    return write_goldens_files(report_dir, golden_files_for(tests, golden_dir), str(golden_dir))


def write_goldens_files(report_dir: Path, files: dict[str, str], golden_dir: str | None) -> Path:
    """goldens.json from {relative path: text} (a run's, or the union of merged shards')."""
    doc = {"format": GOLDENS_FORMAT, "golden_dir": golden_dir, "files": dict(sorted(files.items()))}
    return _write(Path(report_dir) / GOLDENS_FILE, json.dumps(doc, indent=0, ensure_ascii=False) + "\n")


# --- saved benchmark runs ---------------------------------------------------------------------------
@dataclass
class BenchRun:
    path: Path
    name: str
    datetime: str
    rows: list[dict[str, Any]]               # extra_info of throughput benchmarks, plus stats
    harness: dict[str, Any]


def load_bench_run(path: Path) -> BenchRun | None:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or "benchmarks" not in doc:
        return None
    rows = []
    for b in doc["benchmarks"]:
        info = b.get("extra_info") or {}
        if info.get("kind") == "throughput":
            rows.append({**info, "name": b.get("name"), "fullname": b.get("fullname"), "stats": b.get("stats") or {}})
    return BenchRun(Path(path), Path(path).stem, doc.get("datetime", ""), rows, doc.get("harness") or {})


def bench_history(benchmarks_dir: Path | None) -> list[BenchRun]:
    if benchmarks_dir is None or not Path(benchmarks_dir).is_dir():
        return []
    runs = [r for p in sorted(Path(benchmarks_dir).glob("*/*.json")) if (r := load_bench_run(p)) is not None]
    return sorted(runs, key=lambda r: (r.datetime, r.name))


def _find_benchmarks(report_dir: Path) -> Path | None:
    for cand in (report_dir / "benchmarks", report_dir.parent / "benchmarks"):
        if cand.is_dir():
            return cand
    return None


def _mean(d: Any) -> float | None:
    return d.get("mean") if isinstance(d, dict) else None


# --- SVG chart ------------------------------------------------------------------------------------------
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22")


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    import math
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def svg_chart(panels: list[tuple[str, dict[str, list[float | None]]]], x_labels: list[str], *,
              width: int = 1060, panel_height: int = 240) -> str:
    """Line charts, one panel per (title, {series: values per run}), sharing x labels and colours."""
    left, right, top, bottom = 110, 330, 40, 84
    plot_w = width - left - right
    names = sorted({s for _, series in panels for s in series})
    colour = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(names)}
    height = len(panels) * (panel_height + top + bottom)
    e = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'font-family="sans-serif" font-size="12">', f'<rect width="{width}" height="{height}" fill="white"/>']
    n = max(1, len(x_labels))

    def x_at(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else plot_w * i / (n - 1))

    for p, (title, series) in enumerate(panels):
        y0 = p * (panel_height + top + bottom) + top
        values = [v for vs in series.values() for v in vs if v is not None]
        ymax = _nice_max(max(values) * 1.05 if values else 1.0)
        out.append(f'<text x="{left}" y="{y0 - 12}" font-size="14" font-weight="bold">{e(title)}</text>')
        for k in range(6):
            yv = ymax * k / 5
            y = y0 + panel_height - panel_height * k / 5
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#444">{yv:g}</text>')
        out.append(f'<line x1="{left}" y1="{y0}" x2="{left}" y2="{y0 + panel_height}" stroke="#888"/>')
        out.append(f'<line x1="{left}" y1="{y0 + panel_height}" x2="{left + plot_w}" y2="{y0 + panel_height}" stroke="#888"/>')
        step = max(1, n // 12)
        for i, label in enumerate(x_labels):
            if i % step and i != n - 1:
                continue
            x = x_at(i)
            out.append(f'<text x="{x:.1f}" y="{y0 + panel_height + 16}" text-anchor="end" fill="#444" '
                       f'transform="rotate(-30 {x:.1f} {y0 + panel_height + 16})">{e(label)}</text>')
        for name in names:
            vs = series.get(name)
            if not vs:
                continue
            pts = [(x_at(i), y0 + panel_height - panel_height * v / ymax) for i, v in enumerate(vs) if v is not None]
            if len(pts) > 1:
                out.append(f'<polyline fill="none" stroke="{colour[name]}" stroke-width="2" points="'
                           + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
            for x, y in pts:
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour[name]}"><title>{e(name)}</title></circle>')
        for j, name in enumerate(n_ for n_ in names if series.get(n_)):
            ly = y0 + 8 + j * 18
            out.append(f'<rect x="{left + plot_w + 16}" y="{ly - 9}" width="12" height="12" fill="{colour[name]}"/>')
            out.append(f'<text x="{left + plot_w + 34}" y="{ly + 1}">{e(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def throughput_chart(history: list[BenchRun]) -> str | None:
    if not history:
        return None
    labels = [f"{r.name.split('_', 1)[0]} {r.datetime[5:16].replace('T', ' ')}" for r in history]
    panels = []
    for metric, title in (("tg_tps", "generation tokens/s (no constraint), harness clock"),
                          ("pp_tps", "prompt tokens/s (no constraint), harness clock"),
                          ("tg_tps@gbnf", "generation tokens/s with a GBNF grammar")):
        key, _, constraint = metric.partition("@")
        constraint = constraint or "none"
        series: dict[str, list[float | None]] = defaultdict(lambda: [None] * len(history))
        for i, run in enumerate(history):
            for row in run.rows:
                if row.get("constraint") == constraint:
                    series[f"{row['case']} / {row['backend']}"][i] = _mean(row.get(key))
        if series:
            panels.append((title, dict(series)))
    return svg_chart(panels, labels) if panels else None


# --- rendering ----------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1600px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}h3{font-size:15px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ccc;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}tbody th{white-space:nowrap}td.num{text-align:right}
td.cell a{text-decoration:none;color:inherit;display:block}
td.cell.fail{background:#fde2e2}td.cell.ok{background:#e6f4e6}td.cell.xfail{background:#fff4d6}
td.cell.skip{background:#f0f0f0}td.cell.empty{background:#fafafa;color:#bbb}
.b{display:inline-block;min-width:18px;padding:0 4px;margin:1px;border-radius:3px;font-weight:600;text-align:center}
.b.pass{background:#2e7d32;color:#fff}.b.fail{background:#c62828;color:#fff}
.b.xfail{background:#f9a825;color:#222}.b.skip{background:#9e9e9e;color:#fff}
pre{background:#f7f7f7;border:1px solid #ddd;padding:8px;overflow:auto;font-size:12px;max-height:420px;white-space:pre-wrap;word-break:break-word}
.meta td{border:none;padding:1px 8px 1px 0}.small{font-size:12px;color:#555}
details{margin:4px 0}summary{cursor:pointer}
"""
LEGEND = "counts: pass / fail (failed, error, unexpected pass) / expected failure (known defect) / skip"


def _badges(counts: Counter) -> str:
    return "".join(f'<span class="b {c}" title="{c}">{counts[c]}</span>' for c in CLASSES if counts.get(c))


def _cell_class(counts: Counter) -> str:
    if counts.get("fail"):
        return "fail"
    if counts.get("pass"):
        return "ok"
    if counts.get("xfail"):
        return "xfail"
    return "skip"


def _md_counts(counts: Counter) -> str:
    parts = [f"{counts['pass']} ✓" if counts.get("pass") else "", f"**{counts['fail']} ✗**" if counts.get("fail") else "",
             f"{counts['xfail']} xf" if counts.get("xfail") else "", f"{counts['skip']} s" if counts.get("skip") else ""]
    return " · ".join(p for p in parts if p)


def _test_label(t: dict[str, Any]) -> str:
    name = t["nodeid"].split("::")[-1]
    return name


def _throughput_rows(history: list[BenchRun]) -> list[dict[str, Any]]:
    """The latest figures of every (model, backend, constraint) over the saved runs (a run may
    have measured only some cases), each with the run it comes from."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for run in history:
        for r in run.rows:
            latest[(r["case"], r["backend"], r["constraint"])] = {**r, "run": run.path.stem}
    return [latest[k] for k in sorted(latest)]


def _latest_with(history: list[BenchRun], key: str) -> BenchRun | None:
    return next((r for r in reversed(history) if (r.harness or {}).get(key)), None)


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _ratio(r: dict[str, Any], kind: str) -> str:
    v = r.get(f"{kind}_ratio")
    return "-" if v is None else f"{v:.3f}"


THROUGHPUT_COLUMNS = ("model", "backend", "constraint", "ttft ms", "pp tok/s", "backend pp", "pp ratio",
                      "tg tok/s", "backend tg", "tg ratio", "backend tg + sampling", "tokens (prompt+gen)", "text sha256",
                      "saved run")


def _throughput_cells(r: dict[str, Any]) -> list[str]:
    return [r["case"], r["backend"], r["constraint"], _fmt(_mean(r.get("ttft_ms"))), _fmt(_mean(r.get("pp_tps"))),
            _fmt(_mean(r.get("backend_pp_tps"))), _ratio(r, "pp"), _fmt(_mean(r.get("tg_tps"))),
            _fmt(_mean(r.get("backend_tg_tps"))), _ratio(r, "tg"), _fmt(_mean(r.get("backend_tg_tps_with_sampling"))),
            f"{r.get('n_prompt')}+{'/'.join(map(str, r.get('n_gen') or []))}",
            ",".join(x[:8] for x in r.get("text_sha256") or []), r.get("run", "")]


def _overhead_lines(history: list[BenchRun]) -> list[str]:
    lines = []
    run = _latest_with(history, "overhead")
    oh = (run.harness or {}).get("overhead") if run else None
    if oh:
        lines.append(f"Harness overhead ({oh.get('scope', '?')} suite run, {oh.get('tests')} tests): "
                     f"{oh['outside_s']:.1f} s of {oh['wall_s']:.1f} s wall outside backend calls "
                     f"= {oh['outside_ratio'] * 100:.1f}% (target ≤ 10%).")
        lines[-1] += f" (saved run {run.path.stem})"
    run = _latest_with(history, "collection")
    col = (run.harness or {}).get("collection") if run else None
    if col:
        lines.append(f"Collection of {col['cases']} generated cases ({col['items']} items): "
                     f"{col['pytest_collection_s']:.2f} s (saved run {run.path.stem}).")
    return lines


def memory_line(doc: dict[str, Any]) -> str:
    """One line on the run's peak resident memory (results.json "memory"), or "" without it."""
    mem = doc.get("memory") or {}
    if not mem.get("processes_mib"):
        return ""
    procs = ", ".join(f"{p} {m} MiB" for p, m in mem["processes_mib"].items())
    servers = mem.get("llama_server_peaks_mib") or []
    srv = f"; llama-server peaks {', '.join(map(str, servers))} MiB" if servers else ""
    return (f"Peak memory: {procs}{srv}; at most {mem['upper_bound_mib']} MiB in all "
            f"(the sum of every process's own peak).")


def changed_cells(matrix_tests: list[dict[str, Any]], changes: Any | None) -> set[tuple[str, str, str]]:
    """(model, family, backend) of every check whose status changed against the baseline."""
    if changes is None:
        return set()
    by_id = {t["nodeid"]: t for t in matrix_tests}
    old = changes.old.tests if changes.old.results is not None else {}
    return {classify(by_id.get(s.nodeid) or old[s.nodeid]) for s in changes.statuses
            if s.nodeid in by_id or s.nodeid in old}


def render_markdown(doc: dict[str, Any], matrix: Matrix, history: list[BenchRun], chart: str | None,
                    changes: Any | None = None) -> str:
    """Verdict, what needs attention, changes against the baseline, the matrix, throughput,
    details; provenance last (harness/report/sections.py)."""
    tests = doc.get("tests", [])
    mixed = (doc.get("merged") or {}).get("mixed") or []
    out = ["# Conformance report", "", *sections.verdict_md(tests, changes, mixed, len(tests)), "",
           ", ".join(f"{matrix.totals.get(c, 0)} {c}" for c in CLASSES) + f"; finished {doc.get('finished', '?')}, "
           f"exit status {doc.get('exitstatus', '?')}."]
    out += sections.attention_md(tests) + sections.changes_md(changes)
    changed = changed_cells(tests, changes)
    out += ["", "## Matrix", "", LEGEND + " (✓ pass, ✗ fail, xf expected failure, s skip; Δ changed since the "
            "baseline). Template-set rows aggregate every template of the set.", ""]
    for fam in matrix.families:
        backends = matrix.backends[fam]
        out.append(f"### {fam}")
        out.append("")
        out.append("| model | " + " | ".join(backends) + " |")
        out.append("|---|" + "---|" * len(backends))
        for model in matrix.models:
            row = []
            any_cell = False
            for b in backends:
                c = matrix.cell(model, fam, b)
                if c is None:
                    row.append("")
                    continue
                any_cell = True
                delta = " Δ" if (model, fam, b) in changed else ""
                row.append(f"[{_md_counts(c.counts)}{delta}](#{anchor(model, fam, b)})")
            if any_cell:
                out.append(f"| {model} | " + " | ".join(row) + " |")
        out.append("")
    from harness.report.behaviour import behaviour_md
    out += behaviour_md(tests)       # properties of the models, apart from the stack findings
    rows = _throughput_rows(history)
    out += ["## Throughput", ""]
    if rows:
        out.append(f"Latest figures per model, backend and constraint over {len(history)} saved run(s) "
                   f"(newest `{history[-1].path.name}`, {history[-1].datetime}). Means over rounds; "
                   "ratio = harness clock / the backend's own figure.")
        out.append("")
        out.append("| " + " | ".join(THROUGHPUT_COLUMNS) + " |")
        out.append("|" + "---|" * len(THROUGHPUT_COLUMNS))
        for r in rows:
            out.append("| " + " | ".join(_throughput_cells(r)) + " |")
        out.append("")
        out += [ln for ln in _overhead_lines(history)]
        if chart:
            out += ["", "![throughput history](throughput.svg)"]
    else:
        out.append("No saved benchmark runs (run `harness bench`).")
    out += report_timing.markdown(history)
    out += ["", "## Details", ""]
    for model, fam, b, c in matrix.present():
        out.append(f'<a id="{anchor(model, fam, b)}"></a>')
        out.append(f"### {model} · {fam} · {b}")
        out.append("")
        out.append(_md_counts(c.counts))
        out.append("")
        for t in c.by("fail"):
            out.append(f"- **{t['outcome']}** `{_test_label(t)}` ({t.get('check') or fam}) at "
                       f"`{t.get('location') or '?'}`")
            out.append("")
            out.append("  ```")
            out += ["  " + ln for ln in (t.get("message") or "").rstrip().splitlines()[-60:]]
            out.append("  ```")
        for t in c.by("xfail"):
            out.append(f"- expected failure `{_test_label(t)}` at `{t.get('location') or '?'}`: "
                       f"{_first_line(t)}")
        reasons = Counter(_skip_reason(t.get("message", "")) for t in c.by("skip"))
        for reason, k in reasons.most_common():
            out.append(f"- skipped ×{k}: {reason}")
        out.append("")
    out += sections.provenance_md(doc, memory_line(doc))
    return "\n".join(out) + "\n"


def _first_line(test: dict) -> str:
    """The finding of a record in one line: its summary (the exception's first line), or for
    results written before summaries existed, the traceback's `E   ...Mismatch: ...` line."""
    if test.get("summary"):
        return test["summary"][:300]
    lines = [ln for ln in (test.get("message") or "").splitlines() if ln.strip()]
    for ln in lines:
        m = re.match(r"^E\s+(?:[\w.]+\.)?Mismatch: (.*)", ln)
        if m:
            return m.group(1).strip()[:300]
    return (lines[-1].strip()[:300] if lines else "")


def render_html(doc: dict[str, Any], matrix: Matrix, history: list[BenchRun], chart: str | None,
                changes: Any | None = None) -> str:
    """The same order as the Markdown: verdict first, provenance last."""
    e = html.escape
    tests = doc.get("tests", [])
    mixed = (doc.get("merged") or {}).get("mixed") or []
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>Conformance report</title>", f"<style>{CSS}{sections.CSS}</style></head><body>",
           "<h1>Conformance report</h1>", sections.verdict_html(tests, changes, mixed, len(tests)),
           f'<p class="small">{_badges(matrix.totals)} · finished {e(str(doc.get("finished", "?")))}, exit status '
           f'{e(str(doc.get("exitstatus", "?")))} · <a href="#matrix">matrix</a> · <a href="#throughput">throughput</a>'
           ' · <a href="#details">details</a> · <a href="#provenance">provenance</a></p>']
    out.append(sections.attention_html(tests, lambda t: anchor(*classify(t))))
    out.append(sections.changes_html(changes))
    out.append('<h2 id="matrix">Matrix: model × check family × backend</h2>')
    out.append(matrix_html(matrix, changed_cells(tests, changes), anchor=anchor, badges=_badges,
                           cell_class=_cell_class, legend=LEGEND))

    from harness.report.behaviour import behaviour_html
    out.append(behaviour_html(tests))   # properties of the models, apart from the stack findings
    out.append('<h2 id="throughput">Throughput</h2>')
    rows = _throughput_rows(history)
    if rows:
        out.append(f'<p class="small">Latest figures per model, backend and constraint over {len(history)} saved '
                   f"run(s) (newest <code>{e(history[-1].path.name)}</code>, {e(history[-1].datetime)}). Means over rounds; "
                   "ratio = harness clock / the backend's own figure (llama.cpp perf counters, llama-server timings).</p>")
        out.append("<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in THROUGHPUT_COLUMNS) + "</tr></thead><tbody>")
        for r in rows:
            cells = _throughput_cells(r)
            out.append("<tr>" + "".join(f'<td{" class=num" if i >= 3 else ""}>{e(v)}</td>' for i, v in enumerate(cells))
                       + "</tr>")
        out.append("</tbody></table>")
        for ln in _overhead_lines(history):
            out.append(f"<p>{e(ln)}</p>")
        if chart:
            out.append('<h3>History of saved runs</h3><img src="throughput.svg" alt="throughput history">')
    else:
        out.append("<p>No saved benchmark runs (run <code>harness bench</code>).</p>")
    out += report_timing.html_section(history)

    out.append('<h2 id="details">Details</h2>')
    for model, fam, b, c in matrix.present():
        out.append(f'<h3 id="{anchor(model, fam, b)}">{e(model)} · {e(fam)} · {e(b)} {_badges(c.counts)}</h3>')
        fails = c.by("fail")
        for t in fails:
            out.append(f"<p><b>{e(t['outcome'])}</b> <code>{e(_test_label(t))}</code> "
                       f"({e(t.get('check') or fam)}) at <code>{e(str(t.get('location') or '?'))}</code></p>")
            out.append(f"<pre>{e((t.get('message') or '').rstrip()[-6000:])}</pre>")
        xf = c.by("xfail")
        if xf:
            out.append(f"<details><summary>{len(xf)} expected failure(s)</summary><ul>")
            for t in xf:
                out.append(f"<li><code>{e(_test_label(t))}</code> at <code>{e(str(t.get('location') or '?'))}"
                           f"</code>: {e(_first_line(t))}</li>")
            out.append("</ul></details>")
        skips = Counter(_skip_reason(t.get("message", "")) for t in c.by("skip"))
        if skips:
            out.append(f"<details><summary>{sum(skips.values())} skipped</summary><ul>")
            for reason, k in skips.most_common():
                out.append(f"<li>×{k}: {e(reason)}</li>")
            out.append("</ul></details>")
        if not fails and not xf and not skips:
            out.append('<p class="small">all passed</p>')
    out.append(sections.provenance_html(doc, memory_line(doc)))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --- entry point ------------------------------------------------------------------------------------------
def build_report(report_dir: Path, *, results_path: Path | None = None, benchmarks_dir: Path | None = None,
                 golden_dir: Path | None = None, changes: Any | None = None) -> dict[str, Path]:
    """Write report.html, report.md (and throughput.svg, goldens.json) into report_dir; with
    `changes` (a harness.compare.Comparison against a baseline), what changed comes second."""
    report_dir = Path(report_dir)
    results_path = Path(results_path) if results_path else report_dir / "results.json"
    doc = json.loads(results_path.read_text(encoding="utf-8"))
    tests = doc.get("tests", [])
    written: dict[str, Path] = {}
    if golden_dir is not None:
        written["goldens"] = write_goldens(report_dir, tests, Path(golden_dir))
    matrix = build_matrix(tests)
    history = bench_history(benchmarks_dir if benchmarks_dir is not None else _find_benchmarks(report_dir))
    chart = throughput_chart(history)
    if chart:
        written["chart"] = _write(report_dir / "throughput.svg", chart)
    written["html"] = _write(report_dir / "report.html", render_html(doc, matrix, history, chart, changes))
    written["md"] = _write(report_dir / "report.md", render_markdown(doc, matrix, history, chart, changes))
    return written


def write_report(report_dir: Path, *, golden_dir: Path | None = None, benchmarks_dir: Path | None = None) -> dict[str, Path] | None:
    """build_report, but a broken report never breaks the run that produced the results."""
    try:
        return build_report(Path(report_dir), golden_dir=golden_dir, benchmarks_dir=benchmarks_dir)
    except Exception as exc:  # the results are already written; say what went wrong and carry on
        print(f"harness: could not write the report in {report_dir}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
