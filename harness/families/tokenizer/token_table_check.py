"""`tokenizer.token_table`: each constrained-decoding library's token table against the model's
real id space (harness/families/tokenizer/token_tables.py builds the tables).

Findings: the documented call fails; the table can allow an id >= llama.cpp's n_vocab (a mask
the model has no row for); it cannot allow llama.cpp's eos id (its eot where there is no eos).
Its other end-of-generation ids, the sizes (n_vocab, embedding rows, len(tokenizer),
tokenizer.vocab_size) and the ids involved are recorded with every result.

Cost: a table is a pass over the whole vocab in Python (lm-format-enforcer, outlines-core's
vocabulary) or in native code, 1 to 60 s per library and vocab. What the verdict needs of a table
(size, stop ids, the allowed ids as ranges, the error) is a pure function of the library version,
the tokenizer (the GGUF's sha256, the HF tokenizer's source and versions), the variant and this
module's FACTS_VERSION, so it is kept once per machine in the harness cache,
`token-tables/<FACTS_VERSION>/<key>.json`, like the HF conversion pickles; the key and whether it
was a hit are recorded with every result. `HARNESS_TOKEN_TABLE_CACHE=0` builds every table.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Iterable

from harness.atomic import write_atomic
from harness.backends.base import Unsupported
from harness.cases.model import CaseSet
from harness.checks import Mismatch
from harness.families.items import Item
from harness.families.tokenizer.checks import has_vocab
from harness.families.tokenizer.token_tables import (LMFE_LLAMA, VARIANTS, Table, build_table, import_library,
                                                     library_version, require_small_vocab, requested_size)

CHECK = "tokenizer.token_table"
FACTS_VERSION = "v1"      # bump when what a table's facts mean, or how they are measured, changes
SHOW = 10                 # ids named per finding


@dataclass(frozen=True)
class TableItem(Item):
    """An item of `tokenizer.token_table`: one library, one vocab-size variant."""


def token_table_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    if "llama-cpp-python" not in list(available):    # the real id space is llama.cpp's
        return []
    return [TableItem(c, CHECK, extra=(("library", lib), ("vocab_size", v)))
            for c in cases.cases if has_vocab(c) for lib, variants in VARIANTS.items() for v in variants]


# --- the per-machine cache of a table's facts ----------------------------------------------------
def to_ranges(ids: list[int]) -> list[list[int]]:
    """Sorted ids as inclusive [first, last] runs: the allowed set of a free-text grammar is a few
    runs around the special ids, so this is small where the id list is not."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return runs


def from_ranges(runs: list[list[int]]) -> list[int]:
    return [i for a, b in runs for i in range(a, b + 1)]


def cache_key(library: str, variant: str, size: int | None, hf, llama) -> dict[str, Any]:
    """Everything a table depends on. The HF tokenizer is named by the GGUF it was converted from
    (or its hub folder) and the versions that converted it; lm-format-enforcer's llama-cpp-python
    table by the GGUF and llama-cpp-python's version."""
    key = {"facts": FACTS_VERSION, "library": library, "version": library_version(library), "variant": variant, "size": size}
    model = getattr(hf, "model", None) if hf is not None else getattr(llama, "model", None)
    key["gguf_sha256"] = getattr(model, "gguf_sha256", None)
    if library == LMFE_LLAMA:
        key["llama_cpp_python"] = llama.info().get("llama_cpp_python")
    else:
        info = hf.info()
        key.update({k: info.get(k) for k in ("transformers", "tokenizers", "tokenizer_source")})
    return key


def _cache_path(key: dict[str, Any]):
    from harness.models.sources import cache_root
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_root() / "token-tables" / FACTS_VERSION / f"{digest}.json"


def cached_table(library: str, variant: str, size: int | None, hf, llama) -> tuple[Table, dict[str, Any]]:
    """The table's facts from the cache, else built (and stored). The second value says which."""
    key = cache_key(library, variant, size, hf, llama)
    use = os.environ.get("HARNESS_TOKEN_TABLE_CACHE", "1") != "0" and key["gguf_sha256"]
    path = _cache_path(key)
    if use and path.exists():
        try:
            facts = json.loads(path.read_text(encoding="utf-8"))
            if facts.get("key") == key:
                table = Table(library, facts["call"], facts["size"], facts["stop_ids"],
                              from_ranges(facts["allowed"]), facts["error"], facts["notes"])
                return table, {"key": key, "hit": True, "file": path.name}
        except (OSError, ValueError, KeyError, TypeError):
            pass   # unreadable: built again and rewritten
    import_library(library)   # a missing library skips before anything is built
    tokenizer = getattr(hf, "tokenizer", None) if hf is not None else None
    table = build_table(library, size, tokenizer, llama.llm)
    if use:
        write_atomic(path, json.dumps({"key": key, "call": table.call, "size": table.size, "stop_ids": table.stop_ids,
                                       "allowed": to_ranges(table.allowed), "error": table.error,
                                       "notes": table.notes}))
    return table, {"key": key, "hit": False, "file": path.name if use else None}


