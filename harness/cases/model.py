"""Discover, validate and expand case files into Case objects with stable, readable ids.

    cases/*.yaml            one file per model (kind: model) or per template set
    cases/contexts/*.yaml   shared conversations, referred to by id
    cases/tools/*.yaml      shared tool sets, referred to by id from contexts
    cases/grammars/, stops/, toolcall-generation/   shared generation pieces (harness/cases/shared.py)

A broken file yields a CaseError for that file only; every other case still loads.
Loading is cheap (YAML and jsonschema only): nothing heavy is imported or downloaded here.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from harness.cases.globs import where_matches
from harness.errors import CaseError, Problem
from harness.cases.schema import CASE_SCHEMA, CONTEXT_SCHEMA, TOOLSET_SCHEMA, validate
from harness.cases.yamlio import Located, load_file

DEFAULT_CONTEXTS = ("single-user", "system-user", "multi-turn", "tool-round-trip")


@dataclass(frozen=True)
class ToolSet:
    id: str
    tools: list[dict[str, Any]]
    file: str


@dataclass(frozen=True)
class Context:
    id: str
    description: str
    messages: list[dict[str, Any]]
    tools: ToolSet | None
    add_generation_prompt: tuple[bool, ...]
    file: str
    line: int

    @property
    def uses_tools(self) -> bool:
        return self.tools is not None or any(m.get("tool_calls") or m["role"] == "tool" for m in self.messages)


@dataclass(frozen=True)
class KnownDefect:
    check: str                      # "templates" or "templates.agree"
    where: dict[str, str]           # glob per item parameter
    description: str
    reported: str | None
    file: str
    line: int
    match: str | None = None        # regex the Mismatch message must contain

    def explains(self, message: str) -> bool:
        return self.match is None or re.search(self.match, message) is not None

    def applies_to(self, check: str) -> bool:
        """Declared for this check or for its whole family (its `where:` globs decide the items)."""
        return self.check in (check, check.split(".")[0])

    def reason(self) -> str:
        where = f" [{self.reported}]" if self.reported else ""
        return f"known defect ({self.file}:{self.line}): {self.description}{where}"


@dataclass(frozen=True)
class Case:
    """One model (or one template of a template set), validated."""
    id: str
    kind: str                       # "model" | "template"
    description: str
    file: str                       # display path, e.g. cases/smollm2.yaml
    line: int
    raw: dict[str, Any]             # the validated YAML, for families' own options
    contexts: tuple[Context, ...]
    known_defects: tuple[KnownDefect, ...]
    template_path: Path | None = None     # kind == "template"
    bos_token: str | None = None
    eos_token: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def model(self) -> dict[str, Any] | None:
        return self.raw.get("model")

    @property
    def has_weights(self) -> bool:
        return bool(self.model and self.model.get("weights", True))

    @property
    def expects_template(self) -> bool:
        if self.kind == "template":
            return True
        return (self.model or {}).get("chat_template", "embedded") == "embedded"

    def check_options(self, family: str) -> dict[str, Any]:
        return (self.raw.get("checks") or {}).get(family) or {}

    def location(self) -> str:
        return f"{self.file}:{self.line}"

    def __repr__(self) -> str:
        # pytest prints a failing check's arguments (an Item, so its Case) in the report, through
        # saferepr, which builds the whole repr before cutting it: the generated one spelled out
        # the raw YAML and every known defect, for every xfail
        return f"Case({self.id!r}, {self.location()})"

    def defect_for(self, check: str, params: dict[str, str]) -> KnownDefect | None:
        """The first declared defect (in file order) for this check whose `where:` matches (each
        value a glob, or several separated by "|")."""
        return next((d for d in self._defects_of(check) if where_matches(d.where, params)), None)

    def _defects_of(self, check: str) -> tuple[KnownDefect, ...]:
        """The defects declared for `check` or its family, in file order; kept per check (a
        template set's case has hundreds of defects over a few checks, and every item asks)."""
        by_check = self.__dict__.get("_by_check")
        if by_check is None:
            by_check = {}
            object.__setattr__(self, "_by_check", by_check)     # a cache, not a field (frozen)
        found = by_check.get(check)
        if found is None:
            found = by_check[check] = tuple(d for d in self.known_defects if d.applies_to(check))
        return found


@dataclass
class CaseSet:
    root: Path
    cases: list[Case] = field(default_factory=list)
    errors: list[CaseError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)        # every case file seen, valid or not
    contexts: dict[str, Context] = field(default_factory=dict)
    toolsets: dict[str, ToolSet] = field(default_factory=dict)
    used_contexts: set[str] = field(default_factory=set)
    pieces: Any = None                     # shared generation pieces (harness.cases.shared.Pieces)
    used_pieces: set[str] = field(default_factory=set)      # their files that a case refers to

    def __repr__(self) -> str:
        # a check's `harness_cases` argument, printed in each failure's report: the generated repr
        # was every case of the run (about 0.2 s per xfail of a full run)
        return f"CaseSet({str(self.root)!r}, {len(self.cases)} cases, {len(self.errors)} errors)"

    def by_id(self, case_id: str) -> Case:
        for c in self.cases:
            if c.id == case_id:
                return c
        raise KeyError(case_id)

    def errors_for(self, file: str) -> CaseError | None:
        return next((e for e in self.errors if e.file == file), None)


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.parent))
    except ValueError:
        return str(path)


def _missing_ref(located: Located, path: tuple, kind: str, name: str, known: Iterator[str]) -> Problem:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known) or 'none'})"
    return located.problem(path, f"unknown {kind} '{name}'{hint}")


