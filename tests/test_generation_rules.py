"""The generation family's rules, without a model: stop cutting, leak detection, stream
comparison, and how findings are reported (file:line, both outputs)."""

from __future__ import annotations

import pytest

from harness.families.generation import checks as gen
from harness.backends.base import Generation
from harness.checks import Mismatch
from harness.models.markers import END_OF_TURN
from harness.outcome import CaseProblem

# id -> (text with specials rendered, text without); 1 and 2 are control tokens, 2 ends generation
PIECES = {10: "The", 11: " capital", 12: " is", 13: " Paris", 14: ".", 15: "\n", 16: "é", 17: "ab",
          1: "<|im_start|>", 2: "<|im_end|>"}
CONTROL = {1, 2}


def fake_vocab() -> gen.Vocab:
    def piece(t: int, special: bool) -> bytes:
        if t in CONTROL and not special:
            return b""
        return PIECES[t].encode("utf-8")
    return gen.Vocab(n_vocab=50, eog_ids=[2], control_ids=sorted(CONTROL),
                     special={"bos": None, "eos": 2, "eot": None, "pad": None},
                     _piece=piece, _text=lambda t: PIECES[t])


@pytest.fixture
def vocab() -> gen.Vocab:
    return fake_vocab()


class FakeCase:
    id = "fake-model"
    file = "cases/fake.yaml"
    line = 3
    template_path = None

    def check_options(self, family):
        return {}


def item(**kw) -> gen.GenItem:
    defaults = dict(case=FakeCase(), check="generation.stop", backend="llama-server", kind="stop",
                    entry_id="x", mode="nostream", entry={"id": "x"}, line=42)
    defaults.update(kw)
    return gen.GenItem(**defaults)


# --- cut_at_stops ---------------------------------------------------------------------
def test_no_stop_returns_the_whole_plain_text(vocab):
    text, finish, hit = gen.cut_at_stops([10, 11, 12, 13, 14, 2], vocab, ["zebra"], "stop")
    assert (text, finish, hit) == ("The capital is Paris.", "stop", None)


def test_stop_inside_a_token_keeps_the_bytes_before_it(vocab):
    text, finish, hit = gen.cut_at_stops([10, 11, 12, 13, 14], vocab, ["Par"], "length")
    assert (text, finish) == ("The capital is ", "stop")
    assert hit["first_token"] == hit["last_token"] == 3


def test_stop_spanning_two_tokens(vocab):
    text, finish, hit = gen.cut_at_stops([10, 11, 12, 13, 14], vocab, ["is Par"], "length")
    assert (text, finish) == ("The capital ", "stop")
    assert (hit["first_token"], hit["last_token"]) == (2, 3)


def test_stop_that_is_a_special_tokens_text_fires_on_that_token(vocab):
    # the model emits <|im_start|> (control, renders "" without specials): the stop must still fire
    text, finish, hit = gen.cut_at_stops([10, 1, 11, 12], vocab, ["<|im_start|>"], "length")
    assert (text, finish) == ("The", "stop")
    assert hit["first_token"] == 1


def test_earliest_of_several_stops_wins(vocab):
    text, _, hit = gen.cut_at_stops([10, 11, 12, 13, 14, 2], vocab, [".", "<|im_end|>", " is"], "stop")
    assert text == "The capital" and hit["stop"] == " is"


def test_several_end_of_turn_stops_on_an_eog_token(vocab):
    text, finish, _ = gen.cut_at_stops([10, 14, 2], vocab, ["<|im_end|>", "<|endoftext|>"], "stop")
    assert (text, finish) == ("The.", "stop")


def test_rendered_specials_are_kept_when_asked(vocab):
    text, _, _ = gen.cut_at_stops([1, 10, 2], vocab, [], "stop", render_special=True)
    assert text == "<|im_start|>The<|im_end|>"


def test_multibyte_text_is_not_split(vocab):
    text, _, _ = gen.cut_at_stops([16, 17, 16], vocab, ["b"], "length")
    assert text == "éa"


# --- leaks and whitespace ----------------------------------------------------------------
def test_find_leak_reports_the_first_marker():
    assert gen.find_leak("yes<|im_end|>", END_OF_TURN) == ("<|im_end|>", 3)
    assert gen.find_leak("a</s>b<|eot_id|>", END_OF_TURN) == ("</s>", 1)
    assert gen.find_leak("plain text", END_OF_TURN) is None


