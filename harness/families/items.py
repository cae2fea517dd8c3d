"""Expansion of validated cases into check items with stable, readable ids.

An id reads `case,context,gen|nogen,backend` (parts omitted where they do not apply),
e.g. `smollm2-135m-instruct,tool-round-trip,gen,llama-cpp-python` (syrupy splits node ids on "::", so parts are joined with ","). Each item also
carries the parameters that a case's `known_defects[].where` globs are matched against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from harness.cases.model import Case, CaseSet, Context

REFERENCE_RENDERER = "hf"
RENDERERS = ("hf", "llama-cpp-python", "llama.cpp-builtin", "llama-server", "llama.cpp-chat")
TOKENIZERS = ("hf", "llama-cpp-python", "llama-server")
GENERATORS = ("llama-cpp-python", "llama-server", "openai", "llama-cpp-python-server")
# llama.cpp's chat layer without weights (harness/backends/llama_chat.py): a renderer (its C++
# Jinja engine, as llama-server renders), its chat params, and its C++ JSON-schema converter in
# generation.grammar_engine
CHAT_LAYER = ("llama.cpp-chat",)
ALL_BACKENDS = tuple(dict.fromkeys(RENDERERS + TOKENIZERS + GENERATORS + CHAT_LAYER))


@dataclass(frozen=True)
class Item:
    case: Case
    check: str                              # "family.check"
    context: Context | None = None
    gen: bool | None = None
    backend: str | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())

    @property
    def id(self) -> str:
        parts = [self.case.id]
        if self.context is not None:
            parts.append(self.context.id)
        if self.gen is not None:
            parts.append("gen" if self.gen else "nogen")
        parts += [v for _, v in self.extra]
        if self.backend is not None:
            parts.append(self.backend)
        return ",".join(parts)

    @property
    def params(self) -> dict[str, str]:
        p = {"case": self.case.id, "backend": self.backend or "", "renderer": self.backend or "",
             "context": self.context.id if self.context else "",
             "gen": "" if self.gen is None else ("gen" if self.gen else "nogen"), **dict(self.extra)}
        if self.case.template_path is not None:
            p["template"] = self.case.template_path.stem
        return p


def contexts_for(case: Case, family: str) -> Iterable[Context]:
    wanted = case.check_options(family).get("contexts")
    return [c for c in case.contexts if not wanted or c.id in wanted]


# Renderers that render only with a model's weights loaded: no items for a bare template (a
# template set's member), whose renders they could only skip. llama.cpp's own engine renders
# those templates without weights as llama.cpp-chat; llama-server stays for the model cases.
MODEL_ONLY_RENDERERS = frozenset({"llama-server"})


def renderers_for(case: Case, available: Iterable[str]) -> list[str]:
    wanted = case.check_options("templates").get("renderers")
    bare = case.kind != "model"
    return [r for r in RENDERERS if r in available and (not wanted or r in wanted)
            and not (bare and r in MODEL_ONLY_RENDERERS)]


def render_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    available = list(available)
    return [Item(c, "templates.render", ctx, gen, r)
            for c in cases.cases if c.expects_template
            for ctx in contexts_for(c, "templates") for gen in ctx.add_generation_prompt
            for r in renderers_for(c, available)]


def agree_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [Item(i.case, "templates.agree", i.context, i.gen, i.backend)
            for i in render_items(cases, available) if i.backend != REFERENCE_RENDERER]


def prompt_token_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [Item(c, "templates.prompt_tokens", ctx, gen, b)
            for c in cases.cases if c.kind == "model" and c.expects_template
            for ctx in contexts_for(c, "templates") for gen in ctx.add_generation_prompt
            for b in TOKENIZERS if b in available and b != REFERENCE_RENDERER]


def model_items(check: str, predicate: Callable[[Case], bool]) -> Callable[[CaseSet, Iterable[str]], list[Item]]:
    def expand(cases: CaseSet, available: Iterable[str]) -> list[Item]:
        return [Item(c, check) for c in cases.cases if c.kind == "model" and predicate(c)]
    return expand
