"""The one glob matcher of `where:` values: a glob per parameter (fnmatch, case-sensitive), or
several globs separated by "|". Used by known defects (harness/cases/model.py), lint and the
tool-call family's per-case format table."""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache
from typing import Any, Iterable, Mapping


@lru_cache(maxsize=None)
def _compiled(pattern: str) -> re.Pattern[str]:
    """One regex for the "|"-separated globs of `pattern`: fnmatchcase's own translation of
    each, so it matches exactly what they match (collecting the suite tests every item against
    every declared defect's globs)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(alt)})" for alt in pattern.split("|")))


def glob_match(value: Any, pattern: Any) -> bool:
    """`value` matches one of the "|"-separated globs of `pattern`."""
    return _compiled(str(pattern)).match(str(value)) is not None


def glob_match_any(pattern: Any, values: Iterable[Any]) -> bool:
    """One of `values` matches `pattern`."""
    return any(glob_match(v, pattern) for v in values)


def where_matches(where: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    """Every parameter named in `where` matches its pattern (a missing parameter is "")."""
    return all(glob_match(params.get(k, ""), pattern) for k, pattern in where.items())
