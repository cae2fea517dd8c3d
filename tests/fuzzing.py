"""What the fuzz tests share: bounded, replayable hypothesis settings and a per-example time
budget (a parser that hangs on some input fails with `Hang`, shrunk like any other failure)."""

from __future__ import annotations

import signal
from contextlib import contextmanager

from hypothesis import HealthCheck, settings


def fuzz_settings(max_examples: int, *extra_checks: HealthCheck) -> settings:
    """Fixed order (derandomize) and no example database: every run tries the same inputs, so a
    failure replays from the test id alone, and the run time is bounded by max_examples."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, *extra_checks])


def mutate(text: str, edits: list[tuple[int, int, str, bool]]) -> str:
    """Apply (position, delete, insert, truncate) edits in turn: how the fuzz tests damage real
    case files and canned outputs. Positions wrap around the text's length."""
    for pos, delete, insert, truncate in edits:
        pos %= len(text) + 1
        text = text[:pos] if truncate else text[:pos] + insert + text[pos + delete:]
    return text


# Per example. Healthy parsing of these small inputs takes milliseconds; the budget catches a
# hang (an endless loop, catastrophic backtracking), never slowness: on a loaded 2-core machine
# a tight budget would fail healthy code (speed is measured in benchmarks, not here).
HANG_S = 20.0


class Hang(Exception):
    pass


@contextmanager
def time_budget(seconds: float, what: str = "it"):
    """Raise Hang in the main thread when the block takes longer than `seconds` (SIGALRM)."""
    def on_alarm(signum, frame):
        raise Hang(f"{what} took more than {seconds}s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
