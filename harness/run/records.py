"""What a run's records keep (results.json): each test's finding in one line, its failure message
made the same for identical runs, and the run's peak memory."""

from __future__ import annotations

import re
from typing import Any

from harness.report.messages import MESSAGE_CHARS   # harness compare reads the same cut


def result_summary(report) -> str:
    """The finding in one line: the first line of the exception's message, without its type."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if report.outcome == "passed" or crash is None:
        return ""
    first = (crash.message or "").strip().splitlines()[0] if (crash.message or "").strip() else ""
    return re.sub(r"^(?:[\w.]+\.)?(?:Mismatch|Failed|AssertionError): ", "", first)[:500]


ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{8,16}\b")
WORKER_LINE = re.compile(r"^\[gw\d+\] \S+ -- Python .*\n", re.M)


def stable_message(message: str) -> str:
    """A failure message as results.json keeps it: the same for identical runs. Object addresses
    and xdist's worker header are removed before the message is cut to its last MESSAGE_CHARS
    (cut first, an address could lose its 0x and survive as digits that differ per run)."""
    return ADDRESS.sub("0x…", WORKER_LINE.sub("", message).lstrip("\n"))[-MESSAGE_CHARS:]


def memory_summary(controller: dict, workers: dict[str, dict]) -> dict[str, Any]:
    """Peak resident memory of the run, per process; `upper_bound_mib` sums every process's own
    peak (they need not peak together, so the true simultaneous peak is at most that)."""
    procs = {"controller": controller["peak_rss_mib"], **{w: m["peak_rss_mib"] for w, m in sorted(workers.items())}}
    servers = [p for m in (controller, *workers.values()) for p in m["llama_server_peaks_mib"]]
    return {"processes_mib": procs, "max_process_mib": max(procs.values()),
            "llama_server_peaks_mib": sorted(servers, reverse=True),
            "upper_bound_mib": sum(procs.values()) + sum(servers)}
