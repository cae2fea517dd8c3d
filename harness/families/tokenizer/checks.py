"""Tokenizer-family helpers: llama.cpp's reference corpora, the generated differential
corpus, and the fixed probe strings for round trips and streaming detokenization."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from harness import corpus
from harness.cases.model import Case, CaseSet
from harness.families.items import TOKENIZERS, Item

SEPARATOR = "\n__ggml_vocab_test__\n"


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
    from harness.models.sources import unpacked_sdist
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


def differential_items_for(check: str):
    """llama.cpp-side tokenizer x mode (plain/special parsing) items of a check against hf."""
    def expand(cases: CaseSet, available) -> list[Item]:
        return [Item(c, check, backend=b, extra=(("mode", mode),))
                for c in cases.cases if has_vocab(c)
                for mode in ("plain", "special") for b in TOKENIZERS if b in available and b != "hf"]
    return expand


differential_items = differential_items_for("tokenizer.differential")


def per_backend_items(check: str):
    def expand(cases: CaseSet, available) -> list[Item]:
        return [Item(c, check, backend=b) for c in cases.cases if has_vocab(c) for b in TOKENIZERS if b in available]
    return expand


def per_case_items(check: str):
    def expand(cases: CaseSet, available) -> list[Item]:
        return [Item(c, check) for c in cases.cases if has_vocab(c)]
    return expand


# --- the generated corpus (harness/corpus.py) and the shrinker ------------------------------
_CORPORA: dict[tuple, tuple[str, ...]] = {}


def differential_corpus(special_texts: tuple[str, ...], n: int, run_seed: int) -> tuple[str, ...]:
    """`n` distinct generated strings: the same for the same special texts, n and seed on every
    machine and with every library version (harness.corpus; no hypothesis). Memoised per process."""
    key = (special_texts, n, run_seed)
    if key not in _CORPORA:
        _CORPORA[key] = corpus.differential_corpus(special_texts, n, run_seed)
    return _CORPORA[key]


corpus_digest = corpus.corpus_digest

MAX_SHRINK_CALLS = 400


def shrink_disagreement(text: str, disagree) -> str:
    """A smaller string that still disagrees, from one that does (`disagree(text)` is true):
    greedy delta debugging over characters (drop halves, quarters, ... then single characters),
    at most MAX_SHRINK_CALLS calls of `disagree`. Deterministic: it depends only on `text` and
    on the tokenizers. (Hypothesis shrinks only what it generated itself, and its result would
    depend on its version; the corpus is the harness's own.)"""
    calls = 0
    chunk = max(1, len(text) // 2)
    while chunk >= 1 and calls < MAX_SHRINK_CALLS:
        start, changed = 0, False
        while start < len(text) and calls < MAX_SHRINK_CALLS:
            candidate = text[:start] + text[start + chunk:]
            calls += 1
            if candidate and disagree(candidate):
                text, changed = candidate, True
            else:
                start += chunk
        if not changed:
            chunk //= 2
    return text


# --- the special-token text probes ---------------------------------------------------------
# Texts of special tokens that user text contains in the field, probed in every vocab whether
# or not it has them as tokens: a tokenizer that turns one into a special id (or splits it
# differently from llama.cpp) is found every time, not when a generator happens to draw it.
WELL_KNOWN_SPECIAL_TEXTS = (
    "<s>", "</s>", "<unk>", "<pad>", "<mask>", "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<|eom_id|>", "<|python_tag|>", "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<|user|>",
    "<|assistant|>", "<|system|>", "<|end|>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[CLS]", "[SEP]",
    "[MASK]", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<tool_call>", "</tool_call>",
    "<think>", "</think>", "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>", "<|return|>", "<|channel|>", "<|message|>", "<turn|>", "<|turn>",
)
# Where a special text sits in user text: alone, after or before a space, inside words, twice,
# between newlines.
SPECIAL_TEXT_CONTEXTS = ("{t}", " {t}", "{t} ", "a{t}b", "Hello {t} world", "{t}{t}", "\n{t}\n")
MAX_VOCAB_SPECIAL_TEXTS = 256


def _own_texts(vocab_texts) -> list[str]:
    # a control token whose text is whitespace ("\n" in Gemma) is not a special text users write
    return [t for t in dict.fromkeys(vocab_texts) if t and not t.isspace()]


def corpus_special_texts(vocab_texts) -> tuple[str, ...]:
    """The special texts the differential corpus mixes into its strings: the vocab's own (no
    whitespace-only ones), the first 64 in sorted order."""
    return tuple(sorted(_own_texts(vocab_texts)))[:64]


def special_text_probes(vocab_texts) -> tuple[str, ...]:
    """The fixed probe strings for one vocab: the well-known texts and the vocab's own control and
    user-defined token texts (`vocab_texts` in id order; at most the first and last 128 when
    there are more), each in every SPECIAL_TEXT_CONTEXTS position. Sorted, distinct."""
    own = _own_texts(vocab_texts)
    if len(own) > MAX_VOCAB_SPECIAL_TEXTS:
        half = MAX_VOCAB_SPECIAL_TEXTS // 2
        own = own[:half] + own[-half:]
    texts = dict.fromkeys(WELL_KNOWN_SPECIAL_TEXTS + tuple(own))
    return tuple(sorted({ctx.format(t=t) for t in texts for ctx in SPECIAL_TEXT_CONTEXTS}))


def probe_texts_in(text: str, vocab_texts) -> list[str]:
    """Which special texts (well-known or the vocab's) occur in `text`: the probes' key."""
    return sorted(t for t in dict.fromkeys(WELL_KNOWN_SPECIAL_TEXTS + tuple(_own_texts(vocab_texts))) if t in text)


BATCH = 4096


def failing_ids(ids, piece, pieces=None, *, limit: int = 10) -> list[str]:
    """The first `limit` ids whose piece fails, as "  id N: Type: message" lines, in id order.
    With `pieces` (a batch call over many ids: llama-server's one /tokenize request) ids go in
    batches; a batch that fails is split in halves down to single ids, so the result is exactly
    that of calling `piece` on every id."""
    errors: list[str] = []

    def single(i: int) -> None:
        try:
            piece(i)
        except Exception as exc:  # any failure on a valid id is the finding
            errors.append(f"  id {i}: {type(exc).__name__}: {exc}")

    def run(chunk: list[int]) -> None:
        if len(errors) >= limit:
            return
        if pieces is None or len(chunk) == 1:
            for i in chunk:
                if len(errors) >= limit:
                    return
                single(i)
            return
        try:
            pieces(chunk, render_special=True)
        except Exception:
            half = len(chunk) // 2
            run(chunk[:half])
            run(chunk[half:])

    ids = list(ids)
    for start in range(0, len(ids), BATCH if pieces is not None else max(1, len(ids))):
        run(ids[start:start + (BATCH if pieces is not None else len(ids))])
    return errors[:limit]


def first_divergence(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def describe_ids(name: str, ids: list[int], at: int, piece) -> str:
    window = ids[max(0, at - 2): at + 4]
    pieces = " ".join(repr(piece(i)) for i in window)
    return f"{name}: {ids}\n    around index {at}: {window} = {pieces}"
