"""The chat probe (llama.cpp's chat layer without weights) and the build rules around it.

Build rules run on tiny real CMake trees (as tests/test_server_build.py does). The probe tests use
the real probe built from the pinned tree (one incremental target after llama-server's build).
"""

from __future__ import annotations

import json
import textwrap

import pytest

from harness.backends.base import BackendOptions, RenderRequest
from harness.backends.llama_cpp_chat import LlamaCppChatBackend, ProbeCrashed, ProbeError, apply_diffs
from harness.chat_layer_checks import compare_with_reference, splits, stream_problems
from harness.server_build import ServerBuildError, build_llama_server, close_builds

from test_server_build import needs_toolchain, tiny_tree

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


# --- harness logic (no probe) -------------------------------------------------------------------
def test_apply_diffs_rebuilds_the_message_as_an_openai_client_does():
    diffs = [[{"reasoning_content": "let me "}], [{"reasoning_content": "think"}, {"content": "Hi"}],
             [{"tool_call": {"index": 0, "id": "call_0", "name": "get_weather", "arguments": "{\"ci"}}],
             [{"tool_call": {"index": 0, "id": "", "name": "", "arguments": "ty\": \"Paris\"}"}}],
             [{"tool_call": {"index": 1, "id": "call_1", "name": "get_time", "arguments": "{}"}}]]
    assert apply_diffs(diffs) == {
        "content": "Hi", "reasoning_content": "let me think",
        "tool_calls": [{"name": "get_weather", "arguments": "{\"city\": \"Paris\"}", "id": "call_0"},
                       {"name": "get_time", "arguments": "{}", "id": "call_1"}]}


def test_splits_are_every_two_way_split_and_seeded_groupings():
    text = "abcdef"
    got = splits(text)
    assert all("".join(p) == text for p in got)
    assert got[:5] == [["a", "bcdef"], ["ab", "cdef"], ["abc", "def"], ["abcd", "ef"], ["abcde", "f"]]
    assert len(got) == 5 + 8 and got == splits(text)          # same groupings on every run
    assert splits("x", groupings=0) == []                      # one character: nothing to split


def test_reference_comparison_names_each_difference():
    class Ref:
        calls = [type("C", (), {"name": "f", "arguments": {"a": 1}})()]
        content = " hello "
        reasoning = "why"
    same = {"content": "hello", "reasoning_content": "why", "tool_calls": [{"name": "f", "arguments": "{\"a\": 1}"}]}
    assert compare_with_reference(same, Ref) == []
    other = {"content": "bye", "reasoning_content": "", "tool_calls": [{"name": "f", "arguments": "{\"a\": 2}"}]}
    problems = compare_with_reference(other, Ref)
    assert [p.split(":")[0] for p in problems] == ["calls", "content", "reasoning"]


def test_a_stream_that_differs_is_reported_with_its_split():
    from harness.backends.llama_cpp_chat import Streamed
    msg = {"content": "ab", "reasoning_content": "", "tool_calls": []}
    good = Streamed(client=dict(msg), final=dict(msg))
    bad = Streamed(client={**msg, "content": "a"}, final=dict(msg))
    assert stream_problems(msg, [good], [["a", "b"]]) == []
    assert "streamed != non-streamed" in stream_problems(msg, [good, bad], [["a", "b"], ["ab"]])[0]


# --- build rules ----------------------------------------------------------------------------------
@needs_toolchain
def test_no_build_once_builds_are_closed(tmp_path):
    tree = tiny_tree(tmp_path / "tree")
    close_builds("the controller built everything before the checks")
    try:
        with pytest.raises(ServerBuildError, match="builds do not run inside checks"):
            build_llama_server(tree, cache_root=tmp_path / "cache", log=lambda m: None)
    finally:
        close_builds("")
    assert build_llama_server(tree, cache_root=tmp_path / "cache", log=lambda m: None).binary.exists()


@needs_toolchain
def test_a_build_that_writes_into_its_tree_fails(tmp_path):
    tree = tiny_tree(tmp_path / "tree")
    cml = tree / "CMakeLists.txt"
    cml.write_text(cml.read_text() + textwrap.dedent("""\
        file(WRITE "${CMAKE_SOURCE_DIR}/src/generated.c" "/* written by the build */")
        """))
    with pytest.raises(ServerBuildError, match="wrote into its source tree"):
        build_llama_server(tree, cache_root=tmp_path / "cache", log=lambda m: None)


# --- the real probe -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chat(built_server):
    try:
        backend = LlamaCppChatBackend(None, BackendOptions(timeout_s=60, extra={"built_server": built_server}))
    except ServerBuildError as exc:
        pytest.skip(f"the chat probe could not be built: {exc.headline}")
    yield backend
    backend.close()


def _req(template=CHATML, messages=None, tools=None, gen=True):
    return RenderRequest(messages=messages or [{"role": "user", "content": "Hi"}], add_generation_prompt=gen,
                         tools=tools, template=template, bos_token="", eos_token="<|im_end|>")


def test_render_is_llama_cpps_jinja_output(chat):
    got = chat.render_prompt(_req())
    assert got.text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert chat.info()["build"]


def test_a_template_error_is_llama_cpps_message_and_the_template_rejection_is_recognised(chat):
    got = chat.render_prompt(_req(template="{{ raise_exception('no system role') }}"))
    assert got.rejected and "no system role" in got.error
    with pytest.raises(ProbeError):
        chat.chat_params(_req(template="{% for %}"))


def test_an_abort_fails_only_its_request_and_the_next_one_runs(chat):
    # An empty template makes common_chat_templates_init fall back to the model's, and with no
    # model llama.cpp aborts (GGML_ASSERT(model != nullptr)): the process dies.
    with pytest.raises(ProbeCrashed, match="GGML_ASSERT") as exc:
        chat.render_prompt(_req(template=""))
    assert "SIGABRT" in str(exc.value)
    assert chat.render_prompt(_req()).text.endswith("<|im_start|>assistant\n")   # a fresh probe


def test_parse_streamed_equals_non_streamed(chat, llama_tree):
    # a real template: llama.cpp derives the parser from what the template renders for a call
    template = (llama_tree / "models" / "templates" / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text(encoding="utf-8")
    text = 'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    parsed = chat.parse(_req(template=template, tools=TOOLS), text, splits(text))
    assert len(parsed.streams) == len(splits(text))
    assert stream_problems(parsed.message, parsed.streams, splits(text)) == []
    assert parsed.message["content"].strip() == "Sure."
    assert [(c["name"], json.loads(c["arguments"])) for c in parsed.message["tool_calls"]] == [
        ("get_weather", {"city": "Paris"})]


def test_json_schema_to_grammar_is_the_cpp_converter(chat):
    grammar = chat.json_schema_to_grammar({"type": "object", "properties": {"a": {"type": "integer"}},
                                           "required": ["a"]})
    assert "root ::=" in grammar and "integer" in grammar


def test_the_probes_clock_is_the_harnesss_fixed_date(chat):
    from harness.backends.rendering import FIXED_DATE_STRING
    got = chat.render_prompt(_req(template="{{ strftime_now('%d %b %Y') }}|{{ date_string }}"))
    assert got.text == f"{FIXED_DATE_STRING}|{FIXED_DATE_STRING}"
