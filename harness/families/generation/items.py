"""Generation items: what each case's `checks.generation` expands into (one item per check, model,
backend and mode)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator

from harness.cases.model import Case, CaseSet
from harness.families.items import GENERATORS, Item


FAMILY = "generation"


MIN_ACCEPT_REJECT = 20       # accept + reject strings per grammar


WHITESPACE_RUN = 8           # this much trailing whitespace at the token limit = looping on whitespace


OOV_PROBES = ("prompt", "detokenize", "grammar")


MASK_SAMPLE = 1500           # tokens per grammar whose mask verdict is re-checked with the engine


# =====================================================================================
# items
# =====================================================================================
@dataclass(frozen=True)
class GenItem(Item):
    """An Item with the id `case,kind=entry,variant...,backend,stream|nostream` (no ":": syrupy drops it
    from golden file names)."""
    kind: str = ""                   # grammar | stop | special | masks | oov | chat-template
    entry_id: str = ""
    mode: str = ""                   # "stream" | "nostream" | "" (not a generation)
    entry: Any = field(default=None, compare=False, hash=False)
    line: int = 0

    @property
    def id(self) -> str:
        parts = [self.case.id, f"{self.kind}={self.entry_id}" if self.entry_id else self.kind]
        parts += [v for _, v in self.extra]
        if self.backend is not None:
            parts.append(self.backend)
        if self.mode:
            parts.append(self.mode)
        return ",".join(parts)

    @property
    def params(self) -> dict[str, str]:
        p = super().params
        p["stream"] = self.mode
        if self.entry_id:
            p[self.kind] = self.entry_id
        return p

    @property
    def stream(self) -> bool:
        return self.mode == "stream"

    def location(self) -> str:
        return f"{self.case.file}:{self.line or self.case.line}"

    def option(self, key: str, default: Any = None) -> Any:
        """An entry's option, else the family-wide one, else `default`."""
        if isinstance(self.entry, dict) and key in self.entry:
            return self.entry[key]
        return self.case.check_options(FAMILY).get(key, default)

    @property
    def max_tokens(self) -> int:
        return int(self.option("max_tokens", 32))


MODES = ("nostream", "stream")
CPP_SCHEMA_ENGINE = "llama.cpp-json-schema"


def _cases(cases: CaseSet) -> list[Case]:
    return [c for c in cases.cases if c.kind == "model" and c.has_weights and c.check_options(FAMILY)]


def _generators(available: Iterable[str]) -> list[str]:
    available = list(available)
    return [b for b in GENERATORS if b in available]


@lru_cache(maxsize=64)
def _marks(path: str, mtime_ns: int):
    from harness.cases.yamlio import load_file
    return load_file(Path(path))


def entry_line(cases: CaseSet, case: Case, path: tuple) -> int:
    """The line of checks.generation.<path> in the case file (the case's line if unknown)."""
    file = cases.root.parent / case.file
    try:
        located = _marks(str(file), file.stat().st_mtime_ns)
    except Exception:  # the case already validated; a line number is only a convenience
        return case.line
    return located.where(("checks", FAMILY, *path))[0]


def _entries(cases: CaseSet, case: Case, key: str) -> Iterator[tuple[dict, int]]:
    for i, entry in enumerate(case.check_options(FAMILY).get(key) or []):
        yield entry, entry_line(cases, case, (key, i))


def engine_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    """Accept/reject strings through the grammar engine, no model involved."""
    out = []
    for c in _cases(cases):
        for g, line in _entries(cases, c, "grammars"):
            engines = ["llama.cpp"] if "gbnf" in g else ["jsonschema", "llama-cpp-python-gbnf"]
            out += [GenItem(c, f"{FAMILY}.grammar_engine", extra=(("engine", e),), kind="grammar",
                            entry_id=g["id"], entry=g, line=line) for e in engines]
            if "json_schema" in g and "llama.cpp-chat" in available:
                # llama.cpp's own C++ converter (common/json-schema-to-grammar.cpp, through the chat
                # probe): what llama-server uses for json_schema / response_format, compared on
                # the same strings with llama-cpp-python's Python port of it
                out.append(GenItem(c, f"{FAMILY}.grammar_engine", extra=(("engine", CPP_SCHEMA_ENGINE),),
                                   kind="grammar", entry_id=g["id"], entry=g, line=line,
                                   backend="llama.cpp-chat"))
    return out


def _endpoints(entry: dict) -> list[str]:
    return ["complete", "chat"] if "messages" in entry else ["complete"]


def grammar_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [GenItem(c, f"{FAMILY}.grammar", backend=b, extra=(("endpoint", ep),), kind="grammar",
                    entry_id=g["id"], mode=m, entry=g, line=line)
            for c in _cases(cases) for g, line in _entries(cases, c, "grammars")
            for ep in _endpoints(g) for b in _generators(available) for m in MODES]


def agree_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [GenItem(c, f"{FAMILY}.endpoints_agree", backend=b, extra=(("endpoint", "agree"),),
                    kind="grammar", entry_id=g["id"], entry=g, line=line)
            for c in _cases(cases) for g, line in _entries(cases, c, "grammars") if "messages" in g
            for b in _generators(available)]


def stop_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [GenItem(c, f"{FAMILY}.stop", backend=b, kind="stop", entry_id=s["id"], mode=m, entry=s, line=line)
            for c in _cases(cases) for s, line in _entries(cases, c, "stops")
            for b in _generators(available) for m in MODES]


def special_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [GenItem(c, f"{FAMILY}.special", backend=b, extra=(("render", r),), kind="special",
                    entry_id=s["id"], mode=m, entry=s, line=line)
            for c in _cases(cases) for s, line in _entries(cases, c, "special_rendering")
            for r in ("plain", "special") for b in _generators(available) for m in MODES]


def masks_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [GenItem(c, f"{FAMILY}.masks", backend=b, kind="masks",
                    line=entry_line(cases, c, ("eog_ids",)))
            for c in _cases(cases) for b in _generators(available)]


def oov_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [GenItem(c, f"{FAMILY}.out_of_vocab", backend=b, kind="oov", entry_id=p)
            for c in _cases(cases) for p in OOV_PROBES for b in _generators(available)]


def template_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    out = []
    for c in _cases(cases):
        wanted = c.check_options(FAMILY).get("contexts") or []
        contexts = [cases.contexts[w] for w in wanted if w in cases.contexts]
        line = entry_line(cases, c, ("contexts",))
        out += [GenItem(c, f"{FAMILY}.chat_template", context=ctx, backend=b, kind="chat-template",
                        entry_id=ctx.id, mode=m, entry={"messages": ctx.messages}, line=line)
                for ctx in contexts for b in _generators(available) for m in MODES]
    return out