def _load_shared(root: Path, sub: str, schema: dict, out: CaseSet) -> list[tuple[Located, str]]:
    loaded = []
    for path in sorted((root / sub).glob("*.yaml")):
        display = _display(path, root)
        try:
            located = load_file(path, display)
            problems = validate(located, schema)
            if not problems and located.data["id"] != path.stem:
                problems = [located.problem(("id",), f"id '{located.data['id']}' must match the file name "
                                                     f"'{path.stem}'")]
            if problems:
                raise CaseError(problems)
            loaded.append((located, display))
        except CaseError as exc:
            out.errors.append(exc)
            out.files.append(display)
    return loaded


def discover(root: Path, *, select: list[str] | None = None) -> CaseSet:
    """Load every case under `root`. `select`: case-id globs to keep (others are not expanded)."""
    root = Path(root).resolve()
    out = CaseSet(root=root)
    for located, display in _load_shared(root, "tools", TOOLSET_SCHEMA, out):
        d = located.data
        out.toolsets[d["id"]] = ToolSet(d["id"], d["tools"], display)
    for located, display in _load_shared(root, "contexts", CONTEXT_SCHEMA, out):
        d = located.data
        tools = None
        if "tools" in d:
            tools = out.toolsets.get(d["tools"])
            if tools is None:
                out.errors.append(CaseError([_missing_ref(located, ("tools",), "tool set", d["tools"],
                                                          iter(out.toolsets))]))
                continue
        last_is_assistant = d["messages"][-1]["role"] == "assistant"
        gen = tuple(d.get("add_generation_prompt") or ((False,) if last_is_assistant else (True, False)))
        out.contexts[d["id"]] = Context(d["id"], d["description"], d["messages"], tools, gen, display,
                                        located.where(())[0])
    from harness.cases.shared import load_pieces
    out.pieces = load_pieces(root, _load_shared, out)
    for path in sorted(root.glob("*.yaml")):
        display = _display(path, root)
        out.files.append(display)
        try:
            out.cases.extend(_load_case(path, display, out, select))
        except CaseError as exc:
            out.errors.append(exc)
    ids: dict[str, str] = {}
    for case in out.cases:
        if case.id in ids:
            out.errors.append(CaseError([Problem(case.file, case.line, 1, ("id",),
                                                 f"duplicate case id '{case.id}' (also in {ids[case.id]})")]))
        ids.setdefault(case.id, case.location())
    return out


def _load_case(path: Path, display: str, out: CaseSet, select: list[str] | None) -> list[Case]:
    located = load_file(path, display)
    problems = validate(located, CASE_SCHEMA)
    if problems:
        raise CaseError(problems)
    from harness.cases.shared import resolve
    d, problems, used_pieces = resolve(located, out.pieces)
    context_ids = d.get("contexts") or list(DEFAULT_CONTEXTS)
    contexts = []
    for i, cid in enumerate(context_ids):
        if cid not in out.contexts:
            problems.append(_missing_ref(located, ("contexts", i) if "contexts" in d else ("id",), "context",
                                         cid, iter(out.contexts)))
        else:
            contexts.append(out.contexts[cid])
    for family, opts in (d.get("checks") or {}).items():
        for i, cid in enumerate((opts or {}).get("contexts", [])):
            if cid not in out.contexts:
                problems.append(_missing_ref(located, ("checks", family, "contexts", i), "context", cid,
                                             iter(out.contexts)))
    defects = []
    for i, kd in enumerate(d.get("known_defects", [])):
        if "match" in kd:
            try:
                re.compile(kd["match"])
            except re.error as exc:
                problems.append(located.problem(("known_defects", i, "match"), f"not a regular expression: {exc}"))
        defects.append(KnownDefect(kd["check"], dict(kd.get("where") or {}), kd["description"].strip(),
                                   kd.get("reported"), display, located.where(("known_defects", i))[0],
                                   kd.get("match")))
    if problems:
        raise CaseError(problems)
    out.used_contexts.update(c.id for c in contexts)
    out.used_pieces.update(used_pieces)
    common = dict(description=d["description"], file=display, raw=d, contexts=tuple(contexts),
                  known_defects=tuple(defects), tags=tuple(d.get("tags", ())))
    if d.get("kind", "model") == "model":
        if select and not any(fnmatch.fnmatchcase(d["id"], s) for s in select):
            return []
        return [Case(id=d["id"], kind="model", line=located.where(("id",))[0], **common)]
    return _expand_template_set(located, select, common)


def _expand_template_set(located: Located, select: list[str] | None, common: dict) -> list[Case]:
    from harness.models.sources import sdist_glob
    spec = located.data["templates"]
    try:
        paths = sdist_glob(spec["from"]["pypi_sdist"], spec["from"]["glob"])
    except OSError as exc:
        raise CaseError([located.problem(("templates", "from"), f"cannot list templates: {exc}")]) from None
    if not paths:
        raise CaseError([located.problem(("templates", "from", "glob"), "matches no file")])
    cases = []
    for p in paths:
        case_id = f"{located.data['id']}@{p.stem}"
        if select and not any(fnmatch.fnmatchcase(case_id, s) for s in select):
            continue
        bos, eos = spec.get("bos_token", ""), spec.get("eos_token", "")
        for ov in spec.get("overrides", []):
            if fnmatch.fnmatchcase(p.stem, ov["match"]):
                bos, eos = ov.get("bos_token", bos), ov.get("eos_token", eos)
        cases.append(Case(id=case_id, kind="template", line=located.where(("templates",))[0],
                          template_path=p, bos_token=bos, eos_token=eos, **common))
    return cases
