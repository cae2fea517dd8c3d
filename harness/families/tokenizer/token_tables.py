"""The constrained-decoding libraries' token tables, built the way each library documents.

lm-format-enforcer, xgrammar, llguidance and outlines-core each turn a tokenizer into a token
table: the ids a grammar mask can allow, and the stop ids it allows once the grammar is done.
A table built from a size smaller than the ids the model uses cannot allow the model's real
end-of-generation token; one built from a larger size can allow ids the model has no row for
(the field report: lm-format-enforcer with `tokenizer.vocab_size` = 128000 on Llama 3.2 Vision,
whose special ids go up to 128256, sent a mask out of range).

Each table is built through the library's documented entry point (its transformers/HF one; for
lm-format-enforcer also its llama-cpp-python integration), without a vocab size and with an
explicit one (llama.cpp's n_vocab, and the tokenizer's `vocab_size`). The ids it can allow are
read from the library's own matcher on a grammar that accepts any text, at its start state
(where the empty text is already complete, so the stop ids are allowed too).

This module builds tables only; the verdict and the per-machine cache of the results are
harness/families/tokenizer/token_table_check.py.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from harness.backends.base import Unsupported

FREE_TEXT = r"(.|\n)*"             # any text: every token with a text, and the stop ids at once
LMFE, LMFE_LLAMA, XGRAMMAR, LLGUIDANCE, OUTLINES = (
    "lm-format-enforcer", "lm-format-enforcer-llama-cpp", "xgrammar", "llguidance", "outlines-core")
# library -> the vocab-size variants its documented entry point takes
# (default: none given; n_vocab: llama.cpp's; hf_vocab_size: tokenizer.vocab_size; base_vocab: the
# ids below the trailing block of special ids, base_vocab_size)
SIZED = ("default", "n_vocab", "hf_vocab_size", "base_vocab")
VARIANTS = {LMFE: SIZED, LMFE_LLAMA: ("default",), XGRAMMAR: SIZED, LLGUIDANCE: SIZED, OUTLINES: ("default",)}
DISTRIBUTION = {LMFE: "lm-format-enforcer", LMFE_LLAMA: "lm-format-enforcer", XGRAMMAR: "xgrammar",
                LLGUIDANCE: "llguidance", OUTLINES: "outlines-core"}
# the modules a library's table needs, imported before anything is built
MODULES = {LMFE: ("lmformatenforcer", "lmformatenforcer.integrations.transformers"),
           LMFE_LLAMA: ("lmformatenforcer", "lmformatenforcer.integrations.llamacpp"),
           XGRAMMAR: ("xgrammar",), LLGUIDANCE: ("llguidance", "llguidance.hf"), OUTLINES: ("outlines_core",)}


@dataclass
class Table:
    """What a library's table can do: its size (the mask length), its stop ids, and the ids its
    matcher allows at the start of a grammar that accepts any text."""
    library: str
    call: str
    size: int | None = None
    stop_ids: list[int] = field(default_factory=list)
    allowed: list[int] = field(default_factory=list)
    error: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def library_version(library: str) -> str:
    try:
        return metadata.version(DISTRIBUTION[library])
    except metadata.PackageNotFoundError as exc:
        raise Unsupported(f"{DISTRIBUTION[library]} is not installed (make setup installs the pinned "
                          f"'seeds' extra)") from exc


def import_library(library: str) -> None:
    """Import what `library`'s table needs, or Unsupported with one clear reason (the checks skip)."""
    version = library_version(library)
    for module in MODULES[library]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            # the first error is the reason (lmformatenforcer re-raises any ImportError of its
            # transformers integration as "transformers is not installed")
            first = exc.__cause__ or exc.__context__ or exc
            raise Unsupported(f"{DISTRIBUTION[library]} {version}: `import {module}` fails: "
                              f"{type(first).__name__}: {first}"
                              + (f" (re-raised as: {exc})" if first is not exc else "")) from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


def bits_to_ids(words: bytes) -> list[int]:
    import numpy as np
    bits = np.unpackbits(np.frombuffer(words, dtype=np.uint8), bitorder="little")
    return [int(i) for i in np.nonzero(bits)[0]]


def base_vocab_size(n_vocab: int, special_ids) -> int | None:
    """The size of the vocab below its trailing block of special ids (llama.cpp's control and
    user-defined tokens): what `tokenizer.vocab_size` reports for a tokenizer.json that keeps its
    special tokens as added tokens (the real Llama 3 tokenizer: 128000, while the ids go to
    128255; transformers' GGUF conversion puts them in the base vocab and reports 128256)."""
    special, size = set(special_ids), n_vocab
    while size > 0 and size - 1 in special:
        size -= 1
    return size if size < n_vocab else None


def requested_size(variant: str, n_vocab: int, tokenizer, special_ids=()) -> int | None:
    if variant == "base_vocab":
        return base_vocab_size(n_vocab, special_ids)
    return {"default": None, "n_vocab": n_vocab,
            "hf_vocab_size": tokenizer.vocab_size if tokenizer is not None else None}[variant]


def describe_call(library: str, size: int | None) -> str:
    arg = "" if size is None else f", {'n_vocab' if library == LLGUIDANCE else 'vocab_size'}={size}"
    return {LMFE: f"lmformatenforcer.integrations.transformers.build_token_enforcer_tokenizer_data(tokenizer{arg})",
            LMFE_LLAMA: "lmformatenforcer.integrations.llamacpp.build_token_enforcer_tokenizer_data(llm)",
            XGRAMMAR: f"xgrammar.TokenizerInfo.from_huggingface(tokenizer{arg})",
            LLGUIDANCE: f"llguidance.hf.from_tokenizer(tokenizer{arg})",
            OUTLINES: "outlines_core.Vocabulary(tokenizer.eos_token_id, {token text: ids}) "
                      "(tokenizer.get_vocab() without its special ids, as outlines builds it)"}[library]


