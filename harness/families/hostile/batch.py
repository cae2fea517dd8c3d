"""Hostile renders of one run, several at a time.

Most hostile renders end in milliseconds; the few that loop for ever run to the time bound
(hostile.PY_TIMEOUT_S, 8 s), and one after the other those few were most of the hostile set's
time (6 x 8 s of ~53 s measured). Forking is not the cost (about 12 ms a child, measured by
`harness bench --overhead`), so a pool of pre-forked children would save little; running the
children side by side does. Each render is exactly what hostile.render_python does: its own
Canary, its own forked child with the same wall-clock bound counted from its own fork and the
same address-space cap; only when they run changes. The bounds are wall-clock, so a looping
payload is killed at the same bound with the same detail whatever else runs; the renders that
finish end in well under a second (the slowest, the harness's own renderer stopping itself at
hostile.OWN_TIME_S, is also a wall-clock limit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from harness.families.hostile import checks as hostile
from harness.run.fork import run_isolated_many

CONCURRENCY = 4          # children at a time: each may use up to hostile.PY_MEMORY_MIB


def render_python_many(jobs: Iterable[tuple[str, Any, hostile.Payload]], parent: Path | None = None, *,
                       concurrency: int = CONCURRENCY) -> dict[tuple[str, str], hostile.Finding]:
    """Findings for (renderer name, renderer, payload) jobs, keyed by (renderer name, payload id)."""
    jobs = list(jobs)
    canaries = [hostile.Canary(parent) for _ in jobs]
    try:
        calls = []
        for (_name, renderer, p), canary in zip(jobs, canaries):
            fn, args = hostile.python_call(renderer, p, canary)
            calls.append((fn, args, {}))
        outcomes = run_isolated_many(calls, concurrency=concurrency, timeout_s=hostile.PY_TIMEOUT_S,
                                     memory_mib=hostile.PY_MEMORY_MIB, capture_stderr=True)
        return {(name, p.id): hostile.python_finding(name, p, canary, o)
                for (name, _r, p), canary, o in zip(jobs, canaries, outcomes)}
    finally:
        for canary in canaries:
            canary.close()


# llama-servers at a time (SmolLM2-sized; each under hostile.SERVER_MEMORY_MIB). Four payloads
# make the server loop past its start bound (hostile.SERVER_START_S, wall-clock); with three
# slots the fourth waited for one of them, which alone cost a whole bound (25.4 s -> 15.4 s for
# the server batch, every finding the same).
SERVER_CONCURRENCY = 4


def render_server_many(built: Any, model_path: Path, payloads: Iterable[hostile.Payload], parent: Path | None = None,
                       *, concurrency: int = SERVER_CONCURRENCY) -> dict[str, hostile.Finding]:
    """hostile.render_server for each payload, `concurrency` servers at a time (threads: each
    only starts a process and waits on HTTP; the start and request bounds are wall-clock, as
    before). Keyed by payload id. (A refusal's detail is the server's log lines, whose order
    differs between runs even one server at a time: its threads log concurrently.)"""
    from concurrent.futures import ThreadPoolExecutor

    def one(p: hostile.Payload) -> hostile.Finding:
        with hostile.Canary(parent) as canary:
            return hostile.render_server(built, model_path, p, canary)
    payloads = list(payloads)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return {p.id: f for p, f in zip(payloads, pool.map(one, payloads))}
