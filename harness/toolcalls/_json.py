"""Strict JSON helpers shared by every format and by reconstruct()."""

from __future__ import annotations

import json
import math
from typing import Any

def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"number {token} overflows a double")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def loads(text: str, *, reject_duplicates: bool = False) -> Any:
    """Strict JSON: no NaN/Infinity, no control characters in strings.

    Raises ValueError only (deep nesting's RecursionError is converted)."""
    try:
        return json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            object_pairs_hook=_no_duplicates if reject_duplicates else None,
        )
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def normalize_arguments(value: Any) -> tuple[Any, str | None]:
    """Arguments should be an object; a JSON string holding an object is unwrapped."""
    if isinstance(value, dict):
        return value, None
    if isinstance(value, str):
        try:
            inner = loads(value)
        except ValueError:
            inner = None
        if isinstance(inner, dict):
            return inner, None
        return value, "arguments is a string that does not contain a JSON object"
    return value, f"arguments must be a JSON object, got {type(value).__name__}"
