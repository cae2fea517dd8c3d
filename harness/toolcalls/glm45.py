"""GLM-4.5 / 4.6 / 4.7: <tool_call>NAME then <arg_key>/<arg_value> pairs."""

from __future__ import annotations

import re

from .base import Call, Format, Scan, ToolIndex, dumps
from ._scan import MATCH, PARTIAL, WS, coerce_value, cut_header, find_marker, match_seq, scan_markers, skip_ws
from .hermes import skip_broken

OPEN, CLOSE = "<tool_call>", "</tool_call>"
KEY_OPEN, VALUE_CLOSE = "<arg_key>", "</arg_value>"
KEY = re.compile(r"[^<]*")
BAD_NAME = re.compile(r"[<>{}\"]")
# GLM-4.5/4.6 put the name on its own line; GLM-4.7 glues the first <arg_key> to it.
NAME_ENDS = ("\n", KEY_OPEN, CLOSE)
ARG_HEAD = (KEY_OPEN, KEY, "</arg_key>", WS, "<arg_value>")


class Glm45(Format):
    name = "glm45"
    # Ling 3 speaks this format and ends its turn with <|role_end|>; GLM's own turn ends
    # are the next role tags.
    end_of_turn = ("<|role_end|>", "<|user|>", "<|observation|>")
    description = (
        "GLM-4.5, 4.6 and 4.7 write <tool_call>get_weather\\n<arg_key>city</arg_key>\\n"
        "<arg_value>Paris</arg_value>\\n</tool_call> (4.7 omits the newlines). Values are raw "
        "text: a parameter whose schema says string keeps the text verbatim; any other "
        "parameter, or one without a schema, is parsed as JSON when the text is valid JSON "
        '(so 3 -> 3, {"a": 1} -> object) and otherwise stays a string. Text outside the '
        "blocks is content. Only </tool_call> proves that no argument is missing, so a block "
        "cut anywhere before it is truncated: no call and an error, like duplicate keys or a "
        "block without a function name. A value whose </arg_value> is missing is ended by the "
        "block's </tool_call> (the call is kept, with a warning in the error), as qwen3-coder "
        "tolerates a missing </parameter>. The reasoning block is <think>...</think>; "
        "<|role_end|> (Ling 3), <|user|> and <|observation|> end the turn."
    )

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        return scan_markers(text, (OPEN,), final, lambda scan, i, _: self._block(scan, text, i, tools, final))

    def _block(self, scan: Scan, text: str, start: int, tools: ToolIndex, final: bool) -> int | None:
        p = skip_ws(text, start + len(OPEN))
        j, end_mark = find_marker(text, p, NAME_ENDS, True)
        name = text[p:j].strip()
        if end_mark is None or not name or BAD_NAME.search(name):
            if end_mark is None and not final:
                return None  # the name line is still arriving
            error = "truncated: output ended inside <tool_call>" if end_mark is None else f"expected a function name after {OPEN}"
            return skip_broken(scan, Call(start, None, state="broken", error=error), text, p, CLOSE, final)
        call = scan.call(Call(start, name))
        params: dict = {}
        p = j
        while True:
            call.args = dumps(params)
            p = skip_ws(text, p)
            status, vstart, caps = match_seq(text, p, ARG_HEAD, final)
            if status == MATCH:
                end, mark = find_marker(text, vstart, (VALUE_CLOSE, CLOSE), True)
                if mark is None:
                    return self._broken(call, "truncated <arg_value>") if final else None
                key = caps[0].strip()
                if key in params:
                    return self._skip(text, call, end, f"duplicate argument {key!r}")
                raw = text[vstart:end]
                if mark == CLOSE:  # </tool_call> ends the value and the block
                    params[key] = coerce_value(raw.rstrip("\n"), tools.param_schema(name, key), untyped_json=True)
                    call.args, call.state = dumps(params), "done"
                    call.error = f"missing {VALUE_CLOSE} before {CLOSE} (call kept: the block is closed)"
                    return end + len(CLOSE)
                params[key] = coerce_value(raw, tools.param_schema(name, key), untyped_json=True)
                p = end + len(VALUE_CLOSE)
                continue
            if status == PARTIAL:
                return None
            if text.startswith(CLOSE, p):
                call.args, call.state = dumps(params), "done"
                return p + len(CLOSE)
            if CLOSE.startswith(text[p:]) or cut_header(text, p, ARG_HEAD):
                # Only </tool_call> proves no argument is missing: a cut here is truncation.
                return self._broken(call, "truncated: output ended before </tool_call>") if final else None
            return self._skip(text, call, p, f"unexpected text {text[p:p + 20]!r} in the call")

    @staticmethod
    def _broken(call: Call, error: str) -> None:
        call.state, call.error = "broken", error
        return None

    @staticmethod
    def _skip(text: str, call: Call, p: int, error: str) -> int | None:
        call.state, call.error = "broken", error
        j = text.find(CLOSE, p)
        return None if j == -1 else j + len(CLOSE)


FORMAT = Glm45()
