"""`harness lint`: the repository's own cases are clean, and each kind of mistake a
contributor makes is caught with its file, line and key."""

from __future__ import annotations

import json
import shutil
import textwrap

import pytest

from conftest import CASES, REPO
from harness import cli
from harness.cases.lint import check_description

GOOD = textwrap.dedent("""\
    schema: 1
    id: {id}
    description: A small model for lint tests.
    model:
      gguf:
        file: model.gguf
        sha256: {sha}
        hub: {{repo: example/model, revision: 0123456789abcdef0123456789abcdef01234567}}
      weights: false
      chat_template: embedded
      tokenizer:
        from_gguf: true
    contexts: [single-user, system-user, multi-turn, unicode-whitespace, tools-offered, tool-round-trip,
               parallel-tool-calls]
    known_defects:
      - check: templates.agree
        where: {{renderer: llama.cpp-builtin, context: "single-user|system-user"}}
        description: >-
          llama.cpp's built-in chatml formatter drops the template's default system prompt, so the
          model sees a different prompt than with its own template.
    """)


def case_text(case_id: str = "lint-model", sha: str = "ab" * 32) -> str:
    return GOOD.format(id=case_id, sha=sha)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def run_lint(capsys, cases, *extra) -> tuple[int, list[str]]:
    status = cli.main(["lint", "--cases", str(cases), *extra])
    out = capsys.readouterr().out
    return status, out.splitlines()


def test_the_repository_cases_lint_clean(capsys):
    """What `pytest tests` runs: every case file in cases/ is valid, every shared context and
    tool set is used, every known defect says what is wrong (warnings count: --strict)."""
    status, lines = run_lint(capsys, CASES, "--strict")
    assert lines == [] and status == 0, "\n".join(lines)


def test_a_good_case_is_clean(case_tree, capsys):
    (case_tree / "lint-model.yaml").write_text(case_text())
    assert run_lint(capsys, case_tree, "--strict") == (0, [])


@pytest.fixture
def cases(case_tree):
    (case_tree / "lint-model.yaml").write_text(case_text())
    return case_tree


def test_typo_in_a_key(cases, capsys):
    text = case_text("typo").replace("  chat_template: embedded", "  chat_templat: embedded")
    (cases / "typo.yaml").write_text(text)
    status, lines = run_lint(capsys, cases)
    assert status == 1
    assert lines == [f"cases/typo.yaml:{line_of(text, 'chat_templat:')}:3: model.chat_templat: unknown key "
                     "'chat_templat' (did you mean 'chat_template'?)"]


def test_dangling_references(cases, capsys):
    text = case_text("dangling").replace("[single-user, system-user,", "[single-usr, system-user,")
    (cases / "dangling.yaml").write_text(text)
    ctx = (cases / "contexts" / "tools-offered.yaml")
    ctx_text = ctx.read_text().replace("tools: weather", "tools: wether")
    ctx.write_text(ctx_text)
    status, lines = run_lint(capsys, cases)
    assert status == 1
    contexts_line = line_of(text, "contexts:")
    assert (f"cases/contexts/tools-offered.yaml:{line_of(ctx_text, 'tools: wether')}:1: tools: unknown tool set "
            "'wether' (did you mean 'weather'?)") in lines
    # the case points at its first context ([0] in a flow list) and at the missing one
    assert any(line.startswith(f"cases/dangling.yaml:{contexts_line}:") and
               "contexts[0]: unknown context 'single-usr' (did you mean 'single-user'?)" in line for line in lines)
    assert any(line.startswith(f"cases/dangling.yaml:{contexts_line}:") and
               "unknown context 'tools-offered'" in line for line in lines), lines


def test_duplicate_id(cases, capsys):
    (cases / "zz-copy.yaml").write_text(case_text("lint-model"))
    status, lines = run_lint(capsys, cases)
    assert status == 1
    assert lines == [f"cases/zz-copy.yaml:{line_of(case_text(), 'id: lint-model')}:1: id: duplicate case id "
                     f"'lint-model' (also in cases/lint-model.yaml:2)"]


def test_known_defect_without_description(cases, capsys):
    text = case_text("nodesc")
    start = text.index("    description: >-\n      llama.cpp")
    text = text[:start] + "    reported: https://github.com/ggml-org/llama.cpp/issues/1\n"
    (cases / "nodesc.yaml").write_text(text)
    status, lines = run_lint(capsys, cases)
    assert status == 1
    assert lines == [f"cases/nodesc.yaml:{line_of(text, '- check: templates.agree')}:5: known_defects[0]."
                     "description: required key is missing"]


