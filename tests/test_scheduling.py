"""Work units of `harness run -n N` and their order (harness/run/scheduling.py): a case's checks
stay together whatever the rootdir, the costliest units go first,
and every check is still sent exactly once, each unit's checks in collection order."""
from __future__ import annotations

from harness.run.scheduling import item_cost, order_units, unit_of

from test_scheduler import scheduled


def test_a_case_is_one_unit_from_the_repository_and_from_another_root():
    ids = ["harness/suite/test_templates.py::test_render[smollm2-135m-instruct,single-user,gen,hf]",
           "test_templates.py::test_render[smollm2-135m-instruct,single-user,gen,hf]",
           "test_tokenizer.py::test_differential[smollm2-135m-instruct,plain,llama-server]",
           "../code/harness/suite/test_generation.py::test_grammar[smollm2-135m-instruct,yes-no,llama-cpp-python]"]
    assert {unit_of(i) for i in ids} == {"smollm2-135m-instruct"}
    assert unit_of("test_templates.py::test_render[llama-cpp-templates@A-b,multi-turn,gen,hf]") \
        == "llama-cpp-templates@A-b"
    assert unit_of("test_case_files.py::test_case_file[gemma3-270m.yaml]") == "gemma3-270m.yaml"


def test_other_tests_are_units_of_their_own():
    assert unit_of("tests/test_templates.py::test_render[a,b]") == "tests/test_templates.py::test_render[a,b]"
    assert unit_of("test_not_a_suite_module.py::test_a[x,y]") == "test_not_a_suite_module.py::test_a[x,y]"
    assert unit_of("test_templates.py::test_plain") == "test_templates.py::test_plain"
    assert unit_of("tests/test_x.py::test_a[1]@g0") == "g0"          # xdist's own suffix, where it works


def test_the_hostile_set_is_one_unit():
    ids = [f"test_hostile.py::test_hostile_template[hostile-templates,nested-loops,{r}]"
           for r in ("harness-sandbox", "hf", "llama-cpp-python", "llama.cpp-builtin", "llama-server")]
    assert {unit_of(i) for i in ids} == {"hostile-templates"}


def test_costliest_units_first_stable_for_ties_and_measured_durations_win():
    gen = "test_generation.py::test_grammar[{},yes-no,llama-cpp-python]"
    render = "test_templates.py::test_render[{},single-user,gen,hf]"
    units = {"tmpl-a": [render.format("tmpl-a")], "model": [gen.format("model"), render.format("model")],
             "tmpl-b": [render.format("tmpl-b")]}
    assert item_cost(gen.format("model")) > item_cost(render.format("model")) > 0
    assert order_units(units) == ["model", "tmpl-a", "tmpl-b"]
    measured = {render.format("tmpl-b"): 100.0}
    assert order_units(units, measured) == ["tmpl-b", "model", "tmpl-a"]


def test_the_scheduler_hands_out_long_units_first_and_sends_every_check_once_in_order():
    ids = ([f"test_templates.py::test_render[tmpl{t},ctx{i},gen,hf]" for t in range(5) for i in range(4)]
           + [f"test_generation.py::test_grammar[model,g{i},llama-cpp-python]" for i in range(3)]
           + [f"test_hostile.py::test_hostile_template[hostile-templates,p{i},{r}]"
              for i in range(3) for r in ("hf", "llama-server")]
           + ["test_case_files.py::test_case_file[model.yaml]"])
    s, a, b = scheduled(ids)
    first = {n.gateway.id: unit_of(ids[n.sent[0]]) for n in (a, b)}
    assert first == {"gw0": "model", "gw1": "hostile-templates"}
    while not s.tests_finished:
        for n in (a, b):
            for i in list(n.sent):
                if not s.assigned_work[n][unit_of(ids[i])][ids[i]]:
                    s.mark_test_complete(n, i)
    sent = a.sent + b.sent
    assert sorted(sent) == list(range(len(ids)))                      # each check exactly once
    for n in (a, b):                                                  # a unit's checks in collection order
        by_unit: dict[str, list[int]] = {}
        for i in n.sent:
            by_unit.setdefault(unit_of(ids[i]), []).append(i)
        assert all(v == sorted(v) for v in by_unit.values())
    assert not (set(unit_of(ids[i]) for i in a.sent) & set(unit_of(ids[i]) for i in b.sent))   # units not split
