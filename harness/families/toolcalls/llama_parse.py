"""toolcalls.llama_parse: llama.cpp's own message parser (common_chat_parse, through the chat probe,
backend llama.cpp-chat) on every canned output of cases/toolcall-outputs/, for every template of
the template set that speaks that output's wire format and for a model case's GGUF template
(`checks.toolcalls.llama_parse: {format: ...}`: its format, confirmed against the template at run
time).

Per (template, canned output): llama.cpp renders the template with the canned file's tools (one
user turn, tool_choice auto, parallel_tool_calls left to the template's caps: what llama-server
does for a request that sends neither) and parses the output finished and streamed, as
llama-server does (chat_probe.cpp). The finished parse is compared with the harness's reference
extractor (calls by name and JSON-equal arguments, content, reasoning; both sides' content and
reasoning stripped, as the extractors report them); every streamed result must equal llama.cpp's
own finished parse. The golden is llama.cpp's parse.

How the request fits the output (the rule):
* reasoning_format from the output's reasoning_mode: separate -> "deepseek" (reasoning in its
  own field, streamed as reasoning deltas), none -> "none", deepseek-legacy -> "deepseek-legacy".
* enable_thinking: the setting whose generation prompt matches the output's `opened` flag (the
  prompt ends inside an open reasoning block, read with the format's own delimiters, as the
  round trip reads it), trying true (llama-server's default) first. When neither setting fits
  (a template that always or never opens the block), true is used and the reference extractor
  is told what this template's prompt really does, so both sides parse the same text after the
  same prompt; the golden says the output was written for another prompt.

Streamed splits: the whole output as one piece, every two-way split, eight seeded random
groupings, and, for a model case, its tokenizer's real token pieces (one character per piece is
left out: its prefixes are the two-way splits', and it doubled the diff work). One probe
request per template and request setting carries all its outputs and split sets (each prefix is
parsed once and shared by every split set that ends a piece there); the results are kept for the
session (LlamaParseCache), so an item only compares.

One more item per template, output `chat-params`: the chat params llama.cpp derives (its format
name and parser, the generation prompts, the thinking tags) in the golden, and as findings the
offered tools llama.cpp refuses to render (the outputs are then parsed with the tools it renders)
and a template it builds no parser for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from harness.cases.model import Case, CaseSet
from harness.families.items import Item
from harness.outcome import CaseProblem, Outcome
from .common import format_for, options, stable, tool_capable
from .stream import canned_outputs, token_texts

LLAMA_PARSE = "toolcalls.llama_parse"
BACKEND = "llama.cpp-chat"
PARAMS_OUTPUT = "chat-params"          # the per-template item: llama.cpp's chat params
REASONING_FORMATS = {"separate": "deepseek", "none": "none", "deepseek-legacy": "deepseek-legacy"}
PROMPT = ({"role": "user", "content": "What is the weather in Paris?"},)
RANDOM_SEEDS = range(8)         # seeded random groupings (harness.toolcalls.split_plans)
SHOWN_SPLITS = 3                        # split labels quoted per differing stream


# --- items ----------------------------------------------------------------------------------------
def parse_format(case: Case) -> str | None:
    """The wire format whose canned outputs llama.cpp parses with this case's template."""
    if case.kind == "template":
        text = case.template_path.read_text(encoding="utf-8")
        return format_for(case, text) if tool_capable(text) else None
    return (options(case).get("llama_parse") or {}).get("format")


def llama_parse_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    if BACKEND not in available:
        return []
    outputs: dict[str, list[str]] = {}
    for fmt, oid in canned_outputs(cases.root):
        outputs.setdefault(fmt, []).append(oid)
    out = []
    for c in cases.cases:
        fmt = parse_format(c)
        if fmt is None or fmt not in outputs:
            continue        # no wire format (or no canned outputs of it): round_trip reports those
        for oid in (PARAMS_OUTPUT, *outputs[fmt]):
            out.append(Item(c, LLAMA_PARSE, None, None, BACKEND, (("format", fmt), ("output", oid))))
    return out


# --- one template: its chat params and every output's parse, computed once -----------------------
@dataclass(frozen=True)
class TemplateSource:
    text: str
    bos: str
    eos: str
    label: str                          # the template stem, or "<case>'s GGUF template"


@dataclass
class Setting:
    """The request for one output: the fields sent, and what its generation prompt does."""
    reasoning_format: str
    enable_thinking: bool
    opened: bool                        # the generation prompt opens the reasoning block
    fits: bool                          # ... as the output was written for

    def key(self) -> tuple[str, bool]:
        return self.reasoning_format, self.enable_thinking


