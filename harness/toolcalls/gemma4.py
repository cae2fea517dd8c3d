"""Gemma 4: <|tool_call>call:NAME{key:<|"|>text<|"|>,n:3,flag:true,obj:{k:1},xs:[1,2]}<tool_call|>.

The arguments are Gemma's own notation, not JSON: bare keys, strings between <|"|>
quote tokens (anything may appear inside, braces and markers included), numbers and
true/false bare, nested {..} and [..].  The template writes None as None; null is
accepted too.
"""

from __future__ import annotations

import re

from .base import Call, Format, Reasoning, Scan, ToolIndex, dumps, loads
from ._scan import MATCH, PARTIAL, cut_header, match_seq, scan_markers

OPEN, CLOSE, QUOTE = "<|tool_call>", "<tool_call|>", '<|"|>'
NAME = re.compile(r"[A-Za-z_][\w.\-]*")
BARE_KEY = re.compile(r"[^:{}\[\],<\s]+")
SCALAR = re.compile(r"[^,{}\[\]<\s]+")
WS = re.compile(r"\s*")


class Incomplete(Exception):
    pass


class Malformed(Exception):
    pass


def _ws(text: str, i: int) -> int:
    i = WS.match(text, i).end()
    if i >= len(text):
        raise Incomplete
    return i


def parse_value(text: str, i: int):
    """(value, end) of the value at text[i]; raises Incomplete or Malformed."""
    i = _ws(text, i)
    if text.startswith(QUOTE, i):
        j = text.find(QUOTE, i + len(QUOTE))
        if j == -1:
            raise Incomplete
        return text[i + len(QUOTE):j], j + len(QUOTE)
    if QUOTE.startswith(text[i:]):
        raise Incomplete
    c = text[i]
    if c == "{":
        return parse_object(text, i)
    if c == "[":
        out, i = [], i + 1
        if text[_ws(text, i)] == "]":
            return out, _ws(text, i) + 1
        while True:
            value, i = parse_value(text, i)
            out.append(value)
            i = _ws(text, i)
            if text[i] == "]":
                return out, i + 1
            if text[i] != ",":
                raise Malformed(f"expected ',' or ']' near {text[i:i + 20]!r}")
            i += 1
    m = SCALAR.match(text, i)
    if m is None:
        raise Malformed(f"unexpected {text[i:i + 20]!r}")
    if m.end() >= len(text):
        raise Incomplete  # a number or word may still grow
    token = m.group()
    if token in ("None", "null"):
        return None, m.end()
    if token in ("true", "false"):
        return token == "true", m.end()
    try:
        value = loads(token)
    except ValueError:
        raise Malformed(f"{token!r} is not a value (strings are written between <|\"|> tokens)") from None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise Malformed(f"{token!r} is not a value")
    return value, m.end()


def parse_object(text: str, i: int) -> tuple[dict, int]:
    out: dict = {}
    i += 1  # past "{"
    while True:
        i = _ws(text, i)
        if text[i] == "}":
            return out, i + 1
        if text.startswith(QUOTE, i):
            key, i = parse_value(text, i)
        else:
            m = BARE_KEY.match(text, i)
            if m is None:
                if QUOTE.startswith(text[i:]):
                    raise Incomplete
                raise Malformed(f"expected a key near {text[i:i + 20]!r}")
            if m.end() >= len(text):
                raise Incomplete
            key, i = m.group(), m.end()
        i = _ws(text, i)
        if text[i] != ":":
            raise Malformed(f"expected ':' after key {key!r}")
        if key in out:
            raise Malformed(f"duplicate key {key!r}")
        out[key], i = parse_value(text, i + 1)
        i = _ws(text, i)
        if text[i] == ",":
            i += 1
        elif text[i] != "}":
            raise Malformed(f"expected ',' or '}}' near {text[i:i + 20]!r}")


class Gemma4(Format):
    name = "gemma4"
    reasoning = Reasoning("<|channel>thought", "<channel|>")
    end_of_turn = ("<turn|>", "<|tool_response>")  # after calls the model hands over to the tool
    description = (
        "Gemma 4 writes <|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>,days:3}<tool_call|> per call: "
        "bare keys, strings between <|\"|> tokens (which may contain braces, commas and markers), bare "
        "numbers and true/false/None, nested {...} and [...]. Reasoning is <|channel>thought ... <channel|>; <turn|> and <|tool_response> end the turn. "
        "Text outside the calls is content. A call is emitted whole once its closing <tool_call|> arrives; "
        "a truncated or malformed call yields no call and an error (the rest of its block is skipped); a "
        "complete call whose <tool_call|> is missing at the very end is kept, with an error."
    )

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        return scan_markers(text, (OPEN,), final, lambda scan, i, _: self._call(scan, text, i, final))

    def _call(self, scan: Scan, text: str, start: int, final: bool) -> int | None:
        status, p, caps = match_seq(text, start, (OPEN, "call:", NAME, "{"), final)
        if status == PARTIAL:
            if final:
                scan.call(Call(start, None, state="broken", error="truncated call header"))
            return None
        if status != MATCH and cut_header(text, start, (OPEN, "call:", NAME, "{")):
            scan.call(Call(start, None, state="broken", error="truncated call header"))
            return None
        if status != MATCH:
            scan.call(Call(start, None, state="broken", error="expected call:NAME{...} after <|tool_call>"))
            return self._skip(text, p)
        call = scan.call(Call(start, caps[0]))
        try:
            args, end = parse_object(text, p - 1)
        except Incomplete:
            if final:
                call.state, call.error = "broken", "truncated call (output ended inside it)"
            return None
        except Malformed as e:
            call.state, call.error = "broken", f"malformed arguments: {e}"
            return self._skip(text, p)
        call.args = dumps(args)
        status, q, _ = match_seq(text, WS.match(text, end).end(), (CLOSE,), final)
        if status == MATCH:
            call.state = "done"
            return q
        if status == PARTIAL:
            call.args = ""
            return None
        if CLOSE.startswith(text[WS.match(text, end).end():]):
            call.state, call.error = "done", f"missing {CLOSE} at end of output (call kept: its arguments are complete)"
            return None
        call.state, call.error = "broken", f"unexpected text after the arguments, before {CLOSE}"
        return self._skip(text, end)

    @staticmethod
    def _skip(text: str, p: int) -> int | None:
        j = text.find(CLOSE, p)
        return None if j == -1 else j + len(CLOSE)


FORMAT = Gemma4()