def test_eot_texts_include_the_models_own_and_the_extra(vocab):
    texts = vocab.eot_texts(["<|custom|>"])
    assert texts[0] == "<|im_end|>" and "<|custom|>" in texts and "</s>" in texts
    assert len(texts) == len(set(texts))


def test_trailing_whitespace():
    assert gen.trailing_whitespace("ok \n\t ") == 4
    assert gen.trailing_whitespace("ok") == 0


def test_leak_message_shows_location_and_both_outputs():
    problems = gen.leak_problems(item(), Generation(text="Paris.<|im_end|>", finish_reason="stop"),
                                 list(END_OF_TURN))
    assert len(problems) == 1
    msg = problems[0]
    assert "cases/fake.yaml:42" in msg and "llama-server" in msg and "'<|im_end|>'" in msg
    assert "+Paris.<|im_end|>" in msg.replace("\\n", "") or "Paris.<|im_end|>" in msg


# --- streams --------------------------------------------------------------------------------
def test_equal_stream_has_no_problems():
    plain = Generation(text="héllo", finish_reason="stop")
    streamed = Generation(text="héllo", finish_reason="stop", chunks=["h", "éllo"])
    assert gen.stream_problems(item(mode="stream"), streamed, plain) == []


def test_dropped_character_in_stream_shows_both_outputs():
    plain = Generation(text="The capital is Paris.", finish_reason="stop")
    streamed = Generation(text="The capital is Pars.", finish_reason="stop", chunks=["The capital is Par", "s."])
    problems = gen.stream_problems(item(mode="stream"), streamed, plain)
    assert len(problems) == 1
    msg = problems[0]
    assert "cases/fake.yaml:42" in msg and "non-streamed" in msg and "streamed" in msg
    assert "Paris" in msg and "Pars" in msg


def test_replacement_character_and_finish_reason_in_stream():
    plain = Generation(text="é", finish_reason="stop")
    streamed = Generation(text="\ufffd\ufffd", finish_reason="length", chunks=["\ufffd", "\ufffd"])
    problems = "\n".join(gen.stream_problems(item(mode="stream"), streamed, plain))
    assert "U+FFFD" in problems and "finish_reason 'length' when streamed" in problems


def test_chunks_that_do_not_join_to_the_text_and_a_missing_finish_marker():
    plain = Generation(text="ab", finish_reason="stop")
    streamed = Generation(text="ab", finish_reason="stop", chunks=["a"], info={"incomplete_stream": True})
    problems = "\n".join(gen.stream_problems(item(mode="stream"), streamed, plain))
    assert "do not concatenate" in problems and "without a finish marker" in problems


def test_token_ids_outside_the_vocab_are_reported():
    g = Generation(text="x", finish_reason="stop", tokens=[1, 49, 50, -1])
    (msg,) = gen.token_range_problems(item(), g, 50)
    assert "[50, -1]" in msg and "cases/fake.yaml:42" in msg


# --- outcome, ids, params ------------------------------------------------------------------------
def test_outcome_raises_mismatch_with_every_problem():
    out = gen.Outcome(golden={}, problems=["first", "second"])
    with pytest.raises(Mismatch, match="first\n\nsecond"):
        out.raise_if_failed()


def test_outcome_case_errors_fail_without_mismatch():
    out = gen.Outcome(golden={}, problems=["p"], case_errors=["the case is wrong"])
    with pytest.raises(CaseProblem, match="the case is wrong"):
        out.raise_if_failed()


def test_item_id_and_params():
    it = item(check="generation.grammar", kind="grammar", entry_id="yes-no", extra=(("endpoint", "chat"),),
              mode="stream")
    assert it.id == "fake-model,grammar=yes-no,chat,llama-server,stream"
    assert it.params["grammar"] == "yes-no" and it.params["endpoint"] == "chat"
    assert it.params["stream"] == "stream" and it.params["backend"] == "llama-server"
    assert it.location() == "cases/fake.yaml:42"
    assert ":" not in it.id              # syrupy drops ':' from golden file names


def test_item_options_fall_back_to_the_family_then_the_default():
    it = item(entry={"id": "x", "max_tokens": 7})
    assert it.max_tokens == 7
    assert item(entry={"id": "x"}).max_tokens == 32