@dataclass
class TemplateParses:
    """llama.cpp's chat params for one template and, lazily per request setting, its parse of
    every canned output of the format (one probe request per setting)."""
    fmt: str
    source: TemplateSource
    tools: list[dict[str, Any]]                          # the tools llama.cpp renders
    refused: dict[str, str]                              # tool name -> llama.cpp's error
    params: dict[bool, dict[str, Any]]                   # enable_thinking -> chat params
    error: str | None = None                             # llama.cpp renders no tool set at all
    results: dict[tuple[str, bool], dict[str, dict]] = field(default_factory=dict)
    labels: dict[str, list[str]] = field(default_factory=dict)    # output id -> split labels


def _request(source: TemplateSource, tools):
    from harness.backends.base import RenderRequest
    return RenderRequest(messages=list(PROMPT), template=source.text, bos_token=source.bos,
                         eos_token=source.eos, tools=tools, add_generation_prompt=True)


def _render(backend, source: TemplateSource, tools) -> dict[bool, dict[str, Any]]:
    # cache=True: the probe keeps these renders for the parse requests with the same inputs
    return {et: backend.render_chat(_request(source, tools), enable_thinking=et, reasoning_format="deepseek",
                                    cache=True)["params"] for et in (True, False)}


def template_parses(backend, fmt: str, source: TemplateSource, tools: list[dict[str, Any]]) -> TemplateParses:
    """Render with every offered tool; when llama.cpp refuses, find the tools it refuses alone
    and render with the rest (the refusal is the chat-params item's finding)."""
    from harness.backends.base import BackendError
    try:
        return TemplateParses(fmt, source, list(tools), {}, _render(backend, source, tools))
    except BackendError as exc:
        whole = _last_line(exc)
    refused = {}
    for t in tools:
        try:
            _render(backend, source, [t])
        except BackendError as exc:
            refused[t["function"]["name"]] = _last_line(exc)
    kept = [t for t in tools if t["function"]["name"] not in refused]
    try:
        if not refused or not kept:
            raise BackendError(whole)
        return TemplateParses(fmt, source, kept, refused, _render(backend, source, kept))
    except BackendError as exc:
        return TemplateParses(fmt, source, kept, refused, {}, error=_last_line(exc))


