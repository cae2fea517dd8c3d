"""The sandbox's limits and guards: the limits a render runs under, its errors, the per-render state
(deadline, output size, loop and call counts), the code generator that guards every output and loop,
and the safe stand-ins for the globals a chat template may use."""

from __future__ import annotations

import datetime as _dt
import json
import re
import time
from dataclasses import dataclass
from typing import Any
import jinja2
import jinja2.ext
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.utils import Namespace


# --- limits and errors ----------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    time_s: float = 10.0                 # compile + render, wall clock
    output_chars: int = 8 << 20          # the rendered prompt
    value_chars: int = 8 << 20           # any one string / list produced while rendering
    budget_chars: int = 64 << 20         # all strings / lists produced by guarded operations, summed
    int_bits: int = 1 << 16              # integers (about 19,700 decimal digits)
    source_chars: int = 1 << 20          # the template source itself
    json_indent: int = 64                # tojson(indent=...) and pprint


DEFAULT_LIMITS = Limits()


class SandboxViolation(SecurityError):
    """The template tried something the harness's sandbox does not allow."""


class RenderLimitExceeded(SandboxViolation):
    """A time, size, recursion or memory limit stopped the render. `kind` says which."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class TemplateRaised(TemplateError):
    """The template's own raise_exception(...) fired: it refuses the conversation."""


class Deadline(BaseException):
    """Raised asynchronously into the rendering thread by the watchdog. A BaseException so
    that no `except Exception` inside Jinja or a filter can swallow it."""


# --- per-render state -----------------------------------------------------------------
class RenderState:
    def __init__(self, limits: Limits):
        self.limits = limits
        self.deadline = time.monotonic() + limits.time_s
        self.spent = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderLimitExceeded("time", f"render exceeded its time limit of {self.limits.time_s:g}s")

    def charge(self, n: int, what: str) -> None:
        self.tick()
        lim = self.limits
        if n > lim.value_chars:
            raise RenderLimitExceeded("size", f"{what} would produce {n:,} items/characters "
                                              f"(limit {lim.value_chars:,})")
        self.spent += n
        if self.spent > lim.budget_chars:
            raise RenderLimitExceeded("size", f"the template produced more than {lim.budget_chars:,} characters "
                                              f"of intermediate values in total (allocation budget)")


_SIZED = (str, bytes, bytearray, list, tuple, dict, set, frozenset)


def value_size(v: Any) -> int | None:
    return len(v) if isinstance(v, _SIZED) else None


# --- guarded code generation: `~` goes through the environment ------------------------------
class GuardedCodeGenerator(CodeGenerator):
    @optimizeconst
    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            escape = "context.eval_ctx.autoescape"
        else:
            escape = repr(bool(frame.eval_ctx.autoescape))
        self.write("environment.guarded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(f"), {escape})")


class IgnoreGeneration(jinja2.ext.Extension):
    """transformers' `{% generation %}...{% endgeneration %}` (assistant-mask tracking):
    renders its body unchanged, as transformers does when no mask is requested."""
    tags = {"generation"}

    def parse(self, parser):
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class GuardedNamespace(Namespace):
    """namespace() that refuses underscore-prefixed names (as transformers does)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 (jinja's own signature trick)
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            GuardedNamespace._check(name)
        Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        GuardedNamespace._check(name)
        Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SandboxViolation(f"namespace attribute {name!r}: underscore-prefixed names are not allowed")


class GuardedDict:
    """dict(...) and dict.fromkeys(...) without exposing the dict type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


def raise_template_exception(message: Any) -> None:
    raise TemplateRaised(str(message))


def template_strftime_now(fmt: str) -> str:
    # the suite freezes the clock around renders (harness/backends/rendering.py)
    return _dt.datetime.now().strftime(fmt)


def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


# "%" conversions: width and precision
PERCENT = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")


DIGITS = re.compile(r"\d+")
