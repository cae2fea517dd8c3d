"""Goldens: syrupy's JSON extension, pinned to the repository's golden/ folder.

One file per snapshot, `golden/<test module>/<test name>[<id>].json`, written with
indent=2 and ensure_ascii=False: exact (prompts keep their \r and trailing spaces,
escaped inside JSON strings) and readable in a pull-request diff.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from syrupy.extensions.json import JSONSnapshotExtension


@lru_cache(maxsize=None)
def golden_extension(golden_dir: Path) -> type[JSONSnapshotExtension]:
    """One class per folder: syrupy discovers snapshots once per (folder, extension class),
    so a new class per test would rescan the folder for every test (quadratic)."""
    golden_dir = Path(golden_dir)

    class GoldenJSON(JSONSnapshotExtension):
        @classmethod
        def dirname(cls, *, test_location) -> str:
            return str(golden_dir / test_location.basename)

    return GoldenJSON
