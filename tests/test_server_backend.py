"""ServerBackend and OpenAICompatBackend against a real llama-server with SmolLM2-135M.

Needs the pinned llama.cpp tree (built on first use, then cached) and the SmolLM2 GGUF, both
resolved as the harness resolves them (tests/conftest.py). threads=1 throughout: on a shared 2-core
machine llama.cpp's spinning worker threads slow down 100x when a core is taken.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests

from harness.backends.base import (CHAT, COMPLETE, STREAM, Backend, BackendError, BackendOptions,
                                   ChatRequest, CompletionRequest, ModelFiles, RenderRequest,
                                   Unsupported)
from harness.backends.openai_compat import OpenAICompatBackend
from harness.backends.server import ServerBackend
from harness.run.server_build import BuiltServer
from conftest import pid_gone

REPO = Path(__file__).resolve().parents[1]
CHATML_HI = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
             "Face<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n")
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


# --- prerequisites ---------------------------------------------------------------------
# smollm2_gguf, llama_tree (conftest.py): resolved through the harness's own sources, so these
# run wherever the harness can run.
@pytest.fixture(scope="session")
def built(built_server) -> BuiltServer:
    return built_server                            # conftest.py: cached after the first build


@pytest.fixture(scope="session")
def templates(llama_tree) -> Path:
    return llama_tree / "models" / "templates"


def make_backend(built, gguf, template: Path | None = None, **extra) -> ServerBackend:
    model = ModelFiles(key="smollm2-135m-instruct", gguf=gguf, chat_template_file=template)
    return ServerBackend(model, BackendOptions(threads=1, seed=1234, extra={"built_server": built, **extra}))


@pytest.fixture(scope="module")
def smol(built, smollm2_gguf):
    backend = make_backend(built, smollm2_gguf)
    yield backend
    backend.close()


# --- lifecycle ----------------------------------------------------------------------------
def test_start_health_stop_leaves_no_process(built, smollm2_gguf):
    backend = make_backend(built, smollm2_gguf)
    assert isinstance(backend, Backend) and backend.name == "llama-server"
    pid, url = backend.server_pid, backend.info()["url"]
    os.kill(pid, 0)                                          # running
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert int(stat[2]) == pid, "server must lead its own process group"
    assert requests.get(url + "/health", timeout=5).json() == {"status": "ok"}
    backend.close()
    assert pid_gone(pid)
    backend.close()                                          # idempotent


_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from harness.backends.base import BackendOptions, ModelFiles
    from harness.backends.server import ServerBackend
    b = ServerBackend(ModelFiles(key="m", gguf=Path(sys.argv[1])),
                      BackendOptions(threads=1, extra={"server_binary": sys.argv[2]}))
    print(b.server_pid, flush=True)
    if sys.argv[3] == "exit":
        sys.exit(0)                                          # no close(): atexit must stop it
    time.sleep(120)
""")


@pytest.mark.parametrize("how", ["exit", "SIGTERM", "SIGINT", "SIGKILL"])
def test_no_orphan_when_the_harness_goes_away(built, smollm2_gguf, how):
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(smollm2_gguf), str(built.binary),
                              "exit" if how == "exit" else "wait"],
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with child:
        try:
            line = child.stdout.readline()
            assert line.strip().isdigit(), line + child.stderr.read()
            server_pid = int(line)
            if how != "exit":
                os.kill(child.pid, getattr(signal, how))
            child.wait(timeout=30)
            assert pid_gone(server_pid), f"llama-server {server_pid} outlived its harness ({how})"
        finally:
            child.kill()
            child.communicate()


def test_crash_between_calls_fails_one_call_then_recovers(built, smollm2_gguf):
    backend = make_backend(built, smollm2_gguf)
    try:
        assert backend.tokenize("Hello", add_special=False, parse_special=False)
        old = backend.server_pid
        os.kill(old, signal.SIGKILL)
        assert pid_gone(old)
        with pytest.raises(BackendError, match=r"llama-server crashed \(exit code -9, killed by "
                                               r"SIGKILL\) during tokenize; restarted"):
            backend.tokenize("Hello", add_special=False, parse_special=False)
        assert backend.tokenize("Hello", add_special=False, parse_special=False) == [19556]
        assert backend.server_pid != old
    finally:
        backend.close()


