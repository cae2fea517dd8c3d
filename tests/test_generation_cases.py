"""The `checks.generation` schema fragment and the expansion of case entries into items."""

from __future__ import annotations

import textwrap
from pathlib import Path

from harness.families.generation import checks as gen
from harness.cases.model import discover

MODEL = """\
schema: 1
id: tiny
description: A model case for expansion tests.
model:
  gguf: {file: tiny.gguf, sha256: "%s"}
""" % ("0" * 64)

GENERATION = """\
checks:
  generation:
    max_tokens: 16
    eog_ids: [2]
    contexts: [single-user]
    grammars:
      - id: yes-no
        gbnf: 'root ::= "yes" | "no"'
        messages:
          - {role: user, content: "Yes or no?"}
        accept: ["yes"]
        reject: ["maybe"]
      - id: digits
        gbnf: 'root ::= [0-9]+'
        prompt: "Count:"
        accept: ["1"]
        reject: ["a"]
      - id: obj
        json_schema: {type: object}
        prompt: "JSON:"
        accept: ["{}"]
        reject: ["[]"]
    stops:
      - id: nl
        prompt: "Hello"
        stop: ["\\n"]
        expect_finish: stop
    special_rendering:
      - id: sp
        prompt: "Hi"
known_defects:
  - check: generation.stop
    where: {stop: nl, backend: llama-server, stream: nostream}
    description: A defect declared on one stop item only.
"""


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.write_text(text, encoding="utf-8")
    return path


def test_generation_block_validates_and_expands(case_tree):
    write(case_tree, "tiny.yaml", MODEL + GENERATION)
    cases = discover(case_tree)
    assert not cases.errors, cases.errors
    backends = ["llama-cpp-python", "llama-server"]
    ids = {name: [i.id for i in fn(cases, backends)] for name, fn in [
        ("engine", gen.engine_items), ("grammar", gen.grammar_items), ("agree", gen.agree_items),
        ("stop", gen.stop_items), ("special", gen.special_items), ("masks", gen.masks_items),
        ("oov", gen.oov_items), ("template", gen.template_items)]}
    assert ids["engine"] == ["tiny,grammar=yes-no,llama.cpp", "tiny,grammar=digits,llama.cpp",
                             "tiny,grammar=obj,jsonschema", "tiny,grammar=obj,llama-cpp-python-gbnf"]
    # messages -> both endpoints; a bare prompt -> the completion endpoint only
    assert len(ids["grammar"]) == (2 + 1 + 1) * 2 * 2
    assert "tiny,grammar=yes-no,chat,llama-server,stream" in ids["grammar"]
    assert not any(",grammar=digits,chat," in i for i in ids["grammar"])
    assert ids["agree"] == ["tiny,grammar=yes-no,agree,llama-cpp-python", "tiny,grammar=yes-no,agree,llama-server"]
    assert ids["stop"] == ["tiny,stop=nl,llama-cpp-python,nostream", "tiny,stop=nl,llama-cpp-python,stream",
                           "tiny,stop=nl,llama-server,nostream", "tiny,stop=nl,llama-server,stream"]
    assert len(ids["special"]) == 2 * 2 * 2 and "tiny,special=sp,special,llama-server,stream" in ids["special"]
    assert ids["masks"] == ["tiny,masks,llama-cpp-python", "tiny,masks,llama-server"]
    assert len(ids["oov"]) == 3 * 2
    assert ids["template"][0] == "tiny,chat-template=single-user,llama-cpp-python,nostream"
    # an unavailable backend expands to nothing
    assert gen.stop_items(cases, ["llama-cpp-python"])[0].backend == "llama-cpp-python"
    assert len(gen.stop_items(cases, ["llama-cpp-python"])) == 2


def test_items_point_at_their_entry_line(case_tree):
    path = write(case_tree, "tiny.yaml", MODEL + GENERATION)
    cases = discover(case_tree)
    lines = path.read_text().splitlines()
    stop = gen.stop_items(cases, ["llama-server"])[0]
    assert lines[stop.line - 1].strip() == "- id: nl"
    assert stop.location() == f"cases/tiny.yaml:{stop.line}"
    grammar = [i for i in gen.grammar_items(cases, ["llama-server"]) if i.entry_id == "digits"][0]
    assert lines[grammar.line - 1].strip() == "- id: digits"


def test_known_defect_globs_select_exactly_the_declared_item(case_tree):
    write(case_tree, "tiny.yaml", MODEL + GENERATION)
    cases = discover(case_tree)
    items = gen.stop_items(cases, ["llama-cpp-python", "llama-server"])
    marked = [i.id for i in items if i.case.defect_for(i.check, i.params)]
    assert marked == ["tiny,stop=nl,llama-server,nostream"]


def test_cases_without_the_block_or_without_weights_expand_to_nothing(case_tree):
    write(case_tree, "tiny.yaml", MODEL)
    write(case_tree, "vocab.yaml", MODEL.replace("id: tiny", "id: vocab") + "  weights: false\n"
          + GENERATION.split("known_defects")[0])
    cases = discover(case_tree)
    assert not cases.errors, cases.errors
    assert gen.grammar_items(cases, ["llama-server"]) == []
    assert gen.masks_items(cases, ["llama-server"]) == []


def _errors(case_tree, block: str) -> str:
    write(case_tree, "bad.yaml", MODEL + textwrap.dedent(block))
    cases = discover(case_tree)
    return "\n".join(str(e) for e in cases.errors)


def test_unknown_keys_are_rejected_with_a_suggestion(case_tree):
    msg = _errors(case_tree, """\
        checks:
          generation:
            stops:
              - id: nl
                prompt: "Hello"
                stops: ["x"]
                expect_finish: stop
        """)
    assert "bad.yaml" in msg and "unknown key 'stops'" in msg and "did you mean 'stop'" in msg


def test_a_grammar_needs_exactly_one_of_gbnf_and_json_schema(case_tree):
    msg = _errors(case_tree, """\
        checks:
          generation:
            grammars:
              - id: both
                gbnf: 'root ::= "a"'
                json_schema: {type: object}
                prompt: "x"
                accept: ["a"]
                reject: ["b"]
        """)
    assert "bad.yaml" in msg and "grammars" in msg


def test_a_stop_needs_an_expected_finish_reason(case_tree):
    msg = _errors(case_tree, """\
        checks:
          generation:
            stops:
              - id: nl
                prompt: "Hello"
                stop: ["x"]
        """)
    assert "expect_finish" in msg and "required key is missing" in msg


def test_chat_template_contexts_must_exist(case_tree):
    msg = _errors(case_tree, """\
        checks:
          generation:
            contexts: [no-such-context]
        """)
    assert "unknown context 'no-such-context'" in msg


def test_engine_item_requires_twenty_strings():
    class Case:
        id, file, line = "c", "cases/c.yaml", 1

        def check_options(self, family):
            return {}
    entry = {"id": "few", "gbnf": 'root ::= "a"', "accept": ["a"], "reject": ["b"]}
    it = gen.GenItem(Case(), "generation.grammar_engine", extra=(("engine", "jsonschema"),), kind="grammar",
                     entry_id="few", entry={**entry, "json_schema": {"const": "a"}, "accept": ['"a"'],
                                            "reject": ['"b"']}, line=9)
    out = gen.check_grammar_engine(it)
    assert any("at least 20" in e for e in out.case_errors)
