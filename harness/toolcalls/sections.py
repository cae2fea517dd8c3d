"""Formats built from special tokens: a calls section holding calls, each call a header
(the function name, maybe an id) and JSON arguments.

    DeepSeek R1:    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\n{...}\\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>
    DeepSeek V3.1:  <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜><｜tool▁calls▁end｜>
    Kimi K2:        <|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>{...}<|tool_call_end|><|tool_calls_section_end|>

One engine (`Sections`), one instance per format; what differs is the header grammar.
"""

from __future__ import annotations

import re

from .base import Call, Format, Scan, THINK, ToolIndex
from ._scan import MATCH, PARTIAL, json_args, match_seq, scan_markers, skip_ws

NAME = re.compile(r"[^\s<>{}\[\]()'\"`,:]+")
KIMI_ID = re.compile(r"functions\.([^\s<>:]+):(\d+)")


class Sections(Format):
    def __init__(self, name: str, description: str, *, section: tuple[str, str], call: tuple[str, str],
                 header: str, end_of_turn: tuple[str, ...] = ()):
        self.name, self.description, self.end_of_turn = name, description, end_of_turn
        self.section, self.call = section, call
        self.header = header  # "r1", "v3.1" or "kimi"
        self.reasoning = THINK

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        # a lone call (no section around it) is accepted too, as llama.cpp and vLLM do
        return scan_markers(text, (self.section[0], self.call[0]), final,
                            lambda scan, i, marker: self._section(scan, text, i, marker == self.section[0], final))

    def _section(self, scan: Scan, text: str, start: int, wrapped: bool, final: bool) -> int | None:
        p = start + len(self.section[0]) if wrapped else start
        close = self.section[1]
        count = 0
        while True:
            p = skip_ws(text, p)
            if text.startswith(close, p):
                return p + len(close)
            if text.startswith(self.call[0], p):
                p = self._call(scan, text, p, final)
                if p is None:
                    return None
                count += 1
                if not wrapped:
                    q = skip_ws(text, p)
                    if text.startswith(close, q):
                        return q + len(close)
                    if not final and text[q:] and close.startswith(text[q:]):
                        return None    # the section's end token may be arriving: not content yet
                    return p
                continue
            if not final and any(t.startswith(text[p:]) for t in (close, self.call[0])):
                return None
            if p >= len(text):
                if count:  # calls complete, the section's end token missing at the very end
                    scan.errors.append(f"missing {close} at end of output (calls kept)")
                else:
                    scan.call(Call(start, None, state="broken", error=f"truncated: output ends after {self.section[0]}"))
                return None
            scan.errors.append(f"unexpected text {text[p:p + 20]!r} in the tool-calls section")
            j = text.find(close, p)
            return None if j == -1 else j + len(close)

    def _call(self, scan: Scan, text: str, start: int, final: bool) -> int | None:
        p = start + len(self.call[0])
        status, p, name, ident = self._header(text, p, final)
        if status == PARTIAL:
            if final:
                scan.call(Call(start, None, state="broken", error="truncated call header"))
            return None
        if status != MATCH and final and self._header(text, start + len(self.call[0]), False)[0] == PARTIAL:
            scan.call(Call(start, None, state="broken", error="truncated call header"))
            return None
        if status != MATCH:
            scan.call(Call(start, None, state="broken", error=f"malformed call header near {text[p:p + 30]!r}"))
            return self._skip_call(text, p)
        call, end = json_args(start, name, text, skip_ws(text, p), final)
        call.id = ident
        scan.call(call)
        if call.state == "open":
            return None
        if call.state == "broken":
            return self._skip_call(text, end)
        q = skip_ws(text, end)
        if self.header == "r1":
            status, q, _ = match_seq(text, q, ("```",), final)
            if status == PARTIAL:
                call.state = "open"
                return None
            if status != MATCH and "```".startswith(text[q:]):  # final: cut before the fence
                call.error = f"missing ``` and {self.call[1]} at end of output (call kept: its JSON is complete)"
                return None
            if status != MATCH:
                call.state, call.error = "broken", "expected ``` after the arguments"
                return self._skip_call(text, q)
            q = skip_ws(text, q)
        status, q2, _ = match_seq(text, q, (self.call[1],), final)
        if status == MATCH:
            return q2
        if status == PARTIAL:
            call.state = "open"
            return None
        if self.call[1].startswith(text[q:]):  # final: the end token is missing at the very end
            call.error = f"missing {self.call[1]} at end of output (call kept: its JSON is complete)"
            return None
        call.state, call.error = "broken", f"unexpected text after the arguments, before {self.call[1]}"
        return self._skip_call(text, q)

    def _header(self, text: str, p: int, final: bool):
        """(status, end, name, id) for the text between the call's begin token and its JSON."""
        if self.header == "kimi":
            status, q, caps = match_seq(text, p, (re.compile(r"[^<]*"), "<|tool_call_argument_begin|>"), final)
            if status != MATCH:
                return status, q, None, None
            m = KIMI_ID.fullmatch(caps[0].strip())
            if m is None:
                return "no", p, None, None
            return MATCH, q, m.group(1), caps[0].strip()
        sep = "<｜tool▁sep｜>"
        if self.header == "r1":
            parts = ("function", sep, NAME, "\n", "```json")
            status, q, caps = match_seq(text, p, parts, final)
            return status, q, (caps[0] if status == MATCH else None), None
        status, q, caps = match_seq(text, p, (NAME, sep), final)
        return status, q, (caps[0] if status == MATCH else None), None

    def _skip_call(self, text: str, p: int) -> int | None:
        j = text.find(self.call[1], p)
        return None if j == -1 else j + len(self.call[1])


_RULES = ("Text before the section is content; a call's arguments are JSON and stream as they arrive; a "
          "truncated or malformed call yields no call and an error (complete calls before it are kept); a "
          "call whose end token is missing at the very end of the output is kept, with an error. Reasoning "
          "is <think>...</think>; the generation prompt often opens it.")
FORMATS = {
    "deepseek-r1": Sections(
        "deepseek-r1", "DeepSeek R1 (and its distills) write <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function"
        "<｜tool▁sep｜>get_weather\\n```json\\n{\"city\": \"Paris\"}\\n```<｜tool▁call▁end｜>"
        "<｜tool▁calls▁end｜>, one call after another (newline-separated) in the section. " + _RULES,
        section=("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"), call=("<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>"),
        header="r1", end_of_turn=("<｜end▁of▁sentence｜>",)),
    "deepseek-v3.1": Sections(
        "deepseek-v3.1", "DeepSeek V3.1 writes <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather"
        "<｜tool▁sep｜>{\"city\": \"Paris\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>. " + _RULES,
        section=("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"), call=("<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>"),
        header="v3.1", end_of_turn=("<｜end▁of▁sentence｜>",)),
    "kimi-k2": Sections(
        "kimi-k2", "Kimi K2 writes <|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
        "<|tool_call_argument_begin|>{\"city\": \"Paris\"}<|tool_call_end|><|tool_calls_section_end|>; the "
        "header functions.NAME:INDEX is the call id, NAME the function. " + _RULES,
        section=("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"),
        call=("<|tool_call_begin|>", "<|tool_call_end|>"), header="kimi", end_of_turn=("<|im_end|>",)),
}
