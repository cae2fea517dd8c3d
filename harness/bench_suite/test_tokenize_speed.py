"""Tokenization throughput per case and tokenizer backend, on a fixed corpus.

The corpus is the tokenizer family's differential corpus (2,000 distinct generated strings
from the fixed seed, without special-token texts) plus llama.cpp's reference strings where the
case has them: the same strings, in the same order, for every backend. One round tokenizes
the whole corpus (no special-token parsing, no BOS); extra_info records strings/s and tokens/s
(means over rounds) and the corpus digest, so that two saved runs compare the same work.
"""

from __future__ import annotations

import time

from harness.families.tokenizer import checks as tk
from harness.backends.base import TOKENIZE
from harness.suite import open_backend

BACKENDS = ("llama-cpp-python", "hf", "llama-server")


def tokenize_items(cases, available):
    """Cases that declare `checks.throughput` (the full models), on every tokenizer backend."""
    from harness.bench import core as bench
    from harness.families.items import Item
    return [Item(c, "throughput.tokenize", backend=b) for c in cases.cases
            if c.kind == "model" and bench.throughput_options(c) for b in BACKENDS if b in available]


PARAMETERS = {"tokenize_item": tokenize_items}


def fixed_corpus(case) -> tuple[str, ...]:
    corpus = tk.differential_corpus((), 2000, 20241121)
    refs = tuple(r.text for r in tk.reference_of(case)) if tk.has_vocab(case) else ()
    return corpus + refs


def test_tokenize_throughput(tokenize_item, harness_runtime, benchmark, record_property, request):
    it = tokenize_item
    backend = open_backend(harness_runtime, it.backend, it.case, TOKENIZE, record_property)
    corpus = fixed_corpus(it.case)
    rounds = request.config.getoption("--rounds") or 3
    counts: list[tuple[float, int]] = []

    def once() -> None:
        t0, n = time.perf_counter(), 0
        for text in corpus:
            n += len(backend.tokenize(text, add_special=False, parse_special=False))
        counts.append((time.perf_counter() - t0, n))

    benchmark.group = f"{it.case.id} tokenize"
    benchmark.pedantic(once, rounds=rounds, iterations=1, warmup_rounds=1)
    measured = counts[-rounds:]
    seconds = sum(s for s, _ in measured) / len(measured)
    tokens = measured[-1][1]
    assert all(n == tokens for _, n in measured), "the same corpus gave different token counts between rounds"
    benchmark.extra_info.update(
        kind="tokenize", case=it.case.id, backend=it.backend, strings=len(corpus), tokens=tokens,
        corpus_sha256_16=tk.corpus_digest(corpus), strings_per_s=round(len(corpus) / seconds, 1),
        tokens_per_s=round(tokens / seconds, 1), location=it.case.location())
