"""harness/bench/core.py: provenance, the throughput runners on a real model, the overhead probe,
the case declaration and the collection-time helper."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import CASES, REPO
from harness.bench import core as bench


# --- provenance -------------------------------------------------------------------------------
def test_cpu_info_reads_proc_cpuinfo():
    info = bench.cpu_info()
    assert info["logical_cpus"] >= 1
    if Path("/proc/cpuinfo").exists():
        assert info["flags"] == sorted(set(info["flags"])) and len(info["flags"]) > 5
        assert info["model"] and len(info["flags_sha256"]) == 16
    m = bench.machine_info()
    assert set(m["simd"]) <= set(m["cpu_flags"])


def test_llama_cpp_build_info_names_version_commit_and_system_info():
    info = bench.llama_cpp_python_info()
    import llama_cpp
    assert info["llama_cpp_python"] == llama_cpp.__version__
    assert info["ggml_version"] and info["ggml_commit"] and info["llama_version"]
    assert "CPU" in info["system_info"]
    assert all(flag.isupper() or "_" in flag for flag in info["build_flags"])
    if "vendored_tree" in info:              # the sdist tree is in the cache once llama-server was built
        assert len(info["vendored_tree_sha256"]) == 64


def test_server_build_info_never_builds(tmp_path, monkeypatch):
    from harness.run import server_build as sb
    monkeypatch.setattr(sb, "_PROCESS_MEMO", {})
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))           # an empty cache
    info = bench.server_build_info(tree=tmp_path / "nowhere")
    assert info["built"] is False and "reason" in info


def test_gguf_sha256_matches_hashlib_and_is_memoised(tmp_path):
    f = tmp_path / "x.gguf"
    f.write_bytes(b"GGUF" + bytes(range(256)) * 5000)
    assert bench.gguf_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    assert bench.gguf_sha256(f) == bench.gguf_sha256(str(f))


# --- declaration ------------------------------------------------------------------------------------
def test_both_full_models_declare_throughput_for_every_backend_and_constraint():
    from harness.cases.model import discover
    cases = discover(CASES, select=["smollm2-135m-instruct", "gemma3-270m"])
    assert not cases.errors
    items = bench.throughput_items(cases, ["llama-cpp-python", "llama-server"])
    ids = {i.id for i in items}
    for case in ("smollm2-135m-instruct", "gemma3-270m"):
        for constraint in bench.CONSTRAINTS:
            for backend in bench.BACKENDS:
                assert f"{case},{constraint},{backend}" in ids
    # without llama-server present, its benchmarks are not generated (the others are)
    only_llama = bench.throughput_items(cases, ["llama-cpp-python"])
    assert {i.backend for i in only_llama} == {"llama-cpp-python", bench.EVAL_BACKEND}


def test_throughput_key_is_validated(case_tree):
    from harness.cases.model import discover
    text = (CASES / "smollm2-135m-instruct.yaml").read_text()
    bad = text.replace("    gen_tokens: 48\n", "    gen_tokns: 48\n").replace("id: smollm2-135m-instruct", "id: bad")
    (case_tree / "bad.yaml").write_text(bad)
    cases = discover(case_tree)
    assert any("unknown key 'gen_tokns' (did you mean 'gen_tokens'?)" in str(e) for e in cases.errors), cases.errors


# --- prompts, constraints, summaries ---------------------------------------------------------------
def test_prompt_ids_has_exactly_n_tokens():
    def tokenize(text: str) -> list[int]:
        return [1] + [len(w) for w in text.split()]
    for n in (1, 10, 57, 300):
        assert len(bench.prompt_ids(tokenize, n)) == n


def test_constraints_compile_to_gbnf():
    assert bench.constraint_grammar("none") is None
    assert "root ::=" in bench.constraint_grammar("gbnf")
    assert "root ::=" in bench.constraint_grammar("json_schema")
    with pytest.raises(ValueError, match="unknown constraint"):
        bench.constraint_grammar("regex")


def test_sample_rates_and_summary_ratios():
    s = bench.Sample(n_prompt=100, n_gen=11, ttft_s=0.5, total_s=1.5, gen_window_s=1.0,
                     backend_prompt_n=100, backend_prompt_ms=400.0, backend_gen_n=10, backend_gen_ms=1000.0)
    assert s.pp_tps == pytest.approx(200.0) and s.backend_pp_tps == pytest.approx(250.0)
    assert s.tg_tps == pytest.approx(10.0) and s.backend_tg_tps == pytest.approx(10.0)
    summary = bench.summarise([s, s])
    assert summary["pp_ratio"] == pytest.approx(0.8) and summary["tg_ratio"] == pytest.approx(1.0)
    assert summary["rounds"] == 2 and summary["n_gen"] == [11]
    json.dumps(summary)                     # saved in extra_info: must be JSON


# --- the runners, on the real model ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol_llm(smollm2_gguf):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(smollm2_gguf), n_ctx=512, n_threads=1, n_threads_batch=1, verbose=False)
    yield llm
    llm.close()


@pytest.mark.parametrize("constraint", ["none", "gbnf", "json_schema"])
def test_high_level_and_eval_loop_do_the_same_work(smol_llm, constraint):
    high = bench.LlamaRunner(smol_llm, eval_loop=False)
    low = bench.LlamaRunner(smol_llm, eval_loop=True)
    prompt = bench.prompt_ids(high.tokenize, 32)
    a, b = high.run(prompt, 8, constraint), low.run(prompt, 8, constraint)
    for s in (a, b):
        assert s.n_prompt == 32 and s.n_gen == 8
        # llama.cpp's perf counters saw the same request: the whole prompt, and n_gen - 1 decodes
        assert s.backend_prompt_n == 32 and s.backend_gen_n == 7
        assert 0 < s.ttft_s <= s.total_s and s.pp_tps and s.tg_tps
    # greedy: the same text from the high-level API and the eval loop
    assert a.text_sha256 == b.text_sha256


def test_grammar_never_ends_generation_early(smol_llm):
    runner = bench.LlamaRunner(smol_llm, eval_loop=True)
    assert runner.run(bench.prompt_ids(runner.tokenize, 16), 20, "gbnf").n_gen == 20


# --- overhead probe -----------------------------------------------------------------------------------------
def test_wrapped_class_counts_nested_calls_once_and_is_restored():
    class Base:
        def inner(self):
            return 1

    class Fake(Base):
        name = "fake"

        def outer(self):
            return self.inner() + 1

        @staticmethod
        def helper():
            return 3

    probe = bench.OverheadProbe()
    probe.wrap_class("fake", Fake)
    try:
        f = Fake()
        assert f.outer() == 2 and f.inner() == 1 and Fake.helper() == 3
    finally:
        probe.uninstall()
    assert probe.clock.calls == {"fake.outer": 1, "fake.inner": 1}   # inner inside outer: not counted again
    assert "inner" not in vars(Fake) and Fake.inner is Base.inner and Fake.name == "fake"


def test_probe_times_backends_however_they_are_made_and_restores_everything():
    from harness.backends.base import BackendOptions, RenderRequest, backend_class
    cls = backend_class("llama.cpp-builtin")
    original = vars(cls)["render_prompt"]
    probe = bench.OverheadProbe()
    probe.install()
    try:
        backend = cls(None, BackendOptions())          # not through the runtime
        backend.render_prompt(RenderRequest(
            messages=[{"role": "user", "content": "hi"}],
            template="{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"))
    finally:
        probe.uninstall()
    assert vars(cls)["render_prompt"] is original
    assert probe.clock.calls["llama.cpp-builtin.__init__"] == 1
    assert probe.clock.calls["llama.cpp-builtin.render_prompt"] == 1
    assert probe.clock.total > 0


def test_max_inprocess_loads():
    loads = {"a.gguf": {"llama_cpp.Llama": 1, "child process (llama-server)": 2},
             "b.gguf": {"gguf.GGUFReader (metadata, mmap)": 9}}
    assert bench.max_inprocess_loads(loads) == 1


def test_collection_time_of_generated_cases(tmp_path):
    fig = bench.collection_time(5, CASES, tmp_path)
    assert fig["cases"] == 5 and fig["exit_code"] == 0
    assert fig["items"] >= 5 * 10                 # templates, tokenizer ... items per case
    assert 0 < fig["pytest_collection_s"] < fig["process_wall_s"]
    assert len(list((tmp_path / "cases").glob("gen-*.yaml"))) == 5


def test_bench_suite_is_not_part_of_the_conformance_run():
    suite = REPO / "harness" / "suite"
    assert not list(suite.glob("*bench*")) and (REPO / "harness" / "bench_suite" / "test_throughput.py").exists()
