"""The --memory-ceiling watcher: a thread that raises MemoryCeilingExceeded in the main thread when the
process's resident memory goes over the ceiling."""

from __future__ import annotations

import os
import threading
from typing import Any

from harness.run.memory import rss_mib


# --- the suite's memory ceiling ------------------------------------------------------------
class MemoryCeilingExceeded(Exception):
    """The process's resident memory passed the suite's ceiling while a check was running."""


class MemoryWatch:
    """Fail the running check when this process's RSS passes `ceiling_mib`.

    A daemon thread samples VmRSS every `interval_s`; while a check runs (`running()`), going
    over the ceiling raises MemoryCeilingExceeded in the main thread (asynchronously, at its
    next bytecode boundary), once per check. The check fails with that message and the run
    goes on; between checks nothing is raised. Linux only (reads /proc)."""

    def __init__(self, ceiling_mib: int, interval_s: float = 0.25):
        self.ceiling_mib, self.interval_s = ceiling_mib, interval_s
        self.main = threading.main_thread().ident
        self.current: str | None = None
        self.fired_for: str | None = None
        self.peak_mib = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="harness-memory-watch", daemon=True)

    def start(self) -> "MemoryWatch":
        if os.path.exists("/proc/self/status"):
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def running(self, nodeid: str | None) -> None:
        from harness.backends.sandbox import clear_async_exc
        with self._lock:
            self.current = nodeid
            if nodeid is None and self.fired_for is not None:
                clear_async_exc(self.main, None)   # never deliver it outside the check it was for

    def _run(self) -> None:
        from harness.backends.sandbox import set_async_exc
        while not self._stop.wait(self.interval_s):
            cur, peak = rss_mib()
            self.peak_mib = max(self.peak_mib, peak)
            if cur <= self.ceiling_mib:
                continue
            with self._lock:
                if self.current is not None and self.fired_for != self.current:
                    self.fired_for = self.current
                    MemoryCeilingExceeded.last = (f"memory ceiling exceeded: resident memory {cur} MiB > "
                                                  f"--memory-ceiling {self.ceiling_mib} MiB while running "
                                                  f"{self.current}")
                    set_async_exc(self.main, _CeilingHit)


class _CeilingHit(MemoryCeilingExceeded):
    def __init__(self, *args: Any):
        super().__init__(getattr(MemoryCeilingExceeded, "last", "memory ceiling exceeded"))
