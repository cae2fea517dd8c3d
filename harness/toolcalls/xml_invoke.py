"""Formats with XML-style invoke/parameter elements whose name is an attribute:

    MiniMax-M2:    <minimax:tool_call>\\n<invoke name="f">\\n<parameter name="k">v</parameter>\\n</invoke>\\n</minimax:tool_call>
    DeepSeek V3.2: <｜DSML｜function_calls>\\n<｜DSML｜invoke name="f">\\n<｜DSML｜parameter name="k" string="true">v</｜DSML｜parameter>\\n...
    MiniCPM 5:     <function name="f"><param name="k"><![CDATA[v]]></param></function>

One engine (`XmlInvoke`), one instance per format.  Parameter values are raw text;
with a `string="true|false"` attribute (DSML) it decides: false means JSON.  Otherwise
the tool's schema types the value (_scan.coerce_value; without a schema, JSON when the
text parses, since these templates write non-strings with tojson).
"""

from __future__ import annotations

import ast
import re

from .base import Call, Format, Scan, THINK, ToolIndex, dumps, loads
from ._scan import MATCH, PARTIAL, coerce_value, cut_header, match_seq, scan_markers, schema_types, skip_ws

ATTR_VALUE = re.compile(r'[^"<>\n]*')
STRING_ATTR = re.compile(r'\s+string="(true|false)"')
CDATA_OPEN, CDATA_CLOSE = "<![CDATA[", "]]>"


