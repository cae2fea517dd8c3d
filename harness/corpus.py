"""The harness's own generated inputs: the differential tokenizer corpus, and the seeded
random source every generated input (corpus strings, stream splits) draws from.

Why not hypothesis: what hypothesis draws for a seed changes between its releases (and with
the constants it mines from whatever modules are loaded), so a corpus drawn with it made a
verdict depend on which hypothesis version a machine resolved. Everything here depends only on
the seed and on this file:

* `StableRandom` takes numbers only from `random.Random.random()`, the one method whose
  sequence Python guarantees for a given seed across versions (`choice`, `randint` and
  `randrange` are not guaranteed).
* Code points come from fixed numeric ranges, never from `unicodedata` categories, which change
  with the Unicode version of the Python build.

Changing anything that alters the strings is a change of the corpus: bump `GENERATOR` and update
the digests pinned in tests/test_corpus.py, and the `match:` counts in the case files, in the
same commit.

Hypothesis keeps the job it is good at: generating, fuzzing and shrinking inputs for the
harness's own parsers in tests/. It shrinks only examples it generated itself, so a corpus
string that disagrees is shrunk by tokenization.shrink_disagreement (deterministic).
"""

from __future__ import annotations

import hashlib
import random
from typing import Sequence

GENERATOR = "harness-corpus-1"


class StableRandom:
    """A seeded source whose draws are the same on every Python version and machine."""

    def __init__(self, seed: int | str):
        self._rng = random.Random(str(seed))     # str seeds hash with sha512: stable as well

    def below(self, n: int) -> int:
        """An integer in [0, n)."""
        return min(int(self._rng.random() * n), n - 1)

    def between(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi], both included."""
        return lo + self.below(hi - lo + 1)

    def choice(self, seq: Sequence):
        return seq[self.below(len(seq))]

    def chance(self, p: float) -> bool:
        return self._rng.random() < p


# --- what the strings are made of ----------------------------------------------------------
# Code point ranges (inclusive). Surrogates (U+D800-U+DFFF) never occur: they are not text.
_ANY = ((0x00, 0x1F), (0x20, 0x7E), (0x7F, 0x9F), (0xA0, 0x24F), (0x250, 0x2FF), (0x370, 0x52F),
        (0x530, 0x5FF), (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF),
        (0x2000, 0x206F), (0x20A0, 0x20CF), (0x2190, 0x23FF), (0x2500, 0x27BF), (0x3000, 0x30FF),
        (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xE000, 0xF8FF), (0xFB00, 0xFDFF),
        (0xFE00, 0xFE6F), (0xFF00, 0xFFEF), (0xFFF0, 0xFFFF), (0x10000, 0x1007F), (0x1D400, 0x1D7FF),
        (0x1F000, 0x1FAFF), (0x20000, 0x2A6DF), (0xE0000, 0xE007F), (0xF0000, 0x10FFFF))
_CJK = ((0x4E00, 0x9FFF),)
_EMOJI = ((0x1F300, 0x1FAFF),)
# Combining marks: diacritics, extended, for symbols, half marks, Devanagari vowel signs and virama
_MARKS = ((0x0300, 0x036F), (0x1AB0, 0x1ACE), (0x1DC0, 0x1DFF), (0x20D0, 0x20F0), (0xFE20, 0xFE2F),
          (0x093E, 0x094D))
_PRINTABLE = ((0x20, 0x7E),)
_WHITESPACE = " \t\n\r\u00a0\u3000\u2009\u200b\u2028"
_DIGITS = "0123456789"
SNIPPETS = ("def f(x):\n    return x**2\n", "<div class=\"a\">&amp;</div>", "int main() { return 0; }",
            "{\"a\": [1, 2]}", "SELECT * FROM t WHERE id=1;", "https://example.com/a?b=c#d", "$ ls -la ~/",
            "🦙", "👨‍👩‍👧", "é", "e\u0301", "你好", "한국어", "ｶﾀｶﾅ", "🇫🇷", "\u0301", "\u200d", "\ufeff", "ß", "İ",
            "❤️", "🏳️‍🌈", "I'm", "don't", "  ", "\n\n", "...", "___")


def _char(rng: StableRandom, ranges) -> str:
    lo, hi = ranges[rng.below(len(ranges))]
    return chr(rng.between(lo, hi))


def _chars(rng: StableRandom, ranges, lo: int, hi: int) -> str:
    return "".join(_char(rng, ranges) for _ in range(rng.between(lo, hi)))


def _piece(rng: StableRandom, special_texts: tuple[str, ...]) -> str:
    kinds = 9 if special_texts else 8
    kind = rng.below(kinds)
    if kind == 0:
        return _chars(rng, _ANY, 0, 12)
    if kind == 1:
        return "".join(rng.choice(_WHITESPACE) for _ in range(rng.between(1, 8)))
    if kind == 2:
        return rng.choice(SNIPPETS)
    if kind == 3:
        return "".join(rng.choice(_DIGITS) for _ in range(rng.between(1, 14)))
    if kind == 4:
        return _chars(rng, _CJK, 1, 6)
    if kind == 5:
        return _chars(rng, _EMOJI, 1, 4)
    if kind == 6:
        return _chars(rng, _MARKS, 1, 3)
    if kind == 7:
        return _chars(rng, _PRINTABLE, 0, 16)
    return rng.choice(special_texts)


def generate_string(rng: StableRandom, special_texts: tuple[str, ...] = ()) -> str:
    """Up to six pieces: any code points, whitespace runs, code and emoji snippets, digit runs,
    CJK, emoji, combining marks, printable ASCII and (when given) special-token texts, joined."""
    return "".join(_piece(rng, special_texts) for _ in range(rng.below(7)))


def differential_corpus(special_texts: tuple[str, ...], n: int, seed: int) -> tuple[str, ...]:
    """`n` distinct strings, the same for the same (special texts, n, seed) everywhere."""
    rng = StableRandom(f"{GENERATOR}:{seed}")
    seen: dict[str, None] = {}
    tries = 0
    while len(seen) < n and tries < 50 * n:
        seen.setdefault(generate_string(rng, special_texts), None)
        tries += 1
    return tuple(seen)


def corpus_digest(corpus: Sequence[str]) -> str:
    """16 hex digits of sha256 over the strings joined by NUL: what every result records."""
    return hashlib.sha256("\0".join(corpus).encode("utf-8", "surrogatepass")).hexdigest()[:16]
