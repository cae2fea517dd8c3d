"""Tool-call wire formats: the reference parser for finished outputs and for streams.

    fmt = get_format("hermes")
    fmt.extract(text, tools, reasoning="separate", opened=False)
        -> Extraction(calls, content, error, reasoning)   # reasoning: "" when none
    opened = fmt.opened_by_prompt(rendered_generation_prompt)   # prompt opened <think>?
    p = fmt.stream_parser(tools, reasoning=..., opened=...); p.feed(delta) / p.finish()
        -> [CallDelta]  (content_delta, reasoning_delta, or a call's index/name/id/arguments)
    reconstruct(deltas) -> Extraction            # compare with fmt.extract(text)
    check_streaming(fmt, text, tokens_as_text)   # None, or the smallest failing split
    format_names(), describe_formats(), REASONING_MODES   # what exists

Reasoning modes (REASONING_MODES): "separate" (reasoning field), "none" (left in the
content, tags included), "deepseek-legacy" (separate when finished, inline in a stream).
Call markup inside a reasoning block is never a call, in any mode.

Format modules are imported on first use (FORMATS maps name -> "module:attr").
"""

from __future__ import annotations

import difflib
import importlib
import re

from .base import REASONING_MODES, CallDelta, Extraction, Format, Reasoning, StreamParser, ToolCall, reconstruct
from .check import check_streaming

FORMATS: dict[str, str] = {
    "hermes": "harness.toolcalls.hermes:FORMAT",
    "qwen3-coder": "harness.toolcalls.qwen3_coder:FORMAT",
    "llama3-json": "harness.toolcalls.llama3_json:FORMAT",
    "mistral": "harness.toolcalls.mistral:FORMAT",
    "functionary-v2": "harness.toolcalls.functionary_v2:FORMAT",
    "functionary-v3.1": "harness.toolcalls.functionary_v31:FORMAT",
    "functionary-v3.2": "harness.toolcalls.functionary_v32:FORMAT",
    "glm4": "harness.toolcalls.glm4:FORMAT",
    "glm45": "harness.toolcalls.glm45:FORMAT",
    "react": "harness.toolcalls.react:FORMAT",
    "pythonic": "harness.toolcalls.pythonic:FORMAT",
    "lfm2": "harness.toolcalls.pythonic:LFM2",
    "seed-oss": "harness.toolcalls.qwen3_coder:SEED_OSS",
    "harmony": "harness.toolcalls.harmony:FORMAT",
    "gemma4": "harness.toolcalls.gemma4:FORMAT",
    "deepseek-r1": "harness.toolcalls.sections:FORMATS[deepseek-r1]",
    "deepseek-v3.1": "harness.toolcalls.sections:FORMATS[deepseek-v3.1]",
    "kimi-k2": "harness.toolcalls.sections:FORMATS[kimi-k2]",
    "deepseek-v3.2": "harness.toolcalls.xml_invoke:FORMATS[deepseek-v3.2]",
    "deepseek-v4": "harness.toolcalls.xml_invoke:FORMATS[deepseek-v4]",
    "minimax-m2": "harness.toolcalls.xml_invoke:FORMATS[minimax-m2]",
    "minicpm": "harness.toolcalls.xml_invoke:FORMATS[minicpm]",
    "muse-atem": "harness.toolcalls.xml_invoke:FORMATS[muse-atem]",
    "nemotron-v2": "harness.toolcalls.json_calls:FORMATS[nemotron-v2]",
    "apriel": "harness.toolcalls.json_calls:FORMATS[apriel]",
    "granite": "harness.toolcalls.json_calls:FORMATS[granite]",
    "firefunction-v2": "harness.toolcalls.json_calls:FORMATS[firefunction-v2]",
    "command-r7b": "harness.toolcalls.json_calls:FORMATS[command-r7b]",
    "command-r-plus": "harness.toolcalls.json_calls:FORMATS[command-r-plus]",
    "apertus": "harness.toolcalls.json_calls:FORMATS[apertus]",
    "minimax-m1": "harness.toolcalls.json_calls:FORMATS[minimax-m1]",
    "gigachat": "harness.toolcalls.json_calls:FORMATS[gigachat]",
    "gigachat3": "harness.toolcalls.json_calls:FORMATS[gigachat3]",
}

_loaded: dict[str, Format] = {}


def format_names() -> list[str]:
    return list(FORMATS)


