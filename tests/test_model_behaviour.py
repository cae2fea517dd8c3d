"""toolcalls.model_format (harness/families/toolcalls/model_format.py): the classification, its place in the
report apart from the stack findings, and the mirror download's progress line."""

from __future__ import annotations

from harness.families.toolcalls import model_format as mb
from harness.report.behaviour import behaviour_html, behaviour_md
from harness.models.sources import progress_bar


def test_classify():
    assert mb.classify("", [{"name": "get_weather", "arguments": "{}"}], "<tool_call>") == "template-format"
    assert mb.classify('<tool_call>\n{"name": "x", "arguments": {}}', [], "<tool_call>") == "template-format-unparsed"
    fenced = '```json\n{\n  "name": "get_weather",\n  "arguments": {\n    "city": "Paris"\n  }\n}\n```'
    assert mb.classify(fenced, [], "<tool_call>") == "other-format"
    assert mb.classify("It is sunny in Tokyo.", None, "<tool_call>") == "no-call"


def _test(context, verdict, content=""):
    return {"nodeid": f"harness/suite/test_toolcalls.py::test_model_format[m,{context}]", "outcome": "passed",
            "details": {"model_behaviour": {"case": "m", "context": context, "format": "hermes", "verdict": verdict,
                                            "writes_template_format": verdict.startswith("template-format"),
                                            "content": content, "tool_calls": [], "finish_reason": "stop"}}}


def test_report_section_is_apart_from_findings():
    tests = [_test("tools-offered", "other-format", '{"name": "get_weather"} | x'), _test("tool-follow-up", "no-call"),
             {"nodeid": "harness/suite/test_templates.py::test_render_agrees[m,x]", "outcome": "failed"}]
    md = "\n".join(behaviour_md(tests))
    assert md.startswith("\n## Model behaviour")
    assert "m: writes its template's hermes format unforced in 0 of 2 conversations" in md
    assert "another format" in md and "\\|" in md           # a table cell cannot break the table
    assert "test_render_agrees" not in md
    assert "<h2 id=\"model-behaviour\">" in behaviour_html(tests)
    assert behaviour_md(tests[2:]) == [] and behaviour_html(tests[2:]) == ""


def test_progress_bar():
    assert progress_bar(0, 100, "f: part 0/2").startswith("[>")
    line = progress_bar(245_700_032, 491_400_064, "q.gguf: part 3/6")
    assert "50%" in line and "246/491 MB" in line and line.endswith("q.gguf: part 3/6")
    assert progress_bar(491_400_064, 491_400_064, "x").startswith("[" + "=" * 30 + "] 100%")
    assert progress_bar(5_000_000, None, "x") == "x: 5 MB"
