"""Tokenizer-family helpers: llama.cpp's reference corpora, the generated differential
corpus, and the fixed probe strings for round trips and streaming detokenization."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .cases import Case, CaseSet
from .expand import TOKENIZERS, Item

SEPARATOR = "\n__ggml_vocab_test__\n"

# End-of-turn / end-of-text markers seen in real vocabs. If a vocab has one of these as a
# token, llama.cpp must treat it as end-of-generation, or generation runs past the turn.
EOT_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<end_of_turn>", "<|end|>",
               "</s>", "<|return|>", "<|END_OF_TURN_TOKEN|>", "<｜end▁of▁sentence｜>", "<|eom_id|>",
               "<turn|>")

# Multi-byte, combining, whitespace and code probes: what breaks detokenizers in the field.
PROBES = (
    "Hello world",
    " leading space and trailing space ",
    "🦙 你好世界",
    "naïve café — déjà vu",
    "e\u0301 (combining acute) and Å vs \u212b",
    "👨‍👩‍👧‍👦 family, 🇫🇷 flag, 🏳️‍🌈 rainbow",
    "한국어 텍스트와 日本語のテキスト",
    "ｶﾀｶﾅ half-width, ＡＢＣ full-width",
    "עברית مرحبا",
    "tabs\tand\nnewlines\r\nand  double  spaces",
    "    indented code:\n\tdef f(x):\n\t\treturn x ** 2\n",
    "{\"key\": [1, 2.5, null], \"s\": \"a\\\"b\"}",
    "1234567890 3.14159 -42 1e10",
    "x" * 64,
    "\u200b zero width and \u00a0 nbsp",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝟙𝟚𝟛",
)


@dataclass(frozen=True)
class ReferenceString:
    index: int
    text: str
    ids: tuple[int, ...]


@lru_cache(maxsize=None)
def load_reference(pypi_sdist: str, inp: str, out: str) -> tuple[ReferenceString, ...]:
    """Parse .inp/.out exactly as llama.cpp's tests/test-tokenizer-0.cpp does."""
    from .sources import unpacked_sdist
    root = unpacked_sdist(pypi_sdist)
    raw = (root / inp).read_bytes().decode("utf-8")
    outputs = (root / out).read_text(encoding="utf-8").split("\n")
    if outputs and outputs[-1] == "":
        outputs.pop()     # getline() does not yield the empty string after a final newline
    inputs, pos = [], 0
    while pos < len(raw):
        nxt = raw.find(SEPARATOR, pos)
        if nxt < 0:
            inputs.append(raw[pos:])
            break
        inputs.append(raw[pos:nxt])
        pos = nxt + len(SEPARATOR)
    if len(inputs) != len(outputs):
        raise ValueError(f"{inp}: {len(inputs)} inputs but {out}: {len(outputs)} outputs")
    return tuple(ReferenceString(i, s, tuple(int(t) for t in o.split())) for i, (s, o) in enumerate(zip(inputs, outputs)))


def reference_of(case: Case) -> tuple[ReferenceString, ...]:
    ref = case.check_options("tokenizer").get("reference")
    return load_reference(ref["pypi_sdist"], ref["inp"], ref["out"]) if ref else ()


def has_vocab(case: Case) -> bool:
    return case.kind == "model"


# --- expanders -------------------------------------------------------------------------
def reference_items(cases: CaseSet, available) -> list[Item]:
    out = []
    for c in cases.cases:
        if not has_vocab(c):
            continue
        for ref in reference_of(c):
            out += [Item(c, "tokenizer.reference", backend=b, extra=(("string", f"ref-{ref.index:02d}"),))
                    for b in TOKENIZERS if b in available]
    return out


def differential_items(cases: CaseSet, available) -> list[Item]:
    return [Item(c, "tokenizer.differential", backend=b, extra=(("mode", mode),))
            for c in cases.cases if has_vocab(c)
            for mode in ("plain", "special") for b in TOKENIZERS if b in available and b != "hf"]


def per_backend_items(check: str):
    def expand(cases: CaseSet, available) -> list[Item]:
        return [Item(c, check, backend=b) for c in cases.cases if has_vocab(c) for b in TOKENIZERS if b in available]
    return expand


def per_case_items(check: str):
    def expand(cases: CaseSet, available) -> list[Item]:
        return [Item(c, check) for c in cases.cases if has_vocab(c)]
    return expand


