"""Pythonic tool calls (Llama 3.2 / Llama 4 style): [f(a=1), g(b='x')]."""

from __future__ import annotations

import ast
import math
import re
from typing import Any

from .base import THINK, Call, Format, Scan, ToolIndex, dumps
from ._scan import COMPLETE, INCOMPLETE, MATCH, PARTIAL, WS, find_marker, match_seq, skip_ws

START, END = "<|python_start|>", "<|python_end|>"
DOTTED = re.compile(r"[A-Za-z_][\w.]*")
# Python string literals, brackets, or an opening quote whose string is unterminated.
# As in Python's tokenizer, three quotes always open a triple-quoted string (never an
# empty string plus a quote).  Unrolled loops keep failure on unterminated input linear.
_PY_TOKEN = re.compile(
    r"'''[^'\\]*(?:(?:\\[\s\S]|'(?!''))[^'\\]*)*'''"
    r'|"""[^"\\]*(?:(?:\\[\s\S]|"(?!""))[^"\\]*)*"""'
    r"|'''|\"\"\""
    r"|'[^'\\\n]*(?:\\[\s\S][^'\\\n]*)*'"
    r'|"[^"\\\n]*(?:\\[\s\S][^"\\\n]*)*"'
    r"|['\"]|[()\[\]{}]"
)
_OPENERS = ("'", '"', "'''", '"""')
_CLOSER = {"(": ")", "[": "]", "{": "}"}
_AST_ERRORS = (SyntaxError, ValueError, TypeError, RecursionError, MemoryError)


def bracket_end(text: str, pos: int, final: bool) -> tuple[str, int]:
    """End of the bracketed Python expression opening at text[pos], string-aware."""
    stack: list[str] = []
    for m in _PY_TOKEN.finditer(text, pos):
        tok = m.group()
        if tok in _OPENERS:
            return INCOMPLETE, len(text)
        if tok in ('""', "''") and m.end() == len(text) and not final:
            return INCOMPLETE, len(text)  # an empty string, or the start of a triple quote
        if tok in _CLOSER:
            stack.append(_CLOSER[tok])
        elif tok in ")]}":
            if not stack or stack.pop() != tok:
                return "invalid", m.start()
            if not stack:
                return COMPLETE, m.end()
    return INCOMPLETE, len(text)


