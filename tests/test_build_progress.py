"""Build progress from CMake's `[ NN%]` lines: the parser, the plain one-line-per-10% mode (CI),
the live bar (terminal) and `run_logged`, on output captured from a real llama-server build
(tests/data/cmake_build_output.txt: every fourth percent line of it, plus make's noise)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from harness.run.build_progress import BuildProgress, parse_percent, run_logged

CAPTURED = (Path(__file__).parent / "data" / "cmake_build_output.txt").read_text().splitlines(True)


def test_parse_percent_reads_only_cmake_step_lines():
    assert parse_percent("[  0%] Building CXX object vendor/hash/hash.cpp.o\n") == 0
    assert parse_percent("[ 42%] Building C object ggml/src/ggml.c.o") == 42
    assert parse_percent("[100%] Built target llama-server") == 100
    assert parse_percent("gmake[4]: Entering directory 'BUILD/build'") is None
    assert parse_percent("-- The C compiler identification is GNU 12.2.0") is None
    assert parse_percent("  [ 42%] indented is not a step line") is None
    assert parse_percent("[250%] nonsense") is None


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_plain_mode_prints_one_line_per_ten_percent_of_a_real_build():
    out, clock = io.StringIO(), FakeClock()
    p = BuildProgress("llama-server", "/cache/build.log", stream=out, tty=False, clock=clock)
    for line in CAPTURED:
        clock.t += 5.0
        p.feed(line)
    p.close()
    lines = out.getvalue().splitlines()
    assert [ln.split(":")[1].split("%")[0].strip() for ln in lines] == [str(n) for n in range(0, 101, 10)]
    assert all(ln.endswith("(log /cache/build.log)") for ln in lines)
    assert lines[0] == "llama-server:   0% [0:30] (log /cache/build.log)"   # 6th line is the first step
    assert lines[-1].startswith("llama-server: 100% [5:05]")  # elapsed at the first 100% line (61st)
    assert p.percent == 100


def test_plain_mode_never_goes_back_when_cmake_restarts_its_count():
    out = io.StringIO()
    p = BuildProgress("b", "log", stream=out, tty=False, clock=FakeClock())
    for pct in (0, 35, 12, 3, 50, 49, 100, 0):
        p.feed(f"[{pct:3d}%] step\n")
    assert [ln.split()[1] for ln in out.getvalue().splitlines()] == ["0%", "30%", "50%", "100%"]
    assert p.percent == 100


def test_no_step_lines_print_nothing():
    out = io.StringIO()
    p = BuildProgress("b", "log", stream=out, tty=False)
    for line in CAPTURED[:5]:
        assert p.feed(line) is None
    p.close()
    assert out.getvalue() == ""


class TtyStringIO(io.StringIO):
    def isatty(self):
        return True


def test_terminal_mode_draws_a_bar_with_percent_elapsed_and_the_log_path_below():
    out = TtyStringIO()
    p = BuildProgress("llama-server", "/cache/build.log", stream=out)
    assert p.tty
    for line in CAPTURED:
        p.feed(line)
    assert p._bar.n == 100
    p.close()
    screen = out.getvalue()
    assert "llama-server: 100%|" in screen and "[00:0" in screen     # percent, bar, elapsed
    assert "log /cache/build.log" in screen
    assert "\n" in screen.split("llama-server:  ", 1)[1]             # the log line sits below the bar
    assert screen.count("llama-server:") < len(CAPTURED)             # redrawn in place, not a line each


def test_run_logged_copies_merged_output_to_the_log_and_feeds_each_line(tmp_path):
    log, seen = io.StringIO(), []
    code = "import sys\nprint('[ 10%] a')\nprint('oops', file=sys.stderr)\nprint('[100%] b')\nsys.exit(3)"
    rc = run_logged([sys.executable, "-c", code], log, seen.append)
    assert rc == 3
    assert sorted(seen) == sorted(["[ 10%] a\n", "oops\n", "[100%] b\n"])
    assert sorted(log.getvalue().splitlines()) == ["[ 10%] a", "[100%] b", "oops"]
