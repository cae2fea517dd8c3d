"""The tokenizer family's helpers: reference parsing as llama.cpp's test does (the generated
corpus: tests/test_corpus.py)."""

from __future__ import annotations

from harness.families.tokenizer import checks as tk

QWEN2 = ("llama-cpp-python==0.3.36",
         "llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf.inp",
         "llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf.out")


def test_reference_parsing_matches_llama_cpp_test():
    refs = tk.load_reference(*QWEN2)
    assert len(refs) == 46
    assert refs[0].index == 0
    # strings are kept byte for byte, including lone whitespace and empty strings
    texts = [r.text for r in refs]
    assert "" in texts and " " in texts and "\t" in texts and "\n\n" in texts
    empty = texts.index("")
    assert refs[empty].ids == ()
    assert refs[texts.index(" ")].ids == (220,)


def test_first_divergence():
    assert tk.first_divergence([1, 2, 3], [1, 2, 4]) == 2
    assert tk.first_divergence([1, 2], [1, 2, 3]) == 2
    assert tk.first_divergence([], []) == 0


def _flaky_piece(bad):
    def piece(i):
        if i in bad:
            raise ValueError(f"bad {i}")
        return b"x"
    return piece


def test_failing_ids_batched_equals_one_by_one():
    bad = {3, 4096, 4097, 9000, 9001, 9002}
    piece = _flaky_piece(bad)
    calls = []

    def pieces(ids, render_special):
        calls.append(len(ids))
        for i in ids:
            piece(i)
        return [b"x"] * len(ids)
    one_by_one = tk.failing_ids(range(10000), piece, limit=10)
    batched = tk.failing_ids(range(10000), piece, pieces, limit=10)
    assert batched == one_by_one == [f"  id {i}: ValueError: bad {i}" for i in sorted(bad)]
    assert len(calls) < 200                                   # not one call per id
    assert tk.failing_ids(range(10000), piece, pieces, limit=2) == one_by_one[:2]
    assert tk.failing_ids(range(50), _flaky_piece(set()), pieces) == []


def test_token_pieces_are_each_ids_own_piece(smollm2_gguf):
    """The batched piece calls of the every-id check (llama-cpp-python, transformers) give what
    one call per id gives, on SmolLM2's real vocab (ids from each end and the middle)."""
    from harness.backends.base import BackendOptions, ModelFiles
    from harness.backends.hf import HFBackend
    from harness.backends.llama_cpp import LlamaCppBackend
    model = ModelFiles(key="smol", gguf=smollm2_gguf, vocab_only=True)
    ids = list(range(300)) + list(range(20000, 20300)) + list(range(49152 - 300, 49152))
    llama = LlamaCppBackend(model, BackendOptions())
    try:
        for special in (True, False):
            assert llama.token_pieces(ids, render_special=special) == [
                llama.token_piece(i, render_special=special) for i in ids]
    finally:
        llama.close()
    hf = HFBackend(model, BackendOptions())
    for special in (True, False):
        assert hf.token_pieces(ids, render_special=special) == [hf.detokenize([i], render_special=special) for i in ids]
