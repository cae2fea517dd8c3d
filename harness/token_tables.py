"""The constrained-decoding libraries' token tables against the model's real id space.

lm-format-enforcer, xgrammar, llguidance and outlines-core each turn a tokenizer into a token
table (the ids a grammar mask can allow, and the stop ids it allows once the grammar is done).
A table built from a size smaller than the ids the model uses cannot allow the model's real
end-of-generation token; one built from a larger size can allow ids the model has no row for
(the field report: lm-format-enforcer with `tokenizer.vocab_size` = 128000 on Llama 3.2 Vision,
whose special ids go up to 128256, sent a mask out of range).

Each table is built the way the library documents (its transformers/HF entry point; for
lm-format-enforcer also its llama-cpp-python integration), without a vocab size and with an
explicit one (llama.cpp's n_vocab = the model's embedding rows, and the tokenizer's
`vocab_size`). The ids a table can allow are measured through the library's own matcher on a
grammar that accepts any text, at its start state (where the empty text is already complete,
so the stop ids are allowed too). Findings: an allowed id >= n_vocab, or llama.cpp's eos id (its eot
where it has no eos) the table cannot allow; its other end-of-generation ids are recorded.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Iterable

from .backends.base import Unsupported
from .cases import CaseSet
from .checks import Mismatch
from .expand import Item

CHECK = "tokenizer.token_table"
FREE_TEXT = r"(.|\n)*"             # any text: every token with a text, and the stop ids at once
LMFE, LMFE_LLAMA, XGRAMMAR, LLGUIDANCE, OUTLINES = (
    "lm-format-enforcer", "lm-format-enforcer-llama-cpp", "xgrammar", "llguidance", "outlines-core")
# library -> the vocab-size variants its documented entry point takes
VARIANTS = {LMFE: ("default", "n_vocab", "hf_vocab_size"), LMFE_LLAMA: ("default",),
            XGRAMMAR: ("default", "n_vocab", "hf_vocab_size"), LLGUIDANCE: ("default", "n_vocab", "hf_vocab_size"),
            OUTLINES: ("default",)}
DISTRIBUTION = {LMFE: "lm-format-enforcer", LMFE_LLAMA: "lm-format-enforcer", XGRAMMAR: "xgrammar",
                LLGUIDANCE: "llguidance", OUTLINES: "outlines-core"}
SHOW = 10                           # ids named per finding


@dataclass(frozen=True)
class TableItem(Item):
    """An item of `tokenizer.token_table`: one library, one vocab-size variant."""

    @property
    def params(self) -> dict[str, str]:
        p = super().params
        p["library"] = dict(self.extra)["library"]
        p["vocab_size"] = dict(self.extra)["vocab_size"]
        return p


def token_table_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    from .tokenization import has_vocab
    return [TableItem(c, CHECK, extra=(("library", lib), ("vocab_size", v)))
            for c in cases.cases if has_vocab(c) for lib, variants in VARIANTS.items() for v in variants]


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
        raise Unsupported(f"{DISTRIBUTION[library]} is not installed (pip install "
                          f"'llm-conformance-harness[seeds]')") from exc


def _import(library: str, module: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as exc:   # one clear reason: the check skips, the run goes on
        raise Unsupported(f"{DISTRIBUTION[library]} {library_version(library)}: `import {module}` fails: "
                          f"{type(exc).__name__}: {exc}") from exc


def _bits(words: bytes) -> list[int]:
    import numpy as np
    bits = np.unpackbits(np.frombuffer(words, dtype=np.uint8), bitorder="little")
    return [int(i) for i in np.nonzero(bits)[0]]


def requested_size(variant: str, n_vocab: int, tokenizer) -> int | None:
    return {"default": None, "n_vocab": n_vocab, "hf_vocab_size": tokenizer.vocab_size if tokenizer else None}[variant]


def build_table(library: str, variant: str, tokenizer, llm, n_vocab: int) -> Table:
    """Build `library`'s table for the HF `tokenizer` (or llama-cpp-python's `llm`) as documented."""
    size = requested_size(variant, n_vocab, tokenizer)
    arg = "" if size is None else f", {'n_vocab' if library == LLGUIDANCE else 'vocab_size'}={size}"
    if library in (LMFE, LMFE_LLAMA):
        _import(library, "lmformatenforcer")
        if library == LMFE:
            mod = _import(library, "lmformatenforcer.integrations.transformers")
            call = f"lmformatenforcer.integrations.transformers.build_token_enforcer_tokenizer_data(tokenizer{arg})"
            build = lambda: mod.build_token_enforcer_tokenizer_data(tokenizer, vocab_size=size)  # noqa: E731
        else:
            mod = _import(library, "lmformatenforcer.integrations.llamacpp")
            call = "lmformatenforcer.integrations.llamacpp.build_token_enforcer_tokenizer_data(llm)"
            build = lambda: lmfe_llama_data(llm)  # noqa: E731
        return _guarded(library, call, lambda t: _lmfe(t, build))
    if library == XGRAMMAR:
        xgr = _import(library, "xgrammar")
        return _guarded(library, f"xgrammar.TokenizerInfo.from_huggingface(tokenizer{arg})",
                        lambda t: _xgrammar(t, xgr, tokenizer, size))
    if library == LLGUIDANCE:
        _import(library, "llguidance")
        hf = _import(library, "llguidance.hf")
        return _guarded(library, f"llguidance.hf.from_tokenizer(tokenizer{arg})",
                        lambda t: _llguidance(t, hf, tokenizer, size))
    if library == OUTLINES:
        oc = _import(library, "outlines_core")
        return _guarded(library, "outlines_core.Vocabulary(tokenizer.eos_token_id, {token text: ids}) "
                                 "(tokenizer.get_vocab() without its special ids, as outlines builds it)",
                        lambda t: _outlines(t, oc, tokenizer))
    raise ValueError(f"unknown token-table library {library!r}")


_LMFE_DATA: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def lmfe_llama_data(llm):
    """lm-format-enforcer's tokenizer data for a llama-cpp-python model, built once per model and
    worker (a Python pass over the whole vocab: 30-70 s here); the constrained-generation check
    reuses it."""
    from lmformatenforcer.integrations.llamacpp import build_token_enforcer_tokenizer_data
    if llm not in _LMFE_DATA:
        _LMFE_DATA[llm] = build_token_enforcer_tokenizer_data(llm)
    return _LMFE_DATA[llm]


def _guarded(library: str, call: str, fill) -> Table:
    table = Table(library, call)
    try:
        fill(table)
    except Unsupported:
        raise
    except Exception as exc:  # the documented call itself failed: that is the library's result
        table.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
    return table


def _lmfe(table: Table, build) -> None:
    from lmformatenforcer import RegexParser, TokenEnforcer
    data = build()
    table.size = data.vocab_size
    eos = data.eos_token_id
    table.stop_ids = sorted(eos if isinstance(eos, list) else [eos])
    table.allowed = sorted(TokenEnforcer(data, RegexParser(FREE_TEXT)).get_allowed_tokens([]).allowed_tokens)


def _xgrammar(table: Table, xgr, tokenizer, size) -> None:
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=size)
    table.size, table.stop_ids = info.vocab_size, sorted(info.stop_token_ids)
    compiled = xgr.GrammarCompiler(info, max_threads=1).compile_grammar(xgr.Grammar.from_regex(FREE_TEXT))
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)
    matcher.fill_next_token_bitmask(bitmask)
    ids = _bits(bitmask.numpy()[0].tobytes())
    # the bitmask is whole 32-bit words; bits past vocab_size are padding that
    # apply_token_bitmask_inplace never reads: recorded, not counted as allowed ids
    table.allowed = [i for i in ids if i < info.vocab_size]
    table.notes["padding bits set"] = len(ids) - len(table.allowed)


def _llguidance(table: Table, hf, tokenizer, size) -> None:
    import llguidance
    lt = hf.from_tokenizer(tokenizer, n_vocab=size)
    table.size, table.stop_ids = lt.vocab_size, [lt.eos_token]
    matcher = llguidance.LLMatcher(lt, llguidance.LLMatcher.grammar_from_regex(FREE_TEXT), log_level=0)
    if matcher.is_error():
        raise RuntimeError(matcher.get_error())
    table.allowed = [i for i in _bits(matcher.compute_bitmask()) if i < lt.vocab_size]


def _outlines(table: Table, oc, tokenizer) -> None:
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


# --- the verdict -------------------------------------------------------------------------------
def _named(ids: list[int], text_of) -> str:
    shown = ", ".join(f"{i} {text_of(i)!r}" for i in ids[:SHOW])
    return shown + (f", ... ({len(ids)} ids)" if len(ids) > SHOW else "")


def table_problems(table: Table, n_vocab: int, required_eog: dict[str, int], text_of) -> list[str]:
    """The findings for one table: the documented call fails; an allowed id >= n_vocab; an
    end-of-generation id of the model's (name -> id) the table cannot allow."""
    if table.error:
        return [f"{table.call} fails: {table.error}"]
    problems = []
    over = [i for i in table.allowed if i >= n_vocab]
    if over:
        problems.append(f"allows ids >= llama.cpp n_vocab {n_vocab}: {_named(over, text_of)}")
    allowed = set(table.allowed)
    for name, i in sorted(required_eog.items(), key=lambda kv: kv[1]):
        if i not in allowed:
            why = (f"outside the table (size {table.size})" if table.size is not None and i >= table.size
                   else f"not a stop id (stop ids {table.stop_ids})")
            problems.append(f"cannot allow the model's end-of-generation {name} id {i} {text_of(i)!r}: {why}")
    return problems


