"""`generation.constrained`: real constrained generation through llama-cpp-python with the
constrained-decoding libraries (their token tables: families/tokenizer/token_tables.py).

For every JSON schema of the generation family (`checks.generation.grammars[].json_schema`) on a
full-weight model, greedy decoding of the chat prompt llama-cpp-python's own chat handler builds
(generation.chat_prompt), through `Llama.generate(logits_processor=...)`:

  lm-format-enforcer-llama-cpp  lm-format-enforcer's llama-cpp-python integration, as its docs say:
                                build_llamacpp_logits_processor(llm, JsonSchemaParser(schema))
  xgrammar, llguidance          a logits processor the harness writes over the library's matcher
                                (GrammarMatcher / LLMatcher): accept the new token, fill the bitmask,
                                mask the logits; the table built from the HF tokenizer with the
                                model's vocab size (n_vocab), as both libraries document
  llama.cpp                     llama.cpp's own grammar (LlamaGrammar.from_json_schema): the baseline

Each output must conform (jsonschema), end with one of llama.cpp's end-of-generation tokens
within max_tokens, and no id the library allowed may be >= n_vocab. The llama.cpp grammar's
output on the same schema and prompt is recorded with each result and compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from harness.backends.base import Unsupported
from harness.cases.model import CaseSet
from harness.checks import Mismatch
from harness.families.generation.calls import chat_prompt
from harness.families.generation.items import GenItem, entry_line
from harness.families.tokenizer.token_tables import (LLGUIDANCE, LMFE_LLAMA, XGRAMMAR, import_library,
                                                     library_version, lmfe_llama_data, require_small_vocab)

CHECK = "generation.constrained"
LLAMA_GRAMMAR = "llama.cpp"
LIBRARIES = (LMFE_LLAMA, XGRAMMAR, LLGUIDANCE, LLAMA_GRAMMAR)


def constrained_items(cases: CaseSet, available: Iterable[str]) -> list[GenItem]:
    out: list[GenItem] = []
    if "llama-cpp-python" not in list(available):    # every library drives a llama-cpp-python generation
        return out
    for c in cases.cases:
        if c.kind != "model" or not c.has_weights:
            continue
        for i, g in enumerate(c.check_options("generation").get("grammars") or []):
            if "json_schema" in g and "messages" in g:
                line = entry_line(cases, c, ("grammars", i))
                out += [GenItem(c, CHECK, extra=(("library", lib),), kind="grammar", entry_id=g["id"], entry=g,
                                line=line) for lib in LIBRARIES]
    return out


@dataclass
class Run:
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    over_vocab: list[int] = field(default_factory=list)   # ids the library allowed that are >= n_vocab
    steps: int = 0                                         # mask computations
    error: str | None = None


class MatcherProcessor:
    """A llama-cpp-python logits processor over a token matcher: before each step it feeds the
    matcher the tokens sampled since the last call, then masks every logit the matcher forbids.
    `allowed_bits()` gives the matcher's bitmask as bytes (one bit per id, little-endian)."""

    def __init__(self, prompt_len: int, n_vocab: int, accept: Callable[[int], bool],
                 allowed_bits: Callable[[], bytes], run: Run):
        self.seen, self.n_vocab, self.accept, self.allowed_bits, self.run = prompt_len, n_vocab, accept, allowed_bits, run

    def __call__(self, input_ids, scores):
        import numpy as np
        for t in input_ids[self.seen:]:
            if not self.accept(int(t)):
                raise RuntimeError(f"the matcher refused the token it allowed: {int(t)}")
        self.seen = len(input_ids)
        bits = np.unpackbits(np.frombuffer(self.allowed_bits(), dtype=np.uint8), bitorder="little").astype(bool)
        allowed = np.nonzero(bits)[0]
        over = allowed[allowed >= self.n_vocab]
        self.run.over_vocab += [int(i) for i in over if int(i) not in self.run.over_vocab][:10]
        self.run.steps += 1
        mask = np.zeros(scores.shape[-1], dtype=bool)
        mask[allowed[allowed < scores.shape[-1]]] = True
        scores[~mask] = -np.inf
        return scores


def _xgrammar_processor(hf_tok, schema: dict, prompt_len: int, n_vocab: int, run: Run):
    import xgrammar as xgr
    info = xgr.TokenizerInfo.from_huggingface(hf_tok, vocab_size=n_vocab)
    compiled = xgr.GrammarCompiler(info, max_threads=1).compile_json_schema(json.dumps(schema))
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)

    def bits() -> bytes:
        matcher.fill_next_token_bitmask(bitmask)
        words = bitmask.numpy()[0].tobytes()
        # whole 32-bit words: the bits past vocab_size are padding, not allowed ids
        import numpy as np
        b = np.unpackbits(np.frombuffer(words, dtype=np.uint8), bitorder="little")
        b[info.vocab_size:] = 0
        return np.packbits(b, bitorder="little").tobytes()
    return MatcherProcessor(prompt_len, n_vocab, matcher.accept_token, bits, run)


def _llguidance_processor(hf_tok, schema: dict, prompt_len: int, n_vocab: int, run: Run):
    import llguidance
    import llguidance.hf
    lt = llguidance.hf.from_tokenizer(hf_tok, n_vocab=n_vocab)
    matcher = llguidance.LLMatcher(lt, llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema)),
                                   log_level=0)
    if matcher.is_error():
        raise RuntimeError(f"llguidance refused the schema: {matcher.get_error()}")
    return MatcherProcessor(prompt_len, n_vocab, matcher.consume_token, matcher.compute_bitmask, run)


