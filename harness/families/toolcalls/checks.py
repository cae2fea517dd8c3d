"""Tool calls on real stacks: the logic behind harness/suite/test_toolcalls.py.

Five checks, each an item family with readable ids:

* toolcalls.round_trip    -- render an assistant turn with tool calls through the template
  (transformers, the reference renderer), cut out what the model would have produced,
  extract it with the template's wire format and compare with the calls rendered.
  Templates whose format has no extractor get a presence check (every name and argument
  value appears in the rendered turn). A template that loses something by design says so
  in `checks.toolcalls.lossy`; the declared losses must be exactly the observed ones.
* toolcalls.handler_prompt -- the prompt llama-cpp-python's hand-built tool handlers
  (`chatml-function-calling`, `functionary-v2`) would send, captured just before they
  generate, against the model's template (or a named reference template) and against
  rules every tool prompt must keep (tools described, results and calls present, text
  not HTML-escaped).
* toolcalls.stream        -- every canned output of every wire format, streamed one real
  token per delta (the case's tokenizer through llama-cpp-python) plus every two-way
  split, one char per delta and seeded random groupings: same calls as extract().
* toolcalls.grammar_call  -- real weights, greedy: a GBNF that follows the wire format with
  a JSON schema per tool's parameters; the output is extracted and its arguments validated
  against the tool's schema (jsonschema).
* toolcalls.chat_call     -- real weights through each stack's own chat API with tools and a
  forced tool_choice ("required" or a named function); a forced call that comes back as
  plain content is a finding, and arguments are validated against the schema.

Both generation checks run on llama-cpp-python, llama-server and, given --openai-url, the
`openai` backend (raw completions need its `complete` and `grammar` capabilities, chat calls
its `tools` capability; each check skips with the reason when one is not declared).

Every message names the case file:line, the backend and both sides.

The pieces: common.py (what every check shares), round_trip.py, handler.py, stream.py; this
module holds grammar_call and chat_call and is the family's one import for the suite.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from harness.cases.model import Case, CaseSet, Context
from harness.families.items import Item, GENERATORS
from harness.outcome import CaseProblem, Outcome
from .common import (
    CHAT, CHAT_TOOL_CHOICES, ENDPOINT_TEMPLATE, GRAMMAR, PRESENCE, ROUND_TRIP, STREAM,
    WantCall, assistant_turn, compare_calls, declared_losses, format_for, options, presence_losses,
    stable, tool_capable, tools_by_name, validate_call, wire_messages
)
from .handler import (
    capture_handler_prompt, check_handler_prompt, handler_items, prompt_problems, template_ref,
    tool_choice_value
)
from .round_trip import (
    ROUND_TRIP_REASONING, WITH_REASONING, check_round_trip, model_template, renders_reasoning,
    round_trip_items
)
from .stream import canned_outputs, check_stream, stream_items, token_texts


# --- real generations -------------------------------------------------------------------------------
def generation_config(case: Case) -> dict[str, Any] | None:
    return options(case).get("generation")


def _generation_context(case: Case, cfg: dict[str, Any]) -> Context | None:
    return next((c for c in case.contexts if c.id == cfg["context"]), None)


def _generation_backends(cases: CaseSet, available: Iterable[str]):
    """(case, its generation config, context, template stem, backend) for every case with
    weights and a checks.toolcalls.generation block, and each of its backends present here."""
    for c in cases.cases:
        cfg = generation_config(c)
        if not cfg or not c.has_weights:
            continue
        ctx = _generation_context(c, cfg)
        stem = Path(cfg["template"]["member"]).stem
        for b in cfg.get("backends") or GENERATORS:
            if b in available:
                yield c, cfg, ctx, stem, b


def grammar_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [Item(c, GRAMMAR, ctx, None, b, (("template", stem), ("format", cfg["format"])))
            for c, cfg, ctx, stem, b in _generation_backends(cases, available)]


def chat_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [Item(c, CHAT, ctx, None, b, (("template", tmpl), ("tool_choice", tc)))
            for c, cfg, ctx, stem, b in _generation_backends(cases, available)
            for tmpl in ((ENDPOINT_TEMPLATE,) if b in ("openai", "llama-cpp-python-server") else ("embedded", stem))
            for tc in cfg.get("tool_choice") or CHAT_TOOL_CHOICES]


def require_context(item: Item) -> Context:
    if item.context is None:
        cfg = generation_config(item.case) or {}
        known = ", ".join(c.id for c in item.case.contexts)
        raise CaseProblem(f"{item.case.location()}: checks.toolcalls.generation.context "
                          f"'{cfg.get('context')}' is not one of the case's contexts ({known})")
    if item.context.tools is None:
        raise CaseProblem(f"{item.case.location()}: checks.toolcalls.generation.context '{item.context.id}' "
                          f"offers no tools")
    return item.context


def tool_call_grammar(tools: list[dict[str, Any]], fmt: str) -> str:
    """GBNF for one call in the wire format, arguments constrained by each tool's parameter
    schema (llama-cpp-python's json_schema_to_gbnf; llama-server is sent the same text)."""
    if fmt != "hermes":
        raise CaseProblem(f"no tool-call grammar for format {fmt!r} (have: hermes)")
    from llama_cpp.llama_grammar import json_schema_to_gbnf
    alternatives = [{"type": "object", "required": ["name", "arguments"],
                     "properties": {"name": {"const": fn["name"]}, "arguments": fn.get("parameters") or {}}}
                    for fn in tools_by_name(tools).values()]
    body = json_schema_to_gbnf(json.dumps({"oneOf": alternatives}), prop_order=["name", "arguments"])
    body = re.sub(r"^root ::=", "tool-call-json ::=", body, flags=re.M)
    return body.rstrip("\n") + '\nroot ::= "<tool_call>\\n" tool-call-json "\\n</tool_call>"\n'


def generation_prompt(item: Item, hf_renderer) -> tuple[str, str]:
    """The context rendered by transformers with the case's tool-capable template."""
    from harness.backends.base import RenderRequest
    cfg = generation_config(item.case)
    ctx = require_context(item)
    path, template = template_ref(cfg["template"])
    r = hf_renderer.render_prompt(RenderRequest(
        messages=ctx.messages, add_generation_prompt=True, tools=ctx.tools.tools, template=template,
        bos_token=cfg["template"].get("bos_token", ""), eos_token=cfg["template"].get("eos_token", "")))
    if r.text is None:
        raise CaseProblem(f"{item.case.location()}: {path.name} does not render '{ctx.id}': {r.error}")
    return r.text, path.name


def check_grammar_call(rt, item: Item, backend, hf_renderer) -> Outcome:
    from harness.backends.base import CompletionRequest
    from harness.toolcalls import get_format

    cfg = generation_config(item.case)
    ctx = require_context(item)
    tools = ctx.tools.tools
    prompt, template_name = generation_prompt(item, hf_renderer)
    grammar = tool_call_grammar(tools, cfg["format"])
    gen = backend.complete(CompletionRequest(prompt=prompt, max_tokens=cfg.get("max_tokens", 96), temperature=0.0,
                                             seed=rt.options.seed, grammar=grammar))
    ex = get_format(cfg["format"]).extract(gen.text, tools)
    golden = {"template": template_name, "text": gen.text, "finish_reason": gen.finish_reason,
              "extracted": stable(ex.to_dict())}
    out = Outcome(golden=golden, header=(
        f"{item.case.location()}: {item.backend}, greedy completion of '{ctx.id}' rendered with {template_name}, "
        f"under a {cfg['format']} tool-call grammar (arguments constrained by each tool's schema)"))
    if not ex.calls:
        out.problems.append(f"no tool call could be extracted ({ex.error}); finish_reason={gen.finish_reason!r}, "
                            f"text={gen.text[:300]!r}")
    if ex.error and ex.calls:
        out.problems.append(f"extractor error: {ex.error}")
    for call in ex.calls:
        out.problems.extend(validate_call(call.name, call.arguments, tools))
    if out.problems:
        out.problems.append(f"grammar sent:\n{grammar}")
    return out


def llama_cpp_chat(backend, item: Item, req) -> tuple[Any, dict[str, Any]]:
    """llama-cpp-python's chat API: the model's own chat path ("embedded"), or a chat handler
    built from the case's tool-capable template, as `Llama(chat_handler=...)` users do."""
    from harness.backends.base import Generation
    if item.params["template"] == "embedded":
        gen = backend.chat(req)
        return gen, {"chat_path": f"Llama.create_chat_completion (chat_format={backend.llm.chat_format!r})"}
    from llama_cpp import llama_chat_format
    cfg = generation_config(item.case)
    path, template = template_ref(cfg["template"])
    handler = llama_chat_format.Jinja2ChatFormatter(
        template=template, eos_token=cfg["template"].get("eos_token", ""),
        bos_token=cfg["template"].get("bos_token", "")).to_chat_handler()
    backend.llm.reset()
    reply = handler(llama=backend.llm, messages=list(req.messages), tools=list(req.tools), tool_choice=req.tool_choice,
                    max_tokens=req.max_tokens, temperature=req.temperature, seed=req.seed)
    choice = reply["choices"][0]
    msg = choice["message"]
    return (Generation(text=msg.get("content") or "", finish_reason=choice["finish_reason"],
                       tool_calls=msg.get("tool_calls")),
            {"chat_path": f"Jinja2ChatFormatter({path.name}).to_chat_handler()"})


def server_chat(backend, req) -> tuple[Any, dict[str, Any]]:
    """llama-server's /v1/chat/completions, keeping what the server says it did (the grammar
    it compiled for the tools, and its warnings) as evidence."""
    from harness.backends.stream import generation_from_reply
    if getattr(backend, "_call", None) is None:
        return backend.chat(req), {}
    before = _server_log(backend)
    reply = server_reply(backend, req)
    settings = (reply.get("__verbose") or {}).get("generation_settings") or {}
    grammar = settings.get("grammar") or ""
    root = next((line for line in grammar.splitlines() if line.startswith("root ::=")), None)
    evidence = {"grammar_root": root, "grammar_lazy": settings.get("grammar_lazy"),
                "chat_format": settings.get("chat_format")}
    after = _server_log(backend)
    new = after[after.index(before[-1]) + 1:] if before and before[-1] in after else after
    warnings = [line.split(" W ", 1)[1] for line in new if " W " in line and "tool" in line.lower()]
    if warnings:
        evidence["server_warnings"] = sorted(set(warnings))
    return generation_from_reply(reply, "chat"), evidence


def server_reply(backend, req) -> dict[str, Any]:
    """llama-server's /v1/chat/completions reply (with `__verbose`: the raw text and the settings
    it generated with) for a ChatRequest. Greedy, seeded and uncached, the same request gets the
    same reply, so it is asked once per server and kept: toolcalls.chat_call checks the call,
    toolcalls.server_parse the server's parse of it."""
    from harness.backends.openai_compat import chat_body
    body = chat_body(req, None)
    body.update(cache_prompt=False, return_tokens=True, verbose=True)
    key = json.dumps(body, sort_keys=True)
    replies = backend.__dict__.setdefault("_harness_chat_replies", {})
    if key not in replies:
        replies[key] = backend._call("chat", "/v1/chat/completions", body)
    return replies[key]


def _server_log(backend) -> list[str]:
    """The last lines of the spawned server's log (lines carry timestamps, so they are unique);
    [] for an attached server. Evidence only: best effort."""
    try:
        return backend.log_tail(400)
    except Exception:  # noqa: BLE001 - the log is evidence, never a reason to fail
        return []


def chat_request(rt, item: Item):
    """The forced-call ChatRequest of a chat_call item (greedy, the run's seed)."""
    from harness.backends.base import ChatRequest
    cfg = generation_config(item.case)
    ctx = require_context(item)
    tools = ctx.tools.tools
    return ChatRequest(messages=tuple(ctx.messages), max_tokens=cfg.get("chat_max_tokens", cfg.get("max_tokens", 64)),
                       temperature=0.0, seed=rt.options.seed, tools=tuple(tools),
                       tool_choice=tool_choice_value(item.params["tool_choice"], tools))


def check_chat_call(rt, item: Item, backend) -> Outcome:
    ctx = require_context(item)
    label = item.params["tool_choice"]
    req = chat_request(rt, item)
    tools, tool_choice = list(req.tools), req.tool_choice
    if item.backend == "llama-cpp-python":
        gen, evidence = llama_cpp_chat(backend, item, req)
    elif item.backend == "llama-server":
        gen, evidence = server_chat(backend, req)
    else:                                        # openai: /v1/chat/completions, nothing more to see
        gen, evidence = backend.chat(req), {}
    calls = [{"name": (tc.get("function") or {}).get("name"), "arguments": _parsed((tc.get("function") or {})
                                                                                   .get("arguments"))}
             for tc in gen.tool_calls or []]
    golden = {"tool_choice": tool_choice, "text": gen.text, "finish_reason": gen.finish_reason, "tool_calls": calls,
              **{k: v for k, v in evidence.items() if k != "server_warnings"}}
    where = {"embedded": "the model's own template", ENDPOINT_TEMPLATE: "the endpoint's template"}.get(
        item.params["template"], item.params["template"])
    out = Outcome(golden=golden, header=(
        f"{item.case.location()}: {item.backend} chat API, '{ctx.id}' with {where}, tools offered and "
        f"tool_choice={json.dumps(tool_choice)} (greedy, max_tokens={req.max_tokens})"))
    out.notes.append(json.dumps(evidence, ensure_ascii=False))
    if not calls:
        out.header += ": the forced tool call came back as plain content"
        target = f" to {tool_choice['function']['name']!r}" if label == "named" else ""
        out.problems.append(f"expected: at least one tool call{target}")
        out.problems.append(f"got: no tool_calls; finish_reason={gen.finish_reason!r}; content={gen.text[:400]!r}")
        for k, v in evidence.items():
            out.problems.append(f"{item.backend} {k}: {v}")
        return out
    for c in calls:
        if label == "named" and c["name"] != tool_choice["function"]["name"]:
            out.problems.append(f"tool_choice names {tool_choice['function']['name']!r}, the call is to {c['name']!r}")
        raw = c["arguments"]
        out.problems.extend(validate_call(c["name"] or "", raw, tools))
    if out.problems:
        out.header += ": the forced call's arguments do not satisfy the tool's schema"
        # call ids are random per request (llama-cpp-python: "call__0_<name>_cmpl-<uuid4>"): elided
        calls = [{**c, "id": "…"} if isinstance(c, dict) and "id" in c else c for c in gen.tool_calls or []]
        out.problems.append(f"finish_reason={gen.finish_reason!r}; tool_calls as returned (ids elided): "
                            f"{json.dumps(calls, ensure_ascii=False)[:800]}")
    return out


def _parsed(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments
