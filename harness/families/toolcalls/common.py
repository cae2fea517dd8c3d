"""What every tool-call check shares: the check names and options, outcomes, the wanted calls of a
case, call validation against the tool's schema, the wire format for a model, and comparing parsed
calls with the wanted ones."""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from dataclasses import dataclass
from typing import Any

from harness.cases.globs import where_matches
from harness.cases.model import Case


FAMILY = "toolcalls"


ROUND_TRIP = "toolcalls.round_trip"


HANDLER = "toolcalls.handler_prompt"


STREAM = "toolcalls.stream"


GRAMMAR = "toolcalls.grammar_call"


CHAT = "toolcalls.chat_call"


SERVER_PARSE = "toolcalls.server_parse"      # llama-server's parse of chat_call's reply, tied to the probe's


HANDLER_TOOL_CHOICES = ("auto", "omitted", "named")


CHAT_TOOL_CHOICES = ("required", "named")



# The openai backend (any OpenAI-compatible endpoint) chats with whatever template the endpoint
# serves: it cannot be chosen per request, so its chat calls have this one template label.
ENDPOINT_TEMPLATE = "endpoint"


PRESENCE = "presence"          # round trip without an extractor: names and values must appear


_TOOL_WORDS = re.compile(r"\btools\b|\btool_calls\b")


def options(case: Case) -> dict[str, Any]:
    return case.check_options(FAMILY)


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def stable(extraction: dict[str, Any]) -> dict[str, Any]:
    """An extraction for a golden: an extractor error that quotes a Python object's repr
    ("<... object at 0x7f...>") would change every run. None does today (pythonic used to
    quote ast's message); this keeps a future one from making goldens flaky."""
    if extraction.get("error"):
        extraction = {**extraction, "error": _ADDRESS.sub(" at 0x…", extraction["error"])}
    return extraction


# --- calls --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WantCall:
    name: str
    arguments: Any
    id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments, **({"id": self.id} if self.id else {})}


def wanted_calls(message: dict[str, Any]) -> list[WantCall]:
    out = []
    for tc in message.get("tool_calls") or []:
        fn = tc.get("function", tc)
        args = fn.get("arguments")
        if isinstance(args, str):
            args = json.loads(args)
        out.append(WantCall(fn["name"], args, tc.get("id")))
    return out


def tool_call_index(messages: list[dict[str, Any]]) -> int | None:
    """Index of the last assistant message that carries tool calls."""
    hits = [i for i, m in enumerate(messages) if m.get("role") == "assistant" and m.get("tool_calls")]
    return hits[-1] if hits else None


def wire_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as an OpenAI client sends it: tool-call arguments as JSON strings."""
    out = copy.deepcopy(messages)
    for m in out:
        for tc in m.get("tool_calls") or []:
            fn = tc.get("function", {})
            if not isinstance(fn.get("arguments"), str):
                fn["arguments"] = json.dumps(fn.get("arguments"), ensure_ascii=False)
    return out


def tools_by_name(tools: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {t["function"]["name"]: t["function"] for t in tools or []}


def validate_call(name: str, arguments: Any, tools: list[dict[str, Any]]) -> list[str]:
    """Problems with one call against the offered tools: unknown name, arguments that are not
    a JSON object, arguments that break the tool's parameter schema (JSON Schema 2020-12)."""
    import jsonschema
    fn = tools_by_name(tools).get(name)
    if fn is None:
        return [f"call names {name!r}, which is not an offered tool ({', '.join(tools_by_name(tools))})"]
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError as e:
            return [f"{name}: arguments are not valid JSON ({e}): {arguments[:200]!r}"]
    if not isinstance(arguments, dict):
        return [f"{name}: arguments are not a JSON object: {json.dumps(arguments)[:200]}"]
    validator = jsonschema.Draft202012Validator(fn.get("parameters") or {})
    return [f"{name}: arguments {json.dumps(arguments, ensure_ascii=False)} break the tool's schema at "
            f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(arguments), key=lambda e: list(map(str, e.absolute_path)))]