# --- the generated corpus ----------------------------------------------------------------
_SNIPPETS = ("def f(x):\n    return x**2\n", "<div class=\"a\">&amp;</div>", "int main() { return 0; }",
             "{\"a\": [1, 2]}", "SELECT * FROM t WHERE id=1;", "https://example.com/a?b=c#d", "$ ls -la ~/",
             "🦙", "👨‍👩‍👧", "é", "e\u0301", "你好", "한국어", "ｶﾀｶﾅ", "🇫🇷", "\u0301", "\u200d", "\ufeff", "ß", "İ")


def corpus_strategy(special_texts: tuple[str, ...]):
    """Strings that stress tokenizers: every Unicode category, whitespace runs, emoji and
    combining marks, CJK, digits, code, and special-token text next to ordinary text."""
    from hypothesis import strategies as st
    any_char = st.characters(codec="utf-8", exclude_categories=("Cs",))
    pieces = [
        st.text(any_char, max_size=12),
        st.text(st.sampled_from(" \t\n\r\u00a0\u3000\u2009\u200b\u2028"), min_size=1, max_size=8),
        st.sampled_from(_SNIPPETS),
        st.from_regex(r"[0-9]{1,14}", fullmatch=True),
        st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=6),
        st.text(st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF), min_size=1, max_size=4),
        st.text(st.characters(categories=("Mn", "Me", "Mc")), min_size=1, max_size=3),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=16),
    ]
    if special_texts:
        pieces.append(st.sampled_from(special_texts))
    return st.lists(st.one_of(*pieces), max_size=6).map("".join)


_CORPORA: dict[tuple, tuple[str, ...]] = {}


@contextlib.contextmanager
def _reproducible_generation():
    """Hypothesis (6.13x+) mixes into generation string and number constants it mines from the
    "local" modules loaded in the process: here the harness itself, whose loaded modules differ
    between a serial run, each xdist worker and `harness bench`, and whose text changes with any
    edit. For a corpus that depends only on the seed, the strategy and the hypothesis version,
    generate without them (internal API, so guarded: if it moves, the recorded hypothesis
    version and corpus digest still tell runs apart)."""
    try:
        from hypothesis.internal.conjecture import providers
        empty, cache = providers.Constants(), providers.CONSTANTS_CACHE
        original = providers._get_local_constants
    except (ImportError, AttributeError):
        yield False
        return
    cache.cache.clear()
    providers._get_local_constants = lambda: empty
    try:
        yield True
    finally:
        providers._get_local_constants = original
        cache.cache.clear()


def differential_corpus(special_texts: tuple[str, ...], n: int, run_seed: int) -> tuple[str, ...]:
    """`n` distinct strings drawn from `corpus_strategy` with hypothesis, reproducibly: the same
    seed, special texts and hypothesis version give the same corpus (generation only, no
    database). Extra passes with derived seeds top the corpus up to `n` distinct strings."""
    key = (special_texts, n, run_seed)
    if key in _CORPORA:
        return _CORPORA[key]
    strategy = corpus_strategy(special_texts)
    seen: dict[str, None] = {}
    with _reproducible_generation():
        _collect(strategy, seen, n, run_seed)
    _CORPORA[key] = corpus = tuple(list(seen)[:n])
    return corpus


def _collect(strategy, seen: dict[str, None], n: int, run_seed: int) -> None:
    from hypothesis import HealthCheck, Phase, given, seed, settings
    for attempt in range(20):
        @seed(run_seed + attempt)
        @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(text=strategy)
        def collect(text):
            seen.setdefault(text, None)
        collect()
        if len(seen) >= n:
            break


def corpus_digest(corpus: tuple[str, ...]) -> str:
    import hashlib
    return hashlib.sha256("\0".join(corpus).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def shrink_disagreement(special_texts: tuple[str, ...], n: int, run_seed: int, disagree) -> str | None:
    """Hypothesis's own search from the same seed, with shrinking: the smallest string it finds
    for which `disagree(text)` is true, or None if its search does not hit one."""
    from hypothesis import HealthCheck, Phase, given, seed, settings
    found: list[str] = []

    @seed(run_seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(text=corpus_strategy(special_texts))
    def search(text):
        if disagree(text):
            found.append(text)   # the last one recorded is the shrunk example hypothesis replays
            raise AssertionError(text)
    try:
        with _reproducible_generation():
            search()
    except AssertionError:
        return found[-1] if found else None
    return None


def first_divergence(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def describe_ids(name: str, ids: list[int], at: int, piece) -> str:
    window = ids[max(0, at - 2): at + 4]
    pieces = " ".join(repr(piece(i)) for i in window)
    return f"{name}: {ids}\n    around index {at}: {window} = {pieces}"
