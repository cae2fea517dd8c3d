"""The report's "Model behaviour" section: properties of the models (toolcalls.model_format,
harness/families/toolcalls/model_format.py), listed apart from the stack findings. A model that answers a tool
request in another format than its template asks for is worth knowing, but no stack is wrong."""

from __future__ import annotations

import html
from typing import Any

TITLE = "Model behaviour"
INTRO = ("Properties of the models, not stack findings: unforced (tool_choice auto, greedy, the model's own "
         "template through llama-server), does the model write its template's own tool-call wire format?")
VERDICTS = {"template-format": "its template's format (parsed into tool_calls)",
            "template-format-unparsed": "its template's format, left unparsed by the server (a stack finding)",
            "other-format": "another format (a JSON object with name and arguments in the content)",
            "no-call": "no tool call (a plain answer)"}


def behaviour_rows(tests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [(t.get("details") or {}).get("model_behaviour") for t in tests]
    return sorted((r for r in rows if r), key=lambda r: (r["case"], r["context"]))


def _summary(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for case in sorted({r["case"] for r in rows}):
        mine = [r for r in rows if r["case"] == case]
        own = [r["context"] for r in mine if r["writes_template_format"]]
        out.append(f"{case}: writes its template's {mine[0]['format']} format unforced in {len(own)} of "
                   f"{len(mine)} conversations" + (f" ({', '.join(own)})" if own else ""))
    return out


def behaviour_md(tests: list[dict[str, Any]]) -> list[str]:
    rows = behaviour_rows(tests)
    if not rows:
        return []
    out = ["", f"## {TITLE}", "", INTRO, ""]
    out += [f"- {line}" for line in _summary(rows)]
    out += ["", "| model | conversation | answer | content (start) |", "|---|---|---|---|"]
    for r in rows:
        content = (r.get("content") or "").replace("\n", "\\n").replace("|", "\\|")[:120]
        calls = ", ".join(str(c.get("name")) for c in r.get("tool_calls") or [])
        out.append(f"| {r['case']} | {r['context']} | {VERDICTS.get(r['verdict'], r['verdict'])}"
                   f"{' — ' + calls if calls else ''} | `{content}` |")
    return out + [""]


def behaviour_html(tests: list[dict[str, Any]]) -> str:
    rows = behaviour_rows(tests)
    if not rows:
        return ""
    e = html.escape
    out = [f'<h2 id="model-behaviour">{TITLE}</h2>', f'<p class="small">{e(INTRO)}</p>', "<ul>"]
    out += [f"<li>{e(line)}</li>" for line in _summary(rows)]
    out += ["</ul>", "<table><tr><th>model</th><th>conversation</th><th>answer</th><th>content (start)</th></tr>"]
    for r in rows:
        calls = ", ".join(str(c.get("name")) for c in r.get("tool_calls") or [])
        out.append(f"<tr><td>{e(r['case'])}</td><td>{e(r['context'])}</td><td>{e(VERDICTS.get(r['verdict'], r['verdict']))}"
                   f"{e(' — ' + calls) if calls else ''}</td><td><code>{e((r.get('content') or '')[:160])}</code></td></tr>")
    return "\n".join(out + ["</table>"])
