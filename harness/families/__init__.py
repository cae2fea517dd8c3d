"""Check families: item expansion and check logic, one folder per family.

FAMILIES below is the one registry of them, read by lint (check names, `where:` keys), the
report (family order), `harness run --family` (the suite module), the plugin and `new-case`.
A new family or check is one entry here; its pytest binding is its suite module, whose
PARAMETERS table maps each test argument to the family's item expander.

Data only: nothing here imports a family's code, so reading the registry is cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

# Item parameters every family's `where:` may name (Item.params, harness/families/items.py,
# adds what it really produces at lint time).
COMMON_WHERE_KEYS = frozenset({"case", "backend", "renderer", "context", "gen", "template"})
# the extra parameters the expanders set (Item.extra, `p["key"] = ...`, generation's GenItem);
# accepted for every family whose keys are checked
EXPANDER_WHERE_KEYS = frozenset({"chat-template", "constraint", "endpoint", "engine", "grammar", "hostile", "masks",
                                 "mode", "model", "oov", "payload", "render", "special", "stop", "stream",
                                 "string"})


@dataclass(frozen=True)
class Family:
    name: str
    suite: str | None                 # the pytest module binding it (harness.suite.test_<name>); None: benchmarks
    checks: tuple[str, ...] = ()      # `family.check` names a known defect may declare
    where_keys: frozenset[str] | None = None   # extra `where:` keys; None: the family's keys are not checked
    description: str = ""

    @property
    def check_names(self) -> tuple[str, ...]:
        return tuple(f"{self.name}.{c}" for c in self.checks)

    def all_where_keys(self, common: frozenset[str] = COMMON_WHERE_KEYS) -> frozenset[str] | None:
        if self.where_keys is None:
            return None
        return frozenset(common | EXPANDER_WHERE_KEYS | self.where_keys)

    def expanders(self) -> dict[str, Callable[..., Any] | None]:
        """Test argument -> item expander: the suite module's PARAMETERS (imports it)."""
        if self.suite is None:
            return {}
        return dict(getattr(importlib.import_module(self.suite), "PARAMETERS", {}))


# In report order.
FAMILIES: tuple[Family, ...] = (
    Family("case_files", "harness.suite.test_case_files",
           description="every case file validates (schema, lint)"),
    Family("templates", "harness.suite.test_templates",
           checks=("agree", "chat_params", "embedded", "missing", "prompt_tokens", "render"), where_keys=frozenset(),
           description="chat templates rendered by every renderer, compared and against goldens"),
    Family("tokenizer", "harness.suite.test_tokenizer",
           checks=("all_ids", "chat_template", "differential", "json", "reference", "roundtrip", "sizes", "special",
                   "special_render", "special_texts", "stream", "token_table"),
           where_keys=frozenset({"string", "mode", "library", "vocab_size"}),
           description="llama.cpp vs transformers token ids: references, corpus, special tokens, streaming"),
    Family("generation", "harness.suite.test_generation",
           checks=("chat_template", "constrained", "endpoints_agree", "grammar", "grammar_engine", "masks",
                   "out_of_vocab", "special", "stop"),
           where_keys=frozenset({"stream", "engine", "endpoint", "render", "grammar", "stop", "special", "masks",
                                 "oov", "chat-template", "library"}),
           description="real weights, greedy: grammars, token masks, stops, special tokens, streaming"),
    Family("toolcalls", "harness.suite.test_toolcalls",
           checks=("chat_call", "grammar_call", "handler_prompt", "llama_parse", "llamafactory_extract",
                   "llamafactory_prompt", "model_format", "round_trip", "server_parse", "stream"),
           description="tool calls: round trip, handler prompts, streaming, schema-valid arguments"),
    Family("throughput", None, description="benchmarks (`harness bench`, harness/bench_suite)"),
    Family("hostile", "harness.suite.test_hostile", checks=("render",),
           description="hostile chat templates through every renderer"),
)

BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}
FAMILY_ORDER: tuple[str, ...] = tuple(f.name for f in FAMILIES)


def family(name: str) -> Family:
    """The registered family `name`; KeyError naming the known ones otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown check family {name!r}; known: {', '.join(FAMILY_ORDER)}") from None


def family_of_suite(module: str) -> Family | None:
    """The family whose suite module is `module` (a dotted name), if any."""
    return next((f for f in FAMILIES if f.suite == module), None)


def suite_families() -> tuple[Family, ...]:
    """The families `harness run` runs (those with a suite module), in report order."""
    return tuple(f for f in FAMILIES if f.suite is not None)


def checked_families() -> tuple[Family, ...]:
    """The families whose known defects name checks (every suite family but case_files)."""
    return tuple(f for f in suite_families() if f.checks)
