"""What a check said, apart from where in the harness it was said.

A failed or expected-to-fail record's message in results.json is pytest's report of it: the
frames of the suite module and the check logic (source lines, `path.py:NN: Mismatch`) and then
the exception's own text, on the lines pytest marks with `E`. The frames belong to the harness,
not to the stack under test: moving a check into another module, or a line further down,
changes them and nothing else. `harness compare` compares the finding, the `E` lines (with the
exception's module path left off its class name and pytest's indentation removed), so a
harness refactor is no change and a different error text from the stack is one.

A message is kept as its last MESSAGE_CHARS characters (harness/session.py, stable_message); where either side
was cut there, the cut side's first line may be partial, so it is dropped and the two findings
agree when the longer one ends with the shorter one.
"""
from __future__ import annotations

import re
from typing import Any

MESSAGE_CHARS = 4000
_QUALIFIED = re.compile(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*: )")


def finding(message: str) -> str:
    lines = (message or "").splitlines()
    if len(message or "") >= MESSAGE_CHARS and lines:
        lines = lines[1:]
    said = [ln[1:].strip() for ln in lines if ln.startswith("E ") or ln == "E"]
    if not said:
        return "\n".join(lines).strip()
    return "\n".join(_QUALIFIED.sub("", ln) for ln in said)


def same_finding(a: str | None, b: str | None) -> bool:
    fa, fb = finding(a or ""), finding(b or "")
    if fa == fb:
        return True
    if max(len(a or ""), len(b or "")) >= MESSAGE_CHARS:
        shorter, longer = sorted((fa, fb), key=len)
        return bool(shorter) and longer.endswith(shorter)
    return False


def message_diff(change: Any, context: int = 2, max_lines: int = 80) -> str:
    """A unified diff of the two findings of a MessageChange (harness/report/changes.py)."""
    import difflib
    lines = list(difflib.unified_diff(change.old.splitlines(), change.new.splitlines(), "OLD", "NEW",
                                      n=context, lineterm=""))
    return "\n".join(lines[:max_lines] + ([f"... {len(lines) - max_lines} more lines"] if len(lines) > max_lines else []))
