"""harness/report/build.py: the matrix, its links to failures, goldens.json, the throughput
section and chart; and that a suite run leaves report.html / report.md next to results.json."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import CASES, SUITE
from harness.report import build as report


def rec(nodeid: str, outcome: str, case: str | None = None, check: str | None = None, backend: str = "",
        message: str = "", location: str | None = None) -> dict:
    t = {"nodeid": nodeid, "outcome": outcome, "duration": 0.01, "backend_info": None, "message": message}
    if case:
        t.update(case=case, check=check, location=location or f"cases/{case.split('@')[0]}.yaml:3",
                 params={"case": case, "backend": backend})
    return t


TESTS = [
    rec("harness/suite/test_case_files.py::test_case_file[smol.yaml]", "passed"),
    rec("harness/suite/test_templates.py::test_render[smol,single-user,gen,hf]", "passed", "smol",
        "templates.render", "hf"),
    rec("harness/suite/test_templates.py::test_render_agrees[smol,single-user,gen,llama-server]", "failed", "smol",
        "templates.agree", "llama-server", "Mismatch: cases/smol.yaml:3: renders differently\n--- hf\n+++ llama-server\n-a\n+b",
        "cases/smol.yaml:3"),
    rec("harness/suite/test_templates.py::test_render_agrees[smol,multi-turn,gen,llama.cpp-builtin]", "xfailed", "smol",
        "templates.agree", "llama.cpp-builtin", "Mismatch: known defect"),
    rec("harness/suite/test_templates.py::test_render[smol,tools,gen,llama.cpp-builtin]", "skipped", "smol",
        "templates.render", "llama.cpp-builtin", "Skipped: unsupported: no tools"),
    rec("harness/suite/test_templates.py::test_render[smol,tools2,gen,llama.cpp-builtin]", "skipped", "smol",
        "templates.render", "llama.cpp-builtin", "Skipped: unsupported: no tools"),
    rec("harness/suite/test_templates.py::test_render[set@Qwen2.5,single-user,gen,hf]", "error", "set@Qwen2.5",
        "templates.render", "hf", "boom", "cases/set.yaml:7"),
    rec("harness/suite/test_templates.py::test_render[set@Llama3,single-user,gen,hf]", "passed", "set@Llama3",
        "templates.render", "hf"),
    rec("harness/suite/test_templates.py::test_missing_template[gemma]", "passed", "gemma", "templates.missing"),
]


def results_doc(tests=TESTS) -> dict:
    return {"format": "llm-harness-results/1", "finished": "2024-07-26T00:00:00+00:00", "exitstatus": 1,
            "provenance": {"packages": {"llama-cpp-python": "0.3.36"}, "threads": 1, "seed": 1234,
                           "platform": "Linux", "python": "3.11"},
            "models": {"smol": {"file": "smol.gguf", "sha256": "ab" * 32, "source": "harness cache"}},
            "counts": {}, "tests": tests}


def test_matrix_classifies_model_family_backend():
    m = report.build_matrix(TESTS)
    assert m.models == ["gemma", "set", "smol"]               # template-set expansions are one row
    assert m.families == ["case_files", "templates"]
    assert m.backends["templates"] == ["hf", "llama.cpp-builtin", "llama-server", report.NO_BACKEND]
    assert m.cell("smol", "templates", "llama-server").counts == {"fail": 1}
    assert m.cell("smol", "templates", "llama.cpp-builtin").counts == {"xfail": 1, "skip": 2}
    assert m.cell("set", "templates", "hf").counts == {"fail": 1, "pass": 1}
    assert m.cell("smol", "case_files", report.NO_BACKEND).counts == {"pass": 1}
    assert m.totals == {"pass": 4, "fail": 2, "xfail": 1, "skip": 2}


def _bench_run(folder: Path, number: int, when: str, tg: float) -> None:
    def info(backend: str, constraint: str) -> dict:
        return {"kind": "throughput", "case": "smol", "backend": backend, "constraint": constraint, "rounds": 3,
                "n_prompt": 128, "n_gen": [48], "ttft_ms": {"mean": 500.0, "stdev": 5.0},
                "pp_tps": {"mean": 256.0, "stdev": 2.0}, "tg_tps": {"mean": tg, "stdev": 1.0},
                "backend_pp_tps": {"mean": 257.0}, "backend_tg_tps": {"mean": tg * 1.01},
                "pp_ratio": 0.996, "tg_ratio": 0.99}
    benches = [{"name": f"test_throughput[smol,{c},{b}]", "fullname": f"x::test_throughput[smol,{c},{b}]",
                "stats": {"mean": 1.0, "stddev": 0.01, "rounds": 3}, "extra_info": info(b, c)}
               for b in ("llama-cpp-python", "llama-server") for c in ("none", "gbnf")]
    doc = {"datetime": when, "machine_info": {}, "benchmarks": benches,
           "harness": {"overhead": {"scope": "quick", "tests": 100, "outside_s": 5.0, "wall_s": 100.0,
                                    "outside_ratio": 0.05},
                       "collection": {"cases": 1000, "items": 57000, "pytest_collection_s": 9.5}}}
    (folder / f"{number:04d}_run.json").write_text(json.dumps(doc))


@pytest.fixture
def run_dir(tmp_path) -> Path:
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "results.json").write_text(json.dumps(results_doc()))
    machine = reports / "benchmarks" / "Linux-CPython-3.11-64bit"
    machine.mkdir(parents=True)
    _bench_run(machine, 1, "2024-07-25T10:00:00+00:00", 60.0)
    _bench_run(machine, 2, "2024-07-26T10:00:00+00:00", 66.0)
    golden = tmp_path / "golden" / "test_templates"
    golden.mkdir(parents=True)
    (golden / "test_render[smol,single-user,gen,hf].json").write_text('{\n  "prompt": "hi"\n}\n')
    (golden / "test_render[set@Qwen2.5,single-user,gen,hf].json").write_text('{"prompt": "q"}\n')
    (golden / "test_render[set@Qwen2.5,single-user,gen,hf].1.json").write_text('{"prompt": "q1"}\n')
    (golden / "test_render[other,single-user,gen,hf].json").write_text('{"prompt": "not used"}\n')
    return reports


def test_report_files_matrix_links_and_failure_details(run_dir):
    written = report.build_report(run_dir, golden_dir=run_dir.parent / "golden")
    assert set(written) == {"goldens", "chart", "html", "md"}
    page = (run_dir / "report.html").read_text()
    md = (run_dir / "report.md").read_text()
    # every cell links to an anchor that exists, in both formats
    for link in re.findall(r'href="#([^"]+)"', page):
        assert f'id="{link}"' in page, link
    for link in re.findall(r"\]\(#([^)]+)\)", md):
        assert f'<a id="{link}"></a>' in md, link
    a = report.anchor("smol", "templates", "llama-server")
    assert f'href="#{a}"' in page and f"(#{a})" in md
    # the failure's section names the case file and line and carries the diff
    section = page.split(f'id="{a}"')[1].split("<h3")[0]
    assert "cases/smol.yaml:3" in section and "+++ llama-server" in section and "failed" in section
    md_section = md.split(f'<a id="{a}"></a>')[1].split("<a id=")[0]
    assert "`cases/smol.yaml:3`" in md_section and "+++ llama-server" in md_section
    # skips are grouped by reason; template-set failures name the template
    assert "×2: unsupported: no tools" in page and "set@Qwen2.5" in page
    # throughput: the latest run's table and the history chart
    assert "66.0" in md and "throughput.svg" in md and '<img src="throughput.svg"' in page
    assert "over 2 saved run(s)" in md and "Harness overhead" in md and "57000 items" in md and "0002_run" in md


def test_chart_is_valid_svg_with_one_line_per_model_and_backend(run_dir):
    report.build_report(run_dir)
    root = ET.parse(run_dir / "throughput.svg").getroot()
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{ns}polyline")
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert "smol / llama-cpp-python" in texts and "smol / llama-server" in texts
    assert len(lines) == 2 * 3                 # 2 series x 3 panels, 2 runs each


def test_goldens_json_holds_the_goldens_this_run_used(run_dir):
    report.build_report(run_dir, golden_dir=run_dir.parent / "golden")
    doc = json.loads((run_dir / "goldens.json").read_text())
    assert doc["format"] == report.GOLDENS_FORMAT
    assert set(doc["files"]) == {"test_templates/test_render[smol,single-user,gen,hf].json",
                                 "test_templates/test_render[set@Qwen2.5,single-user,gen,hf].json",
                                 "test_templates/test_render[set@Qwen2.5,single-user,gen,hf].1.json"}
    assert doc["files"]["test_templates/test_render[smol,single-user,gen,hf].json"] == '{\n  "prompt": "hi"\n}\n'


def test_no_benchmarks_no_chart(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(results_doc()))
    written = report.build_report(tmp_path, benchmarks_dir=tmp_path / "none")
    assert "chart" not in written and "No saved benchmark runs" in (tmp_path / "report.md").read_text()


def test_write_report_never_raises(tmp_path, capsys):
    assert report.write_report(tmp_path / "missing") is None
    assert "could not write the report" in capsys.readouterr().err


def report_of(folder: Path, *tests: dict) -> str:
    """report.html of a run with these records."""
    (folder / "results.json").write_text(json.dumps(results_doc(list(tests))))
    report.build_report(folder)
    return (folder / "report.html").read_text()


def test_html_escapes_messages(tmp_path):
    page = report_of(tmp_path, rec("harness/suite/test_templates.py::test_render[s,c,gen,hf]", "failed", "s",
                                   "templates.render", "hf", "<script>alert(1)</script>"))
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page   # (the page has its own script)


# --- a real suite run writes the report ------------------------------------------------------------------
def test_suite_run_writes_report_and_goldens(pytester, case_tree, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cases = pytester.path / "cases"
    shutil.copytree(case_tree, cases)
    shutil.copy(CASES / "llama-cpp-templates.yaml", cases / "llama-cpp-templates.yaml")
    reports = pytester.path / "reports"
    result = pytester.runpytest_subprocess(str(SUITE / "test_templates.py"), f"--cases={cases}",
                                f"--golden-dir={pytester.path / 'golden'}", f"--report-dir={reports}",
                                "--case=llama-cpp-templates@Qwen-QwQ*", "--backend=hf", "--backend=llama-cpp-python",
                                "--snapshot-update", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    for name in ("results.json", "report.html", "report.md", "goldens.json"):
        assert (reports / name).is_file(), name
    goldens = json.loads((reports / "goldens.json").read_text())["files"]
    assert goldens and all(k.startswith("test_templates/test_render[llama-cpp-templates@Qwen-QwQ") for k in goldens)
    md = (reports / "report.md").read_text()
    assert "| llama-cpp-templates |" in md


# --- the report leads with the verdict ----------------------------------------------------------------------
def test_report_opens_with_the_verdict_and_what_needs_attention_provenance_last(run_dir):
    report.build_report(run_dir)
    page = (run_dir / "report.html").read_text()
    md = (run_dir / "report.md").read_text()
    # the verdict comes before any section, then the failures with file:line, backend and diff
    assert page.index('class="verdict bad"') < page.index("<h2")
    assert "<b>FAILED</b>: 1 failed, 1 errors, 0 unexpected passes" in page
    att = page[page.index('id="attention"'):page.index('id="matrix"')]
    assert "cases/smol.yaml:3" in att and "llama-server" in att and "+++ llama-server" in att
    assert "cases/set.yaml:7" in att and ">error<" in att
    assert page.index('id="attention"') < page.index('id="matrix"') < page.index('id="details"') \
        < page.index('id="provenance"')
    prov = page[page.index('id="provenance"'):]
    assert "smol.gguf" in prov and "llama-cpp-python 0.3.36" in prov
    assert md.index("**FAILED**") < md.index("## Needs attention") < md.index("## Matrix") < md.index("## Details") \
        < md.index("## Provenance")
    assert "`cases/smol.yaml:3` llama-server" in md.split("## Matrix")[0]


def test_matrix_fits_a_laptop_screen_sticky_collapsing_filterable(run_dir):
    report.build_report(run_dir)
    page = (run_dir / "report.html").read_text()
    assert "position:sticky" in page and 'id="only-bad"' in page and "collapse all families" in page
    # every family header carries its column count and whether it holds a failing cell
    fams = re.findall(r'<th class="fam" colspan="(\d+)" data-fam="(\d+)" data-n="(\d+)" data-bad="(\d)"', page)
    assert [(f[0] == f[2], f[3]) for f in fams] == [(True, "0"), (True, "1")]    # case_files ok, templates failing
    # failing rows first, and marked for the filter
    matrix = page[page.index('id="matrix"'):page.index("</table>", page.index('id="matrix"'))]
    rows = re.findall(r"<tr( class=bad)?><th>([^<]+)</th>", matrix)
    assert rows[:2] == [(" class=bad", "set"), (" class=bad", "smol")] and rows[2] == ("", "gemma")


def test_a_strict_xpass_is_an_unexpected_pass(tmp_path):
    page = report_of(tmp_path, rec("harness/suite/test_tokenizer.py::test_roundtrip[g,hf]", "failed", "g",
                                   "tokenizer.roundtrip", "hf", "[XPASS(strict)] known defect (cases/g.yaml:9): claimed loss"))
    assert "0 failed, 0 errors, 1 unexpected passes" in page and ">unexpected pass<" in page
    assert "**unexpected pass** `cases/g.yaml:3` hf" in (tmp_path / "report.md").read_text()


def test_a_clean_run_says_passed(tmp_path):
    page = report_of(tmp_path, rec("harness/suite/test_templates.py::test_render[s,c,gen,hf]", "passed", "s",
                                   "templates.render", "hf"))
    assert 'class="verdict good"><b>PASSED</b>: nothing failed' in page and 'id="attention"' not in page


def test_stable_message_elides_addresses_before_cutting():
    from harness.session import MESSAGE_CHARS, stable_message
    tail = "x" * (MESSAGE_CHARS - 8)
    a = stable_message("<object at 0x7f3f024d85e0>" + tail)
    b = stable_message("<object at 0x7fe9b2a6a520>" + tail)
    assert a == b and len(a) == MESSAGE_CHARS
    assert stable_message("[gw1] linux -- Python 3.11.7 /x\nboom at 0x7f3f024d85e0") == "boom at 0x…"


def test_harness_time_table_per_check_and_phase(run_dir):
    """The newest saved run with per-check phase figures gives the report its Harness time table."""
    machine = run_dir / "benchmarks" / "Linux-CPython-3.11-64bit"
    doc = json.loads((machine / "0002_run.json").read_text())
    doc["harness"]["overhead"].update(
        by_check_phase_s={"hostile.test_hostile_template": {
            "tests": 115, "backend": 90.0, "input generation": 0.0, "rendering": 0.5, "isolation": 1.5,
            "goldens": 0.0, "comparison": 8.0}},
        session_phases_s={"process start": 2.0, "collection": 1.0, "reporting": 3.0})
    (machine / "0002_run.json").write_text(json.dumps(doc))
    report.build_report(run_dir, benchmarks_dir=run_dir / "benchmarks")
    md = (run_dir / "report.md").read_text()
    assert "## Harness time" in md and "process start 2.0 s, collection 1.0 s, reporting 3.0 s" in md
    assert "| `hostile.test_hostile_template` | 115 | 90.00 | 0.00 | 0.50 | 1.50 | 0.00 | 8.00 | 10.0 |" in md
    page = (run_dir / "report.html").read_text()
    assert '<h2 id="harness-time">Harness time</h2>' in page and "hostile.test_hostile_template" in page
