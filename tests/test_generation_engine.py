"""llama.cpp's grammar engine as the harness drives it (no model), cross-checked against
llama.cpp's grammar *sampler* on a real vocab, plus the chat-prompt capture."""

from __future__ import annotations

import pytest

from harness.families.generation import checks as gen

YES_NO = 'root ::= ("yes" | "no") ("." | "!")?'


@pytest.fixture(scope="module")
def engine():
    try:
        return gen.engine()
    except gen.EngineUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("gbnf,text,ok", [
    (YES_NO, "yes", True), (YES_NO, "no!", True), (YES_NO, "", False), (YES_NO, "yes.!", False),
    (YES_NO, "Yes", False), (YES_NO, "ye", False),
    ('root ::= [a-z]{2,3}', "ab", True), ('root ::= [a-z]{2,3}', "abcd", False),
    ('root ::= [a-z]{2,3}', "a", False),
    # code points, not bytes: a multi-byte character is one element of a class
    ('root ::= [^\\n]', "é", True), ('root ::= [^\\n]', "你", True), ('root ::= [^\\n]', "\n", False),
    ('root ::= [A-Z] [^\\n]{0,3} [.!?]', "X 你.", True), ('root ::= [A-Z]', "Ü", False),
    # alternatives, nested rules, optional tail
    ('root ::= item item?\nitem ::= "- " [a-z]+ "\\n"', "- a\n- bc\n", True),
    ('root ::= item item?\nitem ::= "- " [a-z]+ "\\n"', "- a\n- bc", False),
    ('root ::= "a"*', "", True),
])
def test_matches(engine, gbnf, text, ok):
    assert engine.matches(gbnf, text) is ok


def test_verdicts_and_viable_prefixes(engine):
    assert engine.verdicts(YES_NO, ["yes", "nope", "no."]) == [True, False, True]
    assert engine.viable(YES_NO, ["", "y", "ye", "yes", "yes.", "yes..", "x"]) == [
        True, True, True, True, True, False, False]


def test_parse_errors_carry_llama_cpps_message(engine):
    with pytest.raises(gen.GrammarParseError, match="Undefined rule identifier 'nothing'"):
        engine.matches("root ::= nothing", "x")
    with pytest.raises(gen.GrammarParseError):
        engine.matches('root ::= "unterminated', "x")


def test_many_grammars_do_not_leak_or_crash(engine):
    for i in range(300):
        assert engine.matches(f'root ::= "w{i}"', f"w{i}")


def test_llama_cpp_python_schema_grammar_goes_through_the_engine(engine):
    gbnf = gen.llama_cpp_python_gbnf({"type": "object", "properties": {"a": {"type": "string"}},
                                      "required": ["a"]})
    assert engine.matches(gbnf, '{"a": "x"}')
    assert not engine.matches(gbnf, '{"a": 1}')


# --- the same engine with a real vocab: the token mask llama.cpp samples with ------------------------
@pytest.fixture(scope="module")
def smol_vocab_only(smollm2_gguf):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(smollm2_gguf), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def test_grammar_mask_agrees_with_the_engine(engine, smol_vocab_only):
    llm = smol_vocab_only
    allowed = gen.grammar_mask(llm, YES_NO)
    pieces = {t: llm.detokenize([t], special=True).decode("utf-8", "replace") for t in allowed}
    assert allowed and all(0 <= t < llm.n_vocab() for t in allowed)
    assert all(engine.viable(YES_NO, [p])[0] for p in pieces.values())
    assert any(p == "yes" for p in pieces.values()) and any(p.startswith("n") for p in pieces.values())
    # end-of-generation ids are allowed first only when the empty output is a sentence
    eog = {0, 2, 4}
    assert not set(allowed) & eog
    assert set(gen.grammar_mask(llm, 'root ::= "a"*')) & eog == eog


def test_grammar_mask_refuses_an_unparsable_grammar(smol_vocab_only):
    with pytest.raises(gen.GrammarParseError):
        gen.grammar_mask(smol_vocab_only, "root ::= nothing")


# --- the prompt a chat endpoint sends, captured without generating ---------------------------------------
def test_chat_prompt_is_captured_from_llama_cpp_pythons_own_handler(smollm2_gguf):
    from harness.backends.base import BackendOptions, ModelFiles
    from harness.backends.llama_cpp import LlamaCppBackend
    backend = LlamaCppBackend(ModelFiles(key="smol", gguf=smollm2_gguf), BackendOptions(n_ctx=512))
    try:
        ids = gen.chat_prompt(backend, ({"role": "user", "content": "hi"},))
        assert isinstance(ids, tuple) and all(isinstance(t, int) for t in ids)
        text = backend.detokenize(list(ids), render_special=True)
        assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
        # the method is restored: a real completion still works
        assert "create_completion" not in vars(backend.llm)
        assert backend.llm.create_completion("Hi", max_tokens=1, temperature=0.0)["choices"]
    finally:
        backend.close()


def test_unparsable_case_grammars_are_caught_before_any_backend_sees_them(smollm2_gguf):
    """llama-cpp-python segfaults on an unparsable grammar; the family checks with llama.cpp's
    vocab-aware parser first (token references like <|im_start|> need the vocab)."""
    from harness.backends.base import BackendOptions, ModelFiles
    from harness.backends.llama_cpp import LlamaCppBackend
    backend = LlamaCppBackend(ModelFiles(key="smol", gguf=smollm2_gguf, vocab_only=True), BackendOptions())

    class Runtime:
        def backend(self, name, case):
            assert name == "llama-cpp-python"
            return backend
    try:
        rt = Runtime()
        assert "Undefined rule identifier 'nothing'" in gen.grammar_error(rt, None, "root ::= nothing")
        assert gen.grammar_error(rt, None, 'root ::= "a" <[1]> <|im_end|>') is None
        assert gen.grammar_error(rt, None, None) is None
    finally:
        backend.close()
