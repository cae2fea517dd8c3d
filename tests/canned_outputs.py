"""cases/toolcall-outputs/*.yaml, parsed once per process for the test modules that read them
(test_toolcalls, test_toolcalls_fuzz, test_toolcalls_reasoning). Each module parsed all of
them at import, ~3 s of pure-Python YAML each, in every xdist worker; now each gets its own
deep copy of one parse (the same yaml.safe_load, so the same documents)."""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import yaml

CASES_DIR = Path(__file__).resolve().parents[1] / "cases" / "toolcall-outputs"


@lru_cache(maxsize=None)
def _parsed() -> tuple[tuple[Path, object], ...]:
    return tuple((path, yaml.safe_load(path.read_text(encoding="utf-8"))) for path in sorted(CASES_DIR.glob("*.yaml")))


def documents() -> list[tuple[Path, dict]]:
    """(path, document) for every file, sorted by path; the caller's own copy."""
    return copy.deepcopy(list(_parsed()))