def _json_value(value: Any, where: str) -> Any:
    """Literal -> JSON value; tuples become lists, anything JSON cannot hold is refused."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a JSON number")
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v, where) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"{where}: dict keys must be strings")
        return {k: _json_value(v, where) for k, v in value.items()}
    raise ValueError(f"{where}: {type(value).__name__} is not JSON-compatible")


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


class _JsonNames(ast.NodeTransformer):
    """true/false/null as the constants (LFM2 writes dict arguments with tojson)."""

    NAMES = {"true": True, "false": False, "null": None}

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.NAMES:
            return ast.copy_location(ast.Constant(self.NAMES[node.id]), node)
        return node


def call_arguments(src: str, name: str, json_names: bool = False) -> tuple[str | None, str | None]:
    """(arguments JSON, None) for a literal-only keyword call, else (None, error).

    Uses ast.parse + ast.literal_eval: nothing from the model is ever evaluated.
    json_names: also accept true/false/null."""
    try:
        node = ast.parse(src, mode="eval").body
        if json_names:
            node = _JsonNames().visit(node)
    except _AST_ERRORS as e:
        return None, f"not a Python call: {type(e).__name__}: {e}"
    if not isinstance(node, ast.Call) or _dotted(node.func) != name:
        return None, "not a plain function call"
    if node.args:
        return None, "positional arguments are not supported (keyword arguments only)"
    args: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            return None, "**kwargs are not supported"
        try:
            value = ast.literal_eval(kw.value)
        except _AST_ERRORS as e:
            # ast's message names the node by its address; say what the value is instead
            return None, (f"argument {kw.arg!r} is not a literal: "
                          f"{type(kw.value).__name__} {ast.get_source_segment(src, kw.value) or ''!r}"[:300])
        try:
            args[kw.arg] = _json_value(value, f"argument {kw.arg!r}")
        except (ValueError, RecursionError) as e:
            return None, str(e)
    return dumps(args), None


class Pythonic(Format):
    name = "pythonic"
    json_names = False
    reasoning = None  # these models write no reasoning block
    description = (
        "Llama 3.2 / Llama 4 pythonic tool calling: the reply starts with a Python list of "
        "calls, [get_weather(city='Paris', days=3), get_time(tz=\"UTC\")], optionally wrapped "
        "in <|python_start|>...<|python_end|> (Llama 4). Only keyword arguments with literal "
        "values (strings, numbers, True/False/None, lists, tuples, dicts) are accepted; they "
        "are read with ast.literal_eval, never evaluated. The list must open the output "
        "(leading whitespace aside); text after it is content, and a reply that does not "
        "start with \"[name(\" is all content. Each call stands on its own: complete calls "
        "are kept when a later one is truncated or malformed, which is reported as an error; "
        "the list's text is never content."
    )

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        scan = Scan()
        p = skip_ws(text, 0)
        status, after, _ = match_seq(text, p, (START,), final)
        if status == PARTIAL:
            return scan
        wrapped = status == MATCH
        if wrapped:
            p = skip_ws(text, after)
        status, _, _ = match_seq(text, p, ("[", WS, DOTTED, WS, "("), final)
        if status == PARTIAL:
            return scan
        if status != MATCH:
            scan.text(text)
            return scan
        end = self._list(scan, text, p, final)
        if end is None:
            return scan
        if wrapped:
            status, after, _ = match_seq(text, skip_ws(text, end), (END,), final)
            if status == PARTIAL:
                return scan
            if status == MATCH:
                end = after
        scan.text(text[end:])
        return scan

    def _list(self, scan: Scan, text: str, start: int, final: bool) -> int | None:
        q, n = start + 1, len(text)
        while True:
            q = skip_ws(text, q)
            status, paren, caps = match_seq(text, q, (DOTTED, WS, "("), final)
            if status == PARTIAL:
                return None
            if status != MATCH:
                if text.startswith("]", q):
                    return q + 1
                return self._abandon(scan, text, start, final, "expected a call in the list")
            call = scan.call(Call(q, caps[0]))
            state, end = bracket_end(text, paren - 1, final)
            if state == INCOMPLETE:
                if final:
                    call.state, call.error = "broken", "truncated call (output ended inside it)"
                return None
            if state != COMPLETE:
                call.state, call.error = "broken", "unbalanced brackets in the call"
                return self._abandon(scan, text, start, final, None)
            args, error = call_arguments(text[q:end], caps[0], self.json_names)
            if error:
                call.state, call.error = "broken", error
                return self._abandon(scan, text, start, final, None)
            call.args, call.state = args, "done"
            q = skip_ws(text, end)
            if q >= n:
                if final:
                    scan.errors.append("truncated call list (missing ']')")
                return None
            if text[q] == "]":
                return q + 1
            if text[q] != ",":
                return self._abandon(scan, text, start, final, "expected ',' or ']' after a call")
            q += 1

    @staticmethod
    def _abandon(scan: Scan, text: str, start: int, final: bool, error: str | None) -> int | None:
        """Stop reading calls; the rest of the list is not content."""
        if error:
            scan.errors.append(error)
        state, end = bracket_end(text, start, final)
        return end if state == COMPLETE else None


FORMAT = Pythonic()


class Lfm2(Pythonic):
    """LFM2 / LFM2.5: the same call list between <|tool_call_start|> and <|tool_call_end|>."""

    name = "lfm2"
    reasoning = THINK
    json_names = True
    end_of_turn = ("<|im_end|>",)
    description = (
        "Liquid LFM2 and LFM2.5 write a pythonic call list between special tokens: <|tool_call_start|>"
        "[get_weather(city='Paris', days=3)]<|tool_call_end|>, anywhere in the reply (text before and after "
        "is content). Values are Python literals (read with ast.literal_eval, never evaluated); dict values "
        "are written as JSON, so true/false/null are accepted too. Reasoning is <think>...</think>. Complete "
        "calls are kept when a later one in the list is truncated or malformed (an error); the list's text is "
        "never content; a list whose <|tool_call_end|> is missing at the very end keeps its calls, with an error."
    )
    OPEN, CLOSE = "<|tool_call_start|>", "<|tool_call_end|>"

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        scan, pos = Scan(), 0
        while True:
            i, marker = find_marker(text, pos, (self.OPEN,), final)
            scan.text(text[pos:i])
            if marker is None:
                return scan
            p = skip_ws(text, i + len(self.OPEN))
            status, _, _ = match_seq(text, p, ("[", WS, DOTTED, WS, "("), final)
            if status == PARTIAL:
                if final:
                    scan.errors.append(f"truncated: output ended after {self.OPEN}")
                return scan
            if status != MATCH and p >= len(text):
                scan.errors.append(f"truncated: output ended after {self.OPEN}")
                return scan
            end = self._list(scan, text, p, final) if status == MATCH else self._not_a_list(scan, text, p)
            if end is None:
                return scan
            q = skip_ws(text, end)
            status, after, _ = match_seq(text, q, (self.CLOSE,), final)
            if status == PARTIAL:
                return scan
            if status == MATCH:
                pos = after
            elif self.CLOSE.startswith(text[q:]):
                scan.errors.append(f"missing {self.CLOSE} at end of output (calls kept)")
                return scan
            else:
                scan.errors.append(f"unexpected text after the call list, before {self.CLOSE}")
                j = text.find(self.CLOSE, q)
                if j == -1:
                    return scan
                pos = j + len(self.CLOSE)

    def _not_a_list(self, scan: Scan, text: str, p: int) -> int | None:
        scan.errors.append(f"expected a call list [name(...)] after {self.OPEN}")
        j = text.find(self.CLOSE, p)
        return None if j == -1 else j


LFM2 = Lfm2()