def check_token_table(item: Item, hf, llama) -> tuple[dict[str, Any], Mismatch | None]:
    """Build and judge one table: the details recorded with the result, and the finding (or None)."""
    library, variant = item.params["library"], item.params["vocab_size"]
    lv = llama.vocab_info()
    tokenizer = getattr(hf, "tokenizer", None)
    version = library_version(library)
    if variant == "hf_vocab_size" and tokenizer is not None and tokenizer.vocab_size == lv.n_vocab:
        raise Unsupported(f"tokenizer.vocab_size = n_vocab = {lv.n_vocab}: the same table as the n_vocab variant")
    table = build_table(library, variant, tokenizer, llama.llm, lv.n_vocab)
    # the end-of-generation id a table must allow: llama.cpp's eos (its eot only where there is no
    # eos). Its other EOG ids (eot, FIM ends, ...) are recorded; many are not ends of a reply.
    required = {"eos": lv.eos_id} if lv.eos_id is not None else ({"eot": lv.eot_id} if lv.eot_id is not None else {})
    details = {"library": library, "version": version, "call": table.call, "table size": table.size,
               "stop ids": table.stop_ids, "allowed": len(table.allowed),
               "max allowed id": max(table.allowed, default=None), "error": table.error, **table.notes,
               "llama.cpp n_vocab": lv.n_vocab, "gguf embedding rows": lv.embedding_rows,
               "llama.cpp eog ids": lv.eog_ids, "required eog": required}
    if tokenizer is not None:
        details.update({"hf len(tokenizer)": len(tokenizer), "hf vocab_size": tokenizer.vocab_size})
    details["llama.cpp eog ids it cannot allow"] = sorted(set(lv.eog_ids) - set(table.allowed))
    as_text = sorted(set(lv.eog_ids) & set(table.allowed) - set(table.stop_ids))
    if as_text:   # allowed wherever text is: llama.cpp ends the generation on them mid-grammar
        details["eog ids allowed as text tokens"] = as_text

    def text_of(i: int) -> str:
        if 0 <= i < lv.n_vocab:
            return llama.token_text(i)
        return tokenizer.convert_ids_to_tokens(i) if tokenizer is not None else "?"
    problems = table_problems(table, lv.n_vocab, required, text_of)
    if problems:
        sizes = (f"n_vocab {lv.n_vocab}, embedding rows {lv.embedding_rows}"
                 + (f", len(tokenizer) {len(tokenizer)}, tokenizer.vocab_size {tokenizer.vocab_size}"
                    if tokenizer is not None else ""))
        return details, Mismatch(f"{item.case.location()}: {library} {version} token table ({variant}: "
                                 f"{table.call}; size {table.size}, stop ids {table.stop_ids}; {sizes}):\n  "
                                 + "\n  ".join(problems))
    return details, None
