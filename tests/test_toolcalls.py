"""Tool-call wire formats: canned raw outputs -> extract() and streaming equivalence.

Data: cases/toolcall-outputs/<format>.yaml.  Each output is checked finished
(extract() == expect) and streamed (every split reconstructs to extract()).
"""

from __future__ import annotations

import re

import pytest
import canned_outputs

from harness.toolcalls import (
    CallDelta,
    Extraction,
    ToolCall,
    check_streaming,
    detect_format,
    format_names,
    get_format,
    reconstruct,
)
from harness.toolcalls.base import REASONING_MODES, Call, Format, Scan
from harness.toolcalls.check import run_stream

KEBAB = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
MIN_OUTPUTS = 15


def _load_docs() -> dict[str, dict]:
    return {path.stem: doc for path, doc in canned_outputs.documents()}


DOCS = _load_docs()


def _params():
    for stem, doc in DOCS.items():
        for out in doc.get("outputs") or []:
            yield pytest.param(doc["format"], out, doc.get("tools"), id=f"{doc['format']}::{out.get('id')}")


CASES = list(_params())


def message_options(case: dict) -> dict:
    """The canned output's reasoning mode and whether its prompt opened the block."""
    return {"reasoning": case.get("reasoning_mode", "separate"), "opened": bool(case.get("opened"))}


# --- the data files themselves ------------------------------------------------------------


def test_every_format_has_a_case_file():
    assert sorted(DOCS) == sorted(format_names())


@pytest.mark.parametrize("stem", sorted(DOCS))
def test_case_file_shape(stem):
    doc = DOCS[stem]
    assert doc.get("schema") == 1
    assert doc.get("format") == stem, "file name must be the format name"
    get_format(doc["format"])
    assert isinstance(doc.get("description"), str) and doc["description"].strip()
    outputs = doc.get("outputs")
    assert isinstance(outputs, list) and len(outputs) >= MIN_OUTPUTS
    ids = [o.get("id") for o in outputs]
    assert len(ids) == len(set(ids)), "output ids must be unique"
    for o in outputs:
        assert isinstance(o["id"], str) and KEBAB.fullmatch(o["id"]), o["id"]
        assert isinstance(o.get("output"), str), o["id"]
        assert {"calls", "content", "error"} <= set(o.get("expect", {})) <= {"calls", "content", "error", "reasoning"}, o["id"]
        assert set(o) <= {"id", "output", "expect", "opened", "reasoning_mode"}, o["id"]
        assert o.get("reasoning_mode", "separate") in REASONING_MODES, o["id"]


# --- finished outputs ---------------------------------------------------------------------


def _call_mismatch(got: ToolCall, want: dict) -> str | None:
    for key in ("name", "arguments"):
        if getattr(got, key) != want.get(key):
            return f"{key}: expected {want.get(key)!r}, got {getattr(got, key)!r}"
    if got.id != want.get("id"):
        return f"id: expected {want.get('id')!r}, got {got.id!r}"
    invalid = want.get("invalid")
    if (invalid is None) != (got.invalid is None) or (invalid and invalid not in got.invalid):
        return f"invalid: expected {invalid!r}, got {got.invalid!r}"
    return None


@pytest.mark.parametrize("fmt_name, case, tools", CASES)
def test_extract(fmt_name, case, tools):
    got = get_format(fmt_name).extract(case["output"], tools, **message_options(case))
    want = case["expect"]
    assert isinstance(got, Extraction)
    assert len(got.calls) == len(want["calls"]), got.to_dict()
    for i, (c, w) in enumerate(zip(got.calls, want["calls"])):
        problem = _call_mismatch(c, w)
        assert problem is None, f"call {i}: {problem}\nfull: {got.to_dict()}"
    assert got.content == want["content"], got.to_dict()
    assert got.reasoning == want.get("reasoning", ""), got.to_dict()
    if want["error"] is None:
        assert got.error is None, got.to_dict()
    else:
        assert got.error and want["error"] in got.error, got.to_dict()


