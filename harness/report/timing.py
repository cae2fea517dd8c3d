"""The report's "Harness time" section: the per-check, per-phase table of the newest saved
benchmark run that measured the harness's overhead (`harness bench --overhead ...`;
harness/bench/overhead_phases.py computes the figures)."""

from __future__ import annotations

import html
from typing import Any

from harness.bench.overhead_phases import SESSION_PHASES, TEST_PHASES

COLUMNS = ("check", "tests", "backend s", *(f"{p} s" for p in TEST_PHASES), "harness %")


def _latest_overhead(history: list[Any]) -> tuple[Any, dict[str, Any]] | tuple[None, None]:
    for run in reversed(history):
        oh = (run.harness or {}).get("overhead")
        if oh and oh.get("by_check_phase_s"):
            return run, oh
    return None, None


def rows(oh: dict[str, Any]) -> list[list[str]]:
    out = []
    for check, r in oh["by_check_phase_s"].items():
        outside = sum(r.get(p, 0.0) for p in TEST_PHASES)
        total = r.get("backend", 0.0) + outside
        out.append([check, str(r.get("tests", 0)), f"{r.get('backend', 0.0):.2f}",
                    *(f"{r.get(p, 0.0):.2f}" for p in TEST_PHASES), f"{outside / total * 100:.1f}" if total else "-"])
    return out


def _intro(run: Any, oh: dict[str, Any]) -> str:
    session = oh.get("session_phases_s") or {}
    parts = ", ".join(f"{k} {session[k]:.1f} s" for k in (*SESSION_PHASES, "startup, configuration, other")
                      if k in session)
    return (f"Where the suite's time goes ({oh.get('scope', '?')} run of {oh.get('tests')} tests in one process, "
            f"saved run {run.path.stem}): {oh['outside_s']:.1f} s of {oh['wall_s']:.1f} s outside backend calls "
            f"= {oh['outside_ratio'] * 100:.1f}%. Per check and phase below; once per run: {parts or 'n/a'}.")


def markdown(history: list[Any]) -> list[str]:
    run, oh = _latest_overhead(history)
    if run is None:
        return []
    out = ["", "## Harness time", "", _intro(run, oh), "", "| " + " | ".join(COLUMNS) + " |",
           "|---|" + "---:|" * (len(COLUMNS) - 1)]
    out += ["| " + " | ".join([f"`{r[0]}`", *r[1:]]) + " |" for r in rows(oh)]
    return out + [""]


def html_section(history: list[Any]) -> list[str]:
    run, oh = _latest_overhead(history)
    if run is None:
        return []
    e = html.escape
    out = ['<h2 id="harness-time">Harness time</h2>', f'<p class="small">{e(_intro(run, oh))}</p>',
           "<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in COLUMNS) + "</tr></thead><tbody>"]
    for r in rows(oh):
        out.append("<tr>" + "".join(f'<td{" class=num" if i else ""}>{e(v)}</td>' for i, v in enumerate(r)) + "</tr>")
    return out + ["</tbody></table>"]
