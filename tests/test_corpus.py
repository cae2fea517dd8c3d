"""The harness's own generated inputs (harness/corpus.py): the same strings on every machine,
whatever hypothesis (or any other library) is installed.

The digests below are the corpus the case files' `match:` counts were derived from. A change to
the generator changes them: update them, bump corpus.GENERATOR, and re-derive the counts in the
case files, in the same commit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness import corpus
from harness.families.tokenizer import checks as tk

SEED = 20241121
BASE_DIGEST = "ccc0b521528f3e6a"             # no special texts, 2000 strings
WITH_SPECIALS_DIGEST = "d529ab637d133ecf"    # ("<|im_end|>", "<s>"), 2000 strings


def test_corpus_digest_is_pinned():
    assert corpus.GENERATOR == "harness-corpus-1"
    assert corpus.corpus_digest(corpus.differential_corpus((), 2000, SEED)) == BASE_DIGEST
    assert corpus.corpus_digest(corpus.differential_corpus(("<|im_end|>", "<s>"), 2000, SEED)) == WITH_SPECIALS_DIGEST


def test_corpus_needs_no_hypothesis():
    """Computed in a fresh interpreter in which hypothesis cannot even be imported."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'hypothesis': raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from harness import corpus\n"
        f"c = corpus.differential_corpus(('<|im_end|>', '<s>'), 2000, {SEED})\n"
        "import json; print(json.dumps([corpus.corpus_digest(c), 'hypothesis' in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [WITH_SPECIALS_DIGEST, False]


def test_corpus_strings_are_distinct_valid_and_varied():
    specials = ("<|im_end|>", "<s>")
    c = corpus.differential_corpus(specials, 2000, SEED)
    assert len(c) == len(set(c)) == 2000
    for s in c:
        s.encode("utf-8")                                # no lone surrogates
    joined = "".join(c)
    assert any(s in joined for s in specials)
    assert any(0x4E00 <= ord(ch) <= 0x9FFF for ch in joined)       # CJK
    assert any(0x1F300 <= ord(ch) <= 0x1FAFF for ch in joined)     # emoji
    assert any(0x0300 <= ord(ch) <= 0x036F for ch in joined)       # combining marks
    assert any(ord(ch) > 0xFFFF for ch in joined)                  # astral planes
    assert "\t" in joined and "\u3000" in joined and any(ch.isdigit() for ch in joined)


def test_corpus_depends_on_seed_and_specials():
    a = corpus.differential_corpus((), 50, 1)
    assert a == corpus.differential_corpus((), 50, 1)
    assert a != corpus.differential_corpus((), 50, 2)
    assert a != corpus.differential_corpus(("<s>",), 50, 1)


def test_stable_random_sequence_is_pinned():
    r = corpus.StableRandom(7)
    assert [r.below(1000) for _ in range(5)] == [712, 877, 950, 298, 806]
    r = corpus.StableRandom(3)
    draws = [r.between(2, 4) for _ in range(200)]
    assert set(draws) == {2, 3, 4}
    assert corpus.StableRandom(1).choice("abc") in "abc"


def test_shrink_keeps_the_disagreement_and_is_minimal():
    def disagree(t):
        return "</s>" in t
    assert tk.shrink_disagreement("hello </s> world, and more", disagree) == "</s>"
    # single characters are tried too
    assert tk.shrink_disagreement("ab\u0301cd", lambda t: "\u0301" in t) == "\u0301"
    # a string that cannot shrink comes back as it is
    assert tk.shrink_disagreement("x", lambda t: t == "x") == "x"


def test_shrink_is_bounded():
    calls = []

    def disagree(t):
        calls.append(t)
        return True
    tk.shrink_disagreement("y" * 5000, disagree)
    assert len(calls) <= tk.MAX_SHRINK_CALLS


def test_special_text_probes_cover_well_known_and_vocab_texts():
    probes = tk.special_text_probes(("<|custom|>", "", " "))
    assert "</s>" in probes and "a</s>b" in probes and "Hello </s> world" in probes and "\n</s>\n" in probes
    assert "<|custom|>" in probes and " <|custom|>" in probes
    assert "" not in probes and " " not in probes
    assert probes == tuple(sorted(set(probes)))
    assert tk.probe_texts_in("x</s>y<|custom|>", ("<|custom|>",)) == ["</s>", "<|custom|>"]


def test_special_text_probes_cap_large_vocabs():
    many = tuple(f"<unused{i}>" for i in range(1000))
    probes = tk.special_text_probes(many)
    assert "<unused0>" in probes and "<unused999>" in probes and "<unused500>" not in probes
    per_text = len(tk.SPECIAL_TEXT_CONTEXTS)
    assert len(probes) <= (len(tk.WELL_KNOWN_SPECIAL_TEXTS) + tk.MAX_VOCAB_SPECIAL_TEXTS) * per_text


@pytest.mark.parametrize("n", [0, 1, 10])
def test_small_corpora(n):
    assert len(corpus.differential_corpus(("<s>",), n, SEED)) == n
