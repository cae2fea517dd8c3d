"""Progress of a CMake build, read from its own `[ NN%]` lines.

CMake's Makefile generator prefixes every step with the share of the build done so far
(`[ 42%] Building CXX object ...`). `BuildProgress` is fed each output line of the build:

- on a terminal it keeps a live bar (tqdm) with the percent and the elapsed time, and the
  path of the full log on the line below it, so a slow build can be told from a hung one;
- elsewhere (CI logs, pipes) it prints one plain line each time the build crosses another
  10%, so a log gets at most eleven lines, not one per compiled file.

Percentages never go backwards on screen: CMake restarts its count for each sub-build (e.g. a
second `cmake --build`), and a bar that jumps back would look like a restart.
"""

from __future__ import annotations

import io
import os
import re
import sys
import time
from typing import IO, Callable

PERCENT = re.compile(r"^\[\s*(\d{1,3})%\]")


def parse_percent(line: str) -> int | None:
    """The `NN` of a line starting `[ NN%]` (0..100), else None."""
    m = PERCENT.match(line)
    if m is None:
        return None
    pct = int(m.group(1))
    return pct if 0 <= pct <= 100 else None


def _fmt_elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


class BuildProgress:
    """Feed it build output lines (`feed`), then `close()`.

    `stream` is where progress goes (stderr by default); `tty` overrides the terminal check.
    `clock` is injectable so the plain-line mode can be tested without waiting.
    """

    def __init__(self, label: str, log_path: str, *, stream: IO[str] | None = None,
                 tty: bool | None = None, step: int = 10, clock: Callable[[], float] = time.monotonic):
        self.label, self.log_path, self.step = label, str(log_path), step
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        self.t0 = clock()
        self.percent = 0                 # highest percent seen
        self._printed_bucket = -1        # last 10% bucket printed (plain mode)
        self._bar = self._log_line = None
        if self.tty:
            from tqdm import tqdm
            try:
                cols = os.get_terminal_size(self.stream.fileno()).columns
            except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
                cols = 0
            # a terminal that reports no width (a pty nobody sized) would get an empty bar
            width = {"dynamic_ncols": True} if cols else {"ncols": 80}
            self._bar = tqdm(total=100, desc=label, unit="%", file=self.stream, position=0,
                             leave=True, **width,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}]")
            self._log_line = tqdm(total=0, file=self.stream, position=1, leave=False,
                                  bar_format="{desc}", desc=f"  log {self.log_path}")

    def feed(self, line: str) -> int | None:
        """Take one output line; returns its percent when it had one."""
        pct = parse_percent(line)
        if pct is None:
            return None
        if pct > self.percent:
            self.percent = pct
            if self._bar is not None:
                self._bar.update(pct - self._bar.n)
        if self._bar is None:
            self._print_bucket()
        return pct

    def _print_bucket(self) -> None:
        bucket = self.percent // self.step
        if bucket > self._printed_bucket:
            self._printed_bucket = bucket
            self.stream.write(f"{self.label}: {bucket * self.step:3d}% "
                              f"[{_fmt_elapsed(self.clock() - self.t0)}] (log {self.log_path})\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._log_line.close()
            self._bar.close()
            self._bar = self._log_line = None


def run_logged(cmd: list[str], log: IO[str], on_line: Callable[[str], object], **popen_kw) -> int:
    """Run `cmd` with stdout and stderr merged into `log`, passing each line to `on_line`."""
    import subprocess
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1,
                          **popen_kw) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()                  # the log is live too: `tail -f` it while the bar runs
            on_line(line)
        return proc.wait()