def _lmfe_processor(llm, schema: dict, n_vocab: int, run: Run):
    from lmformatenforcer import JsonSchemaParser
    from lmformatenforcer.integrations.llamacpp import build_llamacpp_logits_processor
    # the integration's own tokenizer data (build_token_enforcer_tokenizer_data(llm)), built once
    proc = build_llamacpp_logits_processor(lmfe_llama_data(llm), JsonSchemaParser(schema))

    def recorded(input_ids, scores):
        # the ids the integration is about to allow (TokenEnforcer caches them per prefix)
        allowed = proc.token_enforcer.get_allowed_tokens(input_ids.tolist()).allowed_tokens
        run.over_vocab += [i for i in allowed if i >= n_vocab and i not in run.over_vocab][:10]
        run.steps += 1
        return proc(input_ids, scores)
    return recorded


def generate(library: str, llama, hf, prompt: list[int], schema: dict, max_tokens: int, seed: int) -> Run:
    """One greedy generation of at most max_tokens, stopping at llama.cpp's first EOG token."""
    from llama_cpp import LlamaGrammar, LogitsProcessorList
    llm, lv = llama.llm, llama.vocab_info()
    run = Run()
    grammar, processors = None, None
    try:
        if library == LLAMA_GRAMMAR:
            grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        elif library == LMFE_LLAMA:
            processors = LogitsProcessorList([_lmfe_processor(llm, schema, lv.n_vocab, run)])
        elif library == XGRAMMAR:
            processors = LogitsProcessorList([_xgrammar_processor(hf.tokenizer, schema, len(prompt), lv.n_vocab, run)])
        else:
            processors = LogitsProcessorList([_llguidance_processor(hf.tokenizer, schema, len(prompt), lv.n_vocab,
                                                                    run)])
        llm.reset()
        llm.set_seed(seed)
        eog = set(lv.eog_ids)
        for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, logits_processor=processors,
                                  grammar=grammar):
            run.tokens.append(int(token))
            if token in eog or len(run.tokens) >= max_tokens:
                break
    except Exception as exc:  # a library or integration failing mid-generation is its own finding
        run.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
    body = [t for t in run.tokens if t not in set(lv.eog_ids)]
    run.text = llm.detokenize(body).decode("utf-8", errors="replace")
    return run


_BASELINES: dict[tuple, tuple[Any, Run]] = {}


def baseline(llama, prompt: list[int], schema: dict, max_tokens: int, seed: int) -> Run:
    """llama.cpp's own grammar on the same prompt and schema, once per model, prompt and schema."""
    key = (id(llama), tuple(prompt), json.dumps(schema, sort_keys=True), max_tokens, seed)
    held = _BASELINES.get(key)
    if held is None or held[0] is not llama:
        held = _BASELINES[key] = (llama, generate(LLAMA_GRAMMAR, llama, None, prompt, schema, max_tokens, seed))
    return held[1]


def run_problems(run: Run, schema: dict, eog_ids: list[int], n_vocab: int, max_tokens: int) -> list[str]:
    import jsonschema
    if run.error:
        return [f"generation failed: {run.error}"]
    problems = []
    if run.over_vocab:
        problems.append(f"allowed ids >= n_vocab {n_vocab}: {run.over_vocab[:10]}")
    last = run.tokens[-1] if run.tokens else None
    if last not in eog_ids:
        problems.append(f"did not end with an end-of-generation token {eog_ids} within {max_tokens} tokens "
                        f"(last id {last})")
    try:
        jsonschema.validate(json.loads(run.text), schema)
    except (ValueError, jsonschema.ValidationError) as exc:
        problems.append(f"output does not conform to the schema: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]}")
    return problems


def check_constrained(rt, item: GenItem, llama, hf) -> tuple[dict[str, Any], Mismatch | None]:
    library = item.params["library"]
    version = None
    # each step masks the whole vocab in Python: 15-20 s per library on Gemma 3's 262k ids here
    require_small_vocab(llama.vocab_info().n_vocab, "constrained generation builds tables and per-step masks over "
                                                    "every id")
    if library != LLAMA_GRAMMAR:
        version = library_version(library)
        import_library(library)
        if library != LMFE_LLAMA and hf is None:
            raise Unsupported(f"{library} builds its table from the HF tokenizer, which is unavailable")
    schema, max_tokens = item.entry["json_schema"], item.max_tokens
    prompt = chat_prompt(llama, tuple(item.entry["messages"]))
    prompt = list(prompt) if isinstance(prompt, tuple) else llama.llm.tokenize(prompt.encode(), special=True)
    lv = llama.vocab_info()
    run = generate(library, llama, hf, prompt, schema, max_tokens, rt.options.seed)
    details: dict[str, Any] = {"library": library, "version": version, "text": run.text, "tokens": run.tokens,
                               "mask steps": run.steps, "error": run.error, "max_tokens": max_tokens}
    if library != LLAMA_GRAMMAR:
        base = baseline(llama, prompt, schema, max_tokens, rt.options.seed)
        details["llama.cpp grammar"] = {"text": base.text, "same text": base.text == run.text, "error": base.error}
    problems = run_problems(run, schema, lv.eog_ids, lv.n_vocab, max_tokens)
    if not problems:
        return details, None
    return details, Mismatch(f"{item.location()}: {library}{' ' + version if version else ''} constrained "
                             f"generation on schema {item.entry_id!r} (greedy, seed {rt.options.seed}):\n  "
                             + "\n  ".join(problems) + f"\n  output: {run.text!r}\n  ids: {run.tokens}")
