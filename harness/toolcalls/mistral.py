"""Mistral: [TOOL_CALLS] followed by a JSON array, or by NAME[CALL_ID]ID[ARGS]{...}."""

from __future__ import annotations

import re

from .base import Call, Format, Reasoning, Scan, ToolIndex
from ._scan import MATCH, NAME, PARTIAL, find_marker, json_args, json_call, match_seq, skip_ws

TAG = "[TOOL_CALLS]"
ARGS, CALL_ID = "[ARGS]", "[CALL_ID]"
CALL_ID_VALUE = re.compile(r"[^\[\]\s]+")


class Mistral(Format):
    name = "mistral"
    reasoning = Reasoning("[THINK]", "[/THINK]")  # Magistral, Ministral 3 Reasoning
    description = (
        "Mistral models announce calls with the [TOOL_CALLS] token. Older models (Nemo, "
        'Small 3.0) follow it with a JSON array: [TOOL_CALLS][{"name": "get_weather", '
        '"arguments": {"city": "Paris"}, "id": "a1b2c3d4e"}]; newer ones (Small 3.2, '
        "Devstral, Ministral 3) write one segment per call: [TOOL_CALLS]get_weather[ARGS]"
        '{"city": "Paris"}, optionally with an id: [TOOL_CALLS]NAME[CALL_ID]a1b2c3d4e[ARGS]{...}. '
        "Text before the first [TOOL_CALLS] and after a call is content. Array elements are "
        "taken one by one: complete elements are calls even when a later element is truncated "
        "or malformed (which is reported as an error). A call id, where present, is emitted "
        "with the call's first stream delta, so an array element whose \"id\" follows its "
        "arguments is streamed only once complete."
    )

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        scan, pos = Scan(), 0
        while True:
            i, marker = find_marker(text, pos, (TAG,), final)
            scan.text(text[pos:i])
            if marker is None:
                return scan
            p = skip_ws(text, i + len(TAG))
            if p >= len(text):
                if final:
                    scan.call(Call(i, None, state="broken", error=f"truncated: output ends after {TAG}"))
                return scan
            pos = self._array(scan, text, p, final) if text[p] == "[" else self._segment(scan, text, i, p, final)
            if pos is None:
                return scan

    def _segment(self, scan: Scan, text: str, start: int, p: int, final: bool) -> int | None:
        status, q, caps = match_seq(text, p, (NAME,), final)
        if status == PARTIAL:
            return None
        if status != MATCH:
            return self._skip(scan, Call(start, None, state="broken"), text, p, f"expected a JSON array or NAME{ARGS} after {TAG}")
        name, ident = caps[0], None
        if text.startswith(CALL_ID, q):
            status, q, caps = match_seq(text, q, (CALL_ID, CALL_ID_VALUE, ARGS), final)
            ident = caps[0] if status == MATCH else None
        elif text.startswith(ARGS, q):
            status, q = MATCH, q + len(ARGS)
        elif not final and (ARGS.startswith(text[q:]) or CALL_ID.startswith(text[q:])):
            status = PARTIAL
        else:
            status = "no"
        if status == PARTIAL:
            return None
        if status != MATCH:
            return self._skip(scan, Call(start, None, state="broken"), text, q, f"expected {ARGS} after the function name")
        call, end = json_args(start, name, text, skip_ws(text, q), final)
        call.id = ident
        if call.state == "broken":
            return self._skip(scan, call, text, end, call.error)
        scan.call(call)
        return end if call.state == "done" else None

    def _array(self, scan: Scan, text: str, p: int, final: bool) -> int | None:
        q, n = p + 1, len(text)
        while True:
            q = skip_ws(text, q)
            if q >= n:
                if final:
                    scan.errors.append(f"truncated {TAG} array (missing ']')")
                return None
            if text[q] == "]":
                return q + 1
            if text[q] != "{":
                return self._skip(scan, None, text, q, f"expected a call object in the {TAG} array")
            call, end = json_call(text, q, final, id_key="id")
            if call is None:
                return None
            if call.state == "broken":
                return self._skip(scan, call, text, end, call.error)
            scan.call(call)
            if call.state == "open":
                return None
            q = skip_ws(text, end)
            if q < n and text[q] == ",":
                q += 1
            elif q < n and text[q] != "]":
                return self._skip(scan, None, text, q, f"expected ',' or ']' in the {TAG} array")

    @staticmethod
    def _skip(scan: Scan, call: Call | None, text: str, p: int, error: str) -> int | None:
        """A malformed segment: its text up to the next [TOOL_CALLS] is not content."""
        if call is not None:
            call.state, call.error = "broken", error
            scan.call(call)
        else:
            scan.errors.append(error)
        j = text.find(TAG, p)
        return None if j == -1 else j


FORMAT = Mistral()
