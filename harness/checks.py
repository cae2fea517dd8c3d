"""What a failed conformance check raises, and how its message is built.

Known upstream defects are declared as strict expected failures that expect exactly
`Mismatch`: a harness bug (any other exception) still fails, and a fix upstream (the check
passes) turns the run red until the case file is updated.
"""

from __future__ import annotations

import difflib
import json
from typing import Any


class Mismatch(AssertionError):
    """A conformance finding: two sides that must agree do not, or an output breaks a rule."""


class DefectChanged(AssertionError):
    """A check declared as a known defect with `match:` failed, but not with that defect: a
    different finding, which must not pass as the declared expected failure."""


def short_diff(expected: str, actual: str, expected_name: str, actual_name: str, context: int = 2,
               limit: int = 40) -> str:
    lines = list(difflib.unified_diff(
        expected.splitlines(keepends=True), actual.splitlines(keepends=True),
        fromfile=expected_name, tofile=actual_name, n=context))
    shown = [repr(line)[1:-1] if line[:1] in "+- " and not line.startswith(("+++", "---")) else line.rstrip("\n")
             for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"... ({len(lines) - limit} more diff lines)")
    return "\n".join(shown)


def first_difference(a: str, b: str) -> str:
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"first difference at character {i}: {a[i:i + 30]!r} vs {b[i:i + 30]!r}"


def mismatch(where: str, what: str, expected: Any, actual: Any, expected_name: str, actual_name: str) -> Mismatch:
    if isinstance(expected, str) and isinstance(actual, str):
        body = first_difference(expected, actual) + "\n" + short_diff(expected, actual, expected_name, actual_name)
    else:
        body = (f"{expected_name}: {json.dumps(expected, ensure_ascii=False)[:2000]}\n"
                f"{actual_name}: {json.dumps(actual, ensure_ascii=False)[:2000]}")
    return Mismatch(f"{where}: {what}\n{body}")
