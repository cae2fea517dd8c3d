"""What a check returns, and the two ways it stops early: one shape for every check family.

A family's check logic (harness/families/*) never calls pytest. It returns an `Outcome`:

    golden        what the check observed, compared with (or written to) its golden first
    problems      conformance findings: the suite raises them as one `Mismatch`
    case_errors   the case file is wrong (not a backend finding): a plain failure
    notes         recorded in the results as findings, never failing
    header        a first line shared by every problem (tool calls: the call and backend)

or it raises `Skip` (the check cannot run here: an unsupported request, a case with nothing to
check) or `CaseProblem` (the case asks for something the family cannot do). The thin suite
modules (harness/suite/) turn all of this into pytest's pass / fail / skip, in one place:
`harness.suite.conclude`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from harness.backends.base import Backend, Unsupported
from harness.checks import Mismatch


class CaseProblem(Exception):
    """The case file asks for something its family cannot do, or no longer exercises what it
    claims: a plain failure, not a finding."""


class Skip(Exception):
    """The check cannot run here; skipped with the reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Outcome:
    golden: dict[str, Any]
    problems: list[str] = field(default_factory=list)     # conformance findings -> Mismatch
    case_errors: list[str] = field(default_factory=list)  # the case is wrong -> plain failure
    notes: list[str] = field(default_factory=list)        # recorded in the results, never fail
    header: str = ""                                      # the first line of the Mismatch

    def raise_if_failed(self) -> None:
        """CaseProblem for the case's errors (first: a wrong case explains its findings), else
        one Mismatch with every problem; nothing when the check passed."""
        if self.case_errors:
            raise CaseProblem("\n\n".join(self.case_errors))
        if self.problems:
            if self.header:
                raise Mismatch(self.header + "\n" + "\n".join(self.problems))
            raise Mismatch("\n\n".join(self.problems))


def needs(backend: Backend, *caps: str) -> None:
    """Skip unless the backend declares every capability in `caps`."""
    missing = [c for c in caps if c not in backend.capabilities]
    if missing:
        raise Skip(f"{backend.name} lacks {', '.join(missing)}")


def run_or_skip(fn: Callable[[], Any]) -> Any:
    """fn(), or a skip when the backend does not support the request."""
    try:
        return fn()
    except Unsupported as exc:
        raise Skip(f"unsupported: {exc.reason}") from None
