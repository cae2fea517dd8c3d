"""goldens.json: the golden files each test wrote or compared, written next to the report."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness.atomic import write_atomic


GOLDENS_FILE = "goldens.json"


GOLDENS_FORMAT = "llm-harness-goldens/1"


atomic_write = write_atomic   # harness/atomic.py


# --- goldens snapshot ---------------------------------------------------------------------------
def golden_files_for(tests: list[dict[str, Any]], golden_dir: Path) -> dict[str, str]:
    """{relative path: text} of the goldens of these tests (golden/<module>/<test name>[.N].json)."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for t in tests:
        path, _, name = t["nodeid"].partition("::")
        if name:
            wanted[Path(path).stem].add(name)
    out: dict[str, str] = {}
    for module, names in sorted(wanted.items()):
        folder = Path(golden_dir) / module
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for fname in entries:
            if not fname.endswith(".json"):
                continue
            base = fname[:-5]
            if base not in names:
                head, _, idx = base.rpartition(".")
                if not (idx.isdigit() and head in names):
                    continue
            try:
                out[f"{module}/{fname}"] = (folder / fname).read_text(encoding="utf-8")
            except OSError:
                continue
    return dict(sorted(out.items()))


def write_goldens(report_dir: Path, tests: list[dict[str, Any]], golden_dir: Path) -> Path:
    return write_goldens_files(report_dir, golden_files_for(tests, golden_dir), str(golden_dir))


def write_goldens_files(report_dir: Path, files: dict[str, str], golden_dir: str | None) -> Path:
    """goldens.json from {relative path: text} (a run's, or the union of merged shards')."""
    doc = {"format": GOLDENS_FORMAT, "golden_dir": golden_dir, "files": dict(sorted(files.items()))}
    return atomic_write(Path(report_dir) / GOLDENS_FILE, json.dumps(doc, indent=0, ensure_ascii=False) + "\n")
