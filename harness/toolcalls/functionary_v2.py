"""Functionary v2: <|from|>assistant / <|recipient|>NAME / <|content|>BODY segments."""

from __future__ import annotations

from .base import Call, Format, Scan, ToolIndex
from ._scan import MATCH, NAME, NO, PARTIAL, SPACES, cut_header, find_marker, json_args, match_seq, skip_ws

FROM, STOP, CONTENT = "<|from|>", "<|stop|>", "<|content|>"
HEADER = (FROM, SPACES, "assistant", SPACES, "\n", "<|recipient|>", SPACES, NAME, SPACES, "\n", CONTENT)
HEADER_NAME = 3  # index of NAME among HEADER's regex captures
# llama-cpp-python prefills "<|from|>assistant\n<|recipient|>", so output may start here.
PREFILLED = (NAME, SPACES, "\n", CONTENT)


class FunctionaryV2(Format):
    name = "functionary-v2"
    reasoning = None  # these models write no reasoning block
    description = (
        "Functionary v2 (meetkai/functionary-*-v2.x) writes one message per recipient: "
        "<|from|>assistant\\n<|recipient|>all\\n<|content|>I will check.\\n<|from|>assistant\\n"
        '<|recipient|>get_weather\\n<|content|>{"city": "Paris"}<|stop|>. Recipient all is '
        "plain content, any other recipient is a call whose body is JSON arguments. The "
        "generation prompt prefills \"<|from|>assistant\\n<|recipient|>\", so the output may "
        'begin with "NAME\\n<|content|>". <|stop|> ends the turn and is dropped; text outside '
        "segments, and after a call's JSON, is content; a <|from|> that does not open a "
        "well-formed header is ordinary text. Truncated or malformed JSON yields no call."
    )

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        scan, pos = Scan(), 0
        status, body, caps = match_seq(text, 0, PREFILLED, final)
        if status == PARTIAL:
            return scan
        if status == MATCH:
            pos = self._segment(scan, text, 0, caps[0], body, final)
        while pos is not None:
            i, marker = find_marker(text, pos, (FROM, STOP), final)
            scan.text(text[pos:i])
            if marker is None:
                return scan
            if marker == STOP:
                pos = i + len(STOP)
                continue
            status, body, caps = match_seq(text, i, HEADER, final)
            if status == PARTIAL:
                return scan
            if status == NO and final and cut_header(text, i, HEADER):
                scan.call(Call(i, None, state="broken", error="truncated: output ends inside a message header"))
                return scan
            if status == NO:
                scan.text(FROM)
                pos = i + len(FROM)
                continue
            pos = self._segment(scan, text, i, caps[HEADER_NAME], body, final)
        return scan

    @staticmethod
    def _segment(scan: Scan, text: str, start: int, name: str, body: int, final: bool) -> int | None:
        if name == "all":
            return body  # content, scanned by the caller up to the next segment
        call, end = json_args(start, name, text, skip_ws(text, body), final)
        scan.call(call)
        if call.state == "done":
            return end
        if call.state == "broken":
            # The rest of a malformed segment is not content.
            i, marker = find_marker(text, min(end, len(text)), (FROM, STOP), True)
            return i if marker is not None else None
        return None


FORMAT = FunctionaryV2()
