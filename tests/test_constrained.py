"""Constrained generation's rules (families/generation/constrained.py) on hand-made runs, and the logits
processor the harness writes over a matcher, with a unit-test double for the matcher."""

from __future__ import annotations

import numpy as np

from harness.families.generation.constrained import LIBRARIES, MatcherProcessor, Run, run_problems

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
          "additionalProperties": False}


def test_a_conforming_output_ending_on_an_eog_token_is_clean():
    assert run_problems(Run(tokens=[5, 6, 2], text='{"a": 1}'), SCHEMA, [2], 10, 8) == []


def test_each_rule_is_reported():
    problems = run_problems(Run(tokens=[5, 6, 7], text='{"a": "x"}', over_vocab=[10, 11]), SCHEMA, [2], 10, 3)
    assert problems[0] == "allowed ids >= n_vocab 10: [10, 11]"
    assert problems[1] == "did not end with an end-of-generation token [2] within 3 tokens (last id 7)"
    assert problems[2].startswith("output does not conform to the schema: ValidationError")
    assert run_problems(Run(tokens=[2], text=""), SCHEMA, [2], 10, 3)[0].startswith(
        "output does not conform to the schema: JSONDecodeError")
    assert run_problems(Run(error="IndexError: x"), SCHEMA, [2], 10, 3) == ["generation failed: IndexError: x"]


def test_the_matcher_processor_feeds_new_tokens_and_masks_the_rest():
    accepted = []
    allowed = {0, 3, 12}                  # 12 is beyond n_vocab 10: recorded, never indexed

    def bits() -> bytes:
        b = np.zeros(16, dtype=np.uint8)
        b[list(allowed)] = 1
        return np.packbits(b, bitorder="little").tobytes()
    run = Run()
    proc = MatcherProcessor(2, 10, lambda t: accepted.append(t) or True, bits, run)
    scores = np.zeros(10, dtype=np.float32)
    out = proc(np.array([7, 8, 4], dtype=np.intc), scores)
    assert accepted == [4]                # the prompt (2 ids) is not fed to the matcher
    assert sorted(np.nonzero(np.isfinite(out))[0].tolist()) == [0, 3]
    assert run.over_vocab == [12] and run.steps == 1
    proc(np.array([7, 8, 4, 3], dtype=np.intc), np.zeros(10, dtype=np.float32))
    assert accepted == [4, 3]


def test_llama_cpp_grammar_is_the_baseline_library():
    assert LIBRARIES[-1] == "llama.cpp" and "lm-format-enforcer-llama-cpp" in LIBRARIES
