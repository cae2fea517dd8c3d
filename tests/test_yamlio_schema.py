"""Line-aware YAML loading and schema errors: file, line, column and key, with suggestions."""

from __future__ import annotations

import pytest

from harness.errors import CaseError
from harness.cases.schema import CASE_SCHEMA, validate
from harness.cases.yamlio import load_located

GOOD = """\
schema: 1
id: demo
description: a demo case
model:
  gguf:
    file: m.gguf
    sha256: %s
contexts: [single-user]
""" % ("ab" * 32)


def problems(text: str) -> list[str]:
    return [str(p) for p in validate(load_located(text, "cases/demo.yaml"), CASE_SCHEMA)]


def test_valid_case_has_no_problems():
    assert problems(GOOD) == []


def test_positions_are_recorded_for_nested_keys():
    located = load_located(GOOD, "cases/demo.yaml")
    assert located.where(("model", "gguf", "sha256")) == (7, 5)
    assert located.where(("contexts", 0)) == (8, 12)


def test_unknown_key_names_line_and_suggests():
    text = GOOD.replace("contexts:", "contxts:")
    assert problems(text) == ["cases/demo.yaml:8:1: contxts: unknown key 'contxts' (did you mean 'contexts'?)"]


def test_nested_unknown_key():
    text = GOOD.replace("    file: m.gguf", "    fiel: m.gguf")
    found = problems(text)
    assert "cases/demo.yaml:6:5: model.gguf.fiel: unknown key 'fiel' (did you mean 'file'?)" in found
    assert "cases/demo.yaml:5:3: model.gguf.file: required key is missing" in found


def test_wrong_type_names_expected_type():
    text = GOOD.replace("contexts: [single-user]", "contexts: single-user")
    assert problems(text) == ["cases/demo.yaml:8:1: contexts: expected array, got str 'single-user'"]


def test_bad_sha256():
    text = GOOD.replace("ab" * 32, "abc")
    assert problems(text) == ["cases/demo.yaml:7:5: model.gguf.sha256: 'abc' does not match ^[0-9a-f]{64}$"]


def test_unsupported_schema_version():
    assert problems(GOOD.replace("schema: 1", "schema: 7"))[0].startswith(
        "cases/demo.yaml:1:1: schema: unsupported schema version 7")


def test_known_defect_needs_a_description():
    text = GOOD + "known_defects:\n  - check: templates.agree\n"
    assert problems(text) == ["cases/demo.yaml:10:5: known_defects[0].description: required key is missing"]


def test_yaml_syntax_error_has_position():
    with pytest.raises(CaseError) as exc:
        load_located("schema: 1\nid: [unclosed\n", "cases/bad.yaml")
    assert str(exc.value).startswith("cases/bad.yaml:3:1: <root>: invalid YAML")


def test_duplicate_key_is_an_error():
    with pytest.raises(CaseError, match=r"cases/d.yaml:2:1: id: duplicate key"):
        load_located("id: a\nid: b\n", "cases/d.yaml")


def test_python_tags_are_refused():
    with pytest.raises(CaseError):
        load_located("x: !!python/object/apply:os.system ['true']\n", "cases/evil.yaml")
