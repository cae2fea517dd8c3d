"""harness/run/shard.py: --shard K/N keeps whole cases together, balances by expected cost, is
deterministic, and the union of the shards is exactly the unsharded run (also through pytest,
with a real collection of the suite over the repository's case files)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import sys
from collections import Counter

import pytest

from conftest import CASES, REPO, SUITE
from harness.run import shard
from harness.cli import main


def units(spec: dict[str, list[float]]) -> list[shard.Unit]:
    return [shard.Unit(f"m::t[{key},{i}]", key, cost) for key, costs in spec.items() for i, cost in enumerate(costs)]


def test_parse_spec():
    assert shard.ShardSpec.parse("2/3") == shard.ShardSpec(2, 3) and str(shard.ShardSpec(2, 3)) == "2/3"
    for bad in ("0/2", "3/2", "a/b", "1", "1/0"):
        with pytest.raises(ValueError, match="--shard"):
            shard.ShardSpec.parse(bad)


def test_plan_keeps_cases_whole_and_balances_cost():
    us = units({"big": [10.0], "a": [3.0, 3.0], "b": [2.0, 2.0, 1.0], "c": [4.0], "d": [1.0]})
    costs = shard.unit_costs(us, {}, None)
    assert costs == {"big": 10.0, "a": 6.0, "b": 5.0, "c": 4.0, "d": 1.0}
    plan = shard.plan(costs, 2)
    load = Counter()
    for key, s in plan.items():
        load[s] += costs[key]
    assert plan["big"] == 1 and load == {1: 14.0, 2: 12.0}        # greedy: 10+4 / 6+5+1
    assert shard.plan(dict(reversed(list(costs.items()))), 2) == plan   # input order does not matter


def test_measured_durations_win_and_fill_in_by_check(tmp_path):
    us = [shard.Unit("m::t[a,1]", "a", 0.1, "templates.render"), shard.Unit("m::t[a,2]", "a", 0.1, "templates.render"),
          shard.Unit("m::t[b,1]", "b", 0.1, "other.x")]
    f = tmp_path / "results.json"
    f.write_text(json.dumps({"tests": [{"nodeid": "m::t[a,1]", "duration": 8.0}]}))
    durations, digest = shard.load_durations(tmp_path)
    assert durations == {"m::t[a,1]": 8.0} and len(digest) == 64
    # the unmeasured check of a measured kind takes its mean; an unknown kind its estimate; no load added
    assert shard.unit_costs(us, {"a": 50.0}, durations) == {"a": 16.0, "b": 0.1}
    assert shard.unit_costs(us, {"a": 50.0}, None) == {"a": 50.2, "b": 0.1}
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a results.json"):
        shard.load_durations(tmp_path / "bad.json")


def test_every_unit_in_exactly_one_shard_and_digest_is_stable():
    us = units({f"case-{i}": [float(i % 7)] * (i % 5 + 1) for i in range(40)})
    costs = shard.unit_costs(us, {}, None)
    for n in (1, 2, 3, 5):
        plan = shard.plan(costs, n)
        assert set(plan) == set(costs) and set(plan.values()) <= set(range(1, n + 1))
        assert shard.plan_digest(plan, n) == shard.plan_digest(shard.plan(costs, n), n)
    assert shard.plan_digest(shard.plan(costs, 2), 2) != shard.plan_digest(shard.plan(costs, 3), 3)


def test_cli_refuses_bad_shard_options(capsys):
    assert main(["run", "--shard", "3/2"]) == 2
    assert "K must be between 1 and N" in capsys.readouterr().err
    assert main(["run", "--durations", "x.json"]) == 2
    assert "give --shard K/N too" in capsys.readouterr().err


# --- through pytest: a collection of the real suite -------------------------------------------------------
def _collect(*extra: str) -> list[str]:
    # a shard writes its results.json even when it only collects: never into the checkout's reports/
    # (it replaced the last `make conformance` results there)
    reports = tempfile.mkdtemp(prefix="shard-collect-")
    cmd = [sys.executable, "-m", "pytest", str(SUITE / "test_templates.py"), str(SUITE / "test_case_files.py"),
           f"--rootdir={REPO}", "-p", "no:cacheprovider", f"--cases={CASES}", f"--report-dir={reports}",
           "--collect-only", "-q",
           "--case=llama-cpp-templates@Qwen*", "--case=vocab-*", *extra]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    finally:
        shutil.rmtree(reports, ignore_errors=True)
    assert proc.returncode in (0, 5), proc.stdout[-2000:] + proc.stderr[-2000:]
    return [ln for ln in proc.stdout.splitlines() if "::" in ln]


def test_shards_of_a_real_collection_are_a_partition_by_case():
    whole = _collect()
    parts = [_collect(f"--shard={k}/3") for k in (1, 2, 3)]
    assert len(whole) > 100 and all(parts)
    assert sorted(sum(parts, [])) == sorted(whole)                   # the same multiset
    cases = [{i.split("[", 1)[1].split(",")[0].rstrip("]") for i in p if "[" in i} for p in parts]
    assert not (cases[0] & cases[1]) and not (cases[0] & cases[2]) and not (cases[1] & cases[2])
    assert _collect("--shard=2/3") == parts[1]                       # the same again


def test_an_empty_shard_says_so_exits_0_and_writes_its_results(tmp_path):
    # one case (one unit) and a few empty parametrizations (a unit each), 20 shards: the last gets nothing
    reports = tmp_path / "r"
    cmd = [sys.executable, "-m", "pytest", str(SUITE / "test_templates.py"), f"--rootdir={REPO}", "-p",
           "no:cacheprovider", f"--cases={CASES}", f"--report-dir={reports}", "--golden-dir", str(tmp_path / "g"),
           "--case=llama-cpp-templates@Qwen-QwQ-32B", "--backend=hf", "--shard=20/20", "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "shard 20/20: no checks in this shard" in proc.stdout
    doc = json.loads((reports / "results.json").read_text())
    assert doc["tests"] == [] and doc["shard"]["index"] == 20 and doc["shard"]["total"] == 20
    assert doc["shard"]["units_total"] < 20 and doc["shard"]["items"] == 0 and doc["exitstatus"] == 0
