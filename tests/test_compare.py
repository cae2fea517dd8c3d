"""harness/report/compare.py (`harness compare OLD NEW`), and the parity of parallel and serial runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CASES, REPO, SUITE
from harness.report import compare
from harness.cli import main as cli_main


def rec(nodeid, outcome, message="", check="templates.render"):
    return {"nodeid": nodeid, "outcome": outcome, "duration": 0.1, "case": "smol", "check": check,
            "location": "cases/smol.yaml:3", "params": {"backend": "hf"}, "backend_info": None, "message": message}


SNAPSHOT_MSG = ("assert [+ received] == [- snapshot]\n  {\n-   \"prompt\": \"Paris\"\n+   \"prompt\": \"Lyon\"\n  }")


def bench_doc(tg_mean: float, tg_stdev: float, time_mean: float = 1.0) -> dict:
    return {"datetime": "2024-07-26T00:00:00", "machine_info": {}, "benchmarks": [
        {"name": "test_throughput[smol,none,llama-server]", "fullname": "m::test_throughput[smol,none,llama-server]",
         "stats": {"mean": time_mean, "stddev": 0.01, "rounds": 3},
         "extra_info": {"kind": "throughput", "case": "smol", "backend": "llama-server", "constraint": "none",
                        "rounds": 3, "tg_tps": {"mean": tg_mean, "stdev": tg_stdev},
                        "pp_tps": {"mean": 200.0, "stdev": 1.0}}}]}


def make_set(root: Path, tests: list[dict], goldens: dict[str, str], bench: dict | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "results.json").write_text(json.dumps({"tests": tests, "provenance": {}}))
    (root / "goldens.json").write_text(json.dumps({"format": "llm-harness-goldens/1", "files": goldens}))
    if bench is not None:
        d = root / "benchmarks" / "Linux-CPython-3.11-64bit"
        d.mkdir(parents=True)
        (d / "0001_x.json").write_text(json.dumps(bench))
    return root


@pytest.fixture
def two_sets(tmp_path):
    g_old = {"test_templates/test_render[smol,a,gen,hf].json": '{\n  "prompt": "Paris"\n}\n',
             "test_templates/test_prompt_tokens[smol,a,gen,llama-server].json": '{\n  "ids": [1, 2]\n}\n',
             "test_generation/test_grammar[smol,g].json": '{\n  "text": "yes",\n  "finish_reason": "stop"\n}\n',
             "test_toolcalls/test_round_trip[smol].json": '{\n  "tool_calls": []\n}\n',
             "test_templates/test_render[smol,gone,gen,hf].json": '{"prompt": "x"}\n'}
    g_new = dict(g_old)
    g_new["test_templates/test_render[smol,a,gen,hf].json"] = '{\n  "prompt": "Lyon"\n}\n'
    g_new["test_templates/test_prompt_tokens[smol,a,gen,llama-server].json"] = '{\n  "ids": [1, 2, 3]\n}\n'
    g_new["test_toolcalls/test_round_trip[smol].json"] = '{\n  "tool_calls": [{"name": "f"}]\n}\n'
    del g_new["test_templates/test_render[smol,gone,gen,hf].json"]
    g_new["test_templates/test_render[smol,new,gen,hf].json"] = '{"prompt": "y"}\n'
    old_tests = [rec("s::test_render[smol,a,gen,hf]", "passed"), rec("s::test_x[smol,b]", "failed", "was broken"),
                 rec("s::test_y[smol,c]", "passed"), rec("s::test_gone[smol]", "passed")]
    new_tests = [rec("s::test_render[smol,a,gen,hf]", "failed", SNAPSHOT_MSG), rec("s::test_x[smol,b]", "passed"),
                 rec("s::test_y[smol,c]", "passed"), rec("s::test_new[smol]", "skipped", "Skipped: why")]
    old = make_set(tmp_path / "old", old_tests, g_old, bench_doc(100.0, 1.0))
    new = make_set(tmp_path / "new", new_tests, g_new, bench_doc(80.0, 1.0))
    return old, new


def test_lists_changed_goldens_by_kind_with_diffs(two_sets):
    c = compare.compare(compare.load_result_set(two_sets[0]), compare.load_result_set(two_sets[1]))
    changed = {g.path: g for g in c.changed_goldens}
    assert set(changed) == {"test_templates/test_render[smol,a,gen,hf].json",
                            "test_templates/test_prompt_tokens[smol,a,gen,llama-server].json",
                            "test_toolcalls/test_round_trip[smol].json"}
    assert changed["test_templates/test_render[smol,a,gen,hf].json"].category == "rendered prompt"
    assert changed["test_templates/test_prompt_tokens[smol,a,gen,llama-server].json"].category == "token ids"
    assert changed["test_toolcalls/test_round_trip[smol].json"].category == "tool calls"
    diff = changed["test_templates/test_render[smol,a,gen,hf].json"].diff
    assert '-  "prompt": "Paris"' in diff and '+  "prompt": "Lyon"' in diff
    kinds = {g.path: g.kind for g in c.goldens if g.kind != "changed"}
    assert kinds == {"test_templates/test_render[smol,gone,gen,hf].json": "only-old",
                     "test_templates/test_render[smol,new,gen,hf].json": "only-new"}
    assert compare.golden_category('{"text": "a"}') == "generated text"


def test_lists_status_changes_and_snapshot_failures(two_sets):
    c = compare.compare(compare.load_result_set(two_sets[0]), compare.load_result_set(two_sets[1]))
    got = {s.nodeid: (s.old, s.new, s.direction) for s in c.statuses}
    assert got == {"s::test_render[smol,a,gen,hf]": ("passed", "failed", "worse"),
                   "s::test_x[smol,b]": ("failed", "passed", "better"),
                   "s::test_gone[smol]": ("passed", None, "check gone"),
                   "s::test_new[smol]": (None, "skipped", "new check")}
    assert [s.nodeid for s in c.snapshot_failures] == ["s::test_render[smol,a,gen,hf]"]


def test_throughput_change_beyond_noise_only(two_sets, tmp_path):
    old = compare.load_result_set(two_sets[0])
    c = compare.compare(old, compare.load_result_set(two_sets[1]))
    figs = {(f.benchmark, f.metric): f for f in c.throughput}
    f = figs[("test_throughput[smol,none,llama-server]", "generation tok/s")]
    assert f.change == pytest.approx(-0.2) and f.verdict == "worse"
    assert ("test_throughput[smol,none,llama-server]", "prompt tok/s") not in figs      # unchanged
    # the same 20% drop inside very noisy rounds is not reported
    noisy = make_set(tmp_path / "noisy", [], {}, bench_doc(80.0, 40.0))
    c2 = compare.compare(compare.load_result_set(two_sets[0]), compare.load_result_set(noisy))
    assert not [f for f in c2.throughput if f.metric == "generation tok/s"]
    # below --min-change is not reported either
    small = make_set(tmp_path / "small", [], {}, bench_doc(97.0, 0.01))
    c3 = compare.compare(old, compare.load_result_set(small), min_change=0.05)
    assert not [f for f in c3.throughput if f.metric == "generation tok/s"]


def test_identical_sets_have_no_differences(two_sets):
    a = compare.load_result_set(two_sets[0])
    c = compare.compare(a, compare.load_result_set(two_sets[0]))
    assert not c.has_changes and "No differences." in compare.render_markdown(c)


def test_cli_writes_markdown_and_html(two_sets, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert cli_main(["compare", str(two_sets[0]), str(two_sets[1]), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 changed (1 rendered prompt, 1 token ids, 1 tool calls)" in text
    assert "## Checks that changed status" in text and "generation tok/s" in text
    md, page = (out / "compare.md").read_text(), (out / "compare.html").read_text()
    assert "test_render[smol,a,gen,hf].json" in md and "Lyon" in page and "<h2>Changed goldens</h2>" in page
    assert cli_main(["compare", str(two_sets[0]), str(two_sets[1]), "--out", str(out), "--fail-on-change",
                     "--quiet"]) == 1
    assert cli_main(["compare", str(two_sets[0]), str(tmp_path / "missing")]) == 2


def test_a_saved_benchmark_run_alone_is_a_result_set(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(bench_doc(100.0, 0.5)))
    b.write_text(json.dumps(bench_doc(100.0, 0.5, time_mean=1.5)))
    c = compare.compare(compare.load_result_set(a), compare.load_result_set(b))
    assert [(f.metric, f.verdict) for f in c.throughput] == [("benchmark wall time s", "worse")]
    assert "goldens: not compared" in compare.render_markdown(c)


# --- parallel and serial runs give the same results -----------------------------------------------------
def _run(report_dir: Path, golden_dir: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "pytest", str(SUITE / "test_templates.py"), str(SUITE / "test_case_files.py"),
           f"--rootdir={REPO}", "-p", "no:cacheprovider", f"--cases={CASES}", f"--golden-dir={golden_dir}",
           f"--report-dir={report_dir}", "--case=llama-cpp-templates@Qwen*", "--snapshot-update", "-q", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert (report_dir / "results.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((report_dir / "results.json").read_text())


def test_parallel_and_serial_runs_give_identical_results(tmp_path):
    serial = _run(tmp_path / "serial", tmp_path / "golden-serial")
    parallel = _run(tmp_path / "parallel", tmp_path / "golden-parallel", "-n", "2", "--dist", "loadgroup")
    assert parallel["provenance"]["xdist_workers"] == 2

    def outcomes(doc):
        return {t["nodeid"]: (t["outcome"], t.get("check"), t.get("location")) for t in doc["tests"]}
    a, b = outcomes(serial), outcomes(parallel)
    assert len(a) > 100 and a == b
    assert [t["nodeid"] for t in parallel["tests"]] == sorted(b)          # written in a deterministic order
    # and `harness compare` agrees: no status change, and the same goldens written
    c = compare.compare(compare.load_result_set(tmp_path / "serial"), compare.load_result_set(tmp_path / "parallel"))
    assert not c.statuses and not c.goldens, compare.render_markdown(c)
    g1 = json.loads((tmp_path / "serial" / "goldens.json").read_text())["files"]
    assert g1 and g1 == json.loads((tmp_path / "parallel" / "goldens.json").read_text())["files"]
