"""`harness compare OLD NEW`: what changed between two result sets, in Markdown and HTML.

A result set is a reports folder as a suite run leaves it (or the path of its results.json):
  results.json   outcome per check (harness/report/results.py)
  goldens.json   the content of every golden the run used (written with the report)
  benchmarks/    saved `harness bench` runs; the latest one is compared (or --old-bench/--new-bench)
A saved benchmark JSON on its own is a result set too (throughput only).

Listed:
  * every changed golden (rendered prompt, token ids, tool calls, generated text, other),
    with a diff, and goldens present on one side only;
  * outputs that differ from their golden in NEW without the golden being rewritten
    (failed snapshot checks), with syrupy's diff;
  * every check whose status changed (and checks present on one side only);
  * every throughput figure that changed beyond noise: |change| >= --min-change (default 5%)
    and larger than --noise-k (default 3) standard errors of the two runs' rounds.
"""

from __future__ import annotations

import html
from pathlib import Path

from harness.bench.ratios import DEFAULT_RATIO_THRESHOLD
from harness.report.build import CSS
from harness.atomic import write_atomic
from harness.report.sections import diff_html, failure_excerpt
from harness.report.messages import message_diff
from .changes import CATEGORIES, Comparison, compare, golden_category, load_result_set


# --- rendering ------------------------------------------------------------------------------------------
def _summary(c: Comparison) -> list[str]:
    lines = []
    if c.old.goldens is None or c.new.goldens is None:
        lines.append("goldens: not compared (a result set has no goldens.json)")
    else:
        by = {cat: sum(1 for g in c.changed_goldens if g.category == cat) for cat in CATEGORIES}
        lines.append(f"goldens: {len(c.changed_goldens)} changed ("
                     + ", ".join(f"{n} {cat}" for cat, n in by.items() if n) + ")"
                     + f", {sum(g.kind == 'only-old' for g in c.goldens)} only in OLD, "
                       f"{sum(g.kind == 'only-new' for g in c.goldens)} only in NEW")
    if c.old.results is None or c.new.results is None:
        lines.append("checks: not compared (a result set has no results.json)")
    else:
        d = [s.direction for s in c.statuses]
        lines.append(f"checks: {len(c.statuses)} changed status ({d.count('worse')} worse, {d.count('better')} better, "
                     f"{d.count('new check')} new, {d.count('check gone')} gone); "
                     f"{len(c.snapshot_failures)} outputs differ from their golden in NEW")
        lines.append(f"messages: {len(c.messages)} checks with the same outcome say something else")
    if c.old.bench is None or c.new.bench is None:
        lines.append("throughput: not compared (a result set has no saved benchmark run)")
    else:
        lines.append(f"cross-backend ratios: {len(c.ratios)} of {c.ratios_compared} moved "
                     f"(>= {c.ratio_threshold:.0%} and > {c.noise_k:g} standard errors)")
        lines.append(f"throughput: {len(c.throughput)} of {c.throughput_compared} figures changed beyond noise "
                     f"(>= {c.min_change:.0%} and > {c.noise_k:g} standard errors)")
    return lines


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def render_markdown(c: Comparison, limit: int = 400) -> str:
    out = ["# Result comparison", "", f"- OLD: `{c.old.label}`", f"- NEW: `{c.new.label}`", ""]
    out += [f"- {ln}" for ln in _summary(c)]
    if c.changed_goldens:
        out += ["", "## Changed goldens", ""]
        for cat in CATEGORIES:
            items = [g for g in c.changed_goldens if g.category == cat]
            if not items:
                continue
            out += [f"### {cat} ({len(items)})", ""]
            for g in items[:limit]:
                out += [f"- `{g.path}`", "", "```diff", g.diff, "```", ""]
    one_side = [g for g in c.goldens if g.kind != "changed"]
    if one_side:
        out += ["", "## Goldens on one side only", ""]
        out += [f"- {'only in OLD' if g.kind == 'only-old' else 'only in NEW'}: `{g.path}` ({g.category})"
                for g in one_side[:limit]]
        if len(one_side) > limit:
            out.append(f"- ... {len(one_side) - limit} more")
    snaps = c.snapshot_failures
    if snaps:
        out += ["", "## Outputs that differ from their golden in NEW (golden not rewritten)", ""]
        for s in snaps[:limit]:
            out += [f"- `{s.nodeid}` at `{s.location}`", "", "```diff", failure_excerpt(s.message), "```", ""]
    if c.statuses:
        out += ["", "## Checks that changed status", "", "| check | OLD | NEW | | location |", "|---|---|---|---|---|"]
        for s in c.statuses[:limit]:
            out.append(f"| `{s.nodeid.split('::')[-1]}` | {s.old or '—'} | {s.new or '—'} | {s.direction} | "
                       f"{s.location or ''} |")
        if len(c.statuses) > limit:
            out.append(f"| ... {len(c.statuses) - limit} more | | | | |")
        worse = [s for s in c.statuses if s.direction == "worse" and s.message and s not in snaps]
        if worse:
            out += ["", "### Messages of checks that got worse", ""]
            for s in worse[:limit]:
                out += [f"- `{s.nodeid}`", "", "```", failure_excerpt(s.message), "```", ""]
    if c.messages:
        out += ["", "## Checks with the same outcome and another message", ""]
        for m in c.messages[:limit]:
            out += [f"- `{m.nodeid}` ({m.outcome}) at `{m.location or ''}`", "", "```diff", message_diff(m), "```", ""]
        if len(c.messages) > limit:
            out.append(f"- ... {len(c.messages) - limit} more")
    if c.ratios:
        out += ["", "## Cross-backend ratios that moved", "", "| model | constraint | backend / reference | kind | OLD | NEW "
                "| change | noise | |", "|---|---|---|---|---|---|---|---|---|"]
        for m in c.ratios:
            o = m.old
            out.append(f"| `{o.case}` | {o.constraint} | {o.backend} / {o.reference} | {o.kind} | {o.ratio:.3f} | "
                       f"{m.new.ratio:.3f} | {m.change:+.1%} | ±{m.noise:.3f} | {m.direction} |")
    if c.throughput:
        out += ["", "## Throughput changes beyond noise", "", "| benchmark | figure | OLD | NEW | change | noise | |",
                "|---|---|---|---|---|---|---|"]
        for f in sorted(c.throughput, key=lambda f: (f.benchmark, f.metric)):
            out.append(f"| `{f.benchmark}` | {f.metric} | {_fmt(f.old)} | {_fmt(f.new)} | {f.change:+.1%} | "
                       f"±{_fmt(f.noise)} | {f.verdict} |")
    if not c.has_changes:
        out += ["", "No differences."]
    return "\n".join(out) + "\n"


