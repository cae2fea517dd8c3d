"""harness/bench/ratios.py: the cross-backend headline of `harness bench` and the ratio moves that
`harness compare` flags, computed from stored benchmark runs (no timing in these tests)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.bench import ratios as br
from harness.report import compare
from harness.cli import main as cli_main

DATA = Path(__file__).parent / "data"


def row(case, backend, constraint, tg, pp=300.0, n_vocab=49152, stdev=0.0, text="t", rounds=3):
    return {"kind": "throughput", "case": case, "backend": backend, "constraint": constraint, "rounds": rounds,
            "n_vocab": n_vocab, "tg_tps": {"mean": tg, "stdev": stdev}, "pp_tps": {"mean": pp, "stdev": stdev},
            "text_sha256": [text]}


def doc(rows):
    return {"datetime": "2026-12-02T00:00:00", "machine_info": {}, "benchmarks": [
        {"name": f"test_throughput[{r['case']},{r['constraint']},{r['backend']}]",
         "fullname": f"harness/bench_suite/test_throughput.py::test_throughput[{r['case']},{r['constraint']},{r['backend']}]",
         "stats": {"mean": 1.0, "stddev": 0.01, "rounds": r["rounds"]}, "extra_info": r} for r in rows]}


SMALL, BIG = 49152, 262144
BEFORE = [row("smol", "llama-server", "gbnf", 80.0), row("smol", "llama-cpp-python", "gbnf", 50.0),
          row("gemma", "llama-server", "gbnf", 56.0, n_vocab=BIG), row("gemma", "llama-cpp-python", "gbnf", 21.0, n_vocab=BIG),
          row("gemma", "llama-cpp-python", "none", 40.0, n_vocab=BIG)]    # no server row: no ratio


def test_ratio_per_model_and_constraint_against_llama_server():
    rs = {(r.case, r.constraint, r.kind): r for r in br.cross_backend_ratios(BEFORE)}
    assert set(rs) == {(c, "gbnf", k) for c in ("smol", "gemma") for k in ("tg", "pp")}
    assert rs["smol", "gbnf", "tg"].ratio == pytest.approx(50 / 80)
    assert rs["gemma", "gbnf", "tg"].ratio == pytest.approx(21 / 56)
    assert rs["gemma", "gbnf", "pp"].ratio == pytest.approx(1.0)
    assert all(r.reference == "llama-server" and r.backend == "llama-cpp-python" and r.same_text for r in rs.values())


def test_rows_whose_texts_differ_are_marked_not_like_for_like():
    rows = [row("smol", "llama-server", "none", 90.0, text="a"), row("smol", "llama-cpp-python", "none", 85.0, text="b")]
    (tg,) = [r for r in br.cross_backend_ratios(rows) if r.kind == "tg"]
    assert tg.same_text is False
    assert "DIFFERS" in br.format_ratios([tg])[2]


def test_standard_error_comes_from_both_sides_rounds():
    rows = [row("smol", "llama-server", "none", 100.0, stdev=3.0, rounds=9),
            row("smol", "llama-cpp-python", "none", 50.0, stdev=2.0, rounds=4)]
    (tg,) = [r for r in br.cross_backend_ratios(rows) if r.kind == "tg"]
    assert tg.stderr == pytest.approx(0.5 * math.sqrt((1 / 100) ** 2 + (1 / 50) ** 2))


def test_vocab_scaling_orders_by_vocab_and_gives_the_change_per_doubling():
    (g,) = [g for g in br.vocab_scaling(br.cross_backend_ratios(BEFORE)) if g["kind"] == "tg"]
    assert [n for n, _, _ in g["points"]] == [SMALL, BIG]
    expected = (21 / 56 - 50 / 80) / math.log2(BIG / SMALL)
    assert g["per_doubling"] == pytest.approx(expected)
    line = [ln for ln in br.format_scaling(br.cross_backend_ratios(BEFORE)) if " tg, gbnf" in ln][0]
    assert "0.62x at 49,152 (smol) -> 0.38x at 262,144 (gemma)" in line and "per doubling" in line


def test_one_vocab_size_has_no_trend():
    (g,) = [g for g in br.vocab_scaling(br.cross_backend_ratios(BEFORE[:2])) if g["kind"] == "tg"]
    assert g["per_doubling"] is None


def test_a_moved_ratio_is_flagged_and_a_steady_one_is_not():
    after = [dict(r) for r in BEFORE]
    after[3] = row("gemma", "llama-cpp-python", "gbnf", 50.0, n_vocab=BIG)      # the grammar path got fixed
    after[1] = row("smol", "llama-cpp-python", "gbnf", 52.0)                      # +4%: under the threshold
    moves, compared = br.diff_ratios(BEFORE, after)
    assert compared == 4
    assert [(m.old.case, m.old.kind) for m in moves] == [("gemma", "tg")]
    assert moves[0].change == pytest.approx((50 / 56) / (21 / 56) - 1)
    assert moves[0].direction == "closer to the reference"
    assert br.diff_ratios(BEFORE, after, threshold=0.02)[0][-1].old.case == "smol"


def test_a_move_within_noise_is_not_flagged():
    noisy_before = [row("s", "llama-server", "none", 100.0, stdev=30.0), row("s", "llama-cpp-python", "none", 50.0, stdev=15.0)]
    noisy_after = [row("s", "llama-server", "none", 100.0, stdev=30.0), row("s", "llama-cpp-python", "none", 60.0, stdev=15.0)]
    assert br.diff_ratios(noisy_before, noisy_after)[0] == []


def test_harness_compare_flags_a_ratio_move_between_two_saved_runs(tmp_path, capsys):
    after = [dict(r) for r in BEFORE]
    after[3] = row("gemma", "llama-cpp-python", "gbnf", 10.0, n_vocab=BIG)      # worse
    a, b = tmp_path / "0001_before.json", tmp_path / "0002_after.json"
    a.write_text(json.dumps(doc(BEFORE)))
    b.write_text(json.dumps(doc(after)))
    rc = cli_main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp"), "--fail-on-change"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "cross-backend ratios: 1 of 4 moved (>= 10%" in out
    assert "| `gemma` | gbnf | llama-cpp-python / llama-server | tg | 0.375 | 0.179 | -52.4%" in out
    assert "further from the reference" in out
    assert "Cross-backend ratios that moved" in (tmp_path / "cmp" / "compare.html").read_text()
    rc = cli_main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp2"), "--ratio-threshold", "0.9", "--quiet"])
    assert "cross-backend ratios: 0 of 4 moved (>= 90%" in capsys.readouterr().out


def test_the_stored_issue_19_run_gives_its_headline_and_a_fix_is_flagged(tmp_path):
    """tests/data/bench_issue19.json: the tg figures of the bench run quoted in issue 19, as a saved
    run. Its headline: the binding's constrained generation at 0.37x llama-server on Gemma's 262k
    vocab and 0.63x on SmolLM2's 49k. A run where the grammar path no longer costs more than the
    unconstrained one is flagged, the others are not."""
    stored = DATA / "bench_issue19.json"
    old = compare.load_result_set(stored)
    rs = {(r.case, r.constraint): r for r in br.cross_backend_ratios(br.throughput_rows(old.bench.doc))}
    assert round(rs["gemma3-270m", "gbnf"].ratio, 2) == 0.37
    assert round(rs["smollm2-135m-instruct", "gbnf"].ratio, 2) == 0.63
    assert round(rs["smollm2-135m-instruct", "none"].ratio, 2) == 0.91
    assert all(r.kind == "tg" and r.same_text is None for r in rs.values())
    (g,) = [g for g in br.vocab_scaling(list(rs.values())) if g["constraint"] == "gbnf"]
    assert g["per_doubling"] < 0                                     # worse the larger the vocab

    fixed = json.loads(stored.read_text())
    for b in fixed["benchmarks"]:
        info = b["extra_info"]
        if info["backend"] == "llama-cpp-python" and info["case"] == "gemma3-270m" and info["constraint"] == "gbnf":
            info["tg_tps"]["mean"] = 51.0
    (tmp_path / "fixed.json").write_text(json.dumps(fixed))
    c = compare.compare(old, compare.load_result_set(tmp_path / "fixed.json"))
    assert (c.ratios_compared, [(m.old.case, m.old.constraint, m.direction) for m in c.ratios]) == (
        4, [("gemma3-270m", "gbnf", "closer to the reference")])
