"""Text tables of bench results: overhead, collection time, throughput (and its verdict), tokenize
speed."""

from __future__ import annotations

from typing import Any

from . import overhead_phases
from .overhead import max_inprocess_loads


# --- formatting ------------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f}%"


def format_overhead(fig: dict[str, Any], target: float = 0.10) -> list[str]:
    lines = [f"default-suite run: {fig['tests']} tests, wall {fig['wall_s']:.1f}s, inside backend calls "
             f"{fig['backend_s']:.1f}s, outside {fig['outside_s']:.1f}s = {_pct(fig['outside_ratio'])} "
             f"(target <= {target:.0%}: {'met' if fig['outside_ratio'] <= target else 'MISSED by ' + _pct(fig['outside_ratio'] - target)})"]
    for k, v in fig["breakdown_s"].items():
        lines.append(f"    {k:<70} {v:8.2f}s  {_pct(v / fig['wall_s'] if fig['wall_s'] else None):>6}")
    by_fn = list((fig.get("outside_by_test_function_s") or {}).items())[:5]
    if by_fn:
        lines.append("    time outside backend calls by test function: " + ", ".join(f"{k} {v:.1f}s" for k, v in by_fn))
    lines += overhead_phases.format_table(fig)
    top = list(fig["backend_time_by_call_s"].items())[:6]
    lines.append("    backend time by call: " + ", ".join(f"{k} {v:.1f}s" for k, v in top))
    worst = max_inprocess_loads(fig["gguf_loads"])
    lines.append(f"GGUF loads per worker (serial run = 1 worker): max in-process llama.cpp loads of one GGUF = {worst} "
                 f"(target <= 1: {'met' if worst <= 1 else 'MISSED'})")
    for name, per in fig["gguf_loads"].items():
        lines.append(f"    {name}: " + ", ".join(f"{k} x{n}" for k, n in sorted(per.items())))
    return lines


def format_collection(fig: dict[str, Any]) -> str:
    return (f"collection of {fig['cases']} generated cases ({fig['items']} items): pytest {fig['pytest_collection_s']:.2f}s, "
            f"process wall {fig['process_wall_s']:.2f}s")


def _within(ratio: float | None, target: float) -> str:
    if ratio is None:
        return "n/a"
    return "ok" if abs(ratio - 1) <= target else f"off {_pct(ratio - 1)}"


def format_throughput(rows: list[dict[str, Any]], target: float = 0.05) -> list[str]:
    """rows: extra_info of throughput benchmarks (with case, backend, constraint)."""
    head = (f"{'model':<22} {'backend':<22} {'constr.':<11} {'ttft ms':>7} {'pp t/s':>7} {'backend':>7} {'ratio':>6} "
            f"{'tg t/s':>7} {'backend':>7} {'ratio':>6} {'+sampl.':>7} {'ratio':>6}  harness vs backend")
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (r["case"], r["constraint"], r["backend"])):
        def g(key: str) -> str:
            v = r.get(key)
            return "-" if not v else f"{v['mean']:.1f}"

        def q(key: str) -> str:
            v = r.get(key)
            return "-" if v is None else f"{v:.3f}"
        status = f"pp {_within(r.get('pp_ratio'), target)}, tg {_within(r.get('tg_ratio'), target)}"
        if r.get("tg_ratio_with_sampling") is not None:
            status += f" (with sampling {_within(r.get('tg_ratio_with_sampling'), target)})"
        lines.append(f"{r['case'][:22]:<22} {r['backend']:<22} {r['constraint']:<11} {g('ttft_ms'):>7} {g('pp_tps'):>7} "
                     f"{g('backend_pp_tps'):>7} {q('pp_ratio'):>6} {g('tg_tps'):>7} {g('backend_tg_tps'):>7} "
                     f"{q('tg_ratio'):>6} {g('backend_tg_tps_with_sampling'):>7} {q('tg_ratio_with_sampling'):>6}  {status}")
    return lines


def throughput_verdict(rows: list[dict[str, Any]], target: float = 0.05) -> list[str]:
    """The ratio target, said plainly: where it holds, where it misses and by how much."""
    out = []
    def worst(rs, key):
        vals = [(abs(r[key] - 1), r) for r in rs if r.get(key) is not None]
        return max(vals, key=lambda v: v[0]) if vals else None
    plain = [r for r in rows if r["constraint"] == "none"]
    for kind in ("pp", "tg"):
        w = worst(plain, f"{kind}_ratio")
        if w:
            out.append(f"{kind} tokens/s without a constraint, all backends: largest harness/backend gap "
                       f"{w[0] * 100:.1f}% ({w[1]['case']}, {w[1]['backend']}) -> target {target:.0%} "
                       f"{'met' if w[0] <= target else 'MISSED by ' + f'{(w[0] - target) * 100:.1f} points'}")
    server = [r for r in rows if r["backend"] == "llama-server"]
    w = worst(server, "tg_ratio")
    if w:
        out.append(f"llama-server, every constraint (its predicted_ms includes sampling): largest tg gap {w[0] * 100:.1f}% "
                   f"-> {'met' if w[0] <= target else 'MISSED'}")
    constrained = [r for r in rows if r["constraint"] != "none" and r["backend"] != "llama-server"]
    w = worst(constrained, "tg_ratio")
    if w and w[0] > target:
        line = (f"llama-cpp-python with a grammar: tg misses by up to {(w[0] - target) * 100:.0f} points against "
                f"llama.cpp's t_eval ({w[1]['case']}, {w[1]['backend']}, {w[1]['constraint']}), because t_eval times "
                f"decoding only and grammar sampling over the vocabulary is the difference")
        ws = worst(constrained, "tg_ratio_with_sampling")
        if ws:
            line += (f"; against t_eval + the sampler's own t_sample (eval loop) the largest gap is {ws[0] * 100:.1f}% "
                     f"-> {'met' if ws[0] <= target else 'MISSED'}")
        out.append(line)
    w = worst([r for r in rows if r["constraint"] != "none"], "pp_ratio")
    if w and w[0] > target:
        out.append(f"pp with a grammar misses by up to {(w[0] - target) * 100:.1f} points ({w[1]['case']}, "
                   f"{w[1]['backend']}): the harness's time to first token includes sampling the first token "
                   f"through the grammar, llama.cpp's prompt time does not")
    return [ln for ln in out if ln]


def format_tokenize(rows: list[dict[str, Any]]) -> list[str]:
    """Strings/s and tokens/s per case and tokenizer backend, fastest first within a case."""
    out = [f"{'case':28} {'backend':18} {'strings':>7} {'tokens':>8} {'strings/s':>10} {'tokens/s':>10}"]
    for r in sorted(rows, key=lambda r: (r["case"], -r["tokens_per_s"])):
        out.append(f"{r['case']:28} {r['backend']:18} {r['strings']:>7} {r['tokens']:>8} "
                   f"{r['strings_per_s']:>10.1f} {r['tokens_per_s']:>10.1f}")
    return out
