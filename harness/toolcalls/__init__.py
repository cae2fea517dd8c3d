"""Tool-call wire formats: extraction from finished outputs and from streams.

    fmt = get_format("hermes")
    fmt.extract(text, tools) -> Extraction(calls, content, error)
    p = fmt.stream_parser(tools); p.feed(delta) / p.finish() -> [CallDelta]
    reconstruct(deltas) -> Extraction            # compare with fmt.extract(text)
    check_streaming(fmt, text, tokens_as_text)   # None, or the smallest failing split

Format modules are imported on first use (FORMATS maps name -> "module:attr").
"""

from __future__ import annotations

import difflib
import importlib
import re

from .base import CallDelta, Extraction, Format, StreamParser, ToolCall, reconstruct
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
        _loaded[name] = getattr(importlib.import_module(module), attr)
    return _loaded[name]


# Detection rules, most specific first.  Each is (format, predicate over the template
# source).  Predicates look for what the template *renders* for a tool call, not for
# words that could appear in any system prompt.
# A JSON object with "name" first, rendered right after <tool_call> (possibly across a
# Jinja tag boundary, with the quotes escaped inside a template string literal).
_HERMES_OBJECT = re.compile(r'<tool_call>[\s\S]{0,40}?\{\s*\\?"name\\?"')


def _has(src: str, *needles: str) -> bool:
    return all(n in src for n in needles)


_RULES = [
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
    "FORMATS", "CallDelta", "Extraction", "Format", "StreamParser", "ToolCall",
    "check_streaming", "detect_format", "format_names", "get_format", "reconstruct",
]
