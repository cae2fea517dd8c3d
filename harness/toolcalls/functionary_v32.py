"""Functionary v3.2: ">>>recipient\\n" segments; recipient "all" is plain content."""

from __future__ import annotations

from .base import Call, Format, Scan, ToolIndex
from ._scan import MATCH, NAME, PARTIAL, code_args, json_args, match_seq, skip_ws

PREFIX = ">>>"


class FunctionaryV32(Format):
    name = "functionary-v3.2"
    reasoning = None  # these models write no reasoning block
    description = (
        "Functionary v3.2 (meetkai/functionary-medium-v3.2) addresses every segment: "
        '>>>all\\nLet me check.>>>get_weather\\n{"city": "Paris"}. The template prefills the '
        'first ">>>", so raw output usually starts with "all\\n" or "NAME\\n{". A header is '
        '">>>NAME\\n" followed by "{" (or NAME all/python), as in llama.cpp, so other ">>>" '
        "(e.g. a Python prompt in an answer) stays content. Segments for all are content; "
        "text after a call's JSON up to the next header is content too. For python, a body "
        'that does not start with "{" is raw code running to the end of the output, passed '
        'as {"code": ...}. Truncated or malformed JSON yields no call and an error.'
    )

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        scan = Scan()
        status, name, body = self._header(text, 0, (NAME, "\n"), final)
        if status == PARTIAL:
            return scan
        if status != MATCH:
            pos = 0
        else:
            pos = self._segment(scan, text, 0, name, body, final)
        while pos is not None:
            h, status, name, body = self._next_header(text, pos, final)
            scan.text(text[pos:h])
            if status == "cut":
                scan.call(Call(h, None, state="broken", error="truncated: output ends inside a >>> header"))
            if status != MATCH:
                return scan
            pos = self._segment(scan, text, h, name, body, final)
        return scan

    @staticmethod
    def _header(text: str, pos: int, parts: tuple, final: bool) -> tuple[str, str, int]:
        """Is there a segment header at pos?  Returns (status, recipient, body start)."""
        status, body, caps = match_seq(text, pos, parts, final)
        if status != MATCH:
            return status, "", body
        name = caps[-1]
        if name == "all" or text.startswith("{", body) or (name == "python" and body < len(text)):
            return MATCH, name, body
        if body >= len(text):
            # "NAME\n" at the very end: undecided while streaming.  When final, an explicit
            # ">>>NAME\n" is a cut call; without ">>>" it is just a line of text.
            return (PARTIAL if not final else MATCH if parts[0] == PREFIX else "no"), name, body
        return "no", name, body

    def _next_header(self, text: str, pos: int, final: bool) -> tuple[int, str, str, int]:
        k = pos
        while True:
            k = text.find(PREFIX, k)
            if k == -1:
                # hold back a trailing ">" or ">>" that may become a header
                hold = 0 if final else next((j for j in (2, 1) if text.endswith(PREFIX[:j])), 0)
                return max(pos, len(text) - hold), "no", "", 0
            status, name, body = self._header(text, k, (PREFIX, NAME, "\n"), final)
            if status == "no" and final and self._header(text, k, (PREFIX, NAME, "\n"), False)[0] == PARTIAL:
                return k, "cut", "", 0
            if status != "no":
                return k, status, name, body
            k += 1

    def _segment(self, scan: Scan, text: str, start: int, name: str, body: int, final: bool) -> int | None:
        if name == "all":
            return body  # the segment is content, scanned by the caller
        if name == "python" and not text.startswith("{", body):
            if body >= len(text) and final:
                scan.call(Call(start, "python", state="broken", error="truncated: empty python segment"))
                return None
            if body < len(text):
                done = final
                scan.call(Call(start, "python", args=code_args(text[body:], done), state="done" if done else "open"))
            return None
        call, end = json_args(start, name, text, skip_ws(text, body), final)
        scan.call(call)
        if call.state == "done":
            return end
        if call.state == "broken":
            # The rest of a malformed segment is not content: skip to the next header.
            h, status, _, _ = self._next_header(text, min(end, len(text)), final)
            return h if status == MATCH else None
        return None


FORMAT = FunctionaryV32()
