"""Llama 3.1 / 3.2 / 3.3 JSON tool calls: {"name": ..., "parameters": {...}}."""

from __future__ import annotations

import re

from .base import Call, Format, Scan, ToolIndex
from ._scan import MATCH, PARTIAL, find_marker, json_call, json_call_header, match_seq

PYTHON_TAG = "<|python_tag|>"
KEY_START = re.compile(r'\{\s*"')  # an object whose first key has started
CUT = -2
SEPARATORS = " \t\r\n;"


class Llama3Json(Format):
    name = "llama3-json"
    reasoning = None  # these models write no reasoning block
    description = (
        'Llama 3.1/3.2/3.3 answer a tool call with a bare JSON object, {"name": "get_weather", '
        '"parameters": {"city": "Paris"}}, optionally preceded by <|python_tag|>; "arguments" '
        'is accepted for "parameters" and an optional leading "type": "function" member is '
        "allowed. A call may start at the beginning of the output or of any line, or at a "
        "<|python_tag|> after text on a line (Let me check. <|python_tag|>{...}: the text before it is content), and several "
        "calls may follow each other separated by ';' and/or whitespace (those separators are "
        "not content). An object is only a call when it starts with \"name\" (a string) "
        "immediately followed by the arguments key - the prefix llama.cpp and vLLM match - so "
        "other JSON in a reply stays content. Once that prefix is seen the object is a call: "
        "if it then turns out truncated or malformed there is no call, an error, and the rest "
        "of that line is not content."
    )

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        scan, pos, n = Scan(), 0, len(text)
        while pos < n:  # pos is always a call position: a line start or just after a call
            p = self._call_start(text, pos, final)
            if p is None:
                return scan  # undecided: a call may be arriving
            if p == CUT:
                scan.call(Call(pos, None, state="broken", error="truncated: output ends inside a call object"))
                return scan
            if p >= 0:
                end = self._call(scan, text, p, final)
                if end is None:
                    return scan
                # Separators after a call are dropped; another call may follow.
                while end < n and text[end] in SEPARATORS:
                    end += 1
                if end >= n and not final:
                    return scan
                pos = end
                continue
            j = text.find("\n", pos)
            stop = n if j == -1 else j + 1
            # <|python_tag|> later on the line (after text) starts a call there
            t, tag = find_marker(text[:stop], pos + 1, (PYTHON_TAG,), final or j != -1)
            if tag is not None and self._call_start(text, t, final) not in (-1,):
                scan.text(text[pos:t])
                pos = t
                continue
            if tag is None and t < stop:  # the line ends in what may become the tag
                scan.text(text[pos:t])
                return scan
            scan.text(text[pos:stop])
            pos = stop
        return scan

    def _call_start(self, text: str, pos: int, final: bool) -> int | None:
        """Where the call object starts if one starts at pos, -1 if none, None if undecided."""
        p = pos
        while p < len(text) and text[p] in " \t":
            p += 1
        status, after_tag, _ = match_seq(text, p, (PYTHON_TAG,), final)
        if status == PARTIAL:
            return None
        if status == MATCH:
            p = after_tag
            while p < len(text) and text[p] in " \t\r\n":
                p += 1
        if p >= len(text):
            return None if not final else -1
        if text[p] != "{":
            return -1
        status = json_call_header(text, p, final, None)[0]
        if status == PARTIAL:
            return None
        if final and status != MATCH and KEY_START.match(text, p) and json_call_header(text, p, False, None)[0] == PARTIAL:
            return CUT
        return p if status == MATCH else -1

    def _call(self, scan: Scan, text: str, p: int, final: bool) -> int | None:
        call, end = json_call(text, p, final)
        if call is None or call.state == "open":
            if call is not None:
                scan.call(call)
            return None
        scan.call(call)
        if call.state == "broken":
            # The object was committed to as a call; the rest of its line goes with it.
            j = text.find("\n", end)
            if j == -1:
                return None
            return j + 1
        return end


FORMAT = Llama3Json()
