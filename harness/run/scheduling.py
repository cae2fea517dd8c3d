"""Which checks run together on one xdist worker, and in which order the groups are handed out.

`harness run -n N --dist loadgroup` hands out work units, not single checks (the scheduler is
harness/run/scheduler.py crash_safe_loadgroup_scheduler; this module decides its units and
their order):

* a unit is a case: every check of a case runs on one worker, in collection order, so the
  models it loads are loaded once (`unit_of`). The id of a suite check starts with its case
  (harness/families/items.py: `case,context,...`), whatever the run's rootdir: from the
  repository `harness/suite/test_templates.py::test_render[case,...]`, from another root
  (`harness --root DIR`) `test_templates.py::test_render[case,...]`. Each template of a template
  set is a case of its own (`llama-cpp-templates@Name`). The hostile template set stays one
  unit: its renders run several at a time (harness/families/hostile/batch.py), first the
  Python renderers', then the llama-server ones, and most of them burn CPU up to their
  wall-clock bound; two workers rendering at once would leave each render less CPU within the
  same bound (a render that ends in a MemoryError now could end at the time bound). Any other
  test is a unit of its own;
* the wall time of a run is that of its busiest worker: units are handed out longest first
  (`order_units`), so the few long ones (a model case's generation checks, the hostile set)
  start at once on different workers and the many short ones (vocab-only cases, templates) fill
  the gaps at the end. The expected cost of a unit is the sum of its checks' expected seconds:
  the measured durations of a previous results.json when one is given (`harness run --shard K/N
  --durations FILE`), else a per-check estimate from the check and the backend in its id
  (`ITEM_COST_S`, measured).

The order changes when a check runs, never what it does: ids, collection order, goldens and
results are the same, and a unit's checks still run in collection order on one worker.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

SUITE_DIR = Path(__file__).resolve().parents[1] / "suite"
SUITE_MODULES = frozenset(p.name for p in SUITE_DIR.glob("test_*.py"))

_CHECK_ID = re.compile(r"^(?P<prefix>(?:.*/)?harness/suite/)?(?P<module>test_\w+\.py)::(?P<fn>\w+)"
                       r"\[(?P<params>.*)\]$")
_BACKENDS = ("hf", "llama-cpp-python", "llama.cpp-builtin", "llama-server", "llama.cpp-chat", "openai", "llama-cpp-python-server",
             "harness-sandbox")

# Expected seconds of one check, by test function and backend (the backend named in the id;
# "" for checks that name none), else by test function: rounded means of one measured default
# run (2cbe481, 2 cores, 2 workers: reports/results.json durations). Only the order of the
# units depends on them.
ITEM_COST_S = {
    ("test_grammar", "llama-cpp-python"): 1.2, ("test_grammar", "llama-server"): 1.0,
    ("test_chat_call", "llama-cpp-python"): 6.3, ("test_chat_call", "llama-server"): 5.3,
    ("test_grammar_call", "llama-cpp-python"): 6.6, ("test_grammar_call", "llama-server"): 5.3,
    ("test_model_format", "llama-server"): 7.0,
    ("test_stop", "llama-cpp-python"): 0.65, ("test_stop", "llama-server"): 0.65,
    ("test_hostile_template", "llama-server"): 0.9, ("test_hostile_template", "harness-sandbox"): 0.85,
    ("test_special_rendering", "llama-server"): 0.8, ("test_special_rendering", "llama-cpp-python"): 0.3,
    ("test_chat_template", "llama-server"): 0.9, ("test_chat_template", "llama-cpp-python"): 0.55,
    ("test_out_of_vocab", "llama-cpp-python"): 0.55,
    ("test_differential", "llama-cpp-python"): 0.25, ("test_differential", "llama-server"): 0.22,
    ("test_special_texts", "llama-server"): 0.22, ("test_special_texts", "llama-cpp-python"): 0.14,
    ("test_every_id_detokenizes", "llama-cpp-python"): 0.33, ("test_every_id_detokenizes", "hf"): 0.2,
    ("test_masks", "llama-cpp-python"): 0.25, ("test_missing_template", ""): 0.17,
    ("test_render", "hf"): 0.01, ("test_render", "llama-cpp-python"): 0.006,
}
FUNCTION_COST_S = {"test_hostile_template": 0.01, "test_render": 0.002, "test_case_file": 0.001}
DEFAULT_COST_S = 0.003


def _parse(nodeid: str) -> re.Match | None:
    m = _CHECK_ID.match(nodeid)
    if m is None or (m.group("prefix") is None and m.group("module") not in SUITE_MODULES):
        return None
    return m


def unit_of(nodeid: str) -> str:
    """The work unit of a test (see the module's docstring)."""
    if nodeid.rfind("@") > nodeid.rfind("]"):        # xdist's own `@group` suffix, where it works
        return nodeid.rsplit("@", 1)[-1]
    m = _parse(nodeid)
    if m is None:
        return nodeid
    return m.group("params").split(",", 1)[0]


def item_cost(nodeid: str) -> float:
    """Expected seconds of one test, from its id alone."""
    m = _parse(nodeid)
    if m is None:
        return DEFAULT_COST_S
    fn = m.group("fn")
    backend = next((f for f in reversed(m.group("params").split(",")) if f in _BACKENDS), "")
    return ITEM_COST_S.get((fn, backend), FUNCTION_COST_S.get(fn, DEFAULT_COST_S))


def order_units(units: dict[str, Iterable[str]], durations: dict[str, float] | None = None) -> list[str]:
    """Unit keys, costliest first; equal costs keep their first-seen order (stable)."""
    durations = durations or {}
    cost = {key: sum(durations[n] if n in durations else item_cost(n) for n in nodeids)
            for key, nodeids in units.items()}
    position = {key: i for i, key in enumerate(units)}
    return sorted(units, key=lambda k: (-round(cost[k], 6), position[k]))


class OrderedUnits:
    """Mixin for xdist's LoadScopeScheduling family (harness/run/scheduler.py): units by
    `unit_of`, handed out costliest first. It also finds a check's index in a worker's
    collection through a dict (xdist's `list.index` per check made handing out the ~11,000
    checks of the default suite quadratic on the controller)."""

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)

    def _durations(self) -> dict[str, float] | None:
        path = self.config.getoption("--shard-durations", None) if hasattr(self.config, "getoption") else None
        if not path:
            return None
        from harness.run.shard import load_durations
        try:
            return load_durations(path)[0]
        except (OSError, ValueError):
            return None              # the order is only an optimisation; --shard reports a bad file

    def _assign_work_unit(self, node) -> None:  # noqa: ANN001 (xdist's WorkerController)
        if not getattr(self, "_units_ordered", False):
            self._units_ordered = True
            for key in order_units(dict(self.workqueue), self._durations()):
                self.workqueue.move_to_end(key)
        scope, work_unit = self.workqueue.popitem(last=False)
        self.assigned_work.setdefault(node, {})[scope] = work_unit
        index = self._collection_index(node)
        node.send_runtest_some([index[nodeid] for nodeid, done in work_unit.items() if not done])

    def _collection_index(self, node) -> dict[str, int]:  # noqa: ANN001
        collection = self.registered_collections[node]
        cache = self.__dict__.setdefault("_indexes", {})
        cached = cache.get(node)
        if cached is None or cached[0] is not collection:
            cached = cache[node] = (collection, {nodeid: i for i, nodeid in enumerate(collection)})
        return cached[1]
