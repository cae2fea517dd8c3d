"""The parts of the report a maintainer reads first and last (harness/report/build.py puts them in
order): the verdict, what needs attention (failures, errors, unexpected passes, each with its
case file and line, backend and a short diff), what changed against a baseline, and at the end
the provenance in one compact table.

Only plain data comes in (result records; a comparison from harness/report/compare.py, read by its
attributes): this module imports no other harness module.
"""

from __future__ import annotations

import html
import re
import textwrap
from typing import Any

ATTENTION = ("failed", "error", "xpassed")
SHORT_DIFF_LINES = 14


def failure_excerpt(message: str, limit: int = 3000) -> str:
    """The assertion part of a pytest failure (its `E ` lines: syrupy's diff, a Mismatch), else the tail."""
    lines = [ln[1:] for ln in (message or "").splitlines() if ln.startswith("E ")]
    if not lines:
        return (message or "").rstrip()[-limit:]
    body = textwrap.dedent("\n".join(lines)).splitlines()
    # syrupy indents its -/+ markers; put them in the first column so diffs read (and colour) as diffs
    return "\n".join(re.sub(r"^(\s*)([-+]) ", r"\2\1 ", ln) for ln in body)[-limit:]


def short_diff(message: str, lines: int = SHORT_DIFF_LINES) -> str:
    body = failure_excerpt(message).strip("\n").splitlines()
    if len(body) > lines:
        body = body[:lines] + [f"... ({len(body) - lines} more lines in the details)"]
    return "\n".join(body)


