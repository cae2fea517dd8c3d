"""harness compare compares what a check said (the `E` lines of pytest's report), not where in
the harness it was raised (harness/report/messages.py)."""
from __future__ import annotations

from harness.report.messages import MESSAGE_CHARS, finding, same_finding

OLD = """\
    def conclude(self) -> None:
        if self.problems:
>           raise Mismatch(self.header + "\\n" + "\\n".join(self.problems))
E           harness.checks.Mismatch: cases/x.yaml:11: hf renders the calls
E               --- expected
E           hf could not render: SecurityError: access to attribute 'append' is unsafe.

harness/toolcall_checks.py:83: Mismatch"""

# the same finding raised from another module, another line, another indentation
MOVED = """\
        def conclude(self) -> None:
            if self.problems:
>               raise Mismatch(self.header + "\\n" + "\\n".join(self.problems))
E               harness.families.outcome.Mismatch: cases/x.yaml:11: hf renders the calls
E                   --- expected
E               hf could not render: SecurityError: access to attribute 'append' is unsafe.

harness/families/toolcalls/checks.py:84: Mismatch"""


def test_a_moved_check_says_the_same():
    assert finding(OLD) == finding(MOVED)
    assert finding(OLD).splitlines()[0] == "Mismatch: cases/x.yaml:11: hf renders the calls"
    assert same_finding(OLD, MOVED)


def test_a_different_finding_is_a_change():
    assert not same_finding(OLD, OLD.replace("'append'", "'extend'"))
    assert not same_finding(OLD, OLD.replace("x.yaml:11", "x.yaml:12"))     # the case moved
    assert not same_finding(OLD, OLD.replace("E               --- expected\n", ""))


def test_a_skip_reason_is_compared_whole():
    assert same_finding("Skipped: needs a GGUF model", "Skipped: needs a GGUF model")
    assert not same_finding("Skipped: needs a GGUF model", "Skipped: needs a tokenizer")
    assert same_finding("", None)


def test_a_cut_message_is_compared_on_what_both_kept():
    body = "".join(f"E           line {i} of a long diff\n" for i in range(400))
    whole = ("x" * 50 + "\n" + body + "\nharness/a.py:1: Mismatch")
    cut_a = whole[-MESSAGE_CHARS:]
    cut_b = (whole.replace("harness/a.py:1", "harness/families/b/c.py:123"))[-MESSAGE_CHARS:]
    assert len(cut_a) == len(cut_b) == MESSAGE_CHARS
    assert same_finding(cut_a, cut_b)
    assert not same_finding(cut_a, cut_b.replace("line 399 of", "line 398 of"))


def _results(tmp_path, name, tests):
    import json
    d = tmp_path / name
    d.mkdir()
    (d / "results.json").write_text(json.dumps({"format": 1, "tests": tests}))
    return d


def test_harness_compare_fails_on_a_changed_message_and_not_on_a_moved_frame(tmp_path, capsys):
    from harness.cli import main
    rec = {"nodeid": "harness/suite/test_x.py::test_y[a]", "outcome": "xfailed", "check": "x.y",
           "location": "cases/x.yaml:11", "message": OLD}
    old = _results(tmp_path, "old", [rec])
    moved = _results(tmp_path, "moved", [{**rec, "message": MOVED}])
    other = _results(tmp_path, "other", [{**rec, "message": MOVED.replace("'append'", "'extend'")}])
    assert main(["compare", str(old), str(moved), "--fail-on-change"]) == 0
    assert "messages: 0 checks" in capsys.readouterr().out
    assert main(["compare", str(old), str(other), "--fail-on-change"]) == 1
    out = capsys.readouterr().out
    assert "messages: 1 checks with the same outcome say something else" in out
    assert "-hf could not render: SecurityError: access to attribute 'append' is unsafe." in out
    assert "+hf could not render: SecurityError: access to attribute 'extend' is unsafe." in out
