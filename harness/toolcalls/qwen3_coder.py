"""Qwen3-Coder / Qwen3.5 / Nemotron 3: XML-ish function and parameter tags."""

from __future__ import annotations

import re

from .base import Call, Format, Reasoning, Scan, ToolIndex, dumps
from ._scan import MATCH, NO, PARTIAL, coerce_value, cut_header, find_marker, match_seq, scan_markers, skip_ws
from .hermes import skip_broken
from .xml_invoke import python_literal

OPEN, CLOSE = "<tool_call>", "</tool_call>"
FUNC_END, PARAM_END = "</function>", "</parameter>"
TAG_NAME = re.compile(r"[^<>\n]+")
# A parameter value ends at its closing tag; Qwen3-Coder sometimes omits </parameter>,
# so the next tag that cannot be part of a value ends it too (as vLLM and llama.cpp do).
VALUE_ENDS = (PARAM_END, "<parameter=", FUNC_END, CLOSE)
FRAMED_END = "\n" + PARAM_END


def framed_value_end(text: str, vstart: int, final: bool, close: str = CLOSE) -> int | None:
    """End of a value written the template's way ("<parameter=k>\nVALUE\n</parameter>\n"):
    the first "\n</parameter>" followed (after whitespace) by the next tag or the end of
    the output, so a value may contain the text </parameter>, </function> or </tool_call>.

    Returns the index of that "\n", -1 when the text has no such close (the value is then
    ended the tolerant way, at final), or None while a partial text cannot tell yet."""
    i = text.find(FRAMED_END, vstart)
    while i != -1:
        after = skip_ws(text, i + len(FRAMED_END))
        rest = text[after:]
        if after >= len(text):
            if final:
                return i
            return None
        follow = ("<parameter=", FUNC_END, close)
        if rest.startswith(follow):
            return i
        if not final and any(t.startswith(rest) for t in follow):
            return None
        i = text.find(FRAMED_END, i + 1)
    return -1 if final else None


def strip_one_newline(raw: str) -> str:
    # The template writes "<parameter=k>\nVALUE\n</parameter>": exactly one newline each
    # side belongs to the markup, further whitespace is part of the value.
    if raw.startswith("\n"):
        raw = raw[1:]
    return raw[:-1] if raw.endswith("\n") else raw


