"""xdist: a crashed check must not run again. The --dist loadgroup scheduler groups by case and marks
the check a worker crashed on as done before the rest of its group is re-queued."""

from __future__ import annotations

import re
from typing import Any


# --- xdist: a crashed check must not run again ------------------------------------------------
_CASE_PARAM = re.compile(r"^harness/suite/test_\w+\.py::\w+\[([^\],]+)[\],]")


def group_of(nodeid: str) -> str:
    """The work unit of a check under --dist loadgroup: its case, the first field of every
    suite item id (harness/families/items.py: `case,context,...`), so that a case's models load on one
    worker only. xdist's own grouping (the xdist_group mark, which the plugin still sets) appends
    `@group` to item._nodeid, which pytest 9 no longer reads (a node's id lives in `_id`): with
    pytest 9.2 and xdist 3.8, loadgroup silently sends every test on its own
    (https://github.com/pytest-dev/pytest-xdist/issues/1386; fix proposed in PR #1388). Any
    other test is its own unit, as in xdist."""
    if nodeid.rfind("@") > nodeid.rfind("]"):        # xdist's suffix, where it works
        return nodeid.rsplit("@", 1)[-1]
    m = _CASE_PARAM.match(nodeid)
    return m.group(1) if m else nodeid


def crash_safe_loadgroup_scheduler(config: Any, log: Any) -> Any:
    """pytest-xdist's LoadGroupScheduling, grouping by case (group_of), except that the check a
    worker crashed on is marked done before the rest of its group is re-queued.

    xdist 3.8's LoadScopeScheduling.remove_node re-queues the crashed work unit with the crashed
    check still pending: the replacement worker runs that check first and crashes again, until
    --max-worker-restart is used up and the rest of the run is dropped. Here the check that was
    running (the first one of the unit not completed: a unit's checks run in order) is marked
    completed, reported failed by xdist as before, and only the others run again.

    It also forgets a dead worker's collection (pytest-xdist issue #1362, open in 3.8.0): xdist
    keeps it, so while a replacement worker is still collecting the collection looks complete,
    and scheduling it raised `INTERNALERROR KeyError: <WorkerController gwN>`, which ended a run
    with seven crashed workers here after 5,119 of 10,087 checks. A worker without a registered
    collection gets work once its collection arrives (schedule() runs again then)."""
    from xdist.scheduler import LoadGroupScheduling

    class CrashSafeLoadGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

        def _reschedule(self, node: Any) -> None:
            if node in self.registered_collections:
                super()._reschedule(node)

        def remove_node(self, node: Any) -> str | None:
            workload = self.assigned_work.pop(node)
            if not self._pending_of(workload):
                return None                                      # shutdown (or idle): as xdist
            self.registered_collections.pop(node, None)          # crashed: its replacement registers
            crashitem = next(nodeid for unit in workload.values() for nodeid, done in unit.items() if not done)
            for unit in workload.values():
                if crashitem in unit:
                    unit[crashitem] = True                      # never run it again
            for scope, unit in workload.items():
                if not all(unit.values()):
                    self.workqueue[scope] = unit                 # the rest of the group runs elsewhere
            for other in self.assigned_work:
                self._reschedule(other)
            return crashitem

    return CrashSafeLoadGroupScheduling(config, log)