@pytest.mark.parametrize("stream", [False, True])
def test_crash_during_a_request_fails_that_request_then_recovers(built, smollm2_gguf, stream):
    backend = make_backend(built, smollm2_gguf)
    try:
        pid = backend.server_pid
        killer = threading.Timer(0.5, os.kill, (pid, signal.SIGKILL))
        killer.start()
        t0 = time.monotonic()
        with pytest.raises(BackendError, match=r"crashed \(exit code -9, killed by SIGKILL\) "
                                               r"during complete; restarted"):
            backend.complete(CompletionRequest(prompt="1, 2, 3, 4, 5,", max_tokens=2000, stream=stream))
        killer.join()
        assert time.monotonic() - t0 < 30
        assert backend.complete(CompletionRequest(prompt="1, 2, 3,", max_tokens=4)).text
        assert backend.server_pid != pid
    finally:
        backend.close()


def test_attach_mode_uses_and_never_stops_a_foreign_server(smol):
    url = smol.info()["url"]
    attached = ServerBackend(None, BackendOptions(extra={"server_url": url}))
    assert attached.info()["mode"] == "attached"
    assert attached.tokenize("Hello world", add_special=False, parse_special=False) == [19556, 905]
    with pytest.raises(Unsupported):                         # would need a --special sibling
        attached.complete(CompletionRequest(prompt="Hi", max_tokens=1, render_special=True))
    attached.close()
    os.kill(smol.server_pid, 0)                              # still running


def test_info_records_version_build_and_model(smol, smollm2_gguf):
    info = smol.info()
    assert info["server_version"].startswith("version:")
    assert info["tree_hash"] and info["tree_hash"][:12] in info["build_info"]
    assert info["build_options"]["LLAMA_BUILD_SERVER"] == "ON"
    assert (info["threads"], info["seed"]) == (1, 1234)
    assert info["model_sha256"] == hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()


# --- tokens ---------------------------------------------------------------------------------
def test_tokenize_detokenize_round_trip(smol):
    ids = smol.tokenize("Hello world", add_special=False, parse_special=False)
    assert ids == [19556, 905]
    assert smol.detokenize(ids, render_special=True) == "Hello world"
    pieces = smol.tokenize_with_pieces("Hello world", add_special=False, parse_special=False)
    assert pieces == [(19556, b"Hello"), (905, b" world")]


def test_im_end_is_id_2_only_with_parse_special(smol):
    assert smol.tokenize("<|im_end|>", add_special=False, parse_special=True) == [2]
    plain = smol.tokenize("<|im_end|>", add_special=False, parse_special=False)
    assert 2 not in plain and len(plain) > 1
    assert smol.token_piece(2, render_special=True) == b"<|im_end|>"
    with pytest.raises(Unsupported, match="always renders special tokens"):
        smol.detokenize([2], render_special=False)


def test_token_pieces_keep_raw_bytes(smol):
    pieces = smol.tokenize_with_pieces("🦙", add_special=False, parse_special=False)
    assert b"".join(p for _, p in pieces) == "🦙".encode()
    first_id, first_piece = pieces[0]
    assert smol.token_piece(first_id, render_special=True) == first_piece
    with pytest.raises(BackendError, match="HTTP 500"):       # out of range: an error, not a crash
        smol.token_piece(10**6, render_special=True)
    os.kill(smol.server_pid, 0)


def test_vocab_info(smol):
    v = smol.vocab_info()
    assert v.n_vocab == 49152 and v.eos_id == 2
    assert v.extra["eos_token"] == "<|im_end|>"


