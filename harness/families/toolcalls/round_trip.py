"""The round-trip check: the model's template renders the wanted calls, the wire format parses them
back, and what is lost on the way is declared."""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import json
from typing import Any, Iterable

from harness.cases.model import Case, CaseSet
from harness.families.items import Item, contexts_for
from .common import (
    FAMILY, Outcome, PRESENCE, ROUND_TRIP, assistant_turn, compare_calls, declared_losses, format_for,
    options, presence_losses, stable, tool_call_index, tool_capable, wanted_calls
)


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
