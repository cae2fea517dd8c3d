"""The results as a matrix: one cell per (check, case, backend), each test classified pass / fail /
xfail / skip, and the skip reasons."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from harness.families import FAMILY_ORDER


OUTCOME_CLASS = {"passed": "pass", "failed": "fail", "error": "fail", "xpassed": "fail",
                 "xfailed": "xfail", "skipped": "skip"}


CLASSES = ("pass", "fail", "xfail", "skip")


NO_BACKEND = "-"


# --- the matrix ------------------------------------------------------------------------------
def _param_id(nodeid: str) -> str:
    return nodeid[nodeid.index("[") + 1:-1] if "[" in nodeid and nodeid.endswith("]") else nodeid.split("::")[-1]


def classify(test: dict[str, Any]) -> tuple[str, str, str]:
    """(model, family, backend) of one result record."""
    case = test.get("case")
    if case:
        model = case.split("@", 1)[0]
    elif "test_case_file" in test["nodeid"]:  # test_case_file[x.yaml]: the case file's own row
        model = re.sub(r"\.ya?ml$", "", _param_id(test["nodeid"]))
    else:                                     # e.g. an empty parametrization ([NOTSET]): no case at all
        model = "(no case)"
    module = Path(test["nodeid"].split("::")[0]).stem.removeprefix("test_")
    check = test.get("check") or ("case_files.valid" if "test_case_file" in test["nodeid"] else f"{module}.other")
    family = check.split(".")[0]
    backend = (test.get("params") or {}).get("backend") or NO_BACKEND
    return model, family, backend


def anchor(model: str, family: str, backend: str) -> str:
    return "c-" + re.sub(r"[^a-z0-9]+", "-", f"{model}--{family}--{backend}".lower()).strip("-")


@dataclass
class Cell:
    counts: Counter = field(default_factory=Counter)
    tests: list[dict[str, Any]] = field(default_factory=list)

    def by(self, cls: str) -> list[dict[str, Any]]:
        return [t for t in self.tests if OUTCOME_CLASS.get(t["outcome"], "fail") == cls]


@dataclass
class Matrix:
    models: list[str]
    families: list[str]
    backends: dict[str, list[str]]          # family -> backends seen
    cells: dict[tuple[str, str, str], Cell]
    totals: Counter

    def cell(self, model: str, family: str, backend: str) -> Cell | None:
        return self.cells.get((model, family, backend))

    def present(self):
        """(model, family, backend, cell) for every cell with checks, in report order."""
        for model in self.models:
            for fam in self.families:
                for b in self.backends[fam]:
                    c = self.cell(model, fam, b)
                    if c is not None:
                        yield model, fam, b, c


BACKEND_ORDER = ("hf", "llama-cpp-python", "llama-cpp-python-eval", "llama.cpp-builtin", "llama-server", "llama.cpp-chat", "openai",
                 "llama-cpp-python-server", NO_BACKEND)


def _order(values: Iterable[str], preferred: tuple[str, ...]) -> list[str]:
    values = set(values)
    return [v for v in preferred if v in values] + sorted(values - set(preferred))


def build_matrix(tests: list[dict[str, Any]]) -> Matrix:
    cells: dict[tuple[str, str, str], Cell] = defaultdict(Cell)
    totals: Counter = Counter()
    for t in tests:
        key = classify(t)
        cls = OUTCOME_CLASS.get(t["outcome"], "fail")
        cells[key].counts[cls] += 1
        cells[key].tests.append(t)
        totals[cls] += 1
    families = _order({f for _, f, _ in cells}, FAMILY_ORDER)
    backends = {f: _order({b for _, ff, b in cells if ff == f}, BACKEND_ORDER) for f in families}
    models = sorted({m for m, _, _ in cells}, key=lambda m: (m.startswith("vocab-"), m))
    return Matrix(models, families, backends, dict(cells), totals)


def skip_reason(message: str) -> str:
    msg = (message or "").strip()
    msg = re.sub(r"^Skipped:\s*", "", msg)
    return msg.splitlines()[0][:300] if msg else "(no reason given)"
