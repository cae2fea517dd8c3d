"""Hermes 2 Pro / Qwen2.5 / Qwen3: JSON objects inside <tool_call> tags."""

from __future__ import annotations

from .base import Call, Format, Scan, ToolIndex
from ._scan import MATCH, PARTIAL, find_marker, json_call, match_seq, skip_ws

OPEN, CLOSE = "<tool_call>", "</tool_call>"


def skip_broken(scan: Scan, call: Call, text: str, pos: int, close: str, final: bool) -> int | None:
    """Record a broken call whose region runs to the next `close` tag (or the end).

    Returns where scanning resumes, or None when the region reaches the end of text."""
    scan.call(call)
    j = text.find(close, pos)
    return None if j == -1 else j + len(close)


class Hermes(Format):
    name = "hermes"
    description = (
        "Hermes 2 Pro, Qwen2.5 and Qwen3 wrap each call in its own tag pair holding one JSON "
        'object: <tool_call>\\n{"name": "get_weather", "arguments": {"city": "Paris"}}\\n</tool_call>. '
        "Several blocks are several calls; text before, between and after them is content "
        '(stripped as a whole). "parameters" is accepted for "arguments", an arguments value '
        "that is a JSON string holding an object is unwrapped, a missing arguments member means "
        "{}. The object is parsed JSON-aware, so a \"</tool_call>\" inside a string does not end "
        "the block. A block whose JSON is complete but whose </tool_call> is missing at the very "
        "end of the output (e.g. the tag was used as a stop string) still yields the call, with "
        "an error noting the missing tag; truncated or malformed JSON yields no call and an "
        "error, and the block's text is not content."
    )

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        scan, pos = Scan(), 0
        while True:
            i, marker = find_marker(text, pos, (OPEN,), final)
            scan.text(text[pos:i])
            if marker is None:
                return scan
            body = skip_ws(text, i + len(OPEN))
            if body >= len(text):
                if final:
                    scan.call(Call(i, None, state="broken", error="truncated: output ends after <tool_call>"))
                return scan
            if text[body] != "{":
                bad = Call(i, None, state="broken", error=f"expected a JSON object after {OPEN}")
                pos = skip_broken(scan, bad, text, body, CLOSE, final)
            else:
                pos = self._block(scan, text, i, body, final)
            if pos is None:
                return scan

    def _block(self, scan: Scan, text: str, start: int, body: int, final: bool) -> int | None:
        call, end = json_call(text, body, final)
        if call is None:
            return None  # not enough text yet to name the call
        call.start = start
        if call.state == "open":
            scan.call(call)
            return None
        if call.state == "broken":
            return skip_broken(scan, call, text, end, CLOSE, final)
        after = skip_ws(text, end)
        status, close_end, _ = match_seq(text, after, (CLOSE,), final)
        if status == MATCH:
            scan.call(call)
            return close_end
        if status == PARTIAL:
            call.state = "open"  # complete JSON, waiting for the closing tag
            scan.call(call)
            return None
        if CLOSE.startswith(text[after:]):  # final: the tag is missing or cut at the end
            call.error = f"missing {CLOSE} at end of output (call kept: its JSON is complete)"
            scan.call(call)
            return None
        call.state, call.error = "broken", f"unexpected text after the JSON object, before {CLOSE}"
        return skip_broken(scan, call, text, end, CLOSE, final)


FORMAT = Hermes()