class Qwen3Coder(Format):
    name = "qwen3-coder"
    open_tag, close_tag = OPEN, CLOSE  # Seed-OSS uses the same body in other tags
    python_literals = False
    description = (
        "Qwen3-Coder (also Qwen3.5, Nemotron 3 Nano, StepFun 3.5) writes "
        "<tool_call>\\n<function=get_weather>\\n<parameter=city>\\nParis\\n</parameter>\\n"
        "<parameter=days>\\n3\\n</parameter>\\n</function>\\n</tool_call>. Parameter values "
        "are raw text (one newline each side stripped; a value that starts on a new line, as the "
        "template writes it, ends only at a \"\\n</parameter>\" followed by the next tag, so it may "
        "contain </parameter>, </function> or </tool_call>) typed with the tool's JSON schema: "
        "integer/number/boolean/null/object/array are converted when the text fits, anything "
        "else (and every parameter without a schema) stays a string. A missing </parameter> "
        "is tolerated (the next tag ends the value). A call closed by only one of </function> "
        "and </tool_call> (the latter missing or cut at the very end) is kept with an error; "
        "a call cut before both could be missing parameters, so it yields no call and an "
        "error, as does a duplicate parameter. When tools are given, a bare <function=KNOWN_TOOL> without "
        "<tool_call> is also a call, as llama.cpp accepts."
    )

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        markers = (self.open_tag,) + tuple(f"<function={n}>" for n in tools.functions)
        def block(scan: Scan, i: int, marker: str) -> int | None:
            wrapped = marker == self.open_tag
            body = skip_ws(text, i + len(self.open_tag)) if wrapped else i
            return self._call(scan, text, i, body, wrapped, tools, final)
        return scan_markers(text, markers, final, block)

    def _call(self, scan, text, start, p, wrapped, tools, final) -> int | None:
        close = self.close_tag if wrapped else FUNC_END
        status, p, caps = match_seq(text, p, ("<function=", TAG_NAME, ">"), final)
        if status == PARTIAL:
            return None
        if status == NO and cut_header(text, p, ("<function=", TAG_NAME, ">")):
            scan.call(Call(start, None, state="broken", error="truncated: output ended in the call header"))
            return None
        if status == NO:
            bad = Call(start, None, state="broken", error=f"expected <function=NAME> after {self.open_tag}")
            return skip_broken(scan, bad, text, p, close, final)
        call = scan.call(Call(start, caps[0].strip()))
        params: dict = {}
        while True:
            call.args = dumps(params)
            p = skip_ws(text, p)
            if text.startswith("<parameter=", p):
                status, vstart, caps = match_seq(text, p, ("<parameter=", TAG_NAME, ">"), final)
                if status == NO:
                    return self._broken(text, call, p, close, "malformed <parameter=...> tag")
                j, end_tag = find_marker(text, vstart, (PARAM_END, "<parameter=", FUNC_END, self.close_tag), True) if status == MATCH else (0, None)
                if end_tag is not None and text.startswith("\n", vstart):
                    framed = framed_value_end(text, vstart, final, self.close_tag)
                    if framed is None:
                        return None  # a framed close may still arrive
                    if framed >= 0:
                        j, end_tag = framed + 1, PARAM_END
                    else:  # kept, but it may be a cut output that happens to end in a tag
                        call.error = (f"parameter {caps[0].strip()!r} starts on a new line but has no "
                                      "\\n</parameter> before the next tag: ended at the first closing tag")
                if end_tag is None:
                    return self._truncated(call, final)
                key = caps[0].strip()
                if key in params:
                    return self._broken(text, call, j, close, f"duplicate parameter {key!r}")
                raw = strip_one_newline(text[vstart:j])
                schema = tools.param_schema(call.name, key)
                params[key] = coerce_value(raw, schema, untyped_json=False)
                if self.python_literals and isinstance(params[key], str):
                    params[key] = python_literal(params[key], schema)
                p = j + len(PARAM_END) if end_tag == PARAM_END else j
            elif text.startswith(FUNC_END, p):
                p += len(FUNC_END)
                break
            elif wrapped and text.startswith(self.close_tag, p):
                call.args, call.state, call.error = dumps(params), "done", f"missing {FUNC_END}"
                return p + len(self.close_tag)
            elif any(t.startswith(text[p:]) for t in ("<parameter=", FUNC_END, self.close_tag)):
                # A tag is still arriving; if the output ends here, parameters may be missing.
                return self._truncated(call, final)
            else:
                return self._broken(text, call, p, close, f"unexpected text {text[p:p + 20]!r} in the call")
        call.args = dumps(params)
        after = skip_ws(text, p)
        status, end, _ = match_seq(text, after, (self.close_tag,), final)
        if status == MATCH:  # also swallows the </tool_call> a bare call is often closed with
            call.state = "done"
            return end
        if status == PARTIAL:
            return None
        if not wrapped:
            call.state = "done"
            return p
        if self.close_tag.startswith(text[after:]):  # </function> proves the call complete
            call.state, call.error = "done", f"missing {self.close_tag} at end of output"
            return None
        return self._broken(text, call, after, close, f"unexpected text after {FUNC_END}")

    @staticmethod
    def _truncated(call: Call, final: bool) -> None:
        if final:
            call.state, call.error = "broken", "truncated call (output ended inside it)"
        return None

    @staticmethod
    def _broken(text: str, call: Call, p: int, close: str, error: str) -> int | None:
        call.state, call.error = "broken", error
        j = text.find(close, p)
        return None if j == -1 else j + len(close)


FORMAT = Qwen3Coder()


class SeedOss(Qwen3Coder):
    name = "seed-oss"
    open_tag, close_tag = "<seed:tool_call>", "</seed:tool_call>"
    reasoning = Reasoning("<seed:think>", "</seed:think>")
    python_literals = True  # the template writes non-strings with Jinja's str()
    end_of_turn = ("<seed:eos>",)
    description = (
        "ByteDance Seed-OSS writes Qwen3-Coder's function/parameter body in its own tags: <seed:tool_call>\\n"
        "<function=get_weather>\\n<parameter=city>Paris</parameter>\\n</function>\\n</seed:tool_call>, after "
        "reasoning in <seed:think>...</seed:think>. Values are raw text typed with the tool's schema (the "
        "template writes non-strings with Jinja's string filter, so an object or array parameter also "
        "accepts a Python literal such as {'a': 1}); the rules for missing close tags, "
        "truncation and malformed markup are qwen3-coder's."
    )


SEED_OSS = SeedOss()
