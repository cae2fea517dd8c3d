"""`harness lint`: every problem in the case files, as `file:line:col: key.path: message`.

Errors (exit status 1):
  - everything collection reports (harness.cases.discover): YAML syntax, schema (unknown keys
    with "did you mean", wrong types, missing keys), dangling references to contexts and tool
    sets, duplicate case ids;
  - known_defects whose description does not say what is wrong: placeholder text (TODO, TBD,
    FIXME, XXX, the README's example sentence) or too short to recognise a fix by (fewer than
    MIN_WORDS words);
  - known_defects whose `check:` names no check of its family, whose `where:` uses a key that
    is no item parameter (the family registry, harness/families), or whose `where:` globs match none of the case's
    contexts, backends or gen values (a defect that can never apply).
Warnings (exit status 0, or 1 with --strict):
  - shared contexts and tool sets that no case uses;
  - a model file with neither a hub repo nor a PyPI mirror (only machines that already have it
    can run the case);
  - files in cases/ that the harness ignores (*.yml).

Unused shared files are warnings rather than errors because a conversation is often added
in one change and used in the next; CI and `pytest tests` run lint with --strict.
Nothing heavy is imported: lint costs what collection costs (YAML and jsonschema).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.cases.globs import glob_match_any
from harness.errors import CaseError, Problem, format_path
from harness.families import COMMON_WHERE_KEYS, FAMILIES, checked_families

MIN_WORDS = 6
PLACEHOLDER = re.compile(r"\b(TODO|TBD|FIXME|XXX|TKTK|lorem ipsum|fill (this )?in|describe (it|this|the defect) here)\b"
                         r"|\?\?\?|^\W*$", re.I)
EXAMPLE_TEXTS = ("what is wrong upstream, precisely enough to recognise a fix",
                 "which stack does what wrong, precisely enough that someone can tell when it is fixed")


@dataclass(frozen=True)
class Finding:
    problem: Problem
    warning: bool = False

    def __str__(self) -> str:
        p = self.problem
        where = p.file + (f":{p.line}:{p.column}" if p.line else "")
        kind = "warning: " if self.warning else ""
        return f"{where}: {format_path(p.path)}: {kind}{p.message}"


# --- what the harness knows about checks and parameters: the family registry ------------------
def known_checks() -> dict[str, set[str]]:
    """family -> check names (harness/families/__init__.py FAMILIES)."""
    return {f.name: set(f.checks) for f in checked_families()}


def where_keys() -> dict[str, frozenset[str]]:
    """family -> every key a `where:` may use: the common parameters (plus those Item.params
    really produces), the expanders' extra parameters and the family's own (the registry).
    A family whose keys the registry does not list is not checked (lenient)."""
    common = set(COMMON_WHERE_KEYS)
    try:   # the parameters Item.params really produces
        from harness.families.items import Item
        common |= set(_item_param_keys(Item))
    except Exception:  # the items module cannot be imported (broken tree): the registry is enough to lint
        pass
    return {f.name: f.all_where_keys(frozenset(common)) for f in FAMILIES if f.where_keys is not None}


def _item_param_keys(item_cls) -> list[str]:
    from harness.cases.model import Case
    fake = Case(id="x", kind="template", description="", file="", line=0, raw={}, contexts=(), known_defects=(),
                template_path=Path("x.jinja"))
    return list(item_cls(fake, "x.y").params)


def _known_backends() -> set[str]:
    from harness.backends.base import backend_names
    from harness.families.items import ALL_BACKENDS
    return set(ALL_BACKENDS) | set(backend_names())


# --- the checks --------------------------------------------------------------------------------
def _words(text: str) -> int:
    return len(re.findall(r"[\w'’-]+", text))


def check_description(text: str) -> str | None:
    """Why a known defect's description does not say what is wrong, or None."""
    flat = " ".join(str(text).split())
    if PLACEHOLDER.search(flat):
        return f"placeholder text {flat[:40]!r}: say what is wrong upstream, precisely enough to recognise a fix"
    if any(flat.lower().rstrip(".").startswith(e) for e in EXAMPLE_TEXTS):
        return "this is the example sentence: say what is wrong upstream, precisely enough to recognise a fix"
    if _words(flat) < MIN_WORDS:
        return (f"{flat!r} is too short to say what is wrong ({_words(flat)} words; at least {MIN_WORDS}): "
                "which stack does what, and what it should do")
    return None