# --- rendering --------------------------------------------------------------------------------
def test_apply_template_with_the_models_chatml(smol):
    msgs = [{"role": "user", "content": "hi"}]
    assert smol.render_prompt(RenderRequest(messages=msgs)).text == CHATML_HI + "<|im_start|>assistant\n"
    assert smol.render_prompt(RenderRequest(messages=msgs, add_generation_prompt=False)).text == CHATML_HI
    # the server's own template text, passed explicitly, is accepted; any other is not
    own = smol.props()["chat_template"]
    assert smol.render_prompt(RenderRequest(messages=msgs, template=own)).text.startswith(CHATML_HI)
    with pytest.raises(Unsupported, match="no per-request template"):
        smol.render_prompt(RenderRequest(messages=msgs, template="{{ messages[0].content }}"))
    with pytest.raises(Unsupported, match="bos_token"):
        smol.render_prompt(RenderRequest(messages=msgs, bos_token="<s>"))


def test_apply_template_accepts_tools(smol, record_property):
    msgs = [{"role": "user", "content": "hi"}]
    with_tools = smol.render_prompt(RenderRequest(messages=msgs, tools=[WEATHER_TOOL])).text
    assert isinstance(with_tools, str) and with_tools.startswith("<|im_start|>")
    # SmolLM2's template has no tools block, and llama.cpp adds none for it
    record_property("chatml_renders_tools", "get_weather" in with_tools)


def test_template_override_and_rejection(built, smollm2_gguf, templates):
    backend = make_backend(built, smollm2_gguf, templates / "google-gemma-2-2b-it.jinja")
    try:
        ok = backend.render_prompt(RenderRequest(messages=[{"role": "user", "content": "hi"}]))
        assert ok.text.endswith("<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n")
        bad = backend.render_prompt(RenderRequest(messages=[{"role": "user", "content": "a"},
                                                            {"role": "user", "content": "b"}]))
        assert bad.text is None and bad.rejected
        assert "Conversation roles must alternate" in bad.error
    finally:
        backend.close()


# --- generation ---------------------------------------------------------------------------------
def test_completion_stream_equals_non_stream(smol):
    req = CompletionRequest(prompt="The capital of France is", max_tokens=12)
    whole = smol.complete(req)
    streamed = smol.complete(CompletionRequest(prompt=req.prompt, max_tokens=12, stream=True))
    assert streamed.text == whole.text and streamed.tokens == whole.tokens
    assert "".join(streamed.chunks) == streamed.text and len(streamed.chunks) > 1
    assert whole.finish_reason == streamed.finish_reason == "length"
    assert whole.timings["predicted_n"] == 12 and len(whole.tokens) == 12


def test_completion_from_token_ids_grammar_and_schema(smol):
    ids = tuple(smol.tokenize("The capital of France is", add_special=False, parse_special=False))
    by_ids = smol.complete(CompletionRequest(prompt=ids, max_tokens=6))
    assert by_ids.text == smol.complete(CompletionRequest(prompt="The capital of France is", max_tokens=6)).text
    yes_no = smol.complete(CompletionRequest(prompt="Yes or no?", max_tokens=5,
                                             grammar='root ::= "yes" | "no"'))
    assert yes_no.text in ("yes", "no") and yes_no.finish_reason == "stop"
    obj = smol.complete(CompletionRequest(prompt="JSON:", max_tokens=40, json_schema={
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}))
    if obj.finish_reason == "stop":
        assert isinstance(json.loads(obj.text)["a"], int)
    with pytest.raises(Unsupported, match="stop-by-token-id"):
        smol.complete(CompletionRequest(prompt="x", stop_ids=(2,)))


def test_render_special_uses_a_special_sibling_server(smol, record_property):
    req = dict(prompt="Yes or no?", max_tokens=5, grammar='root ::= "yes" | "no"')
    plain = smol.complete(CompletionRequest(**req))
    special = smol.complete(CompletionRequest(**req, render_special=True))
    assert special.tokens == plain.tokens
    assert any("--special" in p.args for p in smol.processes())
    record_property("eos_text_with_special", special.text[len(plain.text):])