def attention(tests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failures, errors and unexpected passes, by case file and line, then test."""
    return sorted((t for t in tests if t.get("outcome") in ATTENTION),
                  key=lambda t: (str(t.get("location") or "~"), t["nodeid"]))


def kind_of(t: dict[str, Any]) -> str:
    """failed / error / unexpected pass. pytest reports a strict xfail that passed as a failure
    whose message starts with [XPASS(strict)]: a known defect that no longer reproduces."""
    if t.get("outcome") == "xpassed" or (t.get("message") or "").lstrip().startswith("[XPASS(strict)]"):
        return "unexpected pass"
    return "error" if t.get("outcome") == "error" else "failed"


def _kinds(att: list[dict[str, Any]]) -> dict[str, int]:
    kinds = {"failed": 0, "error": 0, "unexpected pass": 0}
    for t in att:
        kinds[kind_of(t)] += 1
    return kinds


def backend_of(t: dict[str, Any]) -> str:
    return (t.get("params") or {}).get("backend") or "-"


def test_name(t: dict[str, Any]) -> str:
    return t["nodeid"].split("::")[-1]


# --- changes against a baseline (a harness.compare.Comparison) -----------------------------------
FINDING_OUTCOMES = ("failed", "error", "xfailed", "xpassed")


def change_groups(c: Any) -> dict[str, list[Any]]:
    """Status changes grouped as a maintainer asks: new findings (a check that now fails or now
    expects a known defect), fixed (one that failed or expected a defect and now passes or is
    gone), other status changes, checks new or gone."""
    groups: dict[str, list[Any]] = {"new findings": [], "fixed": [], "other status changes": [],
                                    "checks new or gone": []}
    for s in c.statuses:
        if s.old is None or s.new is None:
            groups["checks new or gone"].append(s)
        elif s.new in FINDING_OUTCOMES and s.old not in FINDING_OUTCOMES or (s.new in ATTENTION and s.old == "xfailed"):
            groups["new findings"].append(s)
        elif s.old in FINDING_OUTCOMES and s.new not in FINDING_OUTCOMES:
            groups["fixed"].append(s)
        else:
            groups["other status changes"].append(s)
    return groups


def _n(k: int, one: str, many: str) -> str:
    return f"{k} {one if k == 1 else many}"


def changes_summary(c: Any) -> str:
    g = change_groups(c)
    changed = [x for x in c.goldens if x.kind == "changed"]
    new = _n(len(g["new findings"]), "new finding", "new findings")
    return (f"{_n(len(c.statuses), 'check', 'checks')} changed status ({new}, {len(g['fixed'])} fixed), "
            f"{_n(len(changed), 'golden', 'goldens')} changed, {sum(x.kind != 'changed' for x in c.goldens)} "
            "on one side only")


def status_label(outcome: str | None, message: str = "") -> str:
    if outcome == "failed" and message.lstrip().startswith("[XPASS(strict)]"):
        return "unexpected pass"
    return outcome or "—"


# --- HTML ---------------------------------------------------------------------------------------------
CSS = """
.verdict{padding:10px 14px;border-radius:6px;font-size:16px;margin:8px 0 4px}
.verdict.bad{background:#c62828;color:#fff}.verdict.good{background:#2e7d32;color:#fff}
.verdict.mixed{background:#6a1b9a;color:#fff;font-size:14px}
.verdict a{color:inherit}.verdict small{font-size:13px;opacity:.9}
table.att td{font-size:12px}table.att pre{max-height:180px;margin:0;font-size:11px}
td.o-failed,td.o-error,td.o-xpassed{color:#b71c1c;font-weight:700}
span.add{color:#1b5e20}span.del{color:#b71c1c}
table.prov td{font-size:12px;padding:2px 6px}table.prov code{font-size:11px}
"""


def diff_html(text: str) -> str:
    e = html.escape
    rows = []
    for ln in text.splitlines():
        cls = "add" if ln.startswith("+") and not ln.startswith("+++") else (
            "del" if ln.startswith("-") and not ln.startswith("---") else "")
        rows.append(f'<span class="{cls}">{e(ln)}</span>' if cls else e(ln))
    return "<pre>" + "\n".join(rows) + "</pre>"


def verdict_html(tests: list[dict[str, Any]], changes: Any | None, mixed: list[dict[str, Any]], n_checks: int) -> str:
    e = html.escape
    att = attention(tests)
    kinds = _kinds(att)
    what = (f"{kinds['failed']} failed, {kinds['error']} errors, {kinds['unexpected pass']} unexpected passes"
            if att else "nothing failed")
    more = f" · <a href=\"#changes\">{e(changes_summary(changes))} since the baseline</a>" if changes is not None else ""
    link = ' · <a href="#attention">see below</a>' if att else ""
    out = [f'<div class="verdict {"bad" if att else "good"}"><b>{"FAILED" if att else "PASSED"}</b>: {e(what)} '
           f"<small>of {n_checks} checks{link}{more}</small></div>"]
    if mixed:
        keys = ", ".join(m["key"] for m in mixed)
        out.append(f'<div class="verdict mixed"><b>MIXED STACKS</b> (merged with --allow-mixed): the shards differ in '
                   f'{e(keys)}; see <a href="#provenance">provenance</a></div>')
    return "\n".join(out)


def attention_html(tests: list[dict[str, Any]], anchor_of) -> str:
    e = html.escape
    att = attention(tests)
    if not att:
        return ""
    out = [f'<h2 id="attention">Needs attention ({len(att)})</h2>',
           '<table class="att"><thead><tr><th>outcome</th><th>case file:line</th><th>backend</th><th>check</th>'
           "<th>short diff</th></tr></thead><tbody>"]
    for t in att:
        out.append(f'<tr><td class="o-{e(t["outcome"])}">{e(kind_of(t))}</td>'
                   f"<td><code>{e(str(t.get('location') or '?'))}</code></td><td>{e(backend_of(t))}</td>"
                   f'<td><a href="#{anchor_of(t)}"><code>{e(test_name(t))}</code></a></td>'
                   f"<td>{diff_html(short_diff(t.get('message') or ''))}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def changes_html(c: Any | None, limit: int = 500) -> str:
    if c is None:
        return ""
    e = html.escape
    out = [f'<h2 id="changes">Changes since the baseline</h2>',
           f'<p class="small">baseline <code>{e(c.old.label)}</code>: {e(changes_summary(c))}.</p>']
    for title, items in change_groups(c).items():
        if not items:
            continue
        out.append(f"<h3>{e(title)} ({len(items)})</h3><table><tr><th>check</th><th>was</th><th>now</th>"
                   "<th>case file:line</th><th></th></tr>")
        for s in items[:limit]:     # what fails now is in "Needs attention", with its diff
            where = '<a href="#attention">diff above</a>' if s.new in ATTENTION else ""
            out.append(f"<tr><td><code>{e(s.nodeid.split('::')[-1])}</code></td><td>{e(s.old or '—')}</td>"
                       f"<td>{e(status_label(s.new, s.message))}</td><td><code>{e(s.location or '')}</code></td>"
                       f"<td>{where}</td></tr>")
        out.append("</table>")
    golds = list(c.goldens)
    if golds:
        out.append(f"<h3>goldens ({len(golds)})</h3>")
        for g in golds[:limit]:
            label = {"changed": "changed", "only-old": "only in the baseline", "only-new": "new"}[g.kind]
            body = diff_html(g.diff) if g.diff else ""
            out.append(f"<details {'open' if len(golds) <= 5 else ''}><summary>{e(label)}: <code>{e(g.path)}</code> "
                       f"({e(g.category)})</summary>{body}</details>")
    if not c.statuses and not golds:
        out.append("<p>No check changed status and no golden changed.</p>")
    return "\n".join(out)


def provenance_rows(doc: dict[str, Any], memory: str) -> list[tuple[str, str]]:
    prov = doc.get("provenance") or {}
    pk = prov.get("packages") or {}
    rows = [("finished", f"{doc.get('finished', '?')}, exit status {doc.get('exitstatus', '?')}"),
            ("stack", ", ".join(f"{k} {v}" for k, v in pk.items() if v)),
            ("run", f"threads {prov.get('threads')}, seed {prov.get('seed')}, {prov.get('platform')}, "
                    f"python {prov.get('python')}, xdist workers {prov.get('xdist_workers')}")]
    if prov.get("lock"):
        rows.append(("lock file", f"{prov['lock'].get('file')} sha256 {str(prov['lock'].get('sha256'))[:16]}…"))
    merged = doc.get("merged") or {}
    if merged.get("shards"):
        rows.append(("shards", "; ".join(f"{s['shard']}: {s['checks']} checks, exit {s['exitstatus']}, {s['dir']}"
                                         for s in merged["shards"])))
    for m in merged.get("mixed") or []:
        rows.append(("MIXED " + m["key"], "; ".join(f"{d}: {v}" for d, v in m["values"].items())))
    if doc.get("shard"):
        s = doc["shard"]
        rows.append(("shard", f"{s.get('spec')} ({s.get('items')} checks, plan {str(s.get('plan'))[:12]})"))
    if memory:
        rows.append(("memory", memory.removeprefix("Peak memory: ")))
    for case, m in sorted((doc.get("models") or {}).items()):
        rows.append((f"model {case}", f"{m.get('file')} sha256 {str(m.get('sha256'))[:16]}… from {m.get('source')}"
                     + (f"; tokenizer {m['hf_tokenizer']}" if m.get("hf_tokenizer") else "")))
    return rows


def provenance_html(doc: dict[str, Any], memory: str) -> str:
    e = html.escape
    rows = "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in provenance_rows(doc, memory))
    return f'<h2 id="provenance">Provenance</h2><table class="prov">{rows}</table>'


# --- Markdown -----------------------------------------------------------------------------------------
def _md_block(text: str, lang: str = "") -> list[str]:
    return [f"```{lang}", *text.replace("```", "ˋˋˋ").splitlines(), "```"]


def verdict_md(tests: list[dict[str, Any]], changes: Any | None, mixed: list[dict[str, Any]], n_checks: int) -> list[str]:
    att = attention(tests)
    kinds = _kinds(att)
    head = (f"**FAILED**: {kinds['failed']} failed, {kinds['error']} errors, {kinds['unexpected pass']} unexpected passes"
            if att else "**PASSED**: nothing failed")
    out = [f"{head} of {n_checks} checks."]
    if changes is not None:
        out[-1] += f" Since the baseline: {changes_summary(changes)}."
    if mixed:
        out += ["", f"**MIXED STACKS** (merged with --allow-mixed): the shards differ in "
                    f"{', '.join(m['key'] for m in mixed)} (see Provenance)."]
    return out


def attention_md(tests: list[dict[str, Any]]) -> list[str]:
    att = attention(tests)
    if not att:
        return []
    out = ["", f"## Needs attention ({len(att)})", ""]
    for t in att:
        out += [f"- **{kind_of(t)}** `{t.get('location') or '?'}` {backend_of(t)}: `{test_name(t)}`", ""]
        out += ["  " + ln for ln in _md_block(short_diff(t.get("message") or ""), "diff")] + [""]
    return out


def changes_md(c: Any | None, limit: int = 200) -> list[str]:
    if c is None:
        return []
    out = ["", "## Changes since the baseline", "", f"Baseline `{c.old.label}`: {changes_summary(c)}.", ""]
    for title, items in change_groups(c).items():
        if items:
            out += [f"### {title} ({len(items)})", "", "| check | was | now | case file:line |", "|---|---|---|---|"]
            out += [f"| `{s.nodeid.split('::')[-1]}` | {s.old or '—'} | {status_label(s.new, s.message)} | {s.location or ''} |"
                    for s in items[:limit]] + [""]
    golds = list(c.goldens)
    if golds:
        out += [f"### goldens ({len(golds)})", ""]
        for g in golds[:limit]:
            out.append(f"- {g.kind}: `{g.path}` ({g.category})")
            if g.diff:
                out += ["", *("  " + ln for ln in _md_block(g.diff, "diff")), ""]
    return out


def provenance_md(doc: dict[str, Any], memory: str) -> list[str]:
    out = ["", "## Provenance", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v.replace('|', '/')} |" for k, v in provenance_rows(doc, memory)]
    return out