def _last_line(exc: Exception) -> str:
    """llama.cpp's message without its Jinja source excerpt (the last line says what failed),
    prefixed with its first line when that names the stage ("Unable to generate parser ...")."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    head, last = lines[0].strip(), lines[-1].strip()
    return last if head == last or head.startswith("---") else f"{head} {last}"


def setting_for(parses: TemplateParses, canned: dict[str, Any]) -> Setting:
    from harness.toolcalls import get_format
    fmt = get_format(parses.fmt)
    mode, wanted = canned["message"]["reasoning"], canned["message"]["opened"]
    opens = {et: fmt.opened_by_prompt(p["generation_prompt"]) for et, p in parses.params.items()}
    for et in (True, False):
        if opens[et] == wanted:
            return Setting(REASONING_FORMATS[mode], et, opens[et], True)
    return Setting(REASONING_FORMATS[mode], True, opens[True], False)


def split_sets(text: str, tokens: list[str] | None) -> tuple[list[str], list[list[str]]]:
    """(labels, pieces) of every split the stream is checked on (harness.toolcalls.split_plans)."""
    from harness.toolcalls.check import split_plans
    labels, sets = [], []
    for kind, label, pieces in split_plans(text, tokens, seeds=RANDOM_SEEDS):
        if kind == "chars":     # every prefix is parsed for the two-way splits already; the random
            continue            # groupings cover many-piece streams (a time budget, see the module doc)
        labels.append(label)
        sets.append(pieces)
    return labels, sets


def parse_all(backend, parses: TemplateParses, setting: Setting, canned_by_id: dict[str, dict],
              tokenizer=None) -> None:
    """Every output of the format that takes `setting`, in one probe request."""
    ids = [oid for oid, c in canned_by_id.items() if setting_for(parses, c).key() == setting.key()]
    batch = []
    for oid in ids:
        text = canned_by_id[oid]["output"]
        tokens = token_texts(tokenizer, text)[1] if tokenizer is not None else None
        if tokens is not None and "".join(tokens) != text:
            tokens = None                    # the stream check reports that; split without them
        labels, sets = split_sets(text, tokens)
        parses.labels[oid] = labels
        batch.append((text, sets))
    got = backend.parse_batch(_request(parses.source, parses.tools), batch,
                              enable_thinking=setting.enable_thinking, reasoning_format=setting.reasoning_format)
    parses.results[setting.key()] = dict(zip(ids, got["results"]))


class LlamaParseCache:
    """Per session: (case id, template text) -> TemplateParses. Items of one case run on one
    worker (loadgroup), so each template is rendered and parsed once."""

    def __init__(self, cases_root: Path):
        self.cases_root = cases_root
        self._by_key: dict[tuple[str, int], TemplateParses] = {}

    def __repr__(self) -> str:
        return "<llama.cpp parses>"

    def get(self, backend, case: Case, fmt: str, source: TemplateSource, tools) -> TemplateParses:
        key = (case.id, hash(source.text))
        if key not in self._by_key:
            self._by_key[key] = template_parses(backend, fmt, source, tools)
        return self._by_key[key]


# --- comparing ------------------------------------------------------------------------------------
def json_equal(a: Any, b: Any) -> bool:
    """Equal as JSON values: numbers by value (1 == 1.0), but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _arguments(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw                       # not JSON: kept as llama.cpp gave it (then never equal)


def llama_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": c["name"], "arguments": _arguments(c["arguments"])} for c in message["tool_calls"]]


def message_view(message: dict[str, Any]) -> dict[str, Any]:
    """What is compared: calls (name + parsed arguments), content and reasoning, stripped."""
    return {"calls": llama_calls(message), "content": message["content"].strip(),
            "reasoning": message["reasoning_content"].strip()}


def differences(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """The aspects (calls, content, reasoning) in which two views differ, one line each."""
    out = []
    g, w = got["calls"], want["calls"]
    if len(g) != len(w) or any(a["name"] != b["name"] or not json_equal(a["arguments"], b["arguments"])
                               for a, b in zip(g, w)):
        out.append("calls")
    out += [k for k in ("content", "reasoning") if got[k] != want[k]]
    return out


def _show(view: dict[str, Any]) -> str:
    return json.dumps(view, ensure_ascii=False)


def _golden_message(message: dict[str, Any]) -> dict[str, Any]:
    return {"content": message["content"], "reasoning_content": message["reasoning_content"],
            "tool_calls": [{"name": c["name"], "arguments": c["arguments"]} for c in message["tool_calls"]]}


# --- the checks -----------------------------------------------------------------------------------
def check_chat_params(item: Item, parses: TemplateParses) -> Outcome:
    """llama.cpp's chat params for the template; refused tools and a missing parser are findings."""
    where = f"{item.case.location()}: llama.cpp (chat probe) with {parses.source.label}"
    golden: dict[str, Any] = {"format": parses.fmt}
    out = Outcome(golden=golden, header=f"{where}, offered the tools of cases/toolcall-outputs/{parses.fmt}.yaml")
    if parses.refused:
        golden["tools_refused"] = parses.refused
        out.problems.append("llama.cpp refuses to render the template with "
                            + "; ".join(f"tool {n!r}: {e}" for n, e in parses.refused.items())
                            + f" (the outputs are parsed with the other tools: "
                              f"{', '.join(t['function']['name'] for t in parses.tools)})")
    if parses.error is not None:
        golden["error"] = parses.error
        out.problems.append(f"llama.cpp builds no chat params for the template with tools: {parses.error}")
        return out
    for et, p in parses.params.items():
        golden[f"enable_thinking={str(et).lower()}"] = {
            k: p[k] for k in ("format", "has_parser", "generation_prompt", "supports_thinking",
                              "thinking_start_tag", "thinking_end_tags", "grammar_lazy", "preserved_tokens",
                              "additional_stops")}
    for et, p in parses.params.items():
        if not p["has_parser"] or p["format"] == "Content-only":
            out.problems.append(f"enable_thinking={str(et).lower()}: llama.cpp builds no tool-call parser for the "
                                f"template (format {p['format']}): calls would come back as plain content")
    return out


def check_llama_parse(item: Item, parses: TemplateParses, canned_by_id: dict[str, dict], backend,
                      tokenizer=None) -> Outcome:
    from harness.toolcalls import get_format
    if item.params["output"] == PARAMS_OUTPUT:
        return check_chat_params(item, parses)
    oid, fmt = item.params["output"], parses.fmt
    canned = canned_by_id[oid]
    where = (f"{item.case.location()}: llama.cpp (chat probe) parsing canned output {fmt}::{oid} "
             f"({canned['file']}) with {parses.source.label}")
    if parses.error is not None:
        return Outcome(golden={"error": parses.error}, header=where,
                       problems=[f"llama.cpp builds no chat params for the template with tools: {parses.error}"])
    setting = setting_for(parses, canned)
    if setting.key() not in parses.results:
        parse_all(backend, parses, setting, canned_by_id, tokenizer)
    res = parses.results[setting.key()][oid]
    golden: dict[str, Any] = {"reasoning_format": setting.reasoning_format,
                              "enable_thinking": setting.enable_thinking,
                              "generation_prompt": parses.params[setting.enable_thinking]["generation_prompt"]}
    if not setting.fits:
        golden["output_written_for"] = ("a prompt that opens the reasoning block" if canned["message"]["opened"]
                                        else "a prompt that leaves the reasoning block to the model")
    if parses.refused:
        golden["tools"] = [t["function"]["name"] for t in parses.tools]
    out = Outcome(golden=golden, header=(
        f"{where}, reasoning_format={setting.reasoning_format}, enable_thinking={str(setting.enable_thinking).lower()}"))
    if not setting.fits:
        out.notes.append(f"the output was written for {golden['output_written_for']}, which no enable_thinking "
                         f"setting of this template gives; the reference is told what this prompt does")
    ref = get_format(fmt).extract(canned["output"], parses.tools, reasoning=canned["message"]["reasoning"],
                                  opened=setting.opened)
    want = {"calls": [{"name": c.name, "arguments": c.arguments} for c in ref.calls],
            "content": ref.content, "reasoning": ref.reasoning}
    if "error" in res:
        golden["error"] = res["error"]
        out.problems.append(f"llama.cpp refuses the finished output: {res['error']}")
        out.problems.append(f"  reference ({fmt}): {_show(want)}" + (f"; its error: {stable(ref.to_dict())['error']}"
                                                                     if ref.error else ""))
    else:
        golden["message"] = _golden_message(res["message"])
        got = message_view(res["message"])
        diff = differences(got, want)
        if diff:
            out.problems.append(f"llama.cpp and the reference extractor differ in {', '.join(diff)}:")
            out.problems.append(f"  llama.cpp:          {_show(got)}")
            out.problems.append(f"  reference ({fmt}): {_show(want)}"
                                + (f"; its error: {stable(ref.to_dict())['error']}" if ref.error else ""))
    stream_problems(out, golden, res, parses.labels[oid])
    return out


def stream_problems(out: Outcome, golden: dict[str, Any], res: dict[str, Any], labels: list[str]) -> None:
    """Every split set's streamed result against llama.cpp's own finished parse as a stream ends
    it (for deepseek-legacy with the reasoning inline: stream_message)."""
    final = res.get("stream_message", res.get("message"))
    final_error = res.get("stream_error", res.get("error"))
    golden["split_sets"] = len(labels)
    differing = []
    for s in res["streams"]:
        if final is not None and "final_error" not in s:
            same = not differences(message_view(s["streamed"]), message_view(final))
            same = same and "partial_error" not in s
        else:        # the finished text is refused: a stream must end refused too (at any piece)
            same = final_error is not None and ("final_error" in s or "partial_error" in s)
        if same:
            continue
        entry = {"split_sets": len(s["splits"]), "first": [labels[i] for i in s["splits"][:SHOWN_SPLITS]],
                 "streamed": _golden_message(s["streamed"])}
        for k in ("partial_error", "final_error"):
            if k in s:
                entry[k] = s[k]
        differing.append(entry)
    if not differing:
        return
    golden["streams_differing"] = differing
    n = sum(e["split_sets"] for e in differing)
    out.problems.append(f"streamed differs from llama.cpp's own finished parse in {n} of {len(labels)} split sets:")
    want = _show(message_view(final)) if final is not None else f"refused: {final_error}"
    out.problems.append(f"  finished:  {want}")
    for e in differing:
        errs = "".join(f"; {k}: {e[k]}" for k in ("partial_error", "final_error") if k in e)
        out.problems.append(f"  streamed ({e['split_sets']} split sets, e.g. {'; '.join(e['first'])}): "
                            f"{_show(message_view(e['streamed']))}{errs}")


def offered_tools(canned_by_id: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The canned file's tools, plus a schema-less tool ({"type": "object"}, no properties) for each
    name an output is expected to call that the file does not offer (nested-and-escaped-json's
    `search`, the schema-less `lookup`, ...): llama.cpp's parsers accept only offered names and
    refuse the whole output otherwise, which would hide what those outputs test. Both sides parse
    with the same list; a tool without properties is what "no schema" means to the extractors."""
    first = next(iter(canned_by_id.values()))
    tools = list(first["tools"] or [])
    names = {t["function"]["name"] for t in tools}
    for c in canned_by_id.values():
        for call in c.get("expected_calls") or []:
            if call["name"] not in names:
                names.add(call["name"])
                tools.append({"type": "function", "function": {"name": call["name"],
                                                               "parameters": {"type": "object"}}})
    return tools


def canned_for(cases_root: Path, fmt: str) -> dict[str, dict[str, Any]]:
    """Output id -> canned output, for one format (in file order)."""
    return {oid: c for (f, oid), c in canned_outputs(cases_root).items() if f == fmt}


def require_format(case: Case, fmt: str, template: str | None) -> None:
    """A model case's declared format must be what its GGUF template speaks."""
    if case.kind != "model":
        return
    found = format_for(case, template) if template and tool_capable(template) else None
    if found != fmt:
        raise CaseProblem(f"{case.location()}: checks.toolcalls.llama_parse.format is {fmt!r}, but the GGUF's "
                          f"chat template {'speaks ' + repr(found) if found else 'has no tool-call wire format'}")