def test_chat_stream_equals_non_stream(smol):
    req = dict(messages=({"role": "user", "content": "Say hello"},), max_tokens=16)
    whole = smol.chat(ChatRequest(**req))
    streamed = smol.chat(ChatRequest(**req, stream=True))
    assert whole.text and streamed.text == whole.text
    assert streamed.finish_reason == whole.finish_reason
    assert whole.tokens and len(whole.tokens) == whole.timings["predicted_n"]


def assert_tool_call_shape(g):
    assert g.finish_reason in ("stop", "length", "tool_calls")
    for call in g.tool_calls or []:
        assert set(call) == {"id", "type", "function"} and call["type"] == "function"
        assert isinstance(call["function"]["name"], str)
        assert isinstance(call["function"]["arguments"], str)


def test_chat_with_required_tool_on_chatml(smol, record_property):
    g = smol.chat(ChatRequest(messages=({"role": "user", "content": "What is the weather in Paris?"},),
                              tools=(WEATHER_TOOL,), tool_choice="required", max_tokens=32))
    assert_tool_call_shape(g)
    record_property("chatml_required_tool", json.dumps(g.as_golden()))


def test_tool_call_stream_equals_non_stream(built, smollm2_gguf, templates, record_property):
    # A tool-aware template, and an assistant prefill that starts the call, so even a
    # 135M model produces real tool-call deltas for the stream normaliser.
    backend = make_backend(built, smollm2_gguf, templates / "Qwen-Qwen2.5-7B-Instruct.jinja")
    msgs = ({"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "'})
    try:
        req = dict(messages=msgs, tools=(WEATHER_TOOL,), tool_choice="required", max_tokens=48)
        whole, streamed = backend.chat(ChatRequest(**req)), backend.chat(ChatRequest(**req, stream=True))
    finally:
        backend.close()
    for g in (whole, streamed):
        assert_tool_call_shape(g)
        assert g.tool_calls, g
    strip = lambda calls: [c["function"] for c in calls]     # ids are random per request
    assert strip(streamed.tool_calls) == strip(whole.tool_calls)
    assert streamed.finish_reason == whole.finish_reason
    record_property("tool_calls", json.dumps(strip(whole.tool_calls)))


# --- OpenAI-compatible backend against a server this test started -----------------------------
def test_openai_compat_backend_chat_and_stream(smol):
    url = smol.info()["url"]
    oa = OpenAICompatBackend(None, BackendOptions(extra={"base_url": url}))
    try:
        assert oa.capabilities == frozenset({CHAT, STREAM}) and oa.base_url == url + "/v1"
        req = dict(messages=({"role": "user", "content": "Say hello"},), max_tokens=16)
        whole, streamed = oa.chat(ChatRequest(**req)), oa.chat(ChatRequest(**req, stream=True))
        assert whole.text and streamed.text == whole.text
        assert streamed.chunks and "".join(streamed.chunks) == streamed.text
        assert whole.text == smol.chat(ChatRequest(**req)).text
        with pytest.raises(Unsupported, match="'complete'"):
            oa.complete(CompletionRequest(prompt="Hi"))
        with pytest.raises(Unsupported, match="'tools'"):
            oa.chat(ChatRequest(messages=req["messages"], tools=(WEATHER_TOOL,)))
    finally:
        oa.close()


def test_openai_compat_declared_completion(smol):
    oa = OpenAICompatBackend(None, BackendOptions(extra={
        "base_url": smol.info()["url"] + "/v1", "capabilities": [COMPLETE, STREAM]}))
    try:
        whole = oa.complete(CompletionRequest(prompt="The capital of France is", max_tokens=8))
        streamed = oa.complete(CompletionRequest(prompt="The capital of France is", max_tokens=8, stream=True))
        assert whole.text == streamed.text == smol.complete(
            CompletionRequest(prompt="The capital of France is", max_tokens=8)).text
        assert oa.info()["models"]["data"]
    finally:
        oa.close()
    with pytest.raises(ValueError, match="cannot provide"):
        OpenAICompatBackend(None, BackendOptions(extra={"base_url": "http://x", "capabilities": ["tokenize"]}))