@pytest.mark.parametrize("description, why", [
    ("TODO: describe", "placeholder text"),
    ("Fails on builtin, FIXME later please", "placeholder text"),
    ("It renders wrong.", "too short to say what is wrong"),
    ("What is wrong upstream, precisely enough to recognise a fix.", "example sentence"),
])
def test_known_defect_with_an_empty_description(cases, capsys, description, why):
    text = case_text("vague")
    start = text.index("    description: >-")
    text = text[:start] + f"    description: {json.dumps(description)}\n"
    (cases / "vague.yaml").write_text(text)
    status, lines = run_lint(capsys, cases)
    assert status == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"cases/vague.yaml:{line_of(text, '    description: ')}:5: "
                               "known_defects[0].description: ")
    assert why in lines[0]


def test_known_defect_that_can_never_apply(cases, capsys):
    text = case_text("never").replace("where: {renderer: llama.cpp-builtin,", "where: {rendrer: llama.cpp-builtin,")
    text = text.replace('context: "single-user|system-user"', 'context: "multi-*-turn"')
    text = text.replace("check: templates.agree", "check: templates.agrees")
    (cases / "never.yaml").write_text(text)
    status, lines = run_lint(capsys, cases)
    assert status == 1
    check_line, where_line = line_of(text, "check: templates.agrees"), line_of(text, "where:")
    assert lines == [
        f"cases/never.yaml:{check_line}:5: known_defects[0].check: no check 'templates.agrees' "
        "(did you mean 'templates.agree'?)",
        f"cases/never.yaml:{where_line}:13: known_defects[0].where.rendrer: 'rendrer' is not a parameter of any "
        "check item (did you mean 'renderer'?)",
        f"cases/never.yaml:{where_line}:41: known_defects[0].where.context: 'multi-*-turn' matches no context of "
        "this case (multi-turn, parallel-tool-calls, single-user, system-user, tool-round-trip, tools-offered, "
        "unicode-whitespace): the defect can never apply",
    ]


def test_unused_shared_files_warn_and_fail_only_when_strict(cases, capsys):
    text = case_text().replace(", tools-offered, tool-round-trip,\n           parallel-tool-calls]", "]")
    (cases / "lint-model.yaml").write_text(text)
    shutil.copy(cases / "tools" / "weather.yaml", cases / "tools" / "spare.yaml")
    (cases / "tools" / "spare.yaml").write_text((cases / "tools" / "spare.yaml").read_text()
                                                 .replace("id: weather", "id: spare"))
    status, lines = run_lint(capsys, cases)
    assert status == 0
    assert lines == [
        "cases/contexts/parallel-tool-calls.yaml:1:1: id: warning: shared context 'parallel-tool-calls' is used by "
        "no case",
        "cases/contexts/tool-round-trip.yaml:1:1: id: warning: shared context 'tool-round-trip' is used by no case",
        "cases/contexts/tools-offered.yaml:1:1: id: warning: shared context 'tools-offered' is used by no case",
        "cases/tools/spare.yaml:1:1: id: warning: tool set 'spare' is used by no context",
    ]
    assert run_lint(capsys, cases, "--strict")[0] == 1


def test_a_broken_case_still_counts_as_using_its_contexts(cases, capsys):
    """A typo elsewhere in a file must not also report its contexts as unused."""
    (cases / "lint-model.yaml").write_text(case_text().replace("weights: false", "weigths: false"))
    status, lines = run_lint(capsys, cases)
    assert status == 1
    assert len(lines) == 1 and "unknown key 'weigths'" in lines[0], lines


def test_unpinned_model_file_warns(cases, capsys):
    text = case_text("unpinned")
    text = "\n".join(line for line in text.splitlines() if "hub:" not in line) + "\n"
    (cases / "unpinned.yaml").write_text(text)
    status, lines = run_lint(capsys, cases)
    assert status == 0
    assert lines == [f"cases/unpinned.yaml:{line_of(text, 'gguf:')}:3: model.gguf: warning: neither a hub repo nor "
                     "a PyPI mirror: only machines that already have this file can run the case"]


def test_yaml_syntax_error_has_a_position(cases, capsys):
    (cases / "broken.yaml").write_text("schema: 1\nid: broken\ndescription: [unclosed\n")
    status, lines = run_lint(capsys, cases)
    assert status == 1
    assert len(lines) == 1 and lines[0].startswith("cases/broken.yaml:4:1: <root>: invalid YAML"), lines


def test_description_rules():
    assert check_description("llama-cpp-python silently formats Gemma chats as Llama 2 prompts") is None
    assert check_description("TBD") and check_description("???") and check_description("   ")
    assert "too short" in check_description("Renders differently from hf.")


def test_lint_runs_from_make_and_the_test_command():
    """`make lint` calls it, and this module is part of `pytest tests`."""
    assert "harness lint" in (REPO / "Makefile").read_text()