# --- streaming ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["whole", "two-way", "chars", "random"])
@pytest.mark.parametrize("fmt_name, case, tools", CASES)
def test_streaming(fmt_name, case, tools, kind):
    # random: seeds 0..19, the failing seed is named in the message.
    message = check_streaming(fmt_name, case["output"], tools=tools, kinds=[kind], **message_options(case))
    assert message is None, message


# --- interface details ----------------------------------------------------------------------


def test_registry_and_did_you_mean():
    assert "hermes" in format_names()
    with pytest.raises(KeyError, match="did you mean.*functionary-v3.2"):
        get_format("functionary-3.2")
    with pytest.raises(KeyError, match="unknown tool-call format"):
        get_format("zzz")


@pytest.mark.parametrize("name", format_names())
def test_format_objects(name):
    fmt = get_format(name)
    assert fmt.name == name
    assert len(fmt.description) > 80 and "\n" not in fmt.description
    assert isinstance(fmt.extract(""), Extraction)
    parser = fmt.stream_parser()
    assert parser.feed("") == [] and parser.finish() == []


def test_toolcall_and_extraction_to_dict():
    call = ToolCall("f", {"a": 1})
    assert call.to_dict() == {"name": "f", "arguments": {"a": 1}}
    assert ToolCall("f", {}, id="abc").to_dict() == {"name": "f", "arguments": {}, "id": "abc"}
    assert ToolCall.from_value("f", '{"a": 1}').arguments == {"a": 1}
    bad = ToolCall.from_value("f", "{oops")
    assert bad.arguments == "{oops" and "string" in bad.invalid
    ex = Extraction([call], "hi", None)
    assert ex.to_dict() == {"calls": [{"name": "f", "arguments": {"a": 1}}], "content": "hi", "reasoning": "",
                            "error": None}


def test_reconstruct_merges_and_drops_cut_calls():
    deltas = [
        CallDelta(content_delta="Hello"),
        CallDelta(0, "f", "id0", '{"a": '),
        CallDelta(1, "g", None, '{"b"'),  # never completed: dropped
        CallDelta(0, None, None, "1}"),
        CallDelta(content_delta=" world"),
    ]
    ex = reconstruct(deltas)
    assert [c.to_dict() for c in ex.calls] == [{"name": "f", "arguments": {"a": 1}, "id": "id0"}]
    assert ex.content == "Hello world"
    assert "call 1" in ex.error


def test_names_and_ids_are_emitted_once():
    fmt = get_format("mistral")
    text = '[TOOL_CALLS]get_weather[CALL_ID]abcdefghi[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}'
    deltas, problems = run_stream(fmt, list(text))
    assert problems == []
    named = [(d.index, d.name, d.id) for d in deltas if d.name is not None]
    assert named == [(0, "get_weather", "abcdefghi"), (1, "get_time", None)]
    args = "".join(d.arguments_delta for d in deltas if d.index == 0)
    assert args == '{"city": "Paris"}'
    assert sum(1 for d in deltas if d.index == 0 and d.arguments_delta) > 5, "arguments should stream"


class _LeakyFormat(Format):
    """Deliberately wrong: reports text as content before knowing it is not a call."""

    name = "leaky"

    def scan(self, text, tools, final):
        scan = Scan()
        i = text.find("<c>")
        if i == -1:
            scan.text(text)
            return scan
        scan.text(text[:i])
        scan.call(Call(i, "f", args="{}", state="done"))
        return scan


def test_check_streaming_reports_smallest_split():
    message = check_streaming(_LeakyFormat(), "ab<c>")
    assert message is not None
    assert "two deltas split at offset 3" in message and "['ab<', 'c>']" in message
    assert "reconstruct(deltas) != extract(text)" in message


def test_check_streaming_with_token_pieces():
    text = '<tool_call>\n{"name": "f", "arguments": {"x": "y"}}\n</tool_call>'
    tokens = ["<tool_call>", "\n", '{"', "name", '":', ' "', "f", '",', ' "', "arguments", '":', ' {"',
              "x", '":', ' "', "y", '"}}', "\n", "</tool_call>"]
    assert check_streaming("hermes", text, tokens_as_text=tokens) is None
    assert "do not concatenate" in check_streaming("hermes", text, tokens_as_text=tokens[:-1])