def _lint_defects(located, case_contexts: list[str], cases: list, checks: dict[str, set[str]],
                  keys: dict[str, frozenset[str]], backends: set[str]) -> list[Finding]:
    out = []
    data = located.data
    case_ids = [c.id for c in cases] or [str(data.get("id"))]
    templates = [c.template_path.stem for c in cases if c.template_path is not None]
    for i, kd in enumerate(data.get("known_defects") or []):
        base = ("known_defects", i)
        why = check_description(kd.get("description", ""))
        if why:
            out.append(Finding(located.problem((*base, "description"), why)))
        family, _, check = str(kd.get("check", "")).partition(".")
        if family not in checks:
            close = difflib.get_close_matches(family, checks, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (families: {', '.join(sorted(checks))})"
            out.append(Finding(located.problem((*base, "check"), f"no check family '{family}'{hint}")))
        elif check and checks[family] and check not in checks[family]:
            close = difflib.get_close_matches(check, checks[family], n=1)
            hint = (f" (did you mean '{family}.{close[0]}'?)" if close
                    else f" (checks: {', '.join(sorted(checks[family]))})")
            out.append(Finding(located.problem((*base, "check"), f"no check '{family}.{check}'{hint}")))
        allowed = keys.get(family)
        values = {"context": case_contexts, "gen": ["gen", "nogen"], "backend": backends, "renderer": backends,
                  "case": case_ids, "template": templates}
        for key, pattern in (kd.get("where") or {}).items():
            path = (*base, "where", key)
            if allowed is not None and key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (parameters: {', '.join(sorted(allowed))})"
                out.append(Finding(located.problem(path, f"'{key}' is not a parameter of any check item{hint}")))
            elif key in values and values[key] and not glob_match_any(pattern, values[key]):
                shown = ", ".join(sorted(values[key]))
                out.append(Finding(located.problem(
                    path, f"{pattern!r} matches no {key} of this case ({shown}): the defect can never apply")))
    return out


def lint(cases_dir: Path) -> list[Finding]:
    from harness.cases.model import DEFAULT_CONTEXTS, discover
    from harness.cases.yamlio import load_file

    cases_dir = Path(cases_dir)
    if not cases_dir.is_dir():
        return [Finding(Problem(str(cases_dir), 0, 0, (), "no such folder"))]
    found = discover(cases_dir)
    findings: list[Finding] = []
    seen_dupes: set[tuple[str, int]] = set()
    for err in found.errors:
        for p in err.problems:
            if p.message.startswith("duplicate case id"):
                # a duplicated template set repeats this once per template: once per place is enough
                if (p.file, p.line) in seen_dupes:
                    continue
                seen_dupes.add((p.file, p.line))
            findings.append(Finding(p))

    checks, keys, backends = known_checks(), where_keys(), _known_backends()
    used_contexts = set(found.used_contexts)
    by_file: dict[str, list] = {}
    for case in found.cases:
        by_file.setdefault(case.file, []).append(case)
    root = cases_dir.resolve()
    for path in sorted(root.glob("*.yaml")):
        display = _display(path, root)
        try:
            located = load_file(path, display)
        except CaseError:
            continue           # already reported by discover
        data = located.data
        if not isinstance(data, dict):
            continue
        refs = data.get("contexts") if isinstance(data.get("contexts"), list) else list(DEFAULT_CONTEXTS)
        used_contexts.update(r for r in refs if isinstance(r, str))   # broken files still use their contexts
        if found.errors_for(display) is not None and display not in by_file:
            continue           # invalid: the schema errors say what is wrong first
        findings += _lint_defects(located, [r for r in refs if isinstance(r, str)], by_file.get(display, []),
                                  checks, keys, backends)
        gguf = (data.get("model") or {}).get("gguf") if isinstance(data.get("model"), dict) else None
        if isinstance(gguf, dict) and not gguf.get("hub") and not gguf.get("mirror"):
            findings.append(Finding(located.problem(("model", "gguf"), "neither a hub repo nor a PyPI mirror: only "
                                                    "machines that already have this file can run the case"),
                                    warning=True))

    used_toolsets = {c.tools.id for c in found.contexts.values() if c.tools is not None}
    for path in sorted((root / "contexts").glob("*.yaml")):
        try:
            data = load_file(path).data
            if isinstance(data, dict) and isinstance(data.get("tools"), str):
                used_toolsets.add(data["tools"])
        except CaseError:
            pass
    for cid, ctx in sorted(found.contexts.items()):
        if cid not in used_contexts:
            findings.append(Finding(Problem(ctx.file, ctx.line, 1, ("id",),
                                            f"shared context '{cid}' is used by no case"), warning=True))
    for tid, ts in sorted(found.toolsets.items()):
        if tid not in used_toolsets:
            findings.append(Finding(Problem(ts.file, 1, 1, ("id",), f"tool set '{tid}' is used by no context"),
                                    warning=True))
    for sub in ("", "contexts", "tools"):
        for path in sorted((root / sub).glob("*.yml")):
            findings.append(Finding(Problem(_display(path, root), 0, 0, (),
                                            "ignored: case files must end in .yaml"), warning=True))
    findings.sort(key=lambda f: (f.problem.file, f.problem.line, f.problem.column, f.warning))
    return findings


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.parent))
    except ValueError:
        return str(path)


# --- command line --------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", type=Path, help="cases folder (default: <root>/cases)")
    p.add_argument("--strict", action="store_true", help="warnings (unused shared files, unpinned sources) "
                                                         "fail too")


def run(ns: argparse.Namespace) -> int:
    cases_dir = Path(os.path.relpath(ns.cases or Path(ns.root) / "cases"))
    findings = lint(cases_dir)
    for f in findings:
        print(f)
    errors = sum(not f.warning for f in findings)
    warnings = len(findings) - errors
    failed = errors or (ns.strict and warnings)
    if findings:
        print(f"harness lint: {errors} error(s), {warnings} warning(s) in {cases_dir}"
              + (" (--strict: warnings fail)" if ns.strict and warnings else ""), file=sys.stderr)
    else:
        print(f"harness lint: {cases_dir}: no problems", file=sys.stderr)
    return 1 if failed else 0
