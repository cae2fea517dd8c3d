"""The tokenizer family's helpers: reference parsing as llama.cpp's test does (the generated
corpus: tests/test_corpus.py)."""

from __future__ import annotations

from harness import tokenization as tk

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
