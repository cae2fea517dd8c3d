"""Shared plumbing for in-process template renderers: a fixed clock, and turning a
renderer's exception into a recorded outcome instead of a crash.

Several real templates call strftime_now() (Llama 3.2, Granite, Mistral Small...), so a
golden would change every day. In-process renders run with the clock frozen at
FIXED_NOW; `date_string` is also passed, as llama.cpp's server does, for templates that
read it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from typing import Callable, Iterator

from .base import Rendered

FIXED_NOW = _dt.datetime(2024, 7, 26, 12, 0, 0)
FIXED_DATE_STRING = FIXED_NOW.strftime("%d %b %Y")


@contextlib.contextmanager
def frozen_clock() -> Iterator[None]:
    import time_machine
    with time_machine.travel(FIXED_NOW, tick=False):
        yield


def capture(render: Callable[[], str], rejection_type: type[BaseException]) -> Rendered:
    """Run `render`, recording a template's refusal or an engine error as the outcome.

    `rejection_type` is the exact type the stack's raise_exception() raises; subclasses
    (jinja's UndefinedError and SecurityError derive from TemplateError) are engine errors."""
    try:
        with frozen_clock():
            return Rendered(text=render())
    except RecursionError:
        return Rendered(error="RecursionError: template recursion too deep")
    except Exception as exc:  # the engine's verdict on this template is the result we record
        if type(exc) is rejection_type:
            return Rendered(error=f"TemplateRejected: {exc}", rejected=True)
        return Rendered(error=f"{type(exc).__name__}: {exc}")
