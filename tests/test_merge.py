"""harness/report/merge.py: shard folders joined into one result set, and every bad merge refused with
a message naming the folders and the values (different stacks, duplicate, missing or foreign
shards, an empty shard's folder missing its results); compare and review read the merged folder."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.report import compare
from harness.report import merge
from harness.cli import main

PLAN = "p" * 64


def rec(nodeid: str, outcome: str, case: str, message: str = "") -> dict:
    return {"nodeid": f"harness/suite/test_templates.py::{nodeid}", "outcome": outcome, "duration": 0.5,
            "case": case, "check": "templates.render", "location": f"cases/{case}.yaml:3",
            "params": {"case": case, "backend": "hf"}, "backend_info": None, "message": message}


def doc(index: int, total: int, tests: list[dict], **prov) -> dict:
    return {"format": "llm-harness-results/1", "finished": f"2026-12-0{index}T00:00:00+00:00",
            "exitstatus": 1 if any(t["outcome"] == "failed" for t in tests) else (0 if tests else 0),
            "provenance": {"python": "3.11.9", "platform": "Linux", "threads": 1, "seed": 1234,
                           "packages": {"llama-cpp-python": "0.3.36", "transformers": "5.23.0"}, "args": [], **prov},
            "models": {}, "memory": {"processes_mib": {"controller": 100 * index}, "upper_bound_mib": 100 * index,
                                     "llama_server_peaks_mib": []},
            "errors": [], "counts": {}, "tests": tests,
            "shard": {"index": index, "total": total, "spec": f"{index}/{total}", "plan": PLAN}}


def junit(names: list[str]) -> str:
    cases = "".join(f'<testcase classname="harness.suite.test_templates" name="{n}" time="0.5"/>' for n in names)
    return (f'<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" '
            f'errors="0" failures="0" skipped="0" tests="{len(names)}" time="1.0" timestamp="2026-12-01T00:00:00" '
            f'hostname="runner">{cases}</testsuite></testsuites>')


def write_shard(folder: Path, d: dict, goldens: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(d))
    if goldens is not None:
        (folder / "goldens.json").write_text(json.dumps({"format": "llm-harness-goldens/1", "golden_dir": "/g",
                                                         "files": goldens}))
    (folder / "junit.xml").write_text(junit([t["nodeid"].split("::")[1] for t in d["tests"]]))
    return folder


@pytest.fixture
def shards(tmp_path) -> list[Path]:
    a = [rec("test_render[a,x,gen,hf]", "passed", "a"), rec("test_render[a,y,gen,hf]", "failed", "a", "E  Mismatch: boom")]
    b = [rec("test_render[b,x,gen,hf]", "passed", "b")]
    return [write_shard(tmp_path / "s1", doc(1, 3, a), {"test_templates/test_render[a,x,gen,hf].json": "A\n"}),
            write_shard(tmp_path / "s2", doc(2, 3, b), {"test_templates/test_render[b,x,gen,hf].json": "B\n"}),
            write_shard(tmp_path / "s3", doc(3, 3, []), {})]                 # an empty shard is a shard


def test_merge_joins_results_goldens_junit_and_writes_the_report(shards, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["merge", *map(str, reversed(shards)), "--out", str(out)]) == 0
    assert "merged 3 shard(s), 3 checks" in capsys.readouterr().out
    d = json.loads((out / "results.json").read_text())
    assert [t["nodeid"].split("::")[1] for t in d["tests"]] == [
        "test_render[a,x,gen,hf]", "test_render[a,y,gen,hf]", "test_render[b,x,gen,hf]"]
    assert d["counts"] == {"passed": 2, "failed": 1} and d["exitstatus"] == 1 and "shard" not in d
    assert [s["shard"] for s in d["merged"]["shards"]] == ["1/3", "2/3", "3/3"] and d["merged"]["mixed"] == []
    assert d["memory"]["upper_bound_mib"] == 300 and "shard 2/3 controller" in d["memory"]["processes_mib"]
    g = json.loads((out / "goldens.json").read_text())
    assert g["files"] == {"test_templates/test_render[a,x,gen,hf].json": "A\n",
                          "test_templates/test_render[b,x,gen,hf].json": "B\n"}
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "3" and [c.get("name") for c in suite.findall("testcase")] == [
        "test_render[a,x,gen,hf]", "test_render[a,y,gen,hf]", "test_render[b,x,gen,hf]"]
    page = (out / "report.html").read_text()
    assert "FAILED" in page and "cases/a.yaml:3" in page and (out / "report.md").is_file()
    # compare and review read the merged folder as a single run
    c = compare.compare(compare.load_result_set(out), compare.load_result_set(out))
    assert not c.has_changes
    assert main(["review", "--report-dir", str(out), "--golden-dir", str(tmp_path / "nogoldens")]) == 0
    assert "a (cases/a.yaml:3)" in capsys.readouterr().out


def test_merge_is_independent_of_the_order_of_the_folders(shards, tmp_path):
    merge.merge(shards, tmp_path / "m1")
    merge.merge(list(reversed(shards)), tmp_path / "m2")
    for name in ("results.json", "goldens.json", "junit.xml"):
        assert (tmp_path / "m1" / name).read_bytes() == (tmp_path / "m2" / name).read_bytes(), name


def _refused(dirs, capsys, *extra) -> str:
    assert main(["merge", *map(str, dirs), "--out", str(Path(dirs[0]).parent / "out"), *extra]) == 2
    return capsys.readouterr().err


def test_refuses_different_stacks_naming_both_values(shards, tmp_path, capsys):
    d = json.loads((shards[1] / "results.json").read_text())
    d["provenance"]["packages"]["transformers"] = "5.22.1"
    (shards[1] / "results.json").write_text(json.dumps(d))
    err = _refused(shards, capsys)
    assert "different stacks" in err and "transformers version: '5.23.0' in" in err and "'5.22.1' in" in err
    assert str(shards[0]) in err and str(shards[1]) in err and "--allow-mixed" in err
    # --allow-mixed merges and marks the mix, in results.json and at the top of the report
    assert main(["merge", *map(str, shards), "--out", str(tmp_path / "mixed"), "--allow-mixed"]) == 0
    mixed = json.loads((tmp_path / "mixed" / "results.json").read_text())["merged"]["mixed"]
    assert [m["key"] for m in mixed] == ["transformers version"]
    page = (tmp_path / "mixed" / "report.html").read_text()
    assert page.index("MIXED STACKS") < page.index("<h2")
    assert "MIXED STACKS" in (tmp_path / "mixed" / "report.md").read_text()


@pytest.mark.parametrize("lock_b", [{"file": "constraints.txt", "sha256": "b" * 64}, None])
def test_refuses_different_lock_files_a_missing_one_included(tmp_path, capsys, lock_b):
    lock_a = {"file": "constraints.txt", "sha256": "a" * 64}
    prov_b = {"lock": lock_b} if lock_b else {}
    dirs = [write_shard(tmp_path / "s1", doc(1, 2, [rec("t[a]", "passed", "a")], lock=lock_a)),
            write_shard(tmp_path / "s2", doc(2, 2, [rec("t[b]", "passed", "b")], **prov_b))]
    err = _refused(dirs, capsys)
    assert "lock file:" in err and "a" * 64 in err and ("b" * 64 if lock_b else "(not recorded)") in err


def test_refuses_different_llama_cpp_trees(tmp_path, capsys):
    def server(case, tree):
        t = rec(f"t[{case},llama-server]", "passed", case)
        t["backend_info"] = {"backend": "llama-server", "tree_hash": tree, "server_version": "b1"}
        return t
    dirs = [write_shard(tmp_path / "s1", doc(1, 3, [server("a", "tree1")])),
            write_shard(tmp_path / "s2", doc(2, 3, [server("b", "tree2")])),
            write_shard(tmp_path / "s3", doc(3, 3, [rec("t[c]", "passed", "c")]))]   # no server: no say
    err = _refused(dirs, capsys)
    assert "llama.cpp tree (llama-server): 'tree1 (b1)' in" in err and "'tree2 (b1)'" in err
    assert str(dirs[2]) not in err


def test_refuses_a_duplicate_shard(shards, tmp_path, capsys):
    dup = write_shard(tmp_path / "again", json.loads((shards[1] / "results.json").read_text()))
    err = _refused([*shards, dup], capsys)
    assert f"shard 2/3 given twice: {shards[1]} and {dup}" in err


def test_refuses_a_missing_shard(shards, capsys):
    err = _refused([shards[0], shards[2]], capsys)
    assert "shard(s) 2/3 missing" in err and f"1/3 ({shards[0]})" in err and f"3/3 ({shards[2]})" in err


def test_refuses_a_shard_folder_without_results_and_shards_of_another_n(shards, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = _refused([*shards, tmp_path / "empty"], capsys)
    assert f"{tmp_path / 'empty'}: no results.json" in err
    other = write_shard(tmp_path / "other", doc(2, 2, []))
    err = _refused([shards[0], other], capsys)
    assert f"{shards[0]} is shard 1/3 but {other} is shard 2/2" in err


def test_refuses_shards_of_different_plans_and_a_check_in_two_shards(shards, tmp_path, capsys):
    d = json.loads((shards[2] / "results.json").read_text())
    d["shard"]["plan"] = "q" * 64
    (shards[2] / "results.json").write_text(json.dumps(d))
    err = _refused(shards, capsys)
    assert "planned from different collections or --durations files" in err and "q" * 64 in err
    d["shard"]["plan"] = PLAN
    d["tests"] = [rec("test_render[a,x,gen,hf]", "passed", "a")]
    (shards[2] / "results.json").write_text(json.dumps(d))
    err = _refused(shards, capsys)
    assert "test_render[a,x,gen,hf] is in two shards" in err


def test_merged_report_lists_changes_against_a_baseline(shards, tmp_path):
    merge.merge(shards, tmp_path / "base")
    base = json.loads((tmp_path / "base" / "results.json").read_text())
    new = copy.deepcopy(base)
    new["tests"][0]["outcome"], new["tests"][0]["message"] = "failed", "E  Mismatch: renders differently\nE  -a\nE  +b"
    (tmp_path / "base" / "results.json").write_text(json.dumps(base))
    s1 = json.loads((shards[0] / "results.json").read_text())
    s1["tests"][0] = {**s1["tests"][0], "outcome": "failed", "message": new["tests"][0]["message"]}
    (shards[0] / "results.json").write_text(json.dumps(s1))
    merge.merge(shards, tmp_path / "now", baseline=tmp_path / "base")
    page = (tmp_path / "now" / "report.html").read_text()
    md = (tmp_path / "now" / "report.md").read_text()
    top = page.index('id="changes"')
    assert top < page.index('id="matrix"') < page.index('id="provenance"')
    assert "new findings (1)" in page and "test_render[a,x,gen,hf]" in page[top:page.index('id="matrix"')]
    assert "1 check changed status (1 new finding, 0 fixed)" in md.split("## Matrix")[0] and "Δ" in md


def test_stale_goldens_are_found_when_every_shard_ran_whole_modules(shards, tmp_path, capsys):
    golden = tmp_path / "golden" / "test_templates"
    golden.mkdir(parents=True)
    (golden / "test_render[a,x,gen,hf].json").write_text("A\n")
    (golden / "test_render[gone,x,gen,hf].json").write_text("old\n")
    args = ["merge", *map(str, shards), "--out", str(tmp_path / "m"), "--golden-dir", str(tmp_path / "golden")]
    assert main(args) == 0                                   # shards of a --case selection: not checked
    for s in shards:
        d = json.loads((s / "results.json").read_text())
        d["shard"]["whole_modules"] = True
        (s / "results.json").write_text(json.dumps(d))
    assert main(args) == 1
    assert "test_templates/test_render[gone,x,gen,hf].json" in capsys.readouterr().err
    assert json.loads((tmp_path / "m" / "results.json").read_text())["stale_goldens"] == {
        "found": ["test_templates/test_render[gone,x,gen,hf].json"]}
