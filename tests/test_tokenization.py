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