# --- the verdict -------------------------------------------------------------------------------
def _named(ids: list[int], text_of) -> str:
    shown = ", ".join(f"{i} {text_of(i)!r}" for i in ids[:SHOW])
    return shown + (f", ... ({len(ids)} ids)" if len(ids) > SHOW else "")


def table_problems(table: Table, n_vocab: int, required_eog: dict[str, int], text_of,
                   requested: int | None = None) -> list[str]:
    """The findings for one table: the documented call fails; an allowed id >= n_vocab; an
    end-of-generation id of the model's (name -> id) the table cannot allow. A call given a size
    below the model's n_vocab that refuses it (a clear error) is right, not a finding."""
    if table.error:
        if requested is not None and requested < n_vocab:
            return []
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
    """Build (or read) and judge one table: the details recorded with the result, and the finding."""
    library, variant = item.params["library"], item.params["vocab_size"]
    lv = llama.vocab_info()
    tokenizer = getattr(hf, "tokenizer", None) if hf is not None else None
    version = library_version(library)
    size = requested_size(variant, lv.n_vocab, tokenizer, set(lv.special_ids) | set(lv.extra.get("user_defined_ids", ())))
    if variant == "hf_vocab_size" and tokenizer is not None and size == lv.n_vocab:
        raise Unsupported(f"tokenizer.vocab_size = n_vocab = {lv.n_vocab}: the same table as the n_vocab variant")
    if variant == "base_vocab":
        if size is None:
            raise Unsupported(f"llama.cpp id {lv.n_vocab - 1} is not a special token: no trailing block of special "
                              f"ids, so no base vocab below it")
        if tokenizer is not None and size == tokenizer.vocab_size:
            raise Unsupported(f"base vocab {size} = tokenizer.vocab_size: the same table as the hf_vocab_size variant")
    if library == LMFE_LLAMA:
        require_small_vocab(lv.n_vocab)
    table, cache = cached_table(library, variant, size, hf, llama)
    # the end-of-generation id a table must allow: llama.cpp's eos (its eot only where there is no
    # eos). Its other EOG ids (eot, FIM ends, ...) are recorded; many are not ends of a reply.
    required = {"eos": lv.eos_id} if lv.eos_id is not None else ({"eot": lv.eot_id} if lv.eot_id is not None else {})
    allowed = set(table.allowed)
    details = {"library": library, "version": version, "variant": variant, "requested size": size, "call": table.call, "table size": table.size,
               "stop ids": table.stop_ids, "allowed": len(table.allowed),
               "max allowed id": max(table.allowed, default=None), "error": table.error, **table.notes,
               "llama.cpp n_vocab": lv.n_vocab, "gguf embedding rows": lv.embedding_rows,
               "llama.cpp eog ids": lv.eog_ids, "required eog": required, "cache": cache,
               "allowed ids >= n_vocab": [i for i in table.allowed if i >= (lv.n_vocab or 0)][:SHOW],
               "llama.cpp eog ids it cannot allow": sorted(set(lv.eog_ids) - allowed)}
    if tokenizer is not None:
        details.update({"hf len(tokenizer)": len(tokenizer), "hf vocab_size": tokenizer.vocab_size})
    as_text = sorted(set(lv.eog_ids) & allowed - set(table.stop_ids))
    if as_text:   # allowed wherever text is: llama.cpp ends the generation on them mid-grammar
        details["eog ids allowed as text tokens"] = as_text

    def text_of(i: int) -> str:
        if 0 <= i < lv.n_vocab:
            return llama.token_text(i)
        return tokenizer.convert_ids_to_tokens(i) if tokenizer is not None else "?"
    problems = table_problems(table, lv.n_vocab, required, text_of, size)
    if table.error and not problems:
        details["refused a size below n_vocab"] = True
    if not problems:
        return details, None
    sizes = (f"n_vocab {lv.n_vocab}, embedding rows {lv.embedding_rows}"
             + (f", len(tokenizer) {len(tokenizer)}, tokenizer.vocab_size {tokenizer.vocab_size}"
                if tokenizer is not None else ""))
    return details, Mismatch(f"{item.case.location()}: {library} {version} token table ({variant}: "
                             f"{table.call}; size {table.size}, stop ids {table.stop_ids}; {sizes}):\n  "
                             + "\n  ".join(problems))
