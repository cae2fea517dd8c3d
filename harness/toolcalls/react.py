"""ReAct (Qwen2 / Qwen-Agent, LangChain style): Action: NAME / Action Input: ARGS."""

from __future__ import annotations

import re

from .base import Call, Format, Scan, ToolIndex, dumps, loads
from ._scan import MATCH, NO, PARTIAL, SPACES, WS, cut_header, json_args, match_seq, skip_ws

ACTION, INPUT = "Action:", "Action Input:"
REST_OF_LINE = re.compile(r"[^\n]*")
HEADER = (ACTION, REST_OF_LINE, "\n", WS, INPUT, SPACES)


class React(Format):
    name = "react"
    reasoning = None  # these models write no reasoning block
    description = (
        "ReAct prompting (Qwen2 / Qwen-Agent function calling, LangChain agents): "
        'Thought: I need the weather.\\nAction: get_weather\\nAction Input: {"city": "Paris"}. '
        "Every Action/Action Input pair in the reply is a call, in order (a common bug is to "
        "take only the first). A line starting with \"Action:\" opens a call; it must be "
        'followed (after optional blank lines) by "Action Input:". An input starting with '
        "'{' is parsed as JSON (it may span lines; truncated or malformed JSON is an error "
        "and no call); any other input is the rest of that line: JSON if it parses, else the "
        "raw string, both reported as invalid unless they are an object; an empty input "
        "means {}. Thought:, Observation: and Final Answer: lines are left in content "
        "verbatim: the harness does not decide what is reasoning."
    )

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        scan, pos, n = Scan(), 0, len(text)
        while pos < n:  # pos is always at a line start
            status, _, _ = match_seq(text, pos, (ACTION,), final)
            if status == PARTIAL:
                return scan
            if status == MATCH:
                pos = self._action(scan, text, pos, final)
                if pos is None:
                    return scan
                continue
            j = text.find("\n", pos)
            stop = n if j == -1 else j + 1
            scan.text(text[pos:stop])
            pos = stop
        return scan

    def _action(self, scan: Scan, text: str, start: int, final: bool) -> int | None:
        n = len(text)
        status, q, caps = match_seq(text, start, HEADER, final)
        if status == PARTIAL:
            return None
        if status == NO and final and cut_header(text, start, HEADER):
            scan.call(Call(start, None, state="broken", error="truncated: output ended inside an Action"))
            return None
        if status == NO or not caps[0].strip():
            error = f"{ACTION} not followed by {INPUT}" if status == NO else "Action without a tool name"
            scan.call(Call(start, None, state="broken", error=error))
            line_end = text.find("\n", start)  # only the Action line is dropped
            return None if line_end == -1 else line_end + 1
        name = caps[0].strip()
        if text.startswith("\n", q):  # the input may begin on the next line if it is JSON
            brace = skip_ws(text, q)
            if brace >= n and not final:
                return None
            if text.startswith("{", brace):
                q = brace
        if text.startswith("{", q):
            call, end = json_args(start, name, text, q, final)
            scan.call(call)
            if call.state == "broken":
                line_end = text.find("\n", end)
                return None if line_end == -1 else line_end + 1
            return end if call.state == "done" else None
        line_end = text.find("\n", q)
        if line_end == -1:
            if not final:
                return None
            line_end = n
        raw = text[q:line_end].strip()
        try:
            loads(raw)
            args = raw
        except ValueError:
            args = dumps(raw) if raw else "{}"
        scan.call(Call(start, name, args=args, state="done"))
        return line_end


FORMAT = React()
