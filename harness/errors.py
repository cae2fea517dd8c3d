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
