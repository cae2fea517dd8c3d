"""The suite's xdist scheduler (harness.run.scheduler.crash_safe_loadgroup_scheduler) survives
workers that crash while others are still collecting (pytest-xdist #1362: a dead worker's
collection was kept, and scheduling a still-collecting replacement raised KeyError)."""
from __future__ import annotations

from types import SimpleNamespace

from harness.run.scheduler import crash_safe_loadgroup_scheduler


class Node:
    """A stand-in for xdist's WorkerController: records what it is sent."""

    def __init__(self, name: str):
        self.gateway = SimpleNamespace(id=name)
        self.shutting_down = False
        self.sent: list[int] = []

    def send_runtest_some(self, indices):
        self.sent.extend(indices)

    def shutdown(self):
        self.shutting_down = True

    def __repr__(self):
        return f"<Node {self.gateway.id}>"


IDS = [f"harness/suite/test_x.py::test_a[case{c},ctx{i}]" for c in range(4) for i in range(3)]


def scheduler():
    config = SimpleNamespace(getvalue=lambda name: ["2*popen"] if name == "tx" else None,
                             option=SimpleNamespace(loadscopereorder=False))
    return crash_safe_loadgroup_scheduler(config, None)


def test_crash_while_a_replacement_collects_does_not_raise_and_every_check_runs_once():
    s = scheduler()
    a, b = Node("gw0"), Node("gw1")
    for n in (a, b):
        s.add_node(n)
        s.add_node_collection(n, IDS)
    s.schedule()
    # gw0 crashes on the first check it was sent: a replacement starts collecting
    crashed = s.remove_node(a)
    assert crashed == IDS[a.sent[0]]
    c = Node("gw2")
    s.add_node(c)
    # gw1 crashes too, before gw2 has finished collecting (the field sequence of #1362)
    assert s.remove_node(b) == IDS[b.sent[0]]
    d = Node("gw3")
    s.add_node(d)
    assert not s.collection_is_completed           # the dead workers' collections are forgotten
    for n in (c, d):
        s.add_node_collection(n, IDS)
    s.schedule()                                   # raised KeyError before the fix
    done: set[tuple[str, int]] = set()
    while any((n.gateway.id, i) not in done for n in (c, d) for i in n.sent):
        for n in (c, d):
            for i in [i for i in n.sent if (n.gateway.id, i) not in done]:
                done.add((n.gateway.id, i))
                s.mark_test_complete(n, i)
    ran = set(c.sent) | set(d.sent)
    crashed_items = {IDS.index(crashed), b.sent[0]}
    # every check not run by a dead worker runs on a replacement, the crashed one never again
    assert crashed_items.isdisjoint(ran)
    assert ran == set(range(len(IDS))) - crashed_items
    assert s.tests_finished
