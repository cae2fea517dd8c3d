"""Functionary v3.1 (Llama 3.1 based): <function=NAME>{json}</function>, <|python_tag|>code."""

from __future__ import annotations

from .base import Call, Format, Scan, ToolIndex
from ._scan import MATCH, NAME, NO, PARTIAL, code_args, cut_header, find_marker, json_args, match_seq, skip_ws

OPEN, CLOSE, PYTHON_TAG = "<function=", "</function>", "<|python_tag|>"


class FunctionaryV31(Format):
    name = "functionary-v3.1"
    reasoning = None  # these models write no reasoning block
    description = (
        "Functionary v3.1 (meetkai/functionary-medium-v3.1, Llama 3.1 based) writes "
        '<function=get_weather>{"city": "Paris"}</function>, several calls back to back, text '
        "before them is content. It keeps Llama 3.1's <|python_tag|> for code: everything "
        "after that tag is Python source and becomes a call to \"python\" with arguments "
        '{"code": SOURCE} (verbatim, as llama.cpp does). "<function=" not followed by NAME> '
        "is ordinary text. A complete call missing only its </function> at the very end is "
        "kept with an error; truncated or malformed JSON yields no call."
    )

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        scan, pos = Scan(), 0
        while True:
            i, marker = find_marker(text, pos, (OPEN, PYTHON_TAG), final)
            scan.text(text[pos:i])
            if marker is None:
                return scan
            if marker == PYTHON_TAG:
                code = text[i + len(PYTHON_TAG):]
                scan.call(Call(i, "python", args=code_args(code, final), state="done" if final else "open"))
                return scan
            status, p, caps = match_seq(text, i, (OPEN, NAME, ">"), final)
            if status == PARTIAL:
                return scan
            if status == NO and final and cut_header(text, i, (OPEN, NAME, ">")):
                scan.call(Call(i, None, state="broken", error="truncated: output ends inside <function=NAME>"))
                return scan
            if status == NO:
                scan.text(OPEN)  # not a call tag after all
                pos = i + len(OPEN)
                continue
            pos = self._call(scan, text, i, caps[0], skip_ws(text, p), final)
            if pos is None:
                return scan

    @staticmethod
    def _call(scan: Scan, text: str, start: int, name: str, p: int, final: bool) -> int | None:
        call, end = json_args(start, name, text, p, final)
        scan.call(call)
        if call.state == "open":
            return None
        if call.state == "done":
            after = skip_ws(text, end)
            status, close_end, _ = match_seq(text, after, (CLOSE,), final)
            if status == MATCH:
                return close_end
            if status == PARTIAL:
                call.state = "open"
                return None
            if CLOSE.startswith(text[after:]):  # final: missing or cut at the very end
                call.error = f"missing {CLOSE} at end of output (call kept: its JSON is complete)"
                return None
            call.state, call.error = "broken", f"unexpected text after the arguments, before {CLOSE}"
        j = text.find(CLOSE, end)
        return None if j == -1 else j + len(CLOSE)


FORMAT = FunctionaryV31()
