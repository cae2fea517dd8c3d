"""Case discovery: references, defaults, known defects, and isolation of broken files."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings, strategies as st

from harness.cases.model import discover

SHA = "ab" * 32


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.write_text(text)
    return path


def model_case(case_id: str, contexts: str = "[single-user]", extra: str = "") -> str:
    return (f"schema: 1\nid: {case_id}\ndescription: demo\nmodel:\n  gguf:\n    file: {case_id}.gguf\n"
            f"    sha256: {SHA}\ncontexts: {contexts}\n{extra}")


def test_valid_and_broken_files_load_independently(case_tree):
    write(case_tree, "good.yaml", model_case("good"))
    write(case_tree, "typo.yaml", model_case("typo").replace("description:", "descripton:"))
    cases = discover(case_tree)
    assert [c.id for c in cases.cases] == ["good"]
    assert len(cases.errors) == 1
    assert "cases/typo.yaml:3:1: descripton: unknown key 'descripton' (did you mean 'description'?)" in str(
        cases.errors[0])
    assert sorted(cases.files) == ["cases/good.yaml", "cases/typo.yaml"]


def test_dangling_context_reference_names_the_item(case_tree):
    write(case_tree, "dangling.yaml", model_case("dangling", "[single-user, mutli-turn]"))
    cases = discover(case_tree)
    assert cases.cases == []
    assert str(cases.errors[0]) == (
        "cases/dangling.yaml:8:25: contexts[1]: unknown context 'mutli-turn' (did you mean 'multi-turn'?)")


def test_dangling_toolset_in_a_context(case_tree):
    write(case_tree / "contexts", "odd.yaml",
          "schema: 1\nid: odd\ndescription: x\ntools: wether\nmessages:\n  - {role: user, content: hi}\n")
    cases = discover(case_tree)
    assert "cases/contexts/odd.yaml:4:1: tools: unknown tool set 'wether' (did you mean 'weather'?)" in [
        str(e) for e in cases.errors]


def test_duplicate_case_ids_are_reported(case_tree):
    write(case_tree, "a.yaml", model_case("same"))
    write(case_tree, "b.yaml", model_case("same"))
    cases = discover(case_tree)
    assert any("duplicate case id 'same'" in str(e) for e in cases.errors)


def test_generation_prompt_variants_follow_the_last_message(case_tree):
    cases = discover(case_tree)
    assert cases.contexts["single-user"].add_generation_prompt == (True, False)
    assert cases.contexts["tool-round-trip"].uses_tools


def test_known_defects_match_by_check_and_glob(case_tree):
    extra = ("known_defects:\n  - check: templates.agree\n    where: {renderer: llama.cpp-*}\n"
             "    description: built-in template drops the system prompt\n")
    write(case_tree, "kd.yaml", model_case("kd", extra=extra))
    case = discover(case_tree).by_id("kd")
    assert case.defect_for("templates.agree", {"renderer": "llama.cpp-builtin"}) is not None
    assert case.defect_for("templates.agree", {"renderer": "hf"}) is None
    assert case.defect_for("templates.render", {"renderer": "llama.cpp-builtin"}) is None
    assert case.known_defects[0].reason().startswith("known defect (cases/kd.yaml:10):")


def test_known_defect_match_must_be_a_regular_expression(case_tree):
    extra = ("known_defects:\n  - check: templates.agree\n    description: built-in template drops the system prompt\n"
             "    match: 'unclosed (group'\n")
    write(case_tree, "kd.yaml", model_case("kd", extra=extra))
    write(case_tree, "ok.yaml", model_case("ok", extra=extra.replace("'unclosed (group'", "'drops? the (system)'")))
    cases = discover(case_tree)
    assert [c.id for c in cases.cases] == ["ok"]
    assert "cases/kd.yaml:12:5: known_defects[0].match: not a regular expression" in str(cases.errors[0])
    defect = cases.by_id("ok").known_defects[0]
    assert defect.explains("x: it drops the system prompt") and not defect.explains("another finding")


def test_select_keeps_only_matching_cases(case_tree):
    write(case_tree, "a.yaml", model_case("alpha"))
    write(case_tree, "b.yaml", model_case("beta"))
    assert [c.id for c in discover(case_tree, select=["b*"]).cases] == ["beta"]


def test_the_repository_cases_are_valid():
    repo_cases = Path(__file__).resolve().parent.parent / "cases"
    cases = discover(repo_cases, select=["smollm2-*", "gemma3-*"])
    assert cases.errors == []
    assert {c.id for c in cases.cases} == {"smollm2-135m-instruct", "gemma3-270m"}


def test_where_globs_take_alternatives():
    from harness.cases.globs import glob_match, glob_match_any, where_matches
    assert glob_match("llama.cpp-builtin", "hf|llama.cpp-*")
    assert not glob_match("hf-x", "hf|llama.cpp-*")
    assert glob_match(3, "3")                     # values compare as text
    assert glob_match_any("single-*", ["multi-turn", "single-user"])
    assert where_matches({"renderer": "llama*", "context": "single-*|tools"}, {"renderer": "llama.cpp", "context": "tools"})
    assert not where_matches({"stream": "yes"}, {})   # a missing parameter is ""


@settings(max_examples=500, deadline=None)
@given(value=st.text(alphabet="ab*?[]!|-.\n", max_size=8), pattern=st.text(alphabet="ab*?[]!|-.\n", max_size=8))
def test_where_globs_match_what_fnmatch_matches(value, pattern):
    """glob_match compiles a pattern's alternatives into one regex: it must match exactly what
    fnmatchcase matches on each alternative (brackets, negation, newlines and empty alternatives)."""
    import fnmatch
    from harness.cases.globs import glob_match
    assert glob_match(value, pattern) == any(fnmatch.fnmatchcase(value, alt) for alt in pattern.split("|"))


def test_defects_for_a_check_keep_file_order():
    """A case keeps its defects per check; the first declared match still wins, a family-wide
    declaration applies to each of its checks, and another check's declaration never does."""
    from harness.cases.model import Case, KnownDefect

    def kd(check, line, **where):
        return KnownDefect(check=check, where=where, description="d", reported=None, file="f.yaml", line=line)
    defects = (kd("templates.agree", 1, renderer="hf"), kd("templates", 2), kd("templates.agree", 3),
               kd("toolcalls.stream", 4))
    case = Case(id="c", kind="template", description="", file="f.yaml", line=1, raw={}, contexts=(),
                known_defects=defects)
    assert case.defect_for("templates.agree", {"renderer": "hf"}).line == 1
    assert case.defect_for("templates.agree", {"renderer": "llama.cpp-chat"}).line == 2
    assert case.defect_for("templates.render", {}).line == 2
    assert case.defect_for("toolcalls.stream", {}).line == 4
    assert case.defect_for("toolcalls.round_trip", {}) is None
