"""templates.chat_params's check logic (harness/families/templates/chat_params.py) with a fake
llama.cpp-chat backend: the golden, a template's own refusal, llama.cpp's refusal or crash, and the
generation-prompt finding. (The real probe: tests/test_chat_probe.py; the real run: the suite.)"""

from types import SimpleNamespace

import pytest

from harness.backends.base import RenderRequest
from harness.backends.llama_chat import ProbeCrashed, ProbeError
from harness.families.templates import chat_params as cp

PARAMS = {"format": "peg-native", "grammar": "root ::= call\ncall ::= \"x\"", "grammar_lazy": True,
          "grammar_triggers": [{"type": "word", "value": "<tool_call>", "token": -1}],
          "preserved_tokens": ["<tool_call>"], "additional_stops": [], "generation_prompt": "<|assistant|>",
          "supports_thinking": False, "thinking_start_tag": "", "thinking_end_tags": [], "has_parser": True}


class FakeChat:
    def __init__(self, prompt="<|user|>hi<|assistant|>", params=PARAMS, error=None):
        self.prompt, self.params, self.error = prompt, params, error

    def render_chat(self, req, **kw):
        if self.error is not None:
            raise self.error
        return {"prompt": self.prompt, "params": self.params}


def _item():
    case = SimpleNamespace(location=lambda: "cases/x.yaml:1")
    return SimpleNamespace(case=case, context=SimpleNamespace(id="tools-offered"))


class Runtime:
    def render_request(self, case, context, gen):
        assert gen is True                               # params are those of a generation
        return RenderRequest(messages=[{"role": "user", "content": "hi"}], template="t")


def test_the_golden_is_every_param_with_the_grammar_one_rule_per_line():
    out = cp.check_chat_params(Runtime(), _item(), FakeChat())
    assert list(out.golden) == list(cp.PARAM_KEYS)
    assert out.golden["grammar"] == ["root ::= call", 'call ::= "x"']
    assert out.golden["grammar_triggers"] == PARAMS["grammar_triggers"] and not out.problems


def test_a_prompt_not_ending_with_the_generation_prompt_is_a_finding():
    out = cp.check_chat_params(Runtime(), _item(), FakeChat(prompt="<|user|>hi<|assistant|>\n"))
    assert len(out.problems) == 1 and "'<|assistant|>'" in out.problems[0]
    with pytest.raises(Exception, match="does not end with the generation prompt"):
        out.raise_if_failed()


def test_the_templates_own_refusal_is_its_golden_not_a_finding():
    out = cp.check_chat_params(Runtime(), _item(), FakeChat(error=ProbeError("x\nJinja Exception: no tools")))
    assert out.golden == {"rejected_by_template": "no tools"} and not out.problems


@pytest.mark.parametrize("error, key", [(ProbeError("Unknown operator"), "error"),
                                        (ProbeCrashed("killed by SIGABRT"), "crashed")])
def test_llama_cpp_refusing_or_crashing_is_a_finding(error, key):
    out = cp.check_chat_params(Runtime(), _item(), FakeChat(error=error))
    assert key in out.golden and len(out.problems) == 1


def test_a_models_bos_and_eos_text_is_dropped_as_llama_server_does():
    from harness.backends.llama_chat import model_prompt_rule
    assert model_prompt_rule("<s>hi</s>", "<s>", "</s>", add_bos=True, add_eos=False) == "hi</s>"
    assert model_prompt_rule("<s>hi</s>", "<s>", "</s>", add_bos=False, add_eos=True) == "<s>hi"
    assert model_prompt_rule("hi", "", "", add_bos=True, add_eos=True) == "hi"
