"""toolcalls.server_parse: llama-server's own parse of a real reply, tied to the chat probe's.

The llama.cpp-chat backend (the native chat probe) stands for llama-server's chat layer in every
template-only check (templates.chat_params, toolcalls.llama_parse). This check ties the two on
real weights: for each forced tool call that toolcalls.chat_call asks llama-server for, the
reply's raw generated text (`__verbose.content`, the text before the server parsed it) goes
through the probe with the inputs the server used:

* the same template: the GGUF's own, or the case's --chat-template-file, with the vocab's BOS/EOS;
* the same messages, tools and tool_choice (an object tool_choice is "auto" to both: each reads
  the field as a string);
* the server's reasoning_format (from the reply's generation_settings), and enable_thinking as the
  server sets it at start-up: on (its default --reasoning) when the template supports thinking,
  the test common_chat_templates_support_enable_thinking makes (one user turn "test", thinking
  on, reasoning_format deepseek, and the params' supports_thinking).

Then the probe's chat params must be the ones the server reports (format, generation prompt,
grammar, laziness, and the preserved tokens as the server keeps them: the ids of the strings that
are one token in the vocab), and the probe's parse of the raw text
the message the server sent (content, reasoning_content, each call's name and arguments text).
A difference means the probe does not drive llama.cpp as the server does: a harness bug first.
The golden keeps the raw text and the server's message, so an upgrade shows a changed parse.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from harness.cases.model import CaseSet
from harness.families.items import Item
from harness.outcome import Outcome, Skip

from .checks import chat_items, chat_request, generation_config, require_context, server_reply, template_ref
from .common import SERVER_PARSE

PROBE = "llama.cpp-chat"
# the chat params llama-server reports in generation_settings -> the probe's name for each
PARAMS = (("chat_format", "format"), ("generation_prompt", "generation_prompt"),
          ("grammar", "grammar"), ("grammar_lazy", "grammar_lazy"), ("preserved_tokens", "preserved_tokens"))


def server_parse_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    """One per llama-server chat_call item, where the probe is present too."""
    available = list(available)
    if PROBE not in available:
        return []
    return [Item(i.case, SERVER_PARSE, i.context, None, i.backend, i.extra)
            for i in chat_items(cases, available) if i.backend == "llama-server"]


def thinking_enabled(probe, req) -> bool:
    """llama-server's enable_thinking for this template: its default reasoning setting is on, so
    it is whether the template supports thinking, tested the way the server tests it."""
    from harness.backends.base import RenderRequest
    test = RenderRequest(messages=[{"role": "user", "content": "test"}], add_generation_prompt=True,
                         template=req.template, bos_token=req.bos_token, eos_token=req.eos_token)
    params = probe.render_chat(test, reasoning_format="deepseek", enable_thinking=True)["params"]
    return bool(params.get("supports_thinking"))


def message_view(msg: dict[str, Any]) -> dict[str, Any]:
    """What both sides are compared on: texts, and each call's name and arguments text (call ids
    are random per server request)."""
    calls = []
    for tc in msg.get("tool_calls") or []:
        fn = tc.get("function") if isinstance(tc.get("function"), dict) else tc
        calls.append({"name": fn.get("name"), "arguments": fn.get("arguments")})
    return {"content": msg.get("content") or "", "reasoning_content": msg.get("reasoning_content") or "",
            "tool_calls": calls}


def check_server_parse(rt, item: Item, server, probe) -> Outcome:
    from harness.backends.base import RenderRequest
    ctx = require_context(item)
    req = chat_request(rt, item)
    reply = server_reply(server, req)
    verbose = reply.get("__verbose") if isinstance(reply.get("__verbose"), dict) else {}
    raw = verbose.get("content")
    if not isinstance(raw, str):
        # a request's "verbose": true is honoured since llama.cpp's schema-based request fields;
        # older servers (llama-cpp-python 0.3.30's tree) add __verbose only at --verbosity 10
        raise Skip("llama-server's reply carries no __verbose.content (the raw generated text) to parse: "
                   "this server ignores the request's \"verbose\": true")
    settings = verbose.get("generation_settings") or {}
    choice = (reply.get("choices") or [{}])[0]
    server_msg = message_view(choice.get("message") or {})
    # the template the server rendered with, and the vocab's BOS/EOS texts as it takes them
    own, bos, eos = probe.model_template()
    if item.params["template"] == "embedded":
        template, where = own, "the GGUF's own template"
    else:
        path, template = template_ref(generation_config(item.case)["template"])
        where = f"--chat-template-file {path.name}"
    preq = RenderRequest(messages=list(ctx.messages), add_generation_prompt=True, tools=list(req.tools or ()),
                         template=template, bos_token=bos, eos_token=eos)
    kw = {"tool_choice": req.tool_choice, "reasoning_format": settings.get("reasoning_format"),
          "enable_thinking": thinking_enabled(probe, preq)}
    params = probe.render_chat(preq, **kw)["params"]
    parsed = probe.parse_chat(preq, raw, **kw)
    probe_msg = message_view(parsed["message"])
    golden = {"raw": raw, "server": server_msg, "chat_format": settings.get("chat_format"),
              "reasoning_format": settings.get("reasoning_format"), "enable_thinking": kw["enable_thinking"]}
    out = Outcome(golden=golden, header=(
        f"{item.case.location()}: llama-server's /v1/chat/completions reply ('{ctx.id}', {where}, "
        f"tool_choice={json.dumps(req.tool_choice)}) against llama.cpp-chat's parse of the same raw text"))
    # the server keeps the preserved strings as token ids: those that tokenize to one token
    # (parse_special on), a set; the probe has no vocab, so its strings go through the server's
    params = {**params, "preserved_tokens": sorted({ids[0] for t in params.get("preserved_tokens") or []
                                                    if len(ids := server.tokenize(t, add_special=False,
                                                                                  parse_special=True)) == 1})}
    for theirs, ours in PARAMS:
        if theirs in settings and settings[theirs] != params.get(ours):
            out.problems.append(f"chat param {theirs}: server {_short(settings[theirs])}, probe {_short(params.get(ours))}")
    for key in ("content", "reasoning_content", "tool_calls"):
        if server_msg[key] != probe_msg[key]:
            out.problems.append(f"{key}: server {_short(server_msg[key])}, probe {_short(probe_msg[key])}")
    if out.problems:
        out.problems.append(f"raw text: {raw[:400]!r}")
    return out


def _short(value: Any, n: int = 300) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= n else text[:n] + "…"
