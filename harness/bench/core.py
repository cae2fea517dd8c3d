"""Throughput and harness-overhead measurement (the `harness bench` command).

Three parts, used by the pytest-benchmark modules in harness/bench_suite/ through this module
(provenance.py, runners.py, overhead.py; declared.py holds what a case declares, formatting.py
the text tables):

* **Provenance**: the machine (CPU model and flags from /proc/cpuinfo), the llama.cpp build
  (llama-cpp-python version, the commit and version strings compiled into libggml/libllama,
  llama.cpp's system info, the content hash of the vendored source tree), the llama-server
  build (its `--version`, tree hash and CMake options, read from harness/run/server_build.py's
  cache, never built here), threads, and the sha256 of every GGUF measured.
* **Throughput**: one runner per backend: llama-cpp-python's high-level API
  (`create_completion(stream=True)`), its low-level loop (`Llama.eval` + a llama.cpp sampler
  chain), and llama-server (`/completion`, streamed over raw HTTP). Each round measures,
  on the harness's own clock, time to first token, prompt tokens/s and generation tokens/s,
  and reads the backend's own figures for the same request (llama.cpp's perf counters;
  llama-server's `timings`).
* **Overhead**: a pytest plugin that times every backend call of a suite run (construction,
  every method, children given a GGUF) so that wall time minus backend time is what the
  harness itself costs; it also counts how often each GGUF is loaded. And the collection
  time of generated case files.

Definitions, identical for every backend so that harness and backend figures compare:
  ttft      = first generated token received - request sent
  pp tok/s  = prompt tokens / ttft                         (backend: prompt tokens / prompt eval time)
  tg tok/s  = (generated tokens - 1) / (last token - first token)
              (backend: llama.cpp n_eval / t_eval; llama-server predicted_n / predicted_ms)
"""

from __future__ import annotations

import json
from pathlib import Path

from .declared import BACKENDS, CONSTRAINTS, EVAL_BACKEND, NEEDS, throughput_items, throughput_options
from .formatting import (
    format_collection, format_overhead, format_throughput, format_tokenize, throughput_verdict
)
from .overhead import Clock, OverheadProbe, collection_time, max_inprocess_loads, measure_suite
from .provenance import (
    cpu_info, gguf_sha256, llama_cpp_python_info, machine_info, run_provenance, server_build_info
)
from .runners import LlamaRunner, Sample, ServerRunner, constraint_grammar, cpu_clock, prompt_ids, summarise


# --- `python -m harness.bench overhead --out FILE -- PYTEST ARGS` (run in a fresh process) -------------
def main(argv: list[str]) -> int:
    import argparse
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    else:
        rest = []
    p = argparse.ArgumentParser(prog="python -m harness.bench")
    p.add_argument("what", choices=["overhead"])
    p.add_argument("--out", required=True)
    ns = p.parse_args(argv)
    fig = measure_suite(rest)
    Path(ns.out).write_text(json.dumps(fig, indent=1))
    return 0