def build_table(library: str, size: int | None, tokenizer, llm) -> Table:
    """Build `library`'s table for the HF `tokenizer` (or llama-cpp-python's `llm`) as documented,
    with the explicit vocab size `size` (None: the library's default). A documented call that
    raises is the library's result (Table.error), not a harness error."""
    import_library(library)
    table = Table(library, describe_call(library, size))
    fill = {LMFE: lambda: _lmfe(table, _lmfe_hf_data(tokenizer, size)),
            LMFE_LLAMA: lambda: _lmfe(table, lmfe_llama_data(llm)),
            XGRAMMAR: lambda: _xgrammar(table, tokenizer, size),
            LLGUIDANCE: lambda: _llguidance(table, tokenizer, size),
            OUTLINES: lambda: _outlines(table, tokenizer)}[library]
    try:
        fill()
    except Exception as exc:  # the documented call itself failed: that is the library's result
        table.error = first_line(exc)
    return table


def _lmfe_hf_data(tokenizer, size):
    from lmformatenforcer.integrations.transformers import build_token_enforcer_tokenizer_data
    return build_token_enforcer_tokenizer_data(tokenizer, vocab_size=size)


_LMFE_DATA: dict[int, tuple[Any, Any]] = {}
# lm-format-enforcer's llama-cpp-python table calls llm.detokenize twice per id in Python: 5 s for
# SmolLM2's 49k ids, 1.5-6 min for the 100k-262k vocabs here (cold). Those run in the nightly run
# (HARNESS_TOKEN_TABLES=all) and skip in the default one, on every machine alike.
LMFE_LLAMA_DEFAULT_MAX = 65536


def require_small_vocab(n_vocab: int, what: str = f"{LMFE_LLAMA}'s table is a Python pass over all ids") -> None:
    """Unsupported unless work that grows with the vocab (`what`) is cheap enough for this run."""
    if n_vocab > LMFE_LLAMA_DEFAULT_MAX and os.environ.get("HARNESS_TOKEN_TABLES") != "all":
        raise Unsupported(f"{what} ({n_vocab} ids: minutes); vocabs over {LMFE_LLAMA_DEFAULT_MAX} ids run in the "
                          f"nightly run (HARNESS_TOKEN_TABLES=all)")


def lmfe_llama_data(llm):
    """lm-format-enforcer's tokenizer data for a llama-cpp-python model (a Python pass over the
    whole vocab), built once per model and worker; the constrained-generation check reuses it."""
    from lmformatenforcer.integrations.llamacpp import build_token_enforcer_tokenizer_data
    held = _LMFE_DATA.get(id(llm))
    if held is None or held[0] is not llm:
        held = _LMFE_DATA[id(llm)] = (llm, build_token_enforcer_tokenizer_data(llm))
    return held[1]


def _lmfe(table: Table, data) -> None:
    from lmformatenforcer import RegexParser, TokenEnforcer
    table.size = data.vocab_size
    eos = data.eos_token_id
    table.stop_ids = sorted(eos if isinstance(eos, list) else [eos])
    table.allowed = sorted(TokenEnforcer(data, RegexParser(FREE_TEXT)).get_allowed_tokens([]).allowed_tokens)


def _xgrammar(table: Table, tokenizer, size) -> None:
    import xgrammar as xgr
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=size)
    table.size, table.stop_ids = info.vocab_size, sorted(info.stop_token_ids)
    compiled = xgr.GrammarCompiler(info, max_threads=1).compile_grammar(xgr.Grammar.from_regex(FREE_TEXT))
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)
    matcher.fill_next_token_bitmask(bitmask)
    ids = bits_to_ids(bitmask.numpy()[0].tobytes())
    # the bitmask is whole 32-bit words; bits past vocab_size are padding that
    # apply_token_bitmask_inplace never reads: recorded, not counted as allowed ids
    table.allowed = [i for i in ids if i < info.vocab_size]
    table.notes["padding bits set"] = len(ids) - len(table.allowed)


def _llguidance(table: Table, tokenizer, size) -> None:
    import llguidance
    import llguidance.hf
    lt = llguidance.hf.from_tokenizer(tokenizer, n_vocab=size)
    table.size, table.stop_ids = lt.vocab_size, [lt.eos_token]
    matcher = llguidance.LLMatcher(lt, llguidance.LLMatcher.grammar_from_regex(FREE_TEXT), log_level=0)
    if matcher.is_error():
        raise RuntimeError(matcher.get_error())
    table.allowed = [i for i in bits_to_ids(matcher.compute_bitmask()) if i < lt.vocab_size]


def _outlines(table: Table, tokenizer) -> None:
    import outlines_core as oc
    special = set(tokenizer.all_special_ids)
    vocab: dict[str, list[int]] = {}
    for token, i in tokenizer.get_vocab().items():
        if i not in special:
            vocab.setdefault(tokenizer.convert_tokens_to_string([token]), []).append(i)
    eos = tokenizer.eos_token_id
    vocabulary = oc.Vocabulary(eos, vocab)
    table.size = max([eos, *(i for ids in vocab.values() for i in ids)]) + 1
    table.stop_ids = [vocabulary.get_eos_token_id()]
    table.allowed = sorted(oc.Guide(oc.Index(FREE_TEXT, vocabulary)).get_tokens())
