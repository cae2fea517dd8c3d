"""What a case declares under `checks.throughput`: the benchmark backends, constraints and defaults,
the fixed prompt and grammars, and the benchmark items."""

from __future__ import annotations

from typing import Any, Iterable


# --- what a case declares ---------------------------------------------------------------------
EVAL_BACKEND = "llama-cpp-python-eval"     # the low-level loop over the same Llama object


BACKENDS = ("llama-cpp-python", EVAL_BACKEND, "llama-server")


# which registered backend each benchmark backend needs
NEEDS = {"llama-cpp-python": "llama-cpp-python", EVAL_BACKEND: "llama-cpp-python", "llama-server": "llama-server"}


CONSTRAINTS = ("none", "gbnf", "json_schema")


DEFAULTS = {"prompt_tokens": 128, "gen_tokens": 48, "constraints": ["none", "gbnf", "json_schema"],
            "backends": list(BACKENDS), "rounds": 3}


# A grammar that never completes, so it never allows end-of-generation: every request
# generates exactly gen_tokens, and every token goes through the grammar sampler.
GBNF = 'root ::= [a-z ,.] root\n'


# A JSON schema whose grammar (llama.cpp's json-schema-to-grammar) needs many tokens to
# complete: at least 24 strings of lower-case words.
JSON_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["words"],
    "properties": {"words": {"type": "array", "minItems": 24,
                             "items": {"type": "string", "pattern": "^[a-z]+( [a-z]+)*$"}}},
}


PROMPT_TEXT = (
    "The history of the river valley begins with small farming villages along its banks. Over "
    "the centuries the villages grew into market towns, and the towns into a city whose bridges, "
    "mills and warehouses still line the water. Travellers wrote about the floods in spring, the "
    "fairs in autumn and the long barges that carried grain, timber and stone down to the sea. "
)


def throughput_options(case) -> dict[str, Any]:
    """The case's `checks.throughput` with defaults filled in ({} when not declared)."""
    raw = (case.raw.get("checks") or {}).get("throughput")
    if raw is None:
        return {}
    return {**DEFAULTS, **raw}


def throughput_items(cases, available: Iterable[str]):
    """One benchmark per (case, constraint, backend) for cases with `checks.throughput`."""
    from harness.families.items import Item
    available = list(available)
    out = []
    for case in cases.cases:
        opts = throughput_options(case)
        if not opts or case.kind != "model" or not case.has_weights:
            continue
        for constraint in opts["constraints"]:
            for backend in opts["backends"]:
                if NEEDS[backend] in available:
                    out.append(Item(case, "throughput.tokens_per_s", backend=backend,
                                    extra=(("constraint", constraint),)))
    return out
