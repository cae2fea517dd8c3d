"""The native chat probe (harness/native/chat_probe.cpp) and the llama.cpp-chat backend, on the real
llama.cpp build (skipped where no llama.cpp tree / cached build is at hand)."""

import os
from pathlib import Path

import pytest

from harness.backends.base import BackendOptions, RenderRequest
from harness.backends.llama_chat import LlamaChatBackend, ProbeCrashed, ProbeError
from harness.run.probe_build import build_chat_probe
from harness.run.server_build import ServerBuildError, build_llama_server, default_cache_root

TREE = Path(os.environ.get("HARNESS_LLAMA_CPP_TREE") or default_cache_root() / "src" /
            "llama-cpp-python-0.3.36" / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp")
TEMPLATE = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def probe_files():
    if not TREE.is_dir():
        pytest.skip(f"no llama.cpp tree at {TREE}")
    try:
        built = build_chat_probe(build_llama_server(TREE), log=lambda m: None)
    except ServerBuildError as e:
        pytest.skip(f"llama.cpp does not build: {e.headline}")
    return built


def _backend(files, *args):
    return LlamaChatBackend(None, BackendOptions(extra={"chat_probe_binary": str(files.binary),
                                                        "chat_probe_lib_dir": str(files.lib_dir),
                                                        "probe_args": list(args)}))


def test_render_parse_and_grammar(probe_files):
    b = _backend(probe_files)
    try:
        req = RenderRequest(messages=HI, template=TEMPLATE)
        out = b.render_chat(req)
        assert out["prompt"] == "<|user|>hi\n<|assistant|>"
        assert out["params"]["generation_prompt"] == "<|assistant|>"
        assert b.render_prompt(req).text == out["prompt"]
        p = b.parse_chat(req, "hello world", ["hel", "lo", " world"])
        assert p["message"]["content"] == "hello world"
        assert p["streamed"] == p["message"]
        assert [d["content_delta"] for d in p["diffs"]] == ["hel", "lo", " world"]
        g = b.json_schema_to_grammar({"type": "object", "properties": {"a": {"type": "integer"}}})
        assert g.count("root ::=") == 1 and "a-kv" in g
        assert b.info()["commit"]
    finally:
        b.close()


def test_template_that_throws_fails_alone(probe_files):
    b = _backend(probe_files)
    try:
        bad = RenderRequest(messages=HI, template="{{ raise_exception('nope') }}")
        with pytest.raises(ProbeError, match="Jinja Exception: nope"):
            b.render_chat(bad)
        rej = b.render_prompt(bad)
        assert rej.rejected and rej.error == "TemplateRejected: nope"
        r = b.render_prompt(RenderRequest(messages=HI, template="{% if %}"))
        assert r.text is None and r.error.startswith("ProbeError")
        assert b.render_chat(RenderRequest(messages=HI, template=TEMPLATE))["prompt"].startswith("<|user|>")
        assert b.probe.restarts == 0
    finally:
        b.close()


def test_abort_fails_only_its_request_and_probe_restarts(probe_files):
    # restart mechanics only: the probe's debug op (enabled by its --abort-on-debug-op switch)
    b = _backend(probe_files, "--abort-on-debug-op")
    try:
        assert b.render_chat(RenderRequest(messages=HI, template=TEMPLATE))["prompt"]
        with pytest.raises(ProbeCrashed) as exc:
            b.call("debug_abort", {})
        assert "SIGABRT" in str(exc.value) and "debug_abort requested" in str(exc.value)
        assert b.render_chat(RenderRequest(messages=HI, template=TEMPLATE))["prompt"] == "<|user|>hi\n<|assistant|>"
        assert b.probe.restarts == 1
    finally:
        b.close()


def test_cpp_schema_converter_through_the_grammar_engine(probe_files):
    """generation.grammar_engine's llama.cpp-json-schema engine: the C++ converter's GBNF, run
    through llama.cpp's grammar engine, honours integer bounds (the Python port does not)."""
    from harness.families.generation.engine import engine, llama_cpp_python_gbnf
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["n"], "additionalProperties": False}
    gbnf = _backend(probe_files).json_schema_to_grammar(schema)
    texts = ['{"n": 3}', '{"n": -1}', '{"n": 10}', '{"n": "3"}']
    assert engine().verdicts(gbnf, texts) == [True, False, False, False]
    assert engine().verdicts(llama_cpp_python_gbnf(schema), texts) == [True, True, True, False]


def test_server_side_thinking_and_message_view(probe_files):
    """toolcalls.server_parse gives the probe the enable_thinking llama-server derives at start-up
    (the template supports thinking: Qwen3's does, a plain one does not), and
    compares both sides' messages on texts and each call's name and arguments text."""
    from harness.families.toolcalls.server_parse import message_view, thinking_enabled
    thinking = (TREE / "models" / "templates" / "Qwen-Qwen3-0.6B.jinja").read_text(encoding="utf-8")
    b = _backend(probe_files)
    try:
        assert thinking_enabled(b, RenderRequest(messages=HI, template=thinking)) is True
        assert thinking_enabled(b, RenderRequest(messages=HI, template=TEMPLATE)) is False
    finally:
        b.close()
    server = {"content": None, "tool_calls": [{"id": "x1", "type": "function",
                                               "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}
    probe = {"content": "", "reasoning_content": "", "tool_calls": [{"name": "f", "arguments": "{\"a\": 1}", "id": ""}]}
    assert message_view(server) == message_view(probe) == {
        "content": "", "reasoning_content": "", "tool_calls": [{"name": "f", "arguments": "{\"a\": 1}"}]}
    assert message_view({**probe, "tool_calls": [{"name": "f", "arguments": "{\"a\":1}"}]}) != message_view(server)
