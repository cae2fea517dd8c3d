"""Writes cases/toolcall-outputs/<format>.yaml for the formats added in issue 15.

    python tests/toolcall_canned.py          # rewrite the files
    (tests/test_toolcalls_canned.py checks that the files on disk are what this writes)

Each output is composed from pieces -- plain text, a reasoning block, a block of calls
written by the format's *encoder* -- and its expectation follows from the pieces alone:
the calls are the ones the encoder wrote, the content is the plain text (stripped as a
whole), the reasoning is the reasoning text.  Nothing here runs an extractor.  The
encoders follow the templates in llama.cpp's models/templates/ (named per format).
Truncated and malformed outputs, whose expectation is a rule of the format rather than
a composition, are written out by hand per format (HAND).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parents[1] / "cases" / "toolcall-outputs"

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer"}}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "write_file", "parameters": {"type": "object", "properties": {
        "path": {"type": "string"}, "content": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "set_options", "parameters": {"type": "object", "properties": {
        "verbose": {"type": "boolean"}, "ratio": {"type": "number"}, "tags": {"type": "array"},
        "config": {"type": "object"}, "limit": {"type": ["integer", "null"]}}}}},
]

WEATHER = ("get_weather", {"city": "Paris", "days": 3})
TIME = ("get_time", {})
ROME = ("get_weather", {"city": "Rome"})
ODD = ("set_options", {"verbose": True, "ratio": -0.5, "tags": ["a", "b"], "config": {"depth": {"max": 2}, "ok": False},
                       "limit": None})
UNICODE = ("write_file", {"path": "dir\\北京 🏮.txt", "content": 'line1\nline2 "q" \\ {x} \t é'})


def jdump(v) -> str:
    return json.dumps(v, ensure_ascii=False)


# --- encoders: calls -> wire text, as each template writes them --------------------------
def py_value(v, json_dicts: bool) -> str:
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\t", "\\t") + "'"
    if isinstance(v, dict):
        return jdump(v) if json_dicts else repr(v)
    return repr(v)


def gemma_value(v) -> str:
    q = '<|"|>'
    if isinstance(v, str):
        return q + v + q
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "None"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{gemma_value(x)}" for k, x in sorted(v.items())) + "}"
    if isinstance(v, list):
        return "[" + ",".join(gemma_value(x) for x in v) + "]"
    return jdump(v)


def raw_or_json(v) -> str:
    return v if isinstance(v, str) else jdump(v)


class Enc:
    """name, reasoning (open, close) or None, and block(calls) -> (text, expected calls)."""

    def __init__(self, name, think, block, stem, ids=None, lone=None):
        self.name, self.think, self._block, self.stem, self._ids = name, think, block, stem, ids
        self.lone = lone  # wrap a single call when the block needs one per call

    def block(self, calls):
        text = self._block(calls)
        want = []
        for i, (n, a) in enumerate(calls):
            c = {"name": n, "arguments": a}
            if self._ids:
                c["id"] = self._ids(i, n)
            want.append(c)
        return text, want


def _harmony(calls):
    out = []
    for n, a in calls:
        out.append(f"<|start|>assistant to=functions.{n}<|channel|>commentary <|constrain|>json<|message|>{jdump(a)}<|call|>")
    return "".join(out)


def _xml(wrap, invoke, param, value):
    nl = "\n" if wrap else ""

    def block(calls):
        body = ""
        for n, a in calls:
            body += f'<{invoke} name="{n}">{nl}'
            for k, v in a.items():
                attr, text = value(v)
                body += f'<{param} name="{k}"{attr}>{text}</{param}>{nl}'
            body += f"</{invoke}>{nl}"
        return f"{wrap[0]}\n{body}{wrap[1]}" if wrap else body
    return block


def _dsml_value(v):
    return (' string="true"', v) if isinstance(v, str) else (' string="false"', jdump(v))


def _minicpm_value(v):
    if isinstance(v, str):
        return "", f"<![CDATA[{v}]]>" if any(c in v for c in "<&\n") else v
    return "", str(v)


def _seed(calls):
    out = ""
    for n, a in calls:
        out += f"<seed:tool_call>\n<function={n}>\n"
        for k, v in a.items():
            out += f"<parameter={k}>{v if isinstance(v, str) else str(v)}</parameter>\n"
        out += "</function>\n</seed:tool_call>"
    return out


def _list_json(open_, close, item, sep=", "):
    return lambda calls: open_ + "[" + sep.join(item(i, n, a) for i, (n, a) in enumerate(calls)) + "]" + close


DS_CALLS = ("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>")
DS_CALL = ("<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>")
ENCODERS = [
    Enc("harmony", ("<|channel|>analysis<|message|>", "<|end|>", ""), _harmony, "openai-gpt-oss-120b"),
    Enc("gemma4", ("<|channel>thought\n", "\n<channel|>", ""),
        lambda calls: "".join(f"<|tool_call>call:{n}{{" + ",".join(f"{k}:{gemma_value(v)}" for k, v in sorted(a.items()))
                              + "}<tool_call|>" for n, a in calls), "google-gemma-4-31B-it"),
    Enc("deepseek-r1", ("<think>\n", "\n</think>", "\n\n"),
        lambda calls: DS_CALLS[0] + "\n".join(f"{DS_CALL[0]}function<｜tool▁sep｜>{n}\n```json\n{jdump(a)}\n```{DS_CALL[1]}"
                                              for n, a in calls) + DS_CALLS[1], "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B"),
    Enc("deepseek-v3.1", ("<think>", "</think>", ""),
        lambda calls: DS_CALLS[0] + "".join(f"{DS_CALL[0]}{n}<｜tool▁sep｜>{jdump(a)}{DS_CALL[1]}" for n, a in calls)
        + DS_CALLS[1], "deepseek-ai-DeepSeek-V3.1"),
    Enc("kimi-k2", ("<think>", "</think>", ""),
        lambda calls: "<|tool_calls_section_begin|>" + "".join(
            f"<|tool_call_begin|>functions.{n}:{i}<|tool_call_argument_begin|>{jdump(a)}<|tool_call_end|>"
            for i, (n, a) in enumerate(calls)) + "<|tool_calls_section_end|>", "moonshotai-Kimi-K2",
        ids=lambda i, n: f"functions.{n}:{i}"),
    Enc("deepseek-v3.2", ("<think>", "</think>", ""),
        _xml(("<｜DSML｜function_calls>", "</｜DSML｜function_calls>"), "｜DSML｜invoke", "｜DSML｜parameter", _dsml_value),
        "deepseek-ai-DeepSeek-V3.2"),
    Enc("deepseek-v4", ("<think>", "</think>", ""),
        _xml(("<｜DSML｜tool_calls>", "</｜DSML｜tool_calls>"), "｜DSML｜invoke", "｜DSML｜parameter", _dsml_value),
        "deepseek-ai-DeepSeek-V4"),
    Enc("minimax-m2", ("<think>\n", "\n</think>", "\n\n"),
        _xml(("<minimax:tool_call>", "</minimax:tool_call>"), "invoke", "parameter", lambda v: ("", raw_or_json(v))),
        "MiniMax-M2"),
    Enc("muse-atem", ("<think>", "</think>", ""),
        lambda calls: "".join(_xml(("<atem:function_calls>", "</atem:function_calls>"), "atem:invoke", "atem:parameter",
                                   lambda v: ("", raw_or_json(v)))([c]) for c in calls), "muse-glimmer"),
    Enc("minicpm", ("<think>\n", "\n</think>", "\n\n"), _xml(None, "function", "param", _minicpm_value), "openbmb-MiniCPM5-1B"),
    Enc("seed-oss", ("<seed:think>", "</seed:think>", ""), _seed, "ByteDance-Seed-OSS"),
    Enc("lfm2", ("<think>", "</think>", ""),
        lambda calls: "<|tool_call_start|>[" + ", ".join(
            f"{n}(" + ", ".join(f"{k}={py_value(v, True)}" for k, v in a.items()) + ")" for n, a in calls)
        + "]<|tool_call_end|>", "LFM2.5-8B-A1B"),
    Enc("nemotron-v2", ("<think>\n", "\n</think>", "\n\n"),
        _list_json("<TOOLCALL>", "</TOOLCALL>", lambda i, n, a: jdump({"name": n, "arguments": a})),
        "NVIDIA-Nemotron-Nano-v2"),
    Enc("apriel", ("Here are my reasoning steps:\n", "\n[BEGIN FINAL RESPONSE]", "\n"),
        _list_json("<tool_calls>", "</tool_calls>", lambda i, n, a: jdump({"name": n, "arguments": a, "id": f"c{i}"})),
        "Apriel-1.6-15b-Thinker-fixed", ids=lambda i, n: f"c{i}"),
    Enc("granite", ("<think>", "</think>", ""),
        _list_json("<|tool_call|>", "", lambda i, n, a: jdump({"name": n, "arguments": a})),
        "ibm-granite-granite-3.3-2B-Instruct"),
    Enc("firefunction-v2", None,
        _list_json("functools", "", lambda i, n, a: jdump({"name": n, "arguments": a})),
        "fireworks-ai-llama-3-firefunction-v2"),
    Enc("command-r7b", ("<|START_THINKING|>", "<|END_THINKING|>", ""),
        _list_json("<|START_ACTION|>", "<|END_ACTION|>",
                   lambda i, n, a: jdump({"tool_call_id": str(i), "tool_name": n, "parameters": a}), sep=",\n    "),
        "CohereForAI-c4ai-command-r7b-12-2024-tool_use", ids=lambda i, n: str(i)),
    Enc("command-r-plus", None,
        lambda calls: "Action:\n```json\n[\n" + ",\n".join(
            json.dumps({"tool_name": n, "parameters": a}, indent=4, ensure_ascii=False) for n, a in calls) + "\n]\n```",
        "CohereForAI-c4ai-command-r-plus-tool_use"),
    Enc("apertus", ("<|inner_prefix|>", "<|inner_suffix|>", ""),
        _list_json("<|tools_prefix|>", "<|tools_suffix|>", lambda i, n, a: "{" + jdump(n) + ": " + jdump(a) + "}"),
        "Apertus-8B-Instruct"),
    Enc("minimax-m1", ("<think>\n", "\n</think>", "\n"),
        lambda calls: "<tool_calls>\n" + "".join(jdump({"name": n, "arguments": a}) + "\n" for n, a in calls)
        + "</tool_calls>", "MiniMax-M1"),
    Enc("gigachat3", None,
        lambda calls: "".join("function call<|role_sep|>\n" + jdump({"name": n, "arguments": a}) + "<|message_sep|>"
                              for n, a in calls), "GigaChat3-10B-A1.8B"),
    Enc("gigachat", None,
        lambda calls: "".join("<|function_call|>" + jdump({"name": n, "arguments": a}) for n, a in calls),
        "GigaChat3.1-10B-A1.8B"),
]


def _harmony_text(s: str, first: bool) -> str:
    return ("" if first else "<|start|>assistant") + f"<|channel|>final<|message|>{s}<|end|>"


# A string argument holding the format's own markup: it must come back verbatim.
MARKUP = {
    "harmony": "<|call|> and <|end|> and <|start|>assistant to=functions.x",
    "gemma4": "}<tool_call|>, <|tool_call>call:x{a:1} and {k:v}",
    "deepseek-r1": "```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
    "deepseek-v3.1": "<｜tool▁call▁end｜><｜tool▁calls▁end｜> {\"x\": 1}",
    "kimi-k2": "<|tool_call_end|><|tool_calls_section_end|>",
    "deepseek-v3.2": "</｜DSML｜invoke></｜DSML｜function_calls> <｜DSML｜invoke name=\"x\">",
    "deepseek-v4": "</｜DSML｜invoke></｜DSML｜tool_calls> <｜DSML｜invoke name=\"x\">",
    "minimax-m2": "</invoke></minimax:tool_call> <invoke name=\"x\">",
    "minicpm": "</param></function> <function name=\"x\">",
    "muse-atem": "</atem:invoke></atem:function_calls> <atem:invoke name=\"x\">",
    # an unframed value ends at the first tag that can close it (</parameter>, <parameter=, </function>,
    # </seed:tool_call>), so only opening markup can travel inside one
    "seed-oss": "<seed:tool_call> <function=x> <seed:think>",
    "lfm2": ")]<|tool_call_end|> x(a=1)",
    "nemotron-v2": "</TOOLCALL>]}",
    "apriel": "</tool_calls>]}",
    "granite": "<|tool_call|>[{]}",
    "firefunction-v2": "functools[{]}",
    "command-r7b": "<|END_ACTION|>]}",
    "command-r-plus": "```\n]}",
    "apertus": "<|tools_suffix|>]}",
    "minimax-m1": "</tool_calls>\n{\"name\": \"x\"}",
    "gigachat": "<|function_call|>{\"name\": \"x\"}",
    "gigachat3": "function call<|role_sep|>{\"name\": \"x\"}<|message_sep|>",
}
# Where a template writes non-strings with str(), Python's None is not JSON's null.
NO_NULL = {"minicpm", "seed-oss"}


def compose(e: Enc, pieces, mode="separate", opened=False):
    """(output, expect) from pieces: ("t", text) | ("c", calls) | ("r", text, closed)."""
    out, content, reasoning, calls, texts = [], [], [], [], 0
    for piece in pieces:
        kind = piece[0]
        if kind == "t":
            out.append(_harmony_text(piece[1], not out) if e.name == "harmony" else piece[1])
            content.append(piece[1])
        elif kind == "c":
            text, want = e.block(piece[1])
            out.append(text)
            calls.extend(want)
        else:
            open_, close, post = e.think
            closed = piece[2]
            literal = ("" if opened else open_) + piece[1] + (close if closed else "")
            out.append(literal + (post if closed else ""))
            if mode == "none":
                content.append(literal)
            else:
                reasoning.append(piece[1])
            if closed and post:
                content.append(post)
    expect = {"calls": calls, "content": "".join(content).strip(), "reasoning": "".join(reasoning).strip(),
              "error": None}
    return "".join(out), expect


def generated(e: Enc) -> list[dict]:
    odd = ("set_options", {k: v for k, v in ODD[1].items() if not (e.name in NO_NULL and v is None)})
    plan = [
        ("no-call", [("t", "I can answer that directly: 42.")]),
        ("one-call", [("c", [WEATHER])]),
        ("parallel-calls", [("c", [WEATHER, ROME, TIME])]),
        ("text-before-and-after", [("t", "Let me check.\n"), ("c", [WEATHER]), ("t", "\nBack soon.")]),
        ("nested-and-odd-json-types", [("c", [odd])]),
        ("unicode-and-escapes", [("t", "我查一下 🌤\n"), ("c", [UNICODE])]),
        ("empty-arguments", [("c", [TIME])]),
        ("marker-text-inside-argument-values", [("c", [("write_file", {"path": "m.txt", "content": MARKUP[e.name]})])]),
    ]
    extra = []
    if e.think:
        # (an analysis message cannot hold <|call|>: it would end the message)
        markup = ("<|start|>assistant to=functions.get_time<|channel|>commentary json" if e.name == "harmony"
                  else e.block([TIME])[0])
        plan += [
            ("reasoning-then-calls", [("r", "The user wants the weather in Paris.", True), ("c", [WEATHER])]),
            ("reasoning-then-answer", [("r", "No tool is needed.", True), ("t", "The answer is 4.")]),
            ("reasoning-only", [("r", "Thinking about it.", True)]),
            ("reasoning-cut-off", [("r", "I should call get_weather for", False)]),
            ("call-markup-inside-reasoning", [("r", f"Maybe {markup} first?", True), ("c", [WEATHER])]),
            ("call-markup-inside-cut-off-reasoning", [("r", f"Maybe {markup}", False)]),
        ]
        if e.name != "harmony":  # the prompt never opens a Harmony message body
            extra += [
                ("reasoning-opened-by-the-prompt", [("r", "Weather, then.", True), ("c", [WEATHER])], "separate", True),
                ("call-markup-inside-reasoning-opened-by-the-prompt",
                 [("r", f"Not yet: {markup}", True), ("c", [ROME])], "separate", True),
            ]
        extra += [
            ("reasoning-left-in-content", [("r", "The user wants the weather.", True), ("c", [WEATHER])], "none", False),
            ("reasoning-deepseek-legacy", [("r", "The user wants the weather.", True), ("c", [WEATHER])],
             "deepseek-legacy", False),
        ]
    else:
        plan.append(("think-tags-are-content", [("t", "<think>hmm</think>\nThe answer is 4.")]))
    out = []
    for oid, pieces in plan:
        output, expect = compose(e, pieces)
        out.append({"id": oid, "output": output, "expect": expect})
    for oid, pieces, mode, opened in extra:
        output, expect = compose(e, pieces, mode, opened)
        o = {"id": oid, "output": output, "expect": expect}
        if mode != "separate":
            o["reasoning_mode"] = mode
        if opened:
            o["opened"] = True
        out.append(o)
    return out


def _x(output, error, calls=(), content="", reasoning="", **extra) -> dict:
    return {"output": output, "expect": {"calls": list(calls), "content": content, "reasoning": reasoning,
                                         "error": error}, **extra}


W = {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}
R = {"name": "get_weather", "arguments": {"city": "Rome"}}
# The block's opening marker alone, and its final close marker with the error a missing
# close gives (None: the format has no close marker).
OPEN_MARKER = {
    "harmony": "<|start|>assistant to=functions.get_weather<|channel|>commentary", "gemma4": "<|tool_call>",
    "deepseek-r1": "<｜tool▁calls▁begin｜>", "deepseek-v3.1": "<｜tool▁calls▁begin｜>",
    "kimi-k2": "<|tool_calls_section_begin|>", "deepseek-v3.2": "<｜DSML｜function_calls>",
    "deepseek-v4": "<｜DSML｜tool_calls>", "minimax-m2": "<minimax:tool_call>", "muse-atem": "<atem:function_calls>", "minicpm": '<function name="',
    "seed-oss": "<seed:tool_call>", "lfm2": "<|tool_call_start|>", "nemotron-v2": "<TOOLCALL>",
    "apriel": "<tool_calls>", "granite": "<|tool_call|>", "command-r7b": "<|START_ACTION|>",
    "apertus": "<|tools_prefix|>", "minimax-m1": "<tool_calls>", "gigachat": "<|function_call|>",
    "firefunction-v2": "functools", "command-r-plus": "Action:\n```json\n", "gigachat3": "function call<|role_sep|>",
}
CLOSE_MARKER = {
    "harmony": ("<|call|>", "missing <|call|>"), "gemma4": ("<tool_call|>", "missing <tool_call|>"),
    "deepseek-r1": ("<｜tool▁calls▁end｜>", "missing"), "deepseek-v3.1": ("<｜tool▁calls▁end｜>", "missing"),
    "kimi-k2": ("<|tool_calls_section_end|>", "missing"),
    "deepseek-v3.2": ("</｜DSML｜function_calls>", "truncated"), "deepseek-v4": ("</｜DSML｜tool_calls>", "truncated"),
    "minimax-m2": ("</minimax:tool_call>", "truncated"), "muse-atem": ("</atem:function_calls>", "truncated"), "seed-oss": ("</seed:tool_call>", "missing"),
    "lfm2": ("<|tool_call_end|>", "missing"), "nemotron-v2": ("</TOOLCALL>", "missing"),
    "apriel": ("</tool_calls>", "missing"), "command-r7b": ("<|END_ACTION|>", "missing"),
    "command-r-plus": ("```", "missing"), "apertus": ("<|tools_suffix|>", "missing"),
    "minimax-m1": ("</tool_calls>", "missing"),
}


def cut_cases(e: Enc) -> list[dict]:
    """Truncations at the structural points every format has, cut out of encoded blocks."""
    one, want_one = e.block([WEATHER])
    two, want_two = e.block([WEATHER, ("get_weather", {"city": "Rome"})])
    out = [
        {"id": "truncated-inside-arguments", **_x("Checking.\n" + one[:one.index("Par") + 3], "truncated",
                                                    content="Checking.")},
        {"id": "truncated-in-the-second-call", **_x(two[:two.rindex("Ro") + 2], "truncated", calls=want_two[:1])},
    ]
    if e.name in OPEN_MARKER:
        out.append({"id": "truncated-right-after-the-open-marker",
                    **_x("One moment. " + OPEN_MARKER[e.name], "truncated", content="One moment.")})
    if e.name in CLOSE_MARKER:
        close, error = CLOSE_MARKER[e.name]
        assert one.endswith(close), (e.name, one)
        out.append({"id": "close-marker-missing-at-the-end", **_x(one[:-len(close)], error, calls=want_one)})
    return out


DSML_HEAD = '<｜DSML｜{w}>\n<｜DSML｜invoke name="get_weather">\n'
HAND = {
    "harmony": [
        {"id": "first-message-without-start-recipient-in-role-header", **_x(
            ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris", "days": 3}<|call|>', None,
            calls=[W])},
        {"id": "recipient-after-the-channel", **_x(
            '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris", "days": 3}'
            "<|call|>", None, calls=[W])},
        {"id": "commentary-preamble-is-content", **_x(
            "<|channel|>commentary<|message|>Checking the weather.<|end|><|start|>assistant to=functions.get_weather"
            '<|channel|>commentary json<|message|>{"city": "Paris", "days": 3}<|call|>', None, calls=[W],
            content="Checking the weather.")},
        {"id": "malformed-json-arguments", **_x(
            '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city": Paris}<|call|>'
            "<|start|>assistant<|channel|>final<|message|>Sorry.<|return|>", "malformed", content="Sorry.")},
        {"id": "final-answer-then-return", **_x(
            "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>4<|return|>", None,
            content="4", reasoning="Easy.")},
    ],
    "gemma4": [
        {"id": "malformed-unquoted-string", **_x(
            "<|tool_call>call:get_weather{city:Paris}<tool_call|>Done.", "malformed arguments", content="Done.")},
        {"id": "duplicate-key", **_x(
            '<|tool_call>call:get_weather{city:<|"|>A<|"|>,city:<|"|>B<|"|>}<tool_call|>', "duplicate key")},
        {"id": "truncated-in-the-function-name", **_x("Checking.<|tool_call>call:get_wea", "truncated",
                                                     content="Checking.")},
    ],
    "deepseek-r1": [
        {"id": "v3-header-is-malformed-here", **_x(
            '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}<｜tool▁call▁end｜>'
            "<｜tool▁calls▁end｜>", "malformed call header")},
        {"id": "cut-before-the-closing-fence", **_x(
            '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n'
            '{"city": "Paris", "days": 3}\n', "missing", calls=[W])},
    ],
    "deepseek-v3.1": [
        {"id": "malformed-json-then-text", **_x(
            '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": }<｜tool▁call▁end｜>'
            "<｜tool▁calls▁end｜>Sorry.", "malformed", content="Sorry.")},
        {"id": "truncated-in-the-function-name", **_x(
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_wea", "truncated call header")},
    ],
    "kimi-k2": [
        {"id": "header-without-functions-prefix-is-malformed", **_x(
            '<|tool_calls_section_begin|><|tool_call_begin|>get_weather<|tool_call_argument_begin|>{"city": "Paris"}'
            "<|tool_call_end|><|tool_calls_section_end|>", "malformed call header")},
        {"id": "truncated-in-the-header", **_x(
            "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_we", "truncated call header")},
    ],
    "deepseek-v3.2": [
        {"id": "string-false-value-that-is-not-json", **_x(
            DSML_HEAD.format(w="function_calls") + '<｜DSML｜parameter name="city" string="false">Paris</｜DSML｜parameter>'
            "\n</｜DSML｜invoke>\n</｜DSML｜function_calls>", "not JSON")},
        {"id": "missing-string-attribute", **_x(
            DSML_HEAD.format(w="function_calls") + '<｜DSML｜parameter name="city">Paris</｜DSML｜parameter>'
            "\n</｜DSML｜invoke>\n</｜DSML｜function_calls>", 'expected string="true"')},
    ],
    "deepseek-v4": [
        {"id": "v32-wrapper-is-content-here", **_x("<｜DSML｜function_calls>", None, content="<｜DSML｜function_calls>")},
        {"id": "duplicate-parameter", **_x(
            DSML_HEAD.format(w="tool_calls") + '<｜DSML｜parameter name="city" string="true">A</｜DSML｜parameter>\n'
            '<｜DSML｜parameter name="city" string="true">B</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>',
            "duplicate parameter")},
    ],
    "minimax-m2": [
        {"id": "malformed-invoke-tag", **_x(
            '<minimax:tool_call>\n<invoke nam="get_weather">\n</invoke>\n</minimax:tool_call>Sorry.', "unexpected text",
            content="Sorry.")},
        {"id": "unexpected-text-in-the-block", **_x(
            "<minimax:tool_call>\nget_weather(city=Paris)\n</minimax:tool_call>", "unexpected text")},
    ],
    "muse-atem": [
        {"id": "duplicate-parameter", **_x(
            '<atem:function_calls>\n<atem:invoke name="get_weather">\n<atem:parameter name="city">A</atem:parameter>\n'
            '<atem:parameter name="city">B</atem:parameter>\n</atem:invoke>\n</atem:function_calls>', "duplicate parameter")},
        {"id": "unexpected-text-in-the-block", **_x(
            "<atem:function_calls>\nget_weather(city=Paris)\n</atem:function_calls>Sorry.", "unexpected text",
            content="Sorry.")},
    ],
    "minicpm": [
        {"id": "text-after-cdata", **_x(
            '<function name="write_file"><param name="content"><![CDATA[a]]>b</param></function>', "text after CDATA")},
        {"id": "python-literal-object-parameter", **_x(
            "<function name=\"set_options\"><param name=\"config\">{'a': [1, 'x']}</param></function>", None,
            calls=[{"name": "set_options", "arguments": {"config": {"a": [1, "x"]}}}])},
    ],
    "seed-oss": [
        {"id": "malformed-function-tag", **_x(
            "<seed:tool_call>\n<function get_weather>\n</function>\n</seed:tool_call>", "expected <function=NAME>")},
        {"id": "duplicate-parameter", **_x(
            "<seed:tool_call>\n<function=get_weather>\n<parameter=city>A</parameter>\n<parameter=city>B</parameter>\n"
            "</function>\n</seed:tool_call>", "duplicate parameter")},
    ],
    "lfm2": [
        {"id": "argument-that-is-not-a-literal", **_x(
            "<|tool_call_start|>[get_weather(city=os.getenv('X'))]<|tool_call_end|>", "not a literal")},
        {"id": "positional-arguments", **_x(
            "<|tool_call_start|>[get_weather('Paris')]<|tool_call_end|>", "positional")},
    ],
    "firefunction-v2": [
        {"id": "the-word-functools-in-text-is-content", **_x("I like functools in Python.", None,
                                                           content="I like functools in Python.")},
        {"id": "malformed-json", **_x('functools[{"name": "get_weather", "arguments": {city: 1}}]', "malformed")},
    ],
    "command-r-plus": [
        {"id": "the-word-action-in-text-is-content", **_x("Action: none needed.", None, content="Action: none needed.")},
        {"id": "malformed-json", **_x('Action:\n```json\n[{"tool_name": "get_weather", "parameters": {city}}]\n```\nSorry.',
                                      "malformed", content="Sorry.")},
    ],
}
_LIST_FORMATS = {"nemotron-v2": ("<TOOLCALL>", "</TOOLCALL>"), "apriel": ("<tool_calls>", "</tool_calls>"),
                 "granite": ("<|tool_call|>", ""), "command-r7b": ("<|START_ACTION|>", "<|END_ACTION|>"),
                 "apertus": ("<|tools_prefix|>", "<|tools_suffix|>")}
for _name, (_o, _c) in _LIST_FORMATS.items():
    HAND.setdefault(_name, []).extend([
        # without a close marker a broken block runs to the end of the output (never content)
        {"id": "malformed-json-then-text", **_x(_o + '[{"name": "get_weather", "arguments": {city: "Paris"}}]' + _c
                                                + " Sorry.", "malformed", content="Sorry." if _c else "")},
        {"id": "object-instead-of-a-list", **_x(_o + '{"name": "get_weather", "arguments": {}}' + _c,
                                                "expected a JSON list")},
    ])
HAND["apertus"].append({"id": "object-with-two-keys", **_x('<|tools_prefix|>[{"a": {}, "b": {}}]<|tools_suffix|>',
                                                           "exactly one key")})
HAND["command-r7b"].append({"id": "response-markers-are-not-content", **_x(
    "<|START_RESPONSE|>It is sunny.<|END_RESPONSE|>", None, content="It is sunny.")})
HAND["granite"].append({"id": "response-tags-are-not-content", **_x(
    "<think>ok</think><response>It is sunny.</response>", None, content="It is sunny.", reasoning="ok")})
HAND["apriel"].append({"id": "reasoning-opened-by-the-prompt-cut-off", **_x(
    "Step 1: <tool_calls>[]", None, reasoning="Step 1: <tool_calls>[]", opened=True)})
HAND["minimax-m1"] = [{"id": "malformed-json-line", **_x('<tool_calls>\n{"name": "get_weather", "arguments": {x}}\n'
                                                         "</tool_calls>Sorry.", "malformed", content="Sorry.")}]
HAND["gigachat"] = [
    {"id": "malformed-json", **_x('<|function_call|>{"name": "get_weather", "arguments": {x}} Sorry.', "malformed")},
    {"id": "two-objects-after-one-marker", **_x(
        '<|function_call|>{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n'
        '{"name": "get_weather", "arguments": {"city": "Rome"}}', None, calls=[W, R])},
    {"id": "object-without-a-name", **_x('<|function_call|>{"function": "get_weather"}', 'no "name"')},
]
HAND["gigachat3"] = [
    {"id": "malformed-json", **_x('function call<|role_sep|>\n{"name": "get_weather", "arguments": {x}}', "malformed")},
    {"id": "object-without-a-name", **_x('function call<|role_sep|>\n{"function": "get_weather"}', 'no "name"')},
    {"id": "message-separators-are-not-content", **_x("It is sunny.<|message_sep|>\n\n", None, content="It is sunny.")},
]
HAND["firefunction-v2"].append({"id": "functools-followed-by-text-is-content", **_x(
    "functools is a module.", None, content="functools is a module.")})
HAND["command-r-plus"].append({"id": "fence-in-another-language-is-content", **_x(
    "Action:\n```python\nprint(1)\n```", None, content="Action:\n```python\nprint(1)\n```")})

DESCRIPTIONS = {e.name: (f"Canned outputs in the {e.name} wire format (template models/templates/{e.stem}.jinja). "
                         "Composed outputs (calls, text, reasoning) have expectations that follow from their parts; "
                         "truncations are cut out of encoded blocks; malformed blocks are written by hand. "
                         "Written by tests/toolcall_canned.py.") for e in ENCODERS}


def documents() -> dict[str, dict]:
    docs = {}
    for e in ENCODERS:
        outputs = generated(e) + cut_cases(e) + HAND.get(e.name, [])
        docs[e.name] = {"schema": 1, "format": e.name, "description": DESCRIPTIONS[e.name], "tools": TOOLS,
                        "outputs": outputs}
    return docs


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, value: str):
    style = "|" if "\n" in value and value == value.rstrip() and "\t" not in value and "\r" not in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(doc: dict) -> str:
    return yaml.dump(doc, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=120)


def main() -> int:
    for name, doc in documents().items():
        (OUT / f"{name}.yaml").write_text(render(doc), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
