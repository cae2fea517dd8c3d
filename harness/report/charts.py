"""The throughput history in the report: bench runs read from the benchmarks folder, and SVG charts of
them."""

from __future__ import annotations

import html
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any


# --- saved benchmark runs ---------------------------------------------------------------------------
@dataclass
class BenchRun:
    path: Path
    name: str
    datetime: str
    rows: list[dict[str, Any]]               # extra_info of throughput benchmarks, plus stats
    harness: dict[str, Any]


def load_bench_run(path: Path) -> BenchRun | None:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or "benchmarks" not in doc:
        return None
    rows = []
    for b in doc["benchmarks"]:
        info = b.get("extra_info") or {}
        if info.get("kind") == "throughput":
            rows.append({**info, "name": b.get("name"), "fullname": b.get("fullname"), "stats": b.get("stats") or {}})
    return BenchRun(Path(path), Path(path).stem, doc.get("datetime", ""), rows, doc.get("harness") or {})


def bench_history(benchmarks_dir: Path | None) -> list[BenchRun]:
    if benchmarks_dir is None or not Path(benchmarks_dir).is_dir():
        return []
    runs = [r for p in sorted(Path(benchmarks_dir).glob("*/*.json")) if (r := load_bench_run(p)) is not None]
    return sorted(runs, key=lambda r: (r.datetime, r.name))


def find_benchmarks(report_dir: Path) -> Path | None:
    for cand in (report_dir / "benchmarks", report_dir.parent / "benchmarks"):
        if cand.is_dir():
            return cand
    return None


def mean_of(d: Any) -> float | None:
    return d.get("mean") if isinstance(d, dict) else None


# --- SVG chart ------------------------------------------------------------------------------------------
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22")


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    import math
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def svg_chart(panels: list[tuple[str, dict[str, list[float | None]]]], x_labels: list[str], *,
              width: int = 1060, panel_height: int = 240) -> str:
    """Line charts, one panel per (title, {series: values per run}), sharing x labels and colours."""
    left, right, top, bottom = 110, 330, 40, 84
    plot_w = width - left - right
    names = sorted({s for _, series in panels for s in series})
    colour = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(names)}
    height = len(panels) * (panel_height + top + bottom)
    e = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'font-family="sans-serif" font-size="12">', f'<rect width="{width}" height="{height}" fill="white"/>']
    n = max(1, len(x_labels))

    def x_at(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else plot_w * i / (n - 1))

    for p, (title, series) in enumerate(panels):
        y0 = p * (panel_height + top + bottom) + top
        values = [v for vs in series.values() for v in vs if v is not None]
        ymax = _nice_max(max(values) * 1.05 if values else 1.0)
        out.append(f'<text x="{left}" y="{y0 - 12}" font-size="14" font-weight="bold">{e(title)}</text>')
        for k in range(6):
            yv = ymax * k / 5
            y = y0 + panel_height - panel_height * k / 5
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#444">{yv:g}</text>')
        out.append(f'<line x1="{left}" y1="{y0}" x2="{left}" y2="{y0 + panel_height}" stroke="#888"/>')
        out.append(f'<line x1="{left}" y1="{y0 + panel_height}" x2="{left + plot_w}" y2="{y0 + panel_height}" stroke="#888"/>')
        step = max(1, n // 12)
        for i, label in enumerate(x_labels):
            if i % step and i != n - 1:
                continue
            x = x_at(i)
            out.append(f'<text x="{x:.1f}" y="{y0 + panel_height + 16}" text-anchor="end" fill="#444" '
                       f'transform="rotate(-30 {x:.1f} {y0 + panel_height + 16})">{e(label)}</text>')
        for name in names:
            vs = series.get(name)
            if not vs:
                continue
            pts = [(x_at(i), y0 + panel_height - panel_height * v / ymax) for i, v in enumerate(vs) if v is not None]
            if len(pts) > 1:
                out.append(f'<polyline fill="none" stroke="{colour[name]}" stroke-width="2" points="'
                           + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
            for x, y in pts:
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour[name]}"><title>{e(name)}</title></circle>')
        for j, name in enumerate(n_ for n_ in names if series.get(n_)):
            ly = y0 + 8 + j * 18
            out.append(f'<rect x="{left + plot_w + 16}" y="{ly - 9}" width="12" height="12" fill="{colour[name]}"/>')
            out.append(f'<text x="{left + plot_w + 34}" y="{ly + 1}">{e(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def throughput_chart(history: list[BenchRun]) -> str | None:
    if not history:
        return None
    labels = [f"{r.name.split('_', 1)[0]} {r.datetime[5:16].replace('T', ' ')}" for r in history]
    panels = []
    for metric, title in (("tg_tps", "generation tokens/s (no constraint), harness clock"),
                          ("pp_tps", "prompt tokens/s (no constraint), harness clock"),
                          ("tg_tps@gbnf", "generation tokens/s with a GBNF grammar")):
        key, _, constraint = metric.partition("@")
        constraint = constraint or "none"
        series: dict[str, list[float | None]] = defaultdict(lambda: [None] * len(history))
        for i, run in enumerate(history):
            for row in run.rows:
                if row.get("constraint") == constraint:
                    series[f"{row['case']} / {row['backend']}"][i] = mean_of(row.get(key))
        if series:
            panels.append((title, dict(series)))
    return svg_chart(panels, labels) if panels else None