def render_html(c: Comparison, limit: int = 2000) -> str:
    e = html.escape
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8"><title>Result comparison</title>',
           f"<style>{CSS} .add{{color:#1b5e20}}.del{{color:#b71c1c}}</style></head><body>",
           "<h1>Result comparison</h1>",
           f"<p>OLD: <code>{e(c.old.label)}</code><br>NEW: <code>{e(c.new.label)}</code></p><ul>"]
    out += [f"<li>{e(ln)}</li>" for ln in _summary(c)]
    out.append("</ul>")

    diff_block = diff_html

    if c.changed_goldens:
        out.append("<h2>Changed goldens</h2>")
        for cat in CATEGORIES:
            items = [g for g in c.changed_goldens if g.category == cat]
            if items:
                out.append(f"<h3>{e(cat)} ({len(items)})</h3>")
                for g in items[:limit]:
                    out.append(f"<p><code>{e(g.path)}</code></p>" + diff_block(g.diff))
    one_side = [g for g in c.goldens if g.kind != "changed"]
    if one_side:
        out.append(f"<h2>Goldens on one side only</h2><details><summary>{len(one_side)} goldens</summary><ul>")
        out += [f"<li>{'only in OLD' if g.kind == 'only-old' else 'only in NEW'}: <code>{e(g.path)}</code> "
                f"({e(g.category)})</li>" for g in one_side[:limit]]
        out.append("</ul></details>")
    snaps = c.snapshot_failures
    if snaps:
        out.append("<h2>Outputs that differ from their golden in NEW (golden not rewritten)</h2>")
        for s in snaps[:limit]:
            out.append(f"<p><code>{e(s.nodeid)}</code> at <code>{e(str(s.location))}</code></p>"
                       + diff_block(failure_excerpt(s.message, 6000)))
    if c.statuses:
        out.append("<h2>Checks that changed status</h2><table><tr><th>check</th><th>OLD</th><th>NEW</th><th></th>"
                   "<th>location</th><th>message (NEW)</th></tr>")
        for s in c.statuses[:limit]:
            msg = f"<details><summary>message</summary><pre>{e(s.message.rstrip()[-4000:])}</pre></details>" if s.message else ""
            out.append(f"<tr><td><code>{e(s.nodeid.split('::')[-1])}</code></td><td>{e(s.old or '—')}</td>"
                       f"<td>{e(s.new or '—')}</td><td>{e(s.direction)}</td><td>{e(s.location or '')}</td><td>{msg}</td></tr>")
        out.append("</table>")
    if c.messages:
        out.append("<h2>Checks with the same outcome and another message</h2>")
        for m in c.messages[:limit]:
            out.append(f"<p><code>{e(m.nodeid)}</code> ({e(m.outcome)}) at <code>{e(m.location or '')}</code></p>"
                       + diff_block(message_diff(m)))
    if c.ratios:
        out.append("<h2>Cross-backend ratios that moved</h2><table><tr><th>model</th><th>constraint</th>"
                   "<th>backend / reference</th><th>kind</th><th>OLD</th><th>NEW</th><th>change</th><th>noise</th>"
                   "<th></th></tr>")
        for m in c.ratios:
            o = m.old
            out.append(f"<tr><td><code>{e(o.case)}</code></td><td>{e(o.constraint)}</td><td>{e(o.backend)} / "
                       f"{e(o.reference)}</td><td>{e(o.kind)}</td><td class=num>{o.ratio:.3f}</td><td class=num>"
                       f"{m.new.ratio:.3f}</td><td class=num>{m.change:+.1%}</td><td class=num>±{m.noise:.3f}</td>"
                       f"<td>{e(m.direction)}</td></tr>")
        out.append("</table>")
    if c.throughput:
        out.append("<h2>Throughput changes beyond noise</h2><table><tr><th>benchmark</th><th>figure</th><th>OLD</th>"
                   "<th>NEW</th><th>change</th><th>noise</th><th></th></tr>")
        for f in sorted(c.throughput, key=lambda f: (f.benchmark, f.metric)):
            out.append(f"<tr><td><code>{e(f.benchmark)}</code></td><td>{e(f.metric)}</td><td class=num>{_fmt(f.old)}</td>"
                       f"<td class=num>{_fmt(f.new)}</td><td class=num>{f.change:+.1%}</td><td class=num>±{_fmt(f.noise)}"
                       f"</td><td>{e(f.verdict)}</td></tr>")
        out.append("</table>")
    if not c.has_changes:
        out.append("<p>No differences.</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_comparison(c: Comparison, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {"md": write_atomic(out_dir / "compare.md", render_markdown(c)),
            "html": write_atomic(out_dir / "compare.html", render_html(c))}


def run(ns) -> int:
    """`harness compare` (arguments: see harness/cli.py)."""
    import sys
    try:
        old = load_result_set(ns.old, bench=ns.old_bench, label=f"{ns.old}")
        new = load_result_set(ns.new, bench=ns.new_bench, label=f"{ns.new}")
    except (OSError, ValueError) as exc:
        print(f"harness compare: {exc}", file=sys.stderr)
        return 2
    c = compare(old, new, min_change=ns.min_change, noise_k=ns.noise_k,
                ratio_threshold=getattr(ns, "ratio_threshold", DEFAULT_RATIO_THRESHOLD))
    out_dir = Path(ns.out) if ns.out else (Path(ns.new) if Path(ns.new).is_dir() else Path(ns.new).parent) / "compare"
    paths = write_comparison(c, out_dir)
    text = render_markdown(c, limit=ns.limit)
    print(text if not ns.quiet else "\n".join(_summary(c)))
    print(f"written: {paths['md']} and {paths['html']}")
    return 1 if (ns.fail_on_change and c.has_changes) else 0
