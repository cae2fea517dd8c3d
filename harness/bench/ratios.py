"""The bench's headline: how fast one backend is against another on the same model, constraint
and text, and how that ratio moves with the vocabulary size.

Both sides are timed by the harness's own clock on the same request (prompt ids, constraint,
greedy, same number of tokens), so the ratio compares what a user of each backend gets; the
backends' own counters (llama.cpp's t_eval excludes sampling, llama-server's predicted_ms does
not) are the measurement's sanity check, not the headline. A ratio is only like-for-like when
both backends generated the same text (text_sha256); where they did not, the row says so.

Input rows are the `extra_info` of the throughput benchmarks (harness/bench_suite), live or from
a saved run, so `harness compare` recomputes the ratios of two saved runs the same way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

REFERENCE = "llama-server"
KINDS = ("tg", "pp")


@dataclass(frozen=True)
class Ratio:
    case: str
    constraint: str
    backend: str                 # the backend measured ...
    reference: str               # ... against this one
    kind: str                    # tg (generation) or pp (prompt)
    backend_tps: float
    reference_tps: float
    ratio: float                 # backend_tps / reference_tps
    stderr: float                # standard error of the ratio, from both sides' spread over rounds
    n_vocab: int | None
    same_text: bool | None       # None: a side did not record its text

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.case, self.constraint, self.backend, self.reference, self.kind)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean_sem(stat: Any, rounds: Any) -> tuple[float, float] | None:
    if not isinstance(stat, dict) or not stat.get("mean"):
        return None
    n = rounds if isinstance(rounds, int) and rounds > 0 else 1
    return float(stat["mean"]), float(stat.get("stdev") or 0.0) / math.sqrt(n)


def cross_backend_ratios(rows: Iterable[dict[str, Any]], reference: str = REFERENCE) -> list[Ratio]:
    """Every other backend against `reference`, per (case, constraint), for tg and pp tokens/s."""
    rows = [r for r in rows if r.get("kind", "throughput") == "throughput"]
    refs = {(r["case"], r["constraint"]): r for r in rows if r.get("backend") == reference}
    out: list[Ratio] = []
    for r in rows:
        ref = refs.get((r["case"], r["constraint"]))
        if ref is None or r.get("backend") == reference:
            continue
        a_txt, b_txt = r.get("text_sha256"), ref.get("text_sha256")
        same = (sorted(a_txt) == sorted(b_txt)) if a_txt and b_txt else None
        for kind in KINDS:
            a = _mean_sem(r.get(f"{kind}_tps"), r.get("rounds"))
            b = _mean_sem(ref.get(f"{kind}_tps"), ref.get("rounds"))
            if a is None or b is None:
                continue
            ratio = a[0] / b[0]
            se = ratio * math.sqrt((a[1] / a[0]) ** 2 + (b[1] / b[0]) ** 2)
            out.append(Ratio(r["case"], r["constraint"], r["backend"], reference, kind, a[0], b[0], ratio, se,
                             r.get("n_vocab") or ref.get("n_vocab"), same))
    return sorted(out, key=lambda x: (x.backend, x.kind, x.constraint, x.n_vocab or 0, x.case))


def vocab_scaling(ratios: list[Ratio]) -> list[dict[str, Any]]:
    """Per (backend, kind, constraint): the ratio at each vocab size, smallest vocab first, and
    the least-squares change of the ratio per doubling of the vocab (None with fewer than two
    vocab sizes)."""
    groups: dict[tuple[str, str, str], list[Ratio]] = {}
    for r in ratios:
        if r.n_vocab:
            groups.setdefault((r.backend, r.kind, r.constraint), []).append(r)
    out = []
    for (backend, kind, constraint), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r.n_vocab)
        xs = [math.log2(r.n_vocab) for r in rs]
        ys = [r.ratio for r in rs]
        slope = None
        if len(set(xs)) > 1:
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        out.append({"backend": backend, "kind": kind, "constraint": constraint,
                    "points": [(r.n_vocab, r.case, r.ratio) for r in rs], "per_doubling": slope})
    return out


def format_ratios(ratios: list[Ratio]) -> list[str]:
    head = (f"{'model':<24} {'n_vocab':>8} {'constraint':<11} {'backend':<22} {'kind':<4} {'t/s':>7} "
            f"{'ref t/s':>7} {'ratio':>6} {'±':>5}  text")
    lines = [head, "-" * len(head)]
    for r in sorted(ratios, key=lambda r: (r.kind != "tg", r.backend, r.case, r.constraint)):
        text = {True: "same", False: "DIFFERS (not like-for-like)", None: "?"}[r.same_text]
        lines.append(f"{r.case[:24]:<24} {r.n_vocab or '?':>8} {r.constraint:<11} {r.backend[:22]:<22} {r.kind:<4} "
                     f"{r.backend_tps:7.1f} {r.reference_tps:7.1f} {r.ratio:6.2f} {r.stderr:5.2f}  {text}")
    return lines


def format_scaling(ratios: list[Ratio]) -> list[str]:
    lines = []
    for g in vocab_scaling(ratios):
        pts = " -> ".join(f"{ratio:.2f}x at {n:,} ({case})" for n, case, ratio in g["points"])
        trend = ("" if g["per_doubling"] is None
                 else f"; {g['per_doubling']:+.3f} per doubling of the vocab")
        lines.append(f"{g['backend']} / {REFERENCE} {g['kind']}, {g['constraint']}: {pts}{trend}")
    return lines


# --- between two runs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RatioMove:
    old: Ratio
    new: Ratio
    noise: float

    @property
    def change(self) -> float:
        return (self.new.ratio - self.old.ratio) / self.old.ratio

    @property
    def direction(self) -> str:
        return "closer to the reference" if abs(self.new.ratio - 1) < abs(self.old.ratio - 1) else "further from the reference"


DEFAULT_RATIO_THRESHOLD = 0.10     # a ratio that moves by 10% or more (and beyond noise) is flagged


def diff_ratios(old_rows: Iterable[dict[str, Any]], new_rows: Iterable[dict[str, Any]], *,
                threshold: float = DEFAULT_RATIO_THRESHOLD, noise_k: float = 3.0) -> tuple[list[RatioMove], int]:
    """Cross-backend ratios that moved by at least `threshold` (relative) and by more than
    `noise_k` standard errors of the two ratios; and how many ratios were compared."""
    a = {r.key: r for r in cross_backend_ratios(old_rows)}
    b = {r.key: r for r in cross_backend_ratios(new_rows)}
    moves, compared = [], 0
    for key in sorted(a.keys() & b.keys()):
        o, n = a[key], b[key]
        compared += 1
        noise = noise_k * math.sqrt(o.stderr ** 2 + n.stderr ** 2)
        if abs(n.ratio - o.ratio) >= threshold * o.ratio and abs(n.ratio - o.ratio) > noise:
            moves.append(RatioMove(o, n, noise))
    return moves, compared


def throughput_rows(bench_doc: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The throughput benchmarks' extra_info of a saved pytest-benchmark run."""
    return [b.get("extra_info") or {} for b in (bench_doc or {}).get("benchmarks", [])
            if (b.get("extra_info") or {}).get("kind") == "throughput"]
