"""Throughput per case, backend and constraint (`checks.throughput` in a case file).

Each benchmark times whole requests (prompt of `prompt_tokens`, up to `gen_tokens`
generated, greedy) and records, per round and as means in extra_info, the harness's own
time to first token, prompt and generation tokens/s next to the backend's own figures for
the same request (llama.cpp perf counters; llama-server `timings`).
"""

from __future__ import annotations

import pytest

from harness.bench import core as bench
from harness.backends.base import COMPLETE
from harness.suite import open_backend

PARAMETERS = {"throughput_item": bench.throughput_items}


def _runner(rt, item, record_property):
    name = bench.NEEDS[item.backend]
    backend = open_backend(rt, name, item.case, COMPLETE, record_property)
    if name == "llama-server":
        url = backend.info().get("url")
        if not url:
            pytest.skip("llama-server has no URL")
        return backend, bench.ServerRunner(url, timeout_s=backend.options.timeout_s, pid=backend.server_pid)
    return backend, bench.LlamaRunner(backend.llm, eval_loop=item.backend == bench.EVAL_BACKEND)


def test_throughput(throughput_item, harness_runtime, benchmark, record_property, request):
    it = throughput_item
    opts = bench.throughput_options(it.case)
    rounds = request.config.getoption("--rounds") or opts["rounds"]
    constraint = it.params["constraint"]
    backend, runner = _runner(harness_runtime, it, record_property)
    prompt = bench.prompt_ids(runner.tokenize, opts["prompt_tokens"])
    samples: list[bench.Sample] = []

    def once() -> None:
        samples.append(runner.run(prompt, opts["gen_tokens"], constraint))

    benchmark.group = it.case.id
    timer = request.config.getoption("--bench-timer")
    if timer == "cpu":
        benchmark._timer = runner.clock          # CPU seconds of this process + the server (see bench.cpu_clock)
    try:
        benchmark.pedantic(once, rounds=rounds, iterations=1, warmup_rounds=1)
    finally:
        if hasattr(runner, "close"):
            runner.close()
    model = harness_runtime.model_files(it.case)
    summary = bench.summarise(samples[-rounds:])
    benchmark.extra_info.update(
        kind="throughput", timer=timer, case=it.case.id, backend=it.backend, constraint=constraint,
        threads=request.config.getoption("--threads"), gguf=model.gguf.name,
        gguf_sha256=model.gguf_sha256 or bench.gguf_sha256(model.gguf), prompt_tokens=opts["prompt_tokens"],
        gen_tokens=opts["gen_tokens"], location=it.case.location(), **summary)
    record_property("throughput", {k: summary[k] for k in ("pp_tps", "tg_tps", "ttft_ms", "pp_ratio", "tg_ratio")})
    assert summary["n_gen"] and min(summary["n_gen"]) >= 2, f"generated too few tokens: {summary['n_gen']}"
