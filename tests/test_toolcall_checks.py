"""The tool-call family's own logic (harness/families/toolcalls/checks.py), without model weights:
turn cutting, call comparison, lossy declarations, prompt rules, handler capture, the
tool-call grammar, argument validation, token pieces, the chat-call verdicts, expansion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.families.toolcalls import checks as tc
from harness.backends.base import BackendOptions, Generation
from harness.cases.model import Case, discover
from harness.checks import Mismatch
from harness.run.runtime import Runtime
from harness.toolcalls import ToolCall

CASES = Path(__file__).resolve().parents[1] / "cases"

SHA = "ab" * 32
WEATHER = discover(CASES, select=["-none-"]).toolsets["weather"].tools

HERMES_TEMPLATE = (
    "{%- for m in messages -%}"
    "<|im_start|>{{ m.role }}\n"
    "{%- if m.tool_calls -%}"
    "{%- for c in m.tool_calls[:max_calls] -%}"
    "\n<tool_call>\n{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}\n</tool_call>"
    "{%- endfor -%}"
    "{%- else -%}{{ m.content }}{%- endif -%}"
    "<|im_end|>\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}")


# --- helpers ----------------------------------------------------------------------------------
def make_case(tmp_path: Path, *, template: str | None = None, raw_checks: dict | None = None,
              contexts=("tool-round-trip", "parallel-tool-calls", "tools-offered"), kind: str | None = None) -> Case:
    ctxs = discover(CASES, select=["-none-"]).contexts
    path = None
    if template is not None:
        path = tmp_path / "demo-template.jinja"
        path.write_text(template)
    kind = kind or ("template" if template is not None else "model")
    return Case(id="demo" if kind == "model" else "set@demo-template", kind=kind, description="demo",
                file="cases/demo.yaml", line=3, raw={"checks": {"toolcalls": raw_checks or {}}},
                contexts=tuple(ctxs[c] for c in contexts), known_defects=(), template_path=path,
                bos_token="", eos_token="<|im_end|>")


def rt() -> Runtime:
    return Runtime(BackendOptions())


@pytest.fixture(scope="module")
def hf_renderer():
    from harness.backends.hf import HFBackend
    return HFBackend(None, BackendOptions())


def item(case: Case, check: str, context_id: str | None, backend: str, **extra: str) -> tc.Item:
    ctx = next((c for c in case.contexts if c.id == context_id), None)
    return tc.Item(case, check, ctx, None, backend, tuple(extra.items()))


# --- assistant_turn ----------------------------------------------------------------------------
def test_assistant_turn_exact_and_approximate():
    assert tc.assistant_turn("A<|im_start|>assistant\n", "A<|im_start|>assistant\n<tool_call>x") == \
        ("<tool_call>x", "exact")
    # reasoning template: the generation prompt opens <think>, history does not
    turn, cut = tc.assistant_turn("A<|im_start|>assistant\n<think>\n", "A<|im_start|>assistant\n<tool_call>x")
    assert turn == "<tool_call>x" and cut.startswith("approximate") and "<think>" in cut
    # the cut backs off to a boundary: never inside a tag
    turn, _ = tc.assistant_turn("<|assistant|><think>", "<|assistant|></think><tool_call>f")
    assert turn == "</think><tool_call>f"


# --- comparing calls -----------------------------------------------------------------------------
def test_compare_calls_names_every_lost_aspect():
    want = [tc.WantCall("f", {"a": 1}, "id1"), tc.WantCall("g", {}, "id2")]
    assert tc.compare_calls(want, [ToolCall("f", {"a": 1}), ToolCall("g", {})]) == {}
    lost = tc.compare_calls(want, [ToolCall("h", {"a": "1"}, id="other")])
    assert set(lost) == {"calls", "names", "arguments", "ids"}
    assert "2 call(s) rendered, 1 extracted" in lost["calls"][0]


def test_presence_losses_accepts_json_and_python_spellings():
    want = [tc.WantCall("get_forecast", {"city": "Tokyo", "days": 3, "hourly": False}, None)]
    assert tc.presence_losses(want, "call get_forecast(city='Tokyo', days=3, hourly=False)") == {}
    assert tc.presence_losses(want, '<x>get_forecast {"city":"Tokyo","days":3,"hourly":false}') == {}
    lost = tc.presence_losses(want, "get_forecast Tokyo 3")
    assert list(lost) == ["arguments"] and "hourly=false" in lost["arguments"][0]
    assert list(tc.presence_losses(want, "<|im_end|>")) == ["calls"]


def test_where_matches_and_declared_losses(tmp_path):
    case = make_case(tmp_path, raw_checks={"lossy": [
        {"where": {"template": "a|demo-*", "context": "parallel-*"}, "loses": ["calls"], "description": "one call"},
        {"where": {"template": "zzz"}, "loses": ["ids"], "description": "never"}]})
    assert tc.declared_losses(case, {"template": "demo-template", "context": "parallel-tool-calls"}) == \
        ({"calls"}, ["one call"])
    assert tc.declared_losses(case, {"template": "demo-template", "context": "tool-round-trip"}) == (set(), [])


# --- the round trip, end to end with transformers' renderer ----------------------------------------
def run_round_trip(case, context_id, hf_renderer, fmt="hermes"):
    return tc.check_round_trip(rt(), item(case, tc.ROUND_TRIP, context_id, "hf", format=fmt), hf_renderer)


def test_round_trip_of_a_lossless_template(tmp_path, hf_renderer):
    case = make_case(tmp_path, template=HERMES_TEMPLATE.replace("[:max_calls]", ""))
    out = run_round_trip(case, "parallel-tool-calls", hf_renderer)
    assert out.problems == [] and out.golden["cut"] == "exact" and out.golden["format"] == "hermes"
    assert [c["name"] for c in out.golden["extracted"]["calls"]] == ["get_weather", "get_forecast"]
    out.raise_if_failed()


def test_round_trip_reports_an_undeclared_loss_and_accepts_a_declared_one(tmp_path, hf_renderer):
    template = HERMES_TEMPLATE.replace("[:max_calls]", "[:1]")
    out = run_round_trip(make_case(tmp_path, template=template), "parallel-tool-calls", hf_renderer)
    assert out.golden["lost"] == ["calls"]
    with pytest.raises(Mismatch, match=r"(?s)cases/demo.yaml:3: hf renders.*with 'hermes'.*lost: calls.*1 extracted"):
        out.raise_if_failed()
    presence = run_round_trip(make_case(tmp_path, template=template), "parallel-tool-calls", hf_renderer, tc.PRESENCE)
    assert presence.golden["lost"] == ["calls"] and "extracted" not in presence.golden
    declared = {"lossy": [{"where": {"context": "parallel-tool-calls"}, "loses": ["calls"], "description": "1"}]}
    out = run_round_trip(make_case(tmp_path, template=template, raw_checks=declared), "parallel-tool-calls",
                         hf_renderer)
    out.raise_if_failed()
    assert out.notes and "lossy by design" in out.notes[0]


def test_round_trip_flags_a_stale_lossy_declaration(tmp_path, hf_renderer):
    declared = {"lossy": [{"where": {}, "loses": ["calls"], "description": "claims a loss"}]}
    case = make_case(tmp_path, template=HERMES_TEMPLATE.replace("[:max_calls]", ""), raw_checks=declared)
    with pytest.raises(Mismatch, match="but the round trip keeps it: update the case"):
        run_round_trip(case, "tool-round-trip", hf_renderer).raise_if_failed()


def test_round_trip_refusal_and_engine_error(tmp_path, hf_renderer):
    refusing = "{% if messages | length > 1 %}{{ raise_exception('one at a time') }}{% endif %}" + HERMES_TEMPLATE
    out = run_round_trip(make_case(tmp_path, template=refusing.replace("[:max_calls]", "")), "tool-round-trip",
                         hf_renderer)
    assert out.golden["lost"] == ["refused"]
    broken = HERMES_TEMPLATE.replace("[:max_calls]", "") + "{{ tools.missing.attr }}"
    out = run_round_trip(make_case(tmp_path, template=broken), "tool-round-trip", hf_renderer)
    assert "error" in out.golden and "could not render" in out.problems[0]


def test_format_override_and_tool_capability(tmp_path):
    case = make_case(tmp_path, template="{{ tools }}", raw_checks={"formats": [{"match": "demo-*", "format": None}]})
    assert tc.format_for(case, HERMES_TEMPLATE) is None
    assert tc.tool_capable("{% for t in tools %}") and tc.tool_capable("{{ m.tool_calls }}")
    assert not tc.tool_capable("{{ xml_tools }}{{ message.role == 'tool' }}")


# --- prompt rules and the hand-built handler --------------------------------------------------------
def test_prompt_problems():
    ctxs = discover(CASES, select=["-none-"]).contexts
    msgs = ctxs["tool-round-trip"].messages
    problems = tc.prompt_problems("You can call tools to answer. What is the weather in Paris? get_weather "
                                  "{&#34;city&#34;: &#34;Paris&#34;}", msgs, WEATHER, tools_expected=True)
    text = "\n".join(problems)
    assert "tool 'get_forecast' is offered but never described" in text
    assert "description 'Get the current weather for a city.'" in text
    assert "arguments of 'get_weather'" in text and "tool result" in text
    assert "HTML-escaped: it contains &#34;" in text


class FakeLlama:
    verbose = False


def test_capture_chatml_function_calling_prompt():
    ctxs = discover(CASES, select=["-none-"]).contexts
    got = tc.capture_handler_prompt(FakeLlama(), "chatml-function-calling", ctxs["tool-round-trip"].messages,
                                    WEATHER, "auto")
    assert got["stop"] == [":"] and got["grammar"] is True
    assert "functions.get_forecast:" in got["prompt"]          # the system message carries the tools
    got = tc.capture_handler_prompt(FakeLlama(), "chatml-function-calling", ctxs["tools-offered"].messages,
                                    WEATHER, None)
    assert "get_weather" not in got["prompt"]
    # a handler's own failure is the recorded result, never an exception out of the check
    assert tc.capture_handler_prompt(FakeLlama(), "functionary-v2", [{"role": "user", "content": "x"}],
                                     WEATHER, "auto")["error"].startswith("AttributeError")


def test_wire_messages_stringify_arguments_without_touching_the_context():
    ctxs = discover(CASES, select=["-none-"]).contexts
    msgs = ctxs["tool-round-trip"].messages
    wired = tc.wire_messages(msgs)
    assert json.loads(wired[2]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert isinstance(msgs[2]["tool_calls"][0]["function"]["arguments"], dict)


# --- grammar and validation -------------------------------------------------------------------------
def test_tool_call_grammar_parses_and_follows_the_format():
    from llama_cpp import LlamaGrammar
    grammar = tc.tool_call_grammar(WEATHER, "hermes")
    assert 'root ::= "<tool_call>\\n" tool-call-json "\\n</tool_call>"' in grammar
    assert '"\\"get_weather\\""' in grammar and '"\\"get_forecast\\""' in grammar
    LlamaGrammar.from_string(grammar, verbose=False)
    with pytest.raises(tc.CaseProblem, match="no tool-call grammar for format 'mistral'"):
        tc.tool_call_grammar(WEATHER, "mistral")


def test_validate_call():
    assert tc.validate_call("get_weather", {"city": "Paris"}, WEATHER) == []
    assert tc.validate_call("get_weather", '{"city": "Paris", "unit": "celsius"}', WEATHER) == []
    assert "not an offered tool" in tc.validate_call("nope", {}, WEATHER)[0]
    assert "not valid JSON" in tc.validate_call("get_weather", '{"city": "Pa', WEATHER)[0]
    problems = tc.validate_call("get_forecast", {"city": "Tokyo", "days": 9, "hourly": "no"}, WEATHER)
    assert len(problems) == 2 and any("days" in p and "maximum" in p for p in problems)


# --- token pieces ---------------------------------------------------------------------------------------
class ByteTokens:
    """A fake tokenizer: one token per UTF-8 byte, so every multi-byte character is split."""

    def tokenize(self, text, *, add_special, parse_special):
        return list(text.encode("utf-8"))

    def token_piece(self, token_id, *, render_special):
        return bytes([token_id])


def test_token_texts_hold_partial_characters_back():
    ids, pieces = tc.token_texts(ByteTokens(), "aé€")
    assert len(ids) == 6 and "".join(pieces) == "aé€"
    assert pieces == ["a", "", "é", "", "", "€"]


def test_check_stream_in_byte_tokens(tmp_path):
    case = make_case(tmp_path)
    it = tc.Item(case, tc.STREAM, None, None, "llama-cpp-python", (("format", "hermes"), ("output", "one-call")))
    out = tc.check_stream(it, ByteTokens(), CASES)
    out.raise_if_failed()
    assert out.golden["extracted"]["calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]


# --- chat-call verdicts -----------------------------------------------------------------------------
GEN_CFG = {"template": {"pypi_sdist": "x==1", "member": "t/Qwen-demo.jinja"}, "format": "hermes",
           "context": "tools-offered", "chat_max_tokens": 8}


class FakeChat:
    def __init__(self, gen):
        self.gen, self.requests = gen, []

    def chat(self, req):
        self.requests.append(req)
        return self.gen


def chat_outcome(tmp_path, gen, choice="required"):
    case = make_case(tmp_path, raw_checks={"generation": GEN_CFG})
    it = item(case, tc.CHAT, "tools-offered", "llama-server", template="embedded", tool_choice=choice)
    backend = FakeChat(gen)
    out = tc.check_chat_call(rt(), it, backend)
    return out, backend.requests[0]


def call(name, arguments):
    return {"id": "x", "type": "function", "function": {"name": name, "arguments": arguments}}


def test_chat_call_verdicts(tmp_path):
    out, req = chat_outcome(tmp_path, Generation("Sure, it rains.", "length"))
    assert req.tool_choice == "required" and req.max_tokens == 8 and req.temperature == 0.0
    with pytest.raises(Mismatch, match=r"(?s)came back as plain content.*finish_reason='length'"):
        out.raise_if_failed()
    good = Generation("", "tool_calls", tool_calls=[call("get_weather", '{"city": "Oslo"}')])
    out, req = chat_outcome(tmp_path, good, "named")
    assert req.tool_choice == {"type": "function", "function": {"name": "get_weather"}}
    out.raise_if_failed()
    assert out.golden["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    bad = Generation("", "tool_calls", tool_calls=[call("get_forecast", '{"city": "Oslo"')])
    out, _ = chat_outcome(tmp_path, bad, "named")
    with pytest.raises(Mismatch, match=r"(?s)tool_choice names 'get_weather'.*not valid JSON"):
        out.raise_if_failed()


def test_missing_generation_context_is_a_case_problem(tmp_path):
    case = make_case(tmp_path, raw_checks={"generation": {**GEN_CFG, "context": "nope"}})
    with pytest.raises(tc.CaseProblem, match="is not one of the case's contexts"):
        tc.require_context(item(case, tc.CHAT, None, "llama-server"))


# --- expansion ------------------------------------------------------------------------------------------
def test_expanders(case_tree):
    shutil.copytree(CASES / "toolcall-outputs", case_tree / "toolcall-outputs")
    (case_tree / "m.yaml").write_text(
        f"schema: 1\nid: m\ndescription: demo\nmodel:\n  gguf:\n    file: m.gguf\n    sha256: {SHA}\n"
        "contexts: [tools-offered, tool-round-trip, parallel-tool-calls]\n"
        "checks:\n  toolcalls:\n    canned_outputs: {tokenizer: llama-cpp-python}\n"
        "    handlers:\n      - {handler: chatml-function-calling, no_reference: none here, tool_choice: [auto]}\n"
        "    generation:\n      template: {pypi_sdist: x==1, member: a/Qwen-x.jinja}\n"
        "      format: hermes\n      context: tools-offered\n      tool_choice: [required]\n")
    cases = discover(case_tree)
    assert cases.errors == []
    avail = ["hf", "llama-cpp-python", "llama-server"]
    rt_ids = [i.id for i in tc.round_trip_items(cases, avail)]
    assert rt_ids == ["m,tool-round-trip,detect,hf", "m,parallel-tool-calls,detect,hf"]
    assert [i.id for i in tc.handler_items(cases, avail)] == [
        f"m,{c},chatml-function-calling,auto,llama-cpp-python"
        for c in ("tools-offered", "tool-round-trip", "parallel-tool-calls")]
    streams = tc.stream_items(cases, avail)
    assert len(streams) == len(tc.canned_outputs(case_tree)) >= 11 * 15
    assert streams[0].params["format"] and streams[0].backend == "llama-cpp-python"
    assert [i.id for i in tc.grammar_items(cases, avail)] == [
        "m,tools-offered,Qwen-x,hermes,llama-cpp-python", "m,tools-offered,Qwen-x,hermes,llama-server"]
    assert [i.id for i in tc.chat_items(cases, ["llama-server"])] == [
        "m,tools-offered,embedded,required,llama-server", "m,tools-offered,Qwen-x,required,llama-server"]
    assert tc.stream_items(cases, ["hf"]) == [] and tc.handler_items(cases, ["hf"]) == []


def test_schema_rejects_bad_toolcalls_options(case_tree):
    (case_tree / "bad.yaml").write_text(
        f"schema: 1\nid: bad\ndescription: demo\nmodel:\n  gguf:\n    file: b.gguf\n    sha256: {SHA}\n"
        "checks:\n  toolcalls:\n    lossy:\n      - {where: {}, loses: [everything], description: too vague here}\n"
        "    handlers:\n      - {handler: chatml-function-calling}\n")
    cases = discover(case_tree)
    text = str(cases.errors[0])
    assert "loses[0]" in text and "'everything' is not one of" in text
    assert "handlers[0]" in text


def test_goldens_drop_memory_addresses():
    ex = {"calls": [], "content": "", "error": "not a literal (malformed node: <ast.Call object at 0x7fa2d8cc0f40>)"}
    assert tc.stable(ex)["error"] == "not a literal (malformed node: <ast.Call object at 0x…>)"
    assert tc.stable({"calls": [], "content": "", "error": None})["error"] is None


# --- reasoning in round trips, and presence round trips must say why ----------------------------------
THINKING_TEMPLATE = (
    "{%- for m in messages -%}"
    "<|im_start|>{{ m.role }}\n"
    "{% if m.tool_calls -%}<think>\n{{ m.reasoning_content or '' }}\n</think>\n\n"
    "{%- for c in m.tool_calls -%}"
    "<tool_call>\n{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}\n</tool_call>"
    "{%- endfor -%}"
    "{%- else -%}{{ m.content }}{%- endif -%}"
    "<|im_end|>\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n<think>\n{%- endif -%}")


def test_round_trip_with_reasoning_reads_the_opened_block(tmp_path, hf_renderer):
    case = make_case(tmp_path, template=THINKING_TEMPLATE)
    assert tc.renders_reasoning(THINKING_TEMPLATE, "hermes") and not tc.renders_reasoning(HERMES_TEMPLATE, "hermes")
    out = tc.check_round_trip(rt(), item(case, tc.ROUND_TRIP, "tool-round-trip", "hf", format="hermes",
                                         reasoning=tc.WITH_REASONING), hf_renderer)
    assert out.golden["rendered_reasoning"] == tc.ROUND_TRIP_REASONING
    assert out.golden["reasoning_opened_by_prompt"] is True
    assert out.golden["extracted"]["reasoning"] == tc.ROUND_TRIP_REASONING
    assert out.golden["lost"] == []
    out.raise_if_failed()


def test_round_trip_reports_lost_reasoning(tmp_path, hf_renderer):
    dropping = THINKING_TEMPLATE.replace("{{ m.reasoning_content or '' }}", "")
    out = tc.check_round_trip(rt(), item(make_case(tmp_path, template=dropping), tc.ROUND_TRIP, "tool-round-trip",
                                         "hf", format="hermes", reasoning=tc.WITH_REASONING), hf_renderer)
    assert out.golden["lost"] == ["reasoning"]
    with pytest.raises(Mismatch, match="lost: reasoning"):
        out.raise_if_failed()


def test_presence_round_trip_needs_a_reason(tmp_path, hf_renderer):
    template = HERMES_TEMPLATE.replace("[:max_calls]", "")
    out = run_round_trip(make_case(tmp_path, template=template), "tool-round-trip", hf_renderer, tc.PRESENCE)
    assert any("does not say why it has no extractor" in p for p in out.problems)
    why = {"formats": [{"match": "demo-*", "format": None, "why": "no extractor for this demo format"}]}
    out = run_round_trip(make_case(tmp_path, template=template, raw_checks=why), "tool-round-trip", hf_renderer,
                         tc.PRESENCE)
    out.raise_if_failed()