def python_literal(raw: str, schema: dict | None):
    """An object/array parameter written as a Python literal, read with ast.literal_eval
    (never evaluated); anything else stays the string."""
    if not schema_types(schema) & {"object", "array"}:
        return raw
    try:
        value = ast.literal_eval(raw.strip())
        dumps(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return raw
    return value if isinstance(value, (dict, list)) else raw


class XmlInvoke(Format):
    def __init__(self, name: str, description: str, *, wrapper: tuple[str, str] | None, invoke: str, param: str,
                 end_of_turn: tuple[str, ...] = (), string_attr: bool = False, cdata: bool = False, reasoning=THINK,
                 python_literals: bool = False):
        self.name, self.description, self.wrapper, self.end_of_turn = name, description, wrapper, end_of_turn
        tag = lambda t: (f'<{t} name="', f"</{t}>")  # noqa: E731
        (self.invoke_open, self.invoke_close), (self.param_open, self.param_close) = tag(invoke), tag(param)
        self.string_attr, self.cdata, self.reasoning = string_attr, cdata, reasoning
        # the template writes non-strings with Jinja's str(): {'a': 1}, ['x'] (MiniCPM)
        self.python_literals = python_literals

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        read = self._block if self.wrapper else self._invoke
        opener = self.wrapper[0] if self.wrapper else self.invoke_open
        return scan_markers(text, (opener,), final, lambda scan, i, _: read(scan, text, i, tools, final))

    def _block(self, scan: Scan, text: str, start: int, tools: ToolIndex, final: bool) -> int | None:
        p, close, any_call = start + len(self.wrapper[0]), self.wrapper[1], False
        while True:
            p = skip_ws(text, p)
            if text.startswith(close, p):
                if not any_call:
                    scan.errors.append(f"empty {self.wrapper[0]} block")
                return p + len(close)
            if text.startswith(self.invoke_open, p):
                p = self._invoke(scan, text, p, tools, final)
                if p is None:
                    return None
                any_call = True
                continue
            if not final and any(t.startswith(text[p:]) for t in (close, self.invoke_open)):
                return None
            if p >= len(text):
                scan.errors.append(f"truncated: output ended inside the {self.wrapper[0]} block")
                return None
            scan.errors.append(f"unexpected text {text[p:p + 20]!r} in the {self.wrapper[0]} block")
            j = text.find(close, p)
            return None if j == -1 else j + len(close)

    def _invoke(self, scan: Scan, text: str, start: int, tools: ToolIndex, final: bool) -> int | None:
        status, p, caps = match_seq(text, start, (self.invoke_open, ATTR_VALUE, '">'), final)
        if status == PARTIAL:
            return None
        if status != MATCH and cut_header(text, start, (self.invoke_open, ATTR_VALUE, '">')):
            return self._truncated(scan.call(Call(start, None)), final)
        if status != MATCH or not caps[0].strip():
            return self._broken(scan, Call(start, None), text, start, "malformed invoke tag (expected name=\"...\")")
        call = scan.call(Call(start, caps[0].strip()))
        params: dict = {}
        while True:
            call.args = dumps(params)
            p = skip_ws(text, p)
            if text.startswith(self.invoke_close, p):
                call.state = "done"
                return p + len(self.invoke_close)
            if text.startswith(self.param_open, p):
                got = self._param(text, p, call.name, tools, final)
                if got is None:
                    return self._truncated(call, final)
                if isinstance(got, str):
                    return self._broken(scan, call, text, p, got)
                key, value, p = got
                if key in params:
                    return self._broken(scan, call, text, p, f"duplicate parameter {key!r}")
                params[key] = value
                continue
            if p >= len(text) or any(t.startswith(text[p:]) for t in (self.param_open, self.invoke_close)):
                return self._truncated(call, final)
            return self._broken(scan, call, text, p, f"unexpected text {text[p:p + 20]!r} in the call")

    def _param(self, text: str, p: int, fn: str, tools: ToolIndex, final: bool):
        """(key, value, end), an error string, or None when the text ends inside it."""
        status, q, caps = match_seq(text, p, (self.param_open, ATTR_VALUE, '"'), final)
        if status == PARTIAL:
            return None
        if status != MATCH or not caps[0].strip():
            return "malformed parameter tag (expected name=\"...\")"
        key, as_string = caps[0].strip(), None
        if self.string_attr:
            m = STRING_ATTR.match(text, q)
            if m is None:
                if len(text) - q < 16 and not final:
                    return None
                return f"parameter {key!r}: expected string=\"true\" or string=\"false\""
            as_string, q = m.group(1) == "true", m.end()
        if not text.startswith(">", q):
            return None if q >= len(text) else f"parameter {key!r}: malformed tag"
        q += 1
        if self.cdata and text.startswith(CDATA_OPEN, q):
            j = text.find(CDATA_CLOSE, q)
            if j == -1:
                return None
            raw, q = text[q + len(CDATA_OPEN):j], j + len(CDATA_CLOSE)
            if not text.startswith(self.param_close, q):
                return None if self.param_close.startswith(text[q:]) else f"parameter {key!r}: text after CDATA"
            return key, raw, q + len(self.param_close)
        j = text.find(self.param_close, q)
        if j == -1:
            return None
        raw = text[q:j]
        if as_string is True:
            value = raw
        elif as_string is False:
            try:
                value = loads(raw.strip())
            except ValueError:
                return f"parameter {key!r}: string=\"false\" but the value is not JSON"
        else:
            schema = tools.param_schema(fn, key)
            value = coerce_value(raw.strip("\n"), schema, untyped_json=True)
            if self.python_literals and isinstance(value, str):
                value = python_literal(value, schema)
        return key, value, j + len(self.param_close)

    @staticmethod
    def _truncated(call: Call, final: bool) -> None:
        if final:
            call.state, call.error = "broken", "truncated call (output ended inside it)"
        return None

    def _broken(self, scan: Scan, call: Call, text: str, p: int, error: str) -> int | None:
        if call not in scan.pieces:
            scan.call(call)
        call.state, call.error = "broken", error
        close = self.wrapper[1] if self.wrapper else self.invoke_close
        j = text.find(close, p)
        return None if j == -1 else j + len(close)


_RULES = ("Text outside the block is content; a call is complete only at its invoke close tag, so a call "
          "cut anywhere before it is truncated: no call and an error, as is a duplicate parameter or a "
          "malformed tag (the rest of the block is then skipped).")
DSML = "｜DSML｜"
FORMATS = {
    "minimax-m2": XmlInvoke(
        "minimax-m2", 'MiniMax-M2 (and M2.1) wrap invocations in one block: <minimax:tool_call>\\n<invoke '
        'name="get_weather">\\n<parameter name="city">Paris</parameter>\\n</invoke>\\n</minimax:tool_call>, '
        "after an interleaved <think>...</think> block. Values are raw text typed with the tool schema (JSON "
        "when the text parses and there is no schema). " + _RULES,
        wrapper=("<minimax:tool_call>", "</minimax:tool_call>"), invoke="invoke", param="parameter",
        end_of_turn=("[e~[",)),
    "deepseek-v3.2": XmlInvoke(
        "deepseek-v3.2", 'DeepSeek V3.2 writes DSML: <｜DSML｜function_calls>\\n<｜DSML｜invoke name="get_weather">'
        '\\n<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\\n</｜DSML｜invoke>\\n'
        '</｜DSML｜function_calls>; string="true" keeps the value verbatim, string="false" means JSON. '
        "Reasoning is <think>...</think>. " + _RULES,
        wrapper=(f"<{DSML}function_calls>", f"</{DSML}function_calls>"), invoke=f"{DSML}invoke",
        param=f"{DSML}parameter", string_attr=True, end_of_turn=("<｜end▁of▁sentence｜>",)),
    "deepseek-v4": XmlInvoke(
        "deepseek-v4", 'DeepSeek V4 writes DSML in a <｜DSML｜tool_calls> block: <｜DSML｜tool_calls>\\n'
        '<｜DSML｜invoke name="get_weather">\\n<｜DSML｜parameter name="city" string="true">Paris'
        '</｜DSML｜parameter>\\n</｜DSML｜invoke>\\n</｜DSML｜tool_calls>; string="false" values are JSON. '
        "Reasoning is <think>...</think>. " + _RULES,
        wrapper=(f"<{DSML}tool_calls>", f"</{DSML}tool_calls>"), invoke=f"{DSML}invoke",
        param=f"{DSML}parameter", string_attr=True, end_of_turn=("<｜end▁of▁sentence｜>",)),
    "muse-atem": XmlInvoke(
        "muse-atem", 'Muse Glimmer (ATEM) writes one block per call: <atem:function_calls>\\n<atem:invoke '
        'name="get_weather">\\n<atem:parameter name="city">Paris</atem:parameter>\\n</atem:invoke>\\n'
        "</atem:function_calls>; non-strings are JSON (true/false/null, tojson for objects and arrays), so values "
        "are typed with the tool schema, JSON when the text parses and there is no schema. Reasoning is "
        "<think>...</think>. " + _RULES,
        wrapper=("<atem:function_calls>", "</atem:function_calls>"), invoke="atem:invoke", param="atem:parameter"),
    "minicpm": XmlInvoke(
        "minicpm", 'MiniCPM 5 writes each call as <function name="get_weather"><param name="city">Paris'
        "</param></function>, with no wrapper; a string value holding <, & or a newline is wrapped in "
        "<![CDATA[...]]>. Values are typed with the tool schema; the template writes non-strings with "
        "Python's str(), so an object or array parameter also accepts a Python literal ({'a': 1}). Reasoning is <think>...</think>. " + _RULES,
        wrapper=None, invoke="function", param="param", cdata=True, end_of_turn=("<|im_end|>",), python_literals=True),
}
