"""Provenance for saved runs and the printed summary of `harness bench`.

* machine_info (compared by pytest-benchmark between runs, so only what identifies the
  machine and the build): CPU model and flags, llama.cpp build of llama-cpp-python and of
  llama-server, threads;
* the saved JSON's top-level "harness" key: the same plus GGUF sha256s, the overhead and
  collection figures and harness-vs-backend throughput ratios;
* a terminal section with the throughput table and the overhead figures against their targets.
"""

from __future__ import annotations

import pytest

from harness.bench import core as bench

OVERHEAD_TARGET = 0.10       # time outside backend calls, fraction of the suite's wall time
RATIO_TARGET = 0.05          # harness tokens/s within 5% of the backend's own figure


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness-bench", "harness bench")
    group.addoption("--overhead-scope", default="quick", choices=["quick", "models", "full", "off"],
                    help="suite run measured for harness overhead: quick (default: the smallest model that "
                         "declares throughput, every family and backend, without the exhaustive tokenizer "
                         "sweeps), models (every model that declares throughput), full (the whole default "
                         "suite; long) or off")
    group.addoption("--collect-cases", type=int, default=1000,
                    help="generated case files for the collection-time benchmark (0: skip)")
    group.addoption("--rounds", type=int, default=None, help="override each case's throughput rounds")
    group.addoption("--bench-timer", default="wall", choices=["wall", "cpu"],
                    help="what pytest-benchmark's statistics (and --benchmark-compare-fail) measure: wall time "
                         "(default) or CPU time of the harness and the server (robust on a shared machine)")


def _benchmarks(config) -> list:
    session = getattr(config, "_benchmarksession", None)
    return list(getattr(session, "benchmarks", None) or [])


def _figures(config) -> dict:
    rows, tokenize, overhead, collection = [], [], None, None
    for b in _benchmarks(config):
        info = b.extra_info or {}
        if info.get("kind") == "throughput":
            rows.append(info)
        elif info.get("kind") == "tokenize":
            tokenize.append(info)
        elif info.get("kind") == "overhead":
            overhead = info.get("figures")
        elif info.get("kind") == "collection":
            collection = info.get("figures")
    return {"throughput": rows, "tokenize": tokenize, "overhead": overhead, "collection": collection}


def pytest_benchmark_update_machine_info(config, machine_info: dict) -> None:
    m = bench.machine_info()
    llama = bench.llama_cpp_python_info()
    server = bench.server_build_info()
    machine_info["harness"] = {
        "cpu_model": m["cpu_model"], "cpu_flags": " ".join(m["cpu_flags"]), "simd": m["simd"],
        "logical_cpus": m["logical_cpus"], "threads": config.getoption("--threads"),
        "llama_cpp_python": llama.get("llama_cpp_python"), "ggml_commit": llama.get("ggml_commit"),
        "llama_version": llama.get("llama_version"), "llama_cpp_tree_sha256": llama.get("vendored_tree_sha256"),
        "llama_cpp_system_info": llama.get("system_info"),
        "llama_server_version": server.get("version"), "llama_server_cmake_options": server.get("cmake_options"),
    }


def pytest_benchmark_update_json(config, benchmarks, output_json: dict) -> None:
    figs = _figures(config)
    models = {}
    for r in figs["throughput"]:
        models[r["case"]] = {"file": r.get("gguf"), "sha256": r.get("gguf_sha256")}
    output_json["harness"] = {
        "provenance": bench.run_provenance(config.getoption("--threads"), models),
        "overhead": figs["overhead"], "collection": figs["collection"],
        "targets": {"outside_backend_ratio_max": OVERHEAD_TARGET, "tokens_per_s_ratio_tolerance": RATIO_TARGET,
                    "gguf_loads_per_worker_max": 1},
    }


@pytest.hookimpl(tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    figs = _figures(config)
    if not any(figs.values()):
        return
    tr = terminalreporter
    if figs["throughput"]:
        tr.section("throughput: harness clock vs the backend's own figures (means over rounds)")
        for line in bench.format_throughput(figs["throughput"], RATIO_TARGET):
            tr.write_line(line)
        for line in bench.throughput_verdict(figs["throughput"], RATIO_TARGET):
            tr.write_line("* " + line)
        tr.write_line("pp = prompt tokens/s (harness: prompt / time to first token; backend: prompt eval time); "
                      "tg = generation tokens/s (harness: first->last token; backend: llama.cpp t_eval / "
                      "llama-server predicted_ms; +sampl.: t_eval + the sampler's t_sample, eval loop only). "
                      "Same text from all three backends: see text_sha256 in the saved run.")
    if figs["tokenize"]:
        tr.section("tokenization throughput (fixed corpus, means over rounds)")
        for line in bench.format_tokenize(figs["tokenize"]):
            tr.write_line(line)
    if figs["overhead"]:
        tr.section("harness overhead")
        for line in bench.format_overhead(figs["overhead"], OVERHEAD_TARGET):
            tr.write_line(line)
    if figs["collection"]:
        if not figs["overhead"]:
            tr.section("harness overhead")
        tr.write_line(bench.format_collection(figs["collection"]))
