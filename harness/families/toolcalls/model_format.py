"""toolcalls.model_format: does the model, unforced, write its own template's wire format when
it decides to call a tool? A property of the model, reported as such; not a stack finding.

For each case with a tool-call generation setup (checks.toolcalls.generation) and each of its
conversations that offer tools and end where the assistant speaks next (tools offered; a
conversation where it already called a tool once; a system prompt), llama-server is asked
through its chat API with tools offered and tool_choice "auto" (greedy), the model's own
template (--jinja). llama-server's own parser turns the template's wire format into
`tool_calls`, so this is also where a real, unforced tool call goes end to end through it.

The answer is classified:
    template-format   a tool call in the template's wire format (the server parsed it)
    other-format      a call the template did not ask for: a JSON object with "name" and
                      "arguments" in the content (e.g. a ```json fenced block)
    no-call           a plain answer

The classification goes into results.json (`details.model_behaviour`) and the report's
"Model behaviour" section, apart from the stack findings. The check fails (a Mismatch, so it
can be declared) only on a stack disagreement: the reply's content still holds the wire
format's own call markers, which the server's parser should have turned into tool_calls.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from harness.cases.model import CaseSet
from harness.families.items import Item

CHECK = "toolcalls.model_format"
BACKEND = "llama-server"
MAX_TOKENS = 32         # a call opens within the first tokens; the verdict needs no more (suite budget)
# the opening marker of each wire format's call, as the template asks for it
MARKERS = {"hermes": "<tool_call>"}
_JSON_CALL = re.compile(r'\{\s*"name"\s*:\s*"[^"]+"\s*,\s*"arguments"\s*:', re.S)


def contexts_for(case) -> list:
    """The case's contexts that offer tools and end where the assistant answers next."""
    return [c for c in case.contexts
            if c.tools is not None and True in c.add_generation_prompt and c.messages[-1]["role"] in ("user", "tool")]


def model_format_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    from harness.families.toolcalls.checks import generation_config
    if BACKEND not in available:
        return []
    out = []
    for c in cases.cases:
        cfg = generation_config(c)
        if not cfg or not c.has_weights or c.kind != "model" or cfg.get("format") not in MARKERS:
            continue
        if "tools" not in c.tags:   # new-case's tag: the model's own template renders tools (else no
            continue                # wire format of its own to write: SmolLM2 is shown tools by another template)
        out += [Item(c, CHECK, ctx, None, BACKEND, (("format", cfg["format"]), ("tool_choice", "auto")))
                for ctx in contexts_for(c)]
    return out


def classify(text: str, tool_calls: list[dict[str, Any]] | None, marker: str) -> str:
    if tool_calls:
        return "template-format"
    if marker in (text or ""):
        return "template-format-unparsed"
    if _JSON_CALL.search(text or ""):
        return "other-format"
    return "no-call"


def check_model_format(rt, item: Item, backend):
    """(Outcome, behaviour record)."""
    from harness.backends.base import ChatRequest
    from harness.families.toolcalls.common import Outcome
    from harness.families.toolcalls.checks import generation_config, server_chat
    cfg = generation_config(item.case)
    fmt = cfg["format"]
    ctx = item.context
    req = ChatRequest(messages=tuple(ctx.messages), max_tokens=MAX_TOKENS, temperature=0.0, seed=rt.options.seed,
                      tools=tuple(ctx.tools.tools), tool_choice="auto")
    gen, evidence = server_chat(backend, req)
    calls = [{"name": (tc.get("function") or {}).get("name"),
              "arguments": (tc.get("function") or {}).get("arguments")} for tc in gen.tool_calls or []]
    verdict = classify(gen.text, calls, MARKERS[fmt])
    behaviour = {"case": item.case.id, "context": ctx.id, "format": fmt, "verdict": verdict,
                 "writes_template_format": verdict.startswith("template-format"),
                 "content": gen.text[:300], "tool_calls": calls, "finish_reason": gen.finish_reason}
    golden = {"verdict": verdict, "text": gen.text, "finish_reason": gen.finish_reason, "tool_calls": calls,
              "chat_format": evidence.get("chat_format")}
    out = Outcome(golden=golden, header=(
        f"{item.case.location()}: {BACKEND} chat API, '{ctx.id}' with the model's own template, tools offered, "
        f"tool_choice auto (greedy, max_tokens={MAX_TOKENS}): model behaviour {verdict}"))
    if verdict == "template-format-unparsed":
        out.problems.append(f"the content holds the template's own call marker {MARKERS[fmt]!r} but llama-server "
                            f"returned no tool_calls (chat_format {evidence.get('chat_format')!r}); "
                            f"content={gen.text[:400]!r}")
    return out, behaviour
