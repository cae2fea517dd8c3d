"""toolcalls.llama_parse's check logic (harness/families/toolcalls/llama_parse.py) with a fake
llama.cpp-chat backend: the request setting chosen per output, the comparison with the reference
extractor, the stream check and the chat-params findings. (The real probe: tests/test_chat_probe.py.)"""

from types import SimpleNamespace

from harness.backends.base import BackendError
from harness.families.toolcalls import llama_parse as lp
from harness.outcome import Outcome

TOOLS = [{"type": "function", "function": {"name": "get_weather",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def _msg(content="", reasoning="", calls=()):
    return {"content": content, "reasoning_content": reasoning,
            "tool_calls": [{"name": n, "arguments": a, "id": ""} for n, a in calls]}


def _params(gp):
    return {"format": "peg-native", "has_parser": True, "generation_prompt": gp, "supports_thinking": True,
            "thinking_start_tag": "<think>", "thinking_end_tags": ["</think>"], "grammar_lazy": True,
            "preserved_tokens": [], "additional_stops": []}


class FakeChat:
    """Stands in for LlamaChatBackend: render_chat gives fixed params per enable_thinking (or
    refuses a tool by name); parse_batch answers every text with `answer(text, splits)`."""

    def __init__(self, params=None, refuse=None, answer=None):
        self.params = params or {True: _params("<|im_start|>assistant\n<think>\n"),
                                 False: _params("<|im_start|>assistant\n")}
        self.refuse, self.answer, self.batches = refuse, answer, []

    def render_chat(self, req, enable_thinking=True, **kw):
        if self.refuse and any(t["function"]["name"] == self.refuse for t in req.tools or []):
            raise BackendError("Unable to generate parser\n------------\nsource excerpt\nError: nope")
        return {"prompt": "", "params": self.params[enable_thinking]}

    def parse_batch(self, req, texts, **kw):
        self.batches.append(kw)
        return {"params": {}, "results": [self.answer(text, splits) for text, splits in texts]}


def _canned(output, reasoning="separate", opened=False, calls=()):
    return {"output": output, "tools": TOOLS, "file": "cases/toolcall-outputs/hermes.yaml",
            "expected_calls": list(calls), "message": {"reasoning": reasoning, "opened": opened}}


def _item(oid):
    case = SimpleNamespace(location=lambda: "cases/x.yaml:1", id="x")
    return SimpleNamespace(case=case, params={"output": oid, "format": "hermes"})


def _source():
    return lp.TemplateSource("{{ tools }}", "", "", "template t")


def _same_everywhere(message):
    def answer(text, splits):
        return {"message": message, "streams": [{"splits": list(range(len(splits))), "streamed": message}]}
    return answer


def test_json_equal_keeps_booleans_apart_from_numbers():
    assert lp.json_equal({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert not lp.json_equal(True, 1) and not lp.json_equal({"a": 0}, {"a": False})
    assert not lp.json_equal({"a": 1}, {"a": 1, "b": 2})


def test_setting_follows_the_outputs_opened_flag():
    parses = lp.template_parses(FakeChat(), "hermes", _source(), TOOLS)
    plain = lp.setting_for(parses, _canned(CALL))
    assert (plain.reasoning_format, plain.enable_thinking, plain.fits) == ("deepseek", False, True)
    opened = lp.setting_for(parses, _canned("x</think>", reasoning="deepseek-legacy", opened=True))
    assert (opened.reasoning_format, opened.enable_thinking, opened.opened) == ("deepseek-legacy", True, True)
    never = FakeChat(params={True: _params("A:"), False: _params("A:")})
    nofit = lp.setting_for(lp.template_parses(never, "hermes", _source(), TOOLS), _canned("x", opened=True))
    assert nofit.enable_thinking and not nofit.fits and not nofit.opened


def test_agreeing_parse_passes_and_the_golden_is_llama_cpps():
    msg = _msg(calls=[("get_weather", '{"city":"Paris"}')])
    backend = FakeChat(answer=_same_everywhere(msg))
    canned = {"one-call": _canned(CALL)}
    parses = lp.template_parses(backend, "hermes", _source(), TOOLS)
    out = lp.check_llama_parse(_item("one-call"), parses, canned, backend)
    assert out.problems == []
    assert out.golden["message"]["tool_calls"] == [{"name": "get_weather", "arguments": '{"city":"Paris"}'}]
    assert out.golden["enable_thinking"] is False and out.golden["split_sets"] == len(CALL) + 8
    assert backend.batches == [{"enable_thinking": False, "reasoning_format": "deepseek"}]


def test_disagreement_and_refusal_are_reported():
    canned = {"one-call": _canned(CALL), "other": _canned("Paris.\n" + CALL)}

    def answer(text, splits):
        if text.startswith("Paris"):
            return {"error": "does not match", "streams": [{"splits": [0], "streamed": _msg(), "final_error": "x"}]}
        m = _msg(calls=[("get_weather", '{"city":"Rome"}')])
        return {"message": m, "streams": [{"splits": [0], "streamed": m}]}
    backend = FakeChat(answer=answer)
    parses = lp.template_parses(backend, "hermes", _source(), TOOLS)
    diff = lp.check_llama_parse(_item("one-call"), parses, canned, backend)
    assert diff.problems[0] == "llama.cpp and the reference extractor differ in calls:"
    refused = lp.check_llama_parse(_item("other"), parses, canned, backend)
    assert refused.problems[0] == "llama.cpp refuses the finished output: does not match"
    assert len(refused.problems) == 2            # a stream that ends refused too is consistent


def test_a_stream_that_differs_names_its_splits():
    final = _msg(calls=[("get_weather", '{"city":"Paris"}')])
    res = {"message": final, "streams": [
        {"splits": [0, 2], "streamed": final},
        {"splits": [1], "streamed": _msg(calls=[("get_weather", '{"city":"Par')]), "partial_error": "Invalid diff"}]}
    out = Outcome(golden={})
    lp.stream_problems(out, out.golden, res, ["whole", "two deltas split at offset 1", "random"])
    assert out.problems[0] == "streamed differs from llama.cpp's own finished parse in 1 of 3 split sets:"
    assert out.golden["streams_differing"][0]["first"] == ["two deltas split at offset 1"]
    assert out.golden["streams_differing"][0]["partial_error"] == "Invalid diff"


def test_a_refused_tool_is_the_chat_params_finding_and_the_rest_is_parsed():
    backend = FakeChat(refuse="set_options")
    tools = TOOLS + [{"type": "function", "function": {"name": "set_options", "parameters": {"type": "object"}}}]
    parses = lp.template_parses(backend, "hermes", _source(), tools)
    assert [t["function"]["name"] for t in parses.tools] == ["get_weather"]
    out = lp.check_chat_params(_item(lp.PARAMS_OUTPUT), parses)
    assert out.golden["tools_refused"] == {"set_options": "Unable to generate parser Error: nope"}
    assert out.problems[0].startswith("llama.cpp refuses to render the template with tool 'set_options'")


def test_offered_tools_add_a_schemaless_tool_for_each_expected_unoffered_name():
    canned = {"a": _canned(CALL, calls=[{"name": "search", "arguments": {}}]),
              "b": _canned(CALL, calls=[{"name": "get_weather", "arguments": {}}])}
    names = [t["function"]["name"] for t in lp.offered_tools(canned)]
    assert names == ["get_weather", "search"]
    assert lp.offered_tools(canned)[1]["function"]["parameters"] == {"type": "object"}
