"""Resident memory of a process, from /proc: read by the plugin (per check and per worker), the
memory ceiling (harness/run/memory_watch.py) and the llama-server process (harness/run/server_build.py)."""

from __future__ import annotations


def rss_mib(pid: int | str = "self") -> tuple[int, int]:
    """(current, peak) resident set size in MiB, from /proc (0, 0 where unavailable)."""
    cur = peak = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    cur = int(line.split()[1]) // 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) // 1024
    except OSError:
        pass
    return cur, peak
