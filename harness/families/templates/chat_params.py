"""templates.chat_params: what llama.cpp's chat layer derives from a template for a generation
(common_chat_templates_apply through the chat probe, backend llama.cpp-chat), as llama-server
derives it for a chat request: the chat format (which parser reads the model's output), the
grammar and whether it is lazy, its triggers, the preserved tokens, the additional stops, the
generation prompt and the thinking tags.

The golden is all of it, per template (or model case) and context, so a llama.cpp upgrade shows in
`harness compare` exactly which templates changed parser, grammar, triggers or stops. A finding
on top of the golden: the rendered prompt does not end with the generation prompt llama.cpp
derived. The server's parser reads the model's output as if it followed that text (the PEG
parsers start from generation_prompt), so a mismatch means every reply is parsed from the wrong
starting point. A refusal of llama.cpp (not the template's own raise_exception) or a crash of the
chat layer is a finding too.
"""

from __future__ import annotations

from typing import Any, Iterable

from harness.cases.model import CaseSet
from harness.families.items import Item, contexts_for, renderers_for
from harness.outcome import Outcome

CHECK = "templates.chat_params"
BACKEND = "llama.cpp-chat"
# keys of the probe's params reply (harness/native/chat_probe.cpp params_json), in golden order
PARAM_KEYS = ("format", "grammar_lazy", "grammar_triggers", "preserved_tokens", "additional_stops",
              "generation_prompt", "supports_thinking", "thinking_start_tag", "thinking_end_tags",
              "has_parser", "grammar")


def chat_params_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    available = list(available)
    return [Item(c, CHECK, ctx, True, BACKEND)
            for c in cases.cases if c.expects_template and BACKEND in renderers_for(c, available)
            for ctx in contexts_for(c, "templates") if True in ctx.add_generation_prompt]


def params_golden(params: dict[str, Any]) -> dict[str, Any]:
    """The params, the grammar as its list of lines (one GBNF rule each), so that a changed rule
    is one line of the golden's diff."""
    out = {k: params.get(k) for k in PARAM_KEYS}
    out["grammar"] = (out["grammar"] or "").splitlines()
    return out


def check_chat_params(rt, item: Item, backend) -> Outcome:
    from harness.backends.llama_chat import ProbeCrashed, ProbeError

    req = rt.render_request(item.case, item.context, True)
    try:
        params = backend.render_chat(req)["params"]
    except ProbeError as exc:
        if "Jinja Exception: " in str(exc):          # the template refused the conversation itself
            return Outcome(golden={"rejected_by_template": str(exc).rsplit("Jinja Exception: ", 1)[1]})
        return Outcome(golden={"error": str(exc)},
                       problems=[f"llama.cpp's chat layer refuses '{item.context.id}': {exc}"])
    except ProbeCrashed as exc:
        return Outcome(golden={"crashed": True},
                       problems=[f"llama.cpp's chat layer crashed on '{item.context.id}': {exc}"])
    out = Outcome(golden=params_golden(params), header=f"{item.case.location()}: llama.cpp's chat params "
                                                        f"for '{item.context.id}'")
    prompt, gen_prompt = backend.render_chat(req)["prompt"], params.get("generation_prompt") or ""
    if not prompt.endswith(gen_prompt):
        out.problems.append(f"the rendered prompt does not end with the generation prompt llama.cpp derived "
                            f"({gen_prompt!r}); it ends {prompt[-len(gen_prompt) - 20:]!r}")
    return out
