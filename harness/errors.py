"""Errors that point at a place in a case file: `cases/qwen.yaml:14:7: tools[0].name: required`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


def format_path(path: Sequence[str | int]) -> str:
    """('tools', 0, 'name') -> 'tools[0].name'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


@dataclass(frozen=True)
class Problem:
    file: str
    line: int          # 1-based; 0 when unknown
    column: int        # 1-based; 0 when unknown
    path: tuple[str | int, ...]
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}:{self.column}"
        return f"{where}: {format_path(self.path)}: {self.message}"


class CaseError(Exception):
    """One or more problems in one case file. str() gives one line per problem."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.column))
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def file(self) -> str:
        return self.problems[0].file if self.problems else "?"


class SourceError(Exception):
    """No source could provide a model file. Lists every source tried and why it failed."""

    def __init__(self, what: str, attempts: Sequence[tuple[str, str]], hint: str = ""):
        self.what = what
        self.attempts = list(attempts)
        lines = [f"could not resolve {what}; sources tried, in order:"]
        lines += [f"  - {source}: {reason}" for source, reason in self.attempts]
        if hint:
            lines.append(f"how to fix: {hint}")
        super().__init__("\n".join(lines))


class IntegrityError(SourceError):
    """A file was found but its sha256 (or size) is not what the case pins."""


def raise_again(exc: BaseException):
    """Raise a remembered exception (a backend that could not be opened, a model that did not
    resolve) with the traceback it had when it was first raised again. `raise exc` alone keeps the
    exception's traceback and adds the new frames in front of it, so a remembered exception raised
    by thousands of checks carried thousands of frames, and pytest walked them all for every skip
    (measured: 168 s of a 290 s template-set run in traceback.format_exception_only)."""
    tb = exc.__dict__.setdefault("_harness_first_traceback", exc.__traceback__)
    raise exc.with_traceback(tb)