def get_format(name: str) -> Format:
    if name not in FORMATS:
        close = difflib.get_close_matches(name, FORMATS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown tool-call format {name!r}{hint} (known: {', '.join(FORMATS)})")
    if name not in _loaded:
        module, attr = FORMATS[name].split(":")
        attr, _, key = attr.partition("[")
        obj = getattr(importlib.import_module(module), attr)
        _loaded[name] = obj[key.rstrip("]")] if key else obj
    return _loaded[name]


def describe_formats() -> dict[str, dict]:
    """Every format with its reasoning delimiters (None: none, or reported by the format
    itself), end-of-turn markers and description; REASONING_MODES lists the modes."""
    out = {}
    for name in FORMATS:
        fmt = get_format(name)
        out[name] = {"reasoning": fmt.reasoning.to_dict() if fmt.reasoning else None,
                     "end_of_turn": list(fmt.end_of_turn), "description": fmt.description}
    return out


# Detection rules, most specific first.  Each is (format, predicate over the template
# source).  Predicates look for what the template *renders* for a tool call, not for
# words that could appear in any system prompt.
# A JSON object with "name" first, rendered right after <tool_call> (possibly across a
# Jinja tag boundary, with the quotes escaped inside a template string literal).
_HERMES_OBJECT = re.compile(r'<tool_call>[\s\S]{0,40}?\{\s*\\?"name\\?"')


def _has(src: str, *needles: str) -> bool:
    return all(n in src for n in needles)


_RULES = [
    ("harmony", lambda s: _has(s, "<|channel|>", "<|start|>assistant", "to=") and "functions." in s),
    ("gemma4", lambda s: "<|tool_call>call:" in s),
    ("deepseek-r1", lambda s: _has(s, "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "```json")),
    ("deepseek-v3.1", lambda s: _has(s, "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>")),
    ("deepseek-v3.2", lambda s: _has(s, "｜DSML｜", "function_calls>")),
    ("deepseek-v4", lambda s: _has(s, "｜DSML｜", "tool_calls>")),
    ("kimi-k2", lambda s: _has(s, "<|tool_call_begin|>", "<|tool_call_argument_begin|>")),
    ("minimax-m2", lambda s: "<minimax:tool_call>" in s and "ns_token" not in s),
    ("minimax-m1", lambda s: _has(s, "<tool_calls>", "<beginning_of_sentence>")),
    ("muse-atem", lambda s: _has(s, "<atem:function_calls>", "<atem:invoke")),
    ("minicpm", lambda s: _has(s, '<function name="', '<param name="')),
    ("seed-oss", lambda s: "<seed:tool_call>" in s),
    ("lfm2", lambda s: "<|tool_call_start|>[" in s),
    ("nemotron-v2", lambda s: "<TOOLCALL>[" in s),
    ("apriel", lambda s: _has(s, "<tool_calls>[", "[BEGIN FINAL RESPONSE]")),
    ("granite", lambda s: "<|tool_call|>" in s and "<tool_call>" not in s),
    ("firefunction-v2", lambda s: "functools[" in s),
    ("command-r7b", lambda s: "<|START_ACTION|>" in s),
    ("command-r-plus", lambda s: "Action:\\n```json" in s or "Action:\n```json" in s),
    ("apertus", lambda s: "<|tools_prefix|>" in s),
    ("gigachat", lambda s: "<|function_call|>" in s),
    ("gigachat3", lambda s: _has(s, "<|role_sep|>", "function call")),
    ("glm45", lambda s: _has(s, "<tool_call>", "<arg_key>", "<arg_value>")),
    ("qwen3-coder", lambda s: _has(s, "<tool_call>", "<function=", "<parameter=")),
    ("hermes", lambda s: "<function=" not in s and bool(_HERMES_OBJECT.search(s))),
    ("mistral", lambda s: "[TOOL_CALLS]" in s),
    ("functionary-v3.2", lambda s: _has(s, ">>>", "all") and "recipient" in s),
    ("functionary-v2", lambda s: _has(s, "<|recipient|>", "<|from|>")),
    ("functionary-v3.1", lambda s: _has(s, "<function=", "</function>", "<|start_header_id|>")),
    ("llama3-json", lambda s: "<|start_header_id|>" in s
        and ("<|python_tag|>" in s or '"parameters": dictionary of argument name' in s)),
    ("pythonic", lambda s: "<|python_start|>" in s or "func_name1(" in s),
    ("glm4", lambda s: _has(s, "[gMASK]", "<|observation|>") and "<arg_key>" not in s),
    ("react", lambda s: _has(s, "Action:", "Action Input:")),
]


def detect_format(template_text: str) -> str | None:
    """Guess the tool-call wire format from a chat template's source; None when unsure."""
    if not isinstance(template_text, str):
        return None
    for name, rule in _RULES:
        if rule(template_text):
            return name
    return None


__all__ = [
    "FORMATS", "REASONING_MODES", "CallDelta", "Extraction", "Format", "Reasoning", "StreamParser", "ToolCall",
    "check_streaming", "describe_formats", "detect_format", "format_names", "get_format", "reconstruct",
]
