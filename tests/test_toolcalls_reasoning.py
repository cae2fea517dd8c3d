"""Reasoning in the parsed message, the formats added in issue 15, and their edge cases.

The canned outputs themselves (cases/toolcall-outputs/) run in tests/test_toolcalls.py;
here: the reasoning modes and `opened`, end-of-turn markers, truncation at every prefix of
every canned output, detection of every template llama.cpp ships, and the generated
canned files being what tests/toolcall_canned.py writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import canned_outputs

import toolcall_canned
from harness.toolcalls import (
    REASONING_MODES,
    Reasoning,
    check_streaming,
    describe_formats,
    detect_format,
    format_names,
    get_format,
)
from harness.toolcalls.check import run_stream, streamed_reference

CASES_DIR = Path(__file__).resolve().parents[1] / "cases" / "toolcall-outputs"
HERMES_CALL = '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'


def test_reasoning_modes_and_the_message_shape():
    fmt = get_format("hermes")
    text = "<think>\nplan\n</think>\n\nSure." + HERMES_CALL
    sep = fmt.extract(text)
    assert (sep.reasoning, sep.content, [c.name for c in sep.calls]) == ("plan", "Sure.", ["f"])
    none = fmt.extract(text, reasoning="none")
    assert none.reasoning == "" and none.content == "<think>\nplan\n</think>\n\nSure."
    legacy = fmt.extract(text, reasoning="deepseek-legacy")
    assert legacy.to_dict() == sep.to_dict()
    assert set(sep.to_dict()) == {"calls", "content", "reasoning", "error"}
    with pytest.raises(ValueError, match="unknown reasoning mode"):
        fmt.extract(text, reasoning="auto")


def test_deepseek_legacy_streams_reasoning_inline():
    fmt = get_format("hermes")
    text = "plan</think>Sure."
    deltas, problems = run_stream(fmt, list(text), reasoning="deepseek-legacy", opened=True)
    assert problems == []
    assert "".join(d.content_delta for d in deltas) == "<think>plan</think>Sure."
    assert "".join(d.reasoning_delta for d in deltas) == ""
    assert fmt.extract(text, reasoning="deepseek-legacy", opened=True).reasoning == "plan"
    ref = streamed_reference(fmt, text, None, "deepseek-legacy", opened=True)
    assert ref.content == "<think>plan</think>Sure."


def test_reasoning_streams_as_reasoning_deltas():
    fmt = get_format("qwen3-coder")
    text = "<think>abc def</think>ok"
    deltas, problems = run_stream(fmt, list(text))
    assert problems == []
    assert "".join(d.reasoning_delta for d in deltas) == "abc def"
    assert sum(1 for d in deltas if d.reasoning_delta) > 3, "reasoning should stream, not arrive at the end"


@pytest.mark.parametrize("prompt, opened", [
    ("<|im_start|>assistant\n<think>\n", True),
    ("<|im_start|>assistant\n<think>\n\n</think>\n\n", False),
    ("<|im_start|>assistant\n", False),
    ("", False),
    (None, False),
])
def test_opened_is_read_from_the_prompt_tail(prompt, opened):
    assert get_format("hermes").opened_by_prompt(prompt) is opened
    assert Reasoning("<think>", "</think>").opened_by(prompt) is opened


def test_formats_without_reasoning_never_open():
    assert get_format("llama3-json").opened_by_prompt("x<think>") is False


def test_call_markup_inside_reasoning_is_never_a_call_in_any_mode():
    fmt = get_format("hermes")
    text = "<think>" + HERMES_CALL + "</think>"
    for mode in REASONING_MODES:
        for opened in (False, True):
            assert fmt.extract(text, reasoning=mode, opened=opened).calls == [], (mode, opened)
    cut = fmt.extract(HERMES_CALL, opened=True)  # prompt-opened block, never closed
    assert cut.calls == [] and cut.reasoning == HERMES_CALL.strip() and cut.error is None


def test_truncated_reasoning_is_reasoning():
    ex = get_format("deepseek-r1").extract("<think>\nI should call get_wea")
    assert ex.reasoning == "I should call get_wea" and ex.content == "" and ex.error is None


def test_a_think_tag_later_in_the_reply_is_content():
    ex = get_format("hermes").extract("Hi <think>x</think>")
    assert ex.content == "Hi <think>x</think>" and ex.reasoning == ""


def test_end_of_turn_marker_ends_the_message():
    ex = get_format("glm45").extract("Done.<|role_end|>garbage")
    assert ex.content == "Done." and "ignored" in ex.error
    assert check_streaming("glm45", "Done.<|role_end|>") is None


def test_describe_formats_lists_every_format():
    d = describe_formats()
    assert list(d) == format_names() and len(d) >= 25
    assert d["mistral"]["reasoning"] == {"open": "[THINK]", "close": "[/THINK]"}
    assert d["harmony"]["reasoning"] is None and d["llama3-json"]["reasoning"] is None
    assert d["seed-oss"]["reasoning"]["open"] == "<seed:think>"


# --- edge cases of the new formats ------------------------------------------------------------------
def test_kimi_header_is_the_call_id():
    text = ('<|tool_calls_section_begin|><|tool_call_begin|>functions.a.b:7<|tool_call_argument_begin|>{}'
            "<|tool_call_end|><|tool_calls_section_end|>")
    ex = get_format("kimi-k2").extract(text)
    assert [(c.name, c.id) for c in ex.calls] == [("a.b", "functions.a.b:7")]


def test_gemma4_strings_may_hold_anything():
    text = '<|tool_call>call:f{s:<|"|>}, <tool_call|> {a:1}<|"|>,n:[1,{k:None}]}<tool_call|>'
    ex = get_format("gemma4").extract(text)
    assert ex.calls[0].arguments == {"s": "}, <tool_call|> {a:1}", "n": [1, {"k": None}]}
    assert check_streaming("gemma4", text) is None


def test_harmony_builtin_recipient_and_plain_text():
    fmt = get_format("harmony")
    ex = fmt.extract('<|channel|>commentary to=browser.search json<|message|>{"q": "x"}<|call|>')
    assert [c.name for c in ex.calls] == ["browser.search"]
    assert fmt.extract("Just text, no channels.").content == "Just text, no channels."


def test_dsml_string_attribute_decides_the_type():
    text = ('<｜DSML｜function_calls>\n<｜DSML｜invoke name="f">\n<｜DSML｜parameter name="a" string="true">3'
            '</｜DSML｜parameter>\n<｜DSML｜parameter name="b" string="false">3</｜DSML｜parameter>\n</｜DSML｜invoke>\n'
            "</｜DSML｜function_calls>")
    assert get_format("deepseek-v3.2").extract(text).calls[0].arguments == {"a": "3", "b": 3}


def test_seed_oss_reads_python_literals_for_object_parameters():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "o": {"type": "object"}, "s": {"type": "string"}}}}}]
    text = "<seed:tool_call>\n<function=f>\n<parameter=o>{'a': True}</parameter>\n<parameter=s>{'a': 1}</parameter>\n</function>\n</seed:tool_call>"
    assert get_format("seed-oss").extract(text, tools).calls[0].arguments == {"o": {"a": True}, "s": "{'a': 1}"}


def test_lfm2_never_evaluates():
    ex = get_format("lfm2").extract("<|tool_call_start|>[f(a=__import__('os').system('x'))]<|tool_call_end|>")
    assert ex.calls == [] and "not a literal" in ex.error


# --- truncation at every prefix -------------------------------------------------------------------
def _clean_outputs():
    for _, doc in canned_outputs.documents():
        for o in doc["outputs"]:
            if o["expect"]["error"] is None and o["expect"]["calls"]:
                yield pytest.param(doc["format"], o, doc.get("tools"), id=f"{doc['format']}::{o['id']}")


def _unmarked(call: dict) -> bool:
    """Calls whose text has no end marker: raw code for a python tool runs to the end of the
    output, a ReAct plain-text Action Input to the end of its line; a cut one looks whole."""
    return call["name"] == "python" and set(call["arguments"]) == {"code"}


@pytest.mark.parametrize("name, case, tools", list(_clean_outputs()))
def test_a_cut_output_never_gives_a_silently_wrong_call(name, case, tools):
    """Cut anywhere, an output yields only calls the whole output has, in order and with the
    same arguments, unless the extraction reports an error: truncation may lose calls, it
    never changes them silently."""
    if name == "react":
        pytest.skip("ReAct's plain-text Action Input ends at the end of its line: a cut line looks whole")
    fmt = get_format(name)
    opts = {"reasoning": case.get("reasoning_mode", "separate"), "opened": bool(case.get("opened"))}
    full = [c.to_dict() for c in fmt.extract(case["output"], tools, **opts).calls]
    text = case["output"]
    for cut in range(len(text)):
        ex = fmt.extract(text[:cut], tools, **opts)
        got = [c.to_dict() for c in ex.calls]
        if got and (ex.error or _unmarked(got[-1])):
            got = got[:-1]  # the last call is flagged (or cannot be): only the ones before it must hold
        assert got == full[:len(got)], f"cut at {cut}: {text[:cut]!r} gave {got} (error: {ex.error})"


# --- detection of every template llama.cpp ships ---------------------------------------------------
NEW_TEMPLATES = {
    "openai-gpt-oss-120b.jinja": "harmony", "google-gemma-4-31B-it.jinja": "gemma4",
    "google-gemma-4-31B-it-interleaved.jinja": "gemma4",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": "deepseek-r1", "llama-cpp-deepseek-r1.jinja": "deepseek-r1",
    "deepseek-ai-DeepSeek-V3.1.jinja": "deepseek-v3.1", "deepseek-ai-DeepSeek-V3.2.jinja": "deepseek-v3.2",
    "deepseek-ai-DeepSeek-V4.jinja": "deepseek-v4", "deepseek-ai-DeepSeek-V4-Flash-0731.jinja": "deepseek-v4",
    "moonshotai-Kimi-K2.jinja": "kimi-k2", "Kimi-K2-Thinking.jinja": "kimi-k2", "MiniMax-M2.jinja": "minimax-m2",
    "MiniMax-M1.jinja": "minimax-m1", "muse-glimmer.jinja": "muse-atem", "openbmb-MiniCPM5-1B.jinja": "minicpm",
    "ByteDance-Seed-OSS.jinja": "seed-oss", "LFM2.5-8B-A1B.jinja": "lfm2", "NVIDIA-Nemotron-Nano-v2.jinja": "nemotron-v2",
    "Apriel-1.6-15b-Thinker-fixed.jinja": "apriel", "unsloth-Apriel-1.5.jinja": "apriel",
    "ibm-granite-granite-3.3-2B-Instruct.jinja": "granite", "fireworks-ai-llama-3-firefunction-v2.jinja": "firefunction-v2",
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja": "command-r7b", "Cohere2MoE.jinja": "command-r7b",
    "CohereForAI-c4ai-command-r-plus-tool_use.jinja": "command-r-plus", "Apertus-8B-Instruct.jinja": "apertus",
    "GigaChat3-10B-A1.8B.jinja": "gigachat3", "GigaChat3.1-10B-A1.8B.jinja": "gigachat",
    "inclusionai-ling-3.0-flash.jinja": "glm45",
    # no extractor: llama-cpp-templates.yaml says why (checks.toolcalls.formats, format null)
    "Kimi-K3.jinja": None, "MiniMax-M3.jinja": None, "tencent-Hy3.jinja": None, "upstage-Solar-Open-100B.jinja": None,
}


@pytest.mark.parametrize("filename", sorted(NEW_TEMPLATES))
def test_detect_format_new_templates(filename, llama_tree):
    path = llama_tree / "models" / "templates" / filename
    if not path.exists():
        pytest.skip(f"{filename} not in this llama.cpp checkout")
    assert detect_format(path.read_text(encoding="utf-8")) == NEW_TEMPLATES[filename]


# --- the generated canned files ---------------------------------------------------------------------
@pytest.mark.parametrize("name", [e.name for e in toolcall_canned.ENCODERS])
def test_generated_canned_files_are_up_to_date(name):
    on_disk = (CASES_DIR / f"{name}.yaml").read_text(encoding="utf-8")
    assert on_disk == toolcall_canned.render(toolcall_canned.documents()[name]), \
        "run: python tests/toolcall_canned.py"