# --- round trip ----------------------------------------------------------------------------------
def tool_capable(template: str | None) -> bool:
    """The template reads `tools` or `tool_calls` at all."""
    return bool(template) and bool(_TOOL_WORDS.search(template))


def format_for(case: Case, template: str | None) -> str | None:
    """The wire format: the case's override for this template (glob on the template stem, or
    on the case id for a model), else what detect_format() recognises."""
    from harness.toolcalls import detect_format
    key = case.template_path.stem if case.template_path is not None else case.id
    for entry in options(case).get("formats", []):
        if fnmatch.fnmatchcase(key, entry["match"]):
            return entry["format"]
    return detect_format(template) if template else None


_BOUNDARY = "\n >]}"


def assistant_turn(prefix: str, full: str) -> tuple[str, str]:
    """What the model would have produced after the generation prompt.

    prefix: the conversation before the assistant turn, with the generation prompt;
    full: the conversation including the assistant turn, without one. When the template
    renders the turn exactly as generation continues (full == prefix + output) the cut is
    exact. Reasoning templates open <think> in the generation prompt but drop it from
    history, and some templates move the system prompt; then the turn is cut at the first
    difference, backed off to a token-like boundary, and the cut is reported approximate."""
    if full.startswith(prefix):
        return full[len(prefix):], "exact"
    cp = next((i for i, (a, b) in enumerate(zip(prefix, full)) if a != b), min(len(prefix), len(full)))
    while cp > 0 and full[cp - 1] not in _BOUNDARY:
        cp -= 1
    return full[cp:], (f"approximate: the history differs from generation at character {cp} "
                       f"(generation prompt {prefix[cp:cp + 40]!r}, history {full[cp:cp + 40]!r})")


def _value_texts(value: Any) -> list[str]:
    if isinstance(value, bool):
        return [json.dumps(value), str(value)]
    if isinstance(value, str):
        return [value, json.dumps(value, ensure_ascii=False)[1:-1]]
    if isinstance(value, (int, float)) or value is None:
        return [json.dumps(value), str(value)]
    return [json.dumps(value, ensure_ascii=False), json.dumps(value, ensure_ascii=False, separators=(",", ":"))]


def compare_calls(want: list[WantCall], got: list) -> dict[str, list[str]]:
    """Aspects lost between the rendered calls and the extracted ones."""
    lost: dict[str, list[str]] = {}
    if len(got) != len(want):
        lost.setdefault("calls", []).append(f"{len(want)} call(s) rendered, {len(got)} extracted")
    for i, (w, g) in enumerate(zip(want, got)):
        if g.name != w.name:
            lost.setdefault("names", []).append(f"call {i}: name {w.name!r} came back as {g.name!r}")
        if g.arguments != w.arguments:
            lost.setdefault("arguments", []).append(
                f"call {i} ({w.name}): arguments {json.dumps(w.arguments, ensure_ascii=False)} came back as "
                f"{json.dumps(g.arguments, ensure_ascii=False)}")
        if g.id is not None and g.id != w.id:
            lost.setdefault("ids", []).append(f"call {i} ({w.name}): id {w.id!r} came back as {g.id!r}")
    return lost


def presence_losses(want: list[WantCall], turn: str) -> dict[str, list[str]]:
    """Without an extractor: every call's name and every argument value must appear in the turn."""
    lost: dict[str, list[str]] = {}
    for i, w in enumerate(want):
        if w.name not in turn:
            lost.setdefault("calls", []).append(f"call {i}: name {w.name!r} does not appear in the rendered turn")
            continue
        for key, value in (w.arguments or {}).items():
            if not any(t in turn for t in _value_texts(value)):
                lost.setdefault("arguments", []).append(
                    f"call {i} ({w.name}): argument {key}={json.dumps(value)} does not appear in the rendered turn")
    return lost


def declared_losses(case: Case, params: dict[str, str]) -> tuple[set[str], list[str]]:
    losses: set[str] = set()
    why = []
    for entry in options(case).get("lossy", []):
        if where_matches(entry["where"], params):
            losses |= set(entry["loses"])
            why.append(entry["description"].strip())
    return losses, why
