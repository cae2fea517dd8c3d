"""The review summary: what a run did for each case, in a few lines a reviewer can read.

Per case: how many goldens were written, changed or left as they were; each backend's
version and how its checks went (did it render, did it tokenize); skipped checks grouped by
reason; failures with the case file and line; known defects that still reproduce.

Printed at the end of a suite run (plugin.pytest_terminal_summary calls `write_review`) for
each case whose goldens were written in this run (a new case's first run) and for every
case of a run restricted with --case; `HARNESS_REVIEW=0` turns it off, `HARNESS_REVIEW=all`
prints it for every case. `harness review [--case GLOB]` prints it again from
reports/results.json, with the goldens' state taken from git (new, modified, unchanged).

Only the standard library is imported here: the plugin loads this module in every run.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

MAX_FULL = 5              # more cases than this: one line each
_HIDDEN_INFO = {"backend", "system_info", "builtin_templates", "threads", "seed", "binary", "build_options",
                "url", "n_ctx", "metadata_keys", "error", "mode"}


@dataclass
class CaseReview:
    case: str
    location: str = ""
    goldens: Counter = field(default_factory=Counter)      # written / changed / unchanged / failed
    goldens_known: bool = False
    goldens_vs_git: bool = False                             # new / modified relative to the last commit
    backends: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))   # "backend" -> check -> ...
    checks: dict[tuple[str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))
    infos: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))     # reason -> checks
    failures: list[tuple[str, str, str, str]] = field(default_factory=list)   # (kind, location, test, headline)
    xfailed: list[tuple[str, str]] = field(default_factory=list)              # (test, reason)
    outcomes: Counter = field(default_factory=Counter)


# --- reading results --------------------------------------------------------------------------
def test_name(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[-1]


def case_of_test(name: str) -> str | None:
    """'test_render[smollm2,single-user,gen,hf]' -> 'smollm2'."""
    m = re.match(r"^[^\[]+\[([^\],]+)", name)
    return m.group(1) if m else None


def _params_id(name: str) -> str:
    m = re.match(r"^[^\[]+\[[^,\]]+,?(.*)\]$", name)
    return m.group(1) if m else ""


def headline(message: str) -> str:
    """The one line that says what went wrong, from a pytest failure text."""
    text = message or ""
    e_lines = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("E ")]
    first = next((ln for ln in e_lines if ln), None)
    if first is None:
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    first = re.sub(r"^(harness\.checks\.)?Mismatch: ", "", first)
    first = re.sub(r"^Failed: ", "", first)
    return first if len(first) <= 200 else first[:197] + "..."


def failure_kind(record: dict) -> str:
    """finding: a conformance mismatch (a Mismatch); fixed: a known defect no longer
    reproduces; golden: the output differs from its golden; setup: a model file or a backend
    could not be had (the message, which starts with the case file and line, says why);
    error: anything else, likely a harness bug."""
    msg = record.get("message") or ""
    traceback = re.search(r"(^|\n)E\s", msg) is not None
    if "XPASS(strict)" in msg:
        return "fixed"
    if re.search(r"(^|\n)E\s+(harness\.checks\.)?Mismatch\b", msg) or "harness.checks.Mismatch:" in msg:
        return "finding"
    if "[- snapshot]" in msg or ("snapshot" in msg and "AssertionError" in msg):
        return "golden"
    if not traceback and re.search(r"(^|\n)(Failed: )?\S+\.yaml:\d+: ", msg):
        return "setup"
    return "error"


def syrupy_status(config) -> dict[str, str] | None:
    """test name -> written / changed / unchanged / failed, from syrupy's report; None when
    unknown (no syrupy, or xdist workers that did not send their reports)."""
    session = getattr(config, "_syrupy", None)
    report = getattr(session, "report", None)
    if report is None:
        return None
    out: dict[str, str] = {}
    for attr, status in (("matched", "unchanged"), ("created", "written"), ("updated", "changed"),
                         ("failed", "failed")):
        for collection in getattr(report, attr, ()):
            for snap in collection:
                out[re.sub(r"\.\d+$", "", snap.name)] = status
    return out


def stale_goldens(golden_dir: Path, tests: Iterable[dict]) -> list[Path]:
    """Golden files that no check of this run produced or compared: in the folder of every test
    module the run covered, the files whose test id is not among the run's checks. Only
    meaningful for a run of whole modules (no case, backend or -k selection)."""
    ran: dict[str, set[str]] = {}
    for t in tests:
        module, _, name = t["nodeid"].rpartition("::")
        ran.setdefault(Path(module).stem, set()).add(name)
    out = []
    for module, names in sorted(ran.items()):
        folder = Path(golden_dir) / module
        if folder.is_dir():
            out += [f for f in sorted(folder.glob("*.json")) if f.stem not in names]
    return out


def golden_mtimes(golden_dir: Path) -> dict[str, int]:
    """Every golden file's modification time (ns), by test module and name: taken at session
    start, so that the end of the run can tell which files the run itself wrote."""
    out: dict[str, int] = {}
    for path in Path(golden_dir).glob("*/*.json"):
        try:
            out[f"{path.parent.name}/{path.stem}"] = path.stat().st_mtime_ns
        except OSError:
            pass
    return out


def file_golden_status(golden_dir: Path, tests: Iterable[dict], before: dict[str, int] | None,
                       git: dict[str, str] | None, since: float | None = None) -> dict[str, str]:
    """test name -> written / changed / unchanged, from the golden files of this run's tests:
    what syrupy cannot tell the controller under xdist. A file that is new or whose mtime moved
    since session start (`before`) was written (changed, where git already tracks it); without
    `before`, a file modified after `since` counts as written."""
    out: dict[str, str] = {}
    for t in tests:
        module, _, name = t["nodeid"].rpartition("::")
        path = Path(golden_dir) / Path(module).stem / f"{name}.json"
        try:
            mtime_ns = path.stat().st_mtime_ns
        except OSError:
            continue
        if before is not None:
            touched = before.get(f"{Path(module).stem}/{name}") != mtime_ns
        else:
            touched = since is not None and mtime_ns / 1e9 >= since - 1
        if touched:
            out[name] = "changed" if (git or {}).get(name) == "modified" else "written"
        elif t.get("outcome") == "failed" and failure_kind(t) == "golden":
            out[name] = "failed"                 # differs from its golden (left as it was)
        else:
            out[name] = "unchanged"
    return out


def golden_totals(goldens: dict[str, str]) -> str:
    """One line for every run: how many goldens the checks compared, and how many of them this
    run wrote, changed or found different (all 0 on a run with no changes)."""
    n = Counter(goldens.values())
    return (f"goldens: {len(goldens)} compared; {n['written']} written, {n['changed']} changed, "
            f"{n['failed']} differ, {n['unchanged']} unchanged")


def git_golden_status(golden_dir: Path) -> dict[str, str] | None:
    """test name -> new / modified / deleted for goldens git sees as changed; None without git."""
    golden_dir = Path(golden_dir)
    try:
        proc = subprocess.run(["git", "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", "."],
                              cwd=golden_dir, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    out = {}
    for entry in proc.stdout.split("\0"):
        if len(entry) < 4 or not entry.endswith(".json"):
            continue
        code, path = entry[:2], entry[3:]
        status = "new" if "?" in code or "A" in code else "deleted" if "D" in code else "modified"
        out[Path(path).stem] = status
    return out


def build(tests: Iterable[dict], goldens: dict[str, str] | None, backends: dict[str, dict] | None = None,
          golden_files: dict[str, list[str]] | None = None) -> dict[str, CaseReview]:
    reviews: dict[str, CaseReview] = {}
    for t in tests:
        case = t.get("case") or case_of_test(test_name(t["nodeid"]))
        if not case or not t.get("check"):
            continue
        r = reviews.setdefault(case, CaseReview(case))
        r.location = r.location or t.get("location") or ""
        name = test_name(t["nodeid"])
        params = t.get("params") or {}
        backend = params.get("backend") or "-"
        outcome = t["outcome"]
        r.outcomes[outcome] += 1
        r.checks[(backend, t["check"])][outcome] += 1
        info = t.get("backend_info")
        if isinstance(info, dict) and info.get("backend"):
            r.infos.setdefault(info["backend"], info)
        if outcome == "skipped":
            reason = headline(t.get("message") or "").removeprefix("Skipped: ")
            r.skipped[reason].append(t["check"])
        elif outcome in ("failed", "error"):
            r.failures.append((failure_kind(t), t.get("location") or "", name, headline(t.get("message") or "")))
        elif outcome == "xfailed":
            r.xfailed.append((name, headline(t.get("message") or "")))
    for r in reviews.values():
        for name, info in (backends or {}).items():
            if any(b == name for b, _ in r.checks):
                r.infos.setdefault(name, info)
    if goldens is not None:
        for name, status in goldens.items():
            case = case_of_test(name)
            if case in reviews:
                reviews[case].goldens[status] += 1
                reviews[case].goldens_known = True
        for r in reviews.values():
            r.goldens_known = True
    if golden_files is not None:   # `harness review`: the statuses came from git
        for r in reviews.values():
            r.goldens_vs_git = True
        for case, names in golden_files.items():
            if case in reviews:
                changed = sum(reviews[case].goldens.values())
                reviews[case].goldens["unchanged"] += max(0, len(names) - changed)
    return reviews


# --- formatting ------------------------------------------------------------------------------
def _version(info: dict) -> str:
    parts = []
    for k, v in info.items():
        if k in _HIDDEN_INFO or isinstance(v, (dict, list)) or v in (None, ""):
            continue
        parts.append(f"{k.replace('_', '-')} {v}")
    return ", ".join(parts[:4]) or "version unknown"


def _counts(c: Counter) -> str:
    total = sum(c.values())
    if set(c) == {"passed"}:
        return f"{total}/{total} passed"
    return ", ".join(f"{n} {'FAILED' if k == 'failed' else k}" for k, n in sorted(c.items()))


GOLDEN_HINT = "git add -N golden/ && git diff golden/"


def format_review(r: CaseReview, *, golden_hint: str = GOLDEN_HINT) -> list[str]:
    out = [f"{r.case} ({r.location or 'location unknown'}): " + _counts(r.outcomes)]
    if r.goldens_known:
        g = r.goldens
        if r.goldens_vs_git:
            line = (f"  goldens (git, vs. the last commit): {g['new']} new, {g['modified']} modified, "
                    f"{g['unchanged']} unchanged")
        else:
            line = f"  goldens: {g['written']} written, {g['changed']} changed, {g['unchanged']} unchanged"
        if g["failed"]:
            line += f", {g['failed']} DIFFER from the output (rerun with --update-goldens if intended)"
        if g["deleted"]:
            line += f", {g['deleted']} deleted"
        if g["written"] + g["new"] + g["changed"] + g["modified"] + g["deleted"]:
            line += f"  -> review: {golden_hint}"
        out.append(line)
    else:
        out.append("  goldens: unknown (no syrupy report: xdist run, or no git status)")
    by_backend: dict[str, dict[str, Counter]] = defaultdict(dict)
    for (backend, check), c in sorted(r.checks.items()):
        by_backend[backend][check] = c
    out.append("  backends:")
    for backend, checks in sorted(by_backend.items(), key=lambda kv: (kv[0] == "-", kv[0])):
        label = "(per model)" if backend == "-" else f"{backend}: {_version(r.infos.get(backend, {}))}"
        out.append(f"    {label}")
        text = "; ".join(f"{check} {_counts(c)}" for check, c in checks.items())
        out += textwrap.wrap(text, width=110, initial_indent="      ", subsequent_indent="      ",
                             break_long_words=False, break_on_hyphens=False)
    if r.skipped:
        out.append(f"  skipped ({sum(len(v) for v in r.skipped.values())}), by reason:")
        for reason, checks in sorted(r.skipped.items(), key=lambda kv: -len(kv[1])):
            names = ", ".join(sorted(set(checks)))
            out.append(f"    {len(checks)}x {reason} [{names}]")
    if r.failures:
        kinds = Counter(k for k, *_ in r.failures)
        out.append(f"  failures ({len(r.failures)}: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + "):")
        groups: dict[tuple[str, str, str, str], list[str]] = {}
        for kind, location, name, line in r.failures:
            params = _params_id(name)
            if location and line.startswith(location + ": "):
                line = line[len(location) + 2:]
            for part in params.split(","):
                if part:   # one line for every context that fails the same way
                    line = line.replace(f"'{part}'", "'<context>'")
            groups.setdefault((location, name.split("[")[0], kind, line), []).append(params)
        for i, ((location, func, kind, line), params) in enumerate(groups.items()):
            if i == 12:
                out.append(f"    ... {len(groups) - 12} more groups (reports/results.json)")
                break
            count = f" x{len(params)}" if len(params) > 1 else ""
            out.append(f"    {location} {func}{count} ({kind}): {line}")
            shown = "; ".join(p for p in params[:8] if p) + (f"; ... {len(params) - 8} more" if len(params) > 8 else "")
            if shown:
                out.append(f"      [{shown}]")
        if kinds.get("finding"):
            out.append("    findings are conformance mismatches: confirm each, report it upstream, then declare it in "
                       "the case's known_defects (CONTRIBUTING.md)")
        if kinds.get("setup"):
            out.append("    setup failures: a model file or backend could not be had; the message says why (a "
                       "reference tokenizer transformers cannot build from the GGUF: see CONTRIBUTING.md)")
        if kinds.get("error"):
            out.append("    errors are neither findings nor setup problems: probably a harness bug (full traceback "
                       "in the pytest output above)")
    if r.xfailed:
        out.append(f"  known defects still reproducing: {len(r.xfailed)}")
    return out


def format_short(r: CaseReview) -> str:
    g = r.goldens
    if not r.goldens_known:
        gold = "goldens ?"
    elif r.goldens_vs_git:
        gold = f"goldens {g['new']} new/{g['modified']} modified (git)"
    else:
        gold = f"goldens {g['written']} written/{g['changed']} changed"
    return f"{r.case}: {_counts(r.outcomes)}; {gold}; {len(r.failures)} failure(s), {len(r.skipped)} skip reason(s)"


def render(reviews: dict[str, CaseReview], selected: list[str], *, golden_hint: str = GOLDEN_HINT) -> list[str]:
    lines: list[str] = []
    chosen = [reviews[c] for c in sorted(selected) if c in reviews]
    if len(chosen) > MAX_FULL:
        lines += [format_short(r) for r in chosen]
        lines.append(f"({len(chosen)} cases: `harness review --case ID` shows one in full)")
        return lines
    for r in chosen:
        lines += format_review(r, golden_hint=golden_hint)
    return lines


# --- the terminal summary (called by harness.plugin) -------------------------------------------
def select_cases(reviews: dict[str, CaseReview], restricted: bool, mode: str) -> list[str]:
    if mode in ("0", "off", "no", "false"):
        return []
    if mode in ("1", "all", "yes", "true") or restricted:
        return list(reviews)
    return [c for c, r in reviews.items() if r.goldens["written"]]


def write_review(terminalreporter, config, state: dict) -> None:
    """Print the review section. Never raises: a summary must not break a run."""
    try:
        tests = state.get("tests", [])
        goldens = syrupy_status(config)
        if not goldens:   # xdist: the workers keep syrupy's report; read the golden files instead
            value = config.getoption("--golden-dir", default=None)
            golden_dir = Path(value) if value else Path(config.rootpath) / "golden"
            start = getattr(getattr(terminalreporter, "_session_start", None), "time", None)
            start = start or getattr(terminalreporter, "_sessionstarttime", None)
            goldens = file_golden_status(golden_dir, tests, state.get("golden_mtimes"),
                                         git_golden_status(golden_dir) if golden_dir.is_dir() else None, start)
        if goldens:
            terminalreporter.write_line(golden_totals(goldens))
        reviews = build(tests, goldens, state.get("backends"))
        globs = config.getoption("--case", default=None) or []
        selected = select_cases(reviews, bool(globs), os.environ.get("HARNESS_REVIEW", "auto").lower())
        if globs:   # only the cases asked for (not family-level pseudo-cases that came along)
            selected = [c for c in selected if any(fnmatch.fnmatchcase(c, g) for g in globs)]
        if not selected:
            return
        terminalreporter.section("review")
        for line in render(reviews, selected):
            terminalreporter.write_line(line)
    except Exception as exc:  # noqa: BLE001 - the run's result matters more than its summary
        terminalreporter.write_line(f"(review summary unavailable: {type(exc).__name__}: {exc})")


# --- `harness review` ----------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--case", action="append", help="case id glob (repeatable; default: every case in the results)")
    p.add_argument("--report-dir", type=Path, help="where results.json is (default: <root>/reports)")
    p.add_argument("--golden-dir", type=Path, help="goldens folder (default: <root>/golden)")


def run(ns: argparse.Namespace) -> int:
    root = Path(ns.root)
    results = (ns.report_dir or root / "reports") / "results.json"
    golden_dir = ns.golden_dir or root / "golden"
    try:
        doc = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"harness review: cannot read {results}: {exc}; run the suite first "
              "(harness run --case ID --update-goldens)", file=sys.stderr)
        return 1
    goldens = git_golden_status(golden_dir) if golden_dir.is_dir() else None
    files: dict[str, list[str]] = defaultdict(list)
    if golden_dir.is_dir():
        for p in golden_dir.rglob("*.json"):
            case = case_of_test(p.stem)
            if case:
                files[case].append(p.stem)
    backends = {n: i for n, i in (doc.get("backends") or {}).items() if isinstance(i, dict)}
    reviews = build(doc.get("tests", []), goldens, backends, files if goldens is not None else None)
    selected = [c for c in reviews if not ns.case or any(fnmatch.fnmatchcase(c, g) for g in ns.case)]
    if not selected:
        print(f"harness review: no case in {results} matches {ns.case}", file=sys.stderr)
        return 1
    print(f"results: {results} (finished {doc.get('finished', '?')}, exit status {doc.get('exitstatus', '?')})")
    if goldens is None:
        print("goldens: git status unavailable; counts below are from the results only")
    shown = os.path.relpath(golden_dir)
    for line in render(reviews, selected, golden_hint=f"git add -N {shown} && git diff {shown}"):
        print(line)
    return 0