def test_pythonic_never_evaluates():
    fmt = get_format("pythonic")
    ex = fmt.extract("[run(cmd=__import__('os').system('echo pwned'))]")
    assert ex.calls == [] and "not a literal" in ex.error
    ex = fmt.extract("[f(x=1 + 2)]")
    assert ex.calls == [] and "not a literal" in ex.error


# --- detect_format ------------------------------------------------------------------------

SYNTHETIC_TEMPLATES = {
    "hermes": "<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call>",
    "qwen3-coder": "{{- '<tool_call>\\n<function=' + tc.name + '>\\n' }}<parameter=x>",
    "glm45": "<tool_call>{{ tc.name }}<arg_key>{{ k }}</arg_key><arg_value>{{ v }}</arg_value>",
    "mistral": "{{- '[TOOL_CALLS]' + tool_call.function.name + '[ARGS]' }}",
    "functionary-v3.2": "Ask for the required input to:recipient==all ... '>>>' + tool_call['function']['name']",
    "functionary-v2": "{{ '<|from|>' + role + '\\n<|recipient|>' + recipient + '\\n<|content|>' }}",
    "functionary-v3.1": "<|start_header_id|> ... '<function=' + name + '>' + args + '</function>'",
    "llama3-json": "<|start_header_id|>ipython ... '<|python_tag|>' + tool_call.name",
    "pythonic": "[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]",
    "glm4": "[gMASK]<sop>{% for item in messages %}<|observation|>",
    "react": "Use the following format:\nThought: ...\nAction: the action\nAction Input: the input",
}


@pytest.mark.parametrize("expected", sorted(SYNTHETIC_TEMPLATES))
def test_detect_format_synthetic(expected):
    assert detect_format(SYNTHETIC_TEMPLATES[expected]) == expected


def test_detect_format_is_conservative():
    assert detect_format("") is None
    assert detect_format("{% for m in messages %}{{ m.content }}{% endfor %}") is None
    assert detect_format("<function=x> with no Llama 3 header") is None  # e.g. Seed-OSS style


REAL_TEMPLATES = {
    "Qwen-Qwen2.5-7B-Instruct.jinja": "hermes",
    "Qwen-Qwen3-0.6B.jinja": "hermes",
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja": "hermes",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": "hermes",
    "ibm-granite-granite-4.0.jinja": "hermes",
    "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja": "qwen3-coder",
    "Qwen3-Coder.jinja": "qwen3-coder",
    "Qwen3.5-4B.jinja": "qwen3-coder",
    "GLM-4.6.jinja": "glm45",
    "GLM-4.7-Flash.jinja": "glm45",
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": "mistral",
    "Mistral-Small-3.2-24B-Instruct-2506.jinja": "mistral",
    "meetkai-functionary-medium-v3.1.jinja": "functionary-v3.1",
    "meetkai-functionary-medium-v3.2.jinja": "functionary-v3.2",
    "meta-llama-Llama-3.1-8B-Instruct.jinja": "llama3-json",
    "meta-llama-Llama-3.2-3B-Instruct.jinja": "llama3-json",
    "meta-llama-Llama-3.3-70B-Instruct.jinja": "llama3-json",
    "ByteDance-Seed-OSS.jinja": "seed-oss",
    "fireworks-ai-llama-3-firefunction-v2.jinja": "firefunction-v2",
    "google-gemma-2-2b-it.jinja": None,
    "deepseek-ai-DeepSeek-V3.1.jinja": "deepseek-v3.1",
    "openai-gpt-oss-120b.jinja": "harmony",
    "moonshotai-Kimi-K2.jinja": "kimi-k2",
}


@pytest.mark.parametrize("filename", sorted(REAL_TEMPLATES))
def test_detect_format_real_templates(filename, llama_tree):
    path = llama_tree / "models" / "templates" / filename
    if not path.exists():
        pytest.skip(f"{filename} not in this llama.cpp checkout")
    assert detect_format(path.read_text(encoding="utf-8")) == REAL_TEMPLATES[filename]
