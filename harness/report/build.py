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
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from harness.report import sections
from harness.report.matrix import matrix_html
from harness.report import timing as report_timing
from .cells import CLASSES, Matrix, NO_BACKEND, anchor, build_matrix, classify, skip_reason
from .charts import BenchRun, bench_history, find_benchmarks, load_bench_run, mean_of, throughput_chart
from .goldens_file import GOLDENS_FILE, GOLDENS_FORMAT, atomic_write, write_goldens, write_goldens_files


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
    return [r["case"], r["backend"], r["constraint"], _fmt(mean_of(r.get("ttft_ms"))), _fmt(mean_of(r.get("pp_tps"))),
            _fmt(mean_of(r.get("backend_pp_tps"))), _ratio(r, "pp"), _fmt(mean_of(r.get("tg_tps"))),
            _fmt(mean_of(r.get("backend_tg_tps"))), _ratio(r, "tg"), _fmt(mean_of(r.get("backend_tg_tps_with_sampling"))),
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
        reasons = Counter(skip_reason(t.get("message", "")) for t in c.by("skip"))
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
        skips = Counter(skip_reason(t.get("message", "")) for t in c.by("skip"))
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
    history = bench_history(benchmarks_dir if benchmarks_dir is not None else find_benchmarks(report_dir))
    chart = throughput_chart(history)
    if chart:
        written["chart"] = atomic_write(report_dir / "throughput.svg", chart)
    written["html"] = atomic_write(report_dir / "report.html", render_html(doc, matrix, history, chart, changes))
    written["md"] = atomic_write(report_dir / "report.md", render_markdown(doc, matrix, history, chart, changes))
    return written


def write_report(report_dir: Path, *, golden_dir: Path | None = None, benchmarks_dir: Path | None = None) -> dict[str, Path] | None:
    """build_report, but a broken report never breaks the run that produced the results."""
    try:
        return build_report(Path(report_dir), golden_dir=golden_dir, benchmarks_dir=benchmarks_dir)
    except Exception as exc:  # the results are already written; say what went wrong and carry on
        print(f"harness: could not write the report in {report_dir}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
