"""Hostile chat templates (harness/families/hostile/checks.py) through every renderer present.

One item per payload and renderer: the harness's own sandboxed renderer, transformers,
llama-cpp-python's Jinja2ChatFormatter, llama.cpp's built-in templates, and llama-server
(started with the payload as --chat-template-file, serving the smallest selected model case
with weights). The outcome (blocked / error / rendered / escaped) and its detail are recorded
with the result; an escape fails, and so does anything but "blocked" for the harness's own
renderer. The set runs when no --case is given or a --case glob matches `hostile-templates`.
"""

from __future__ import annotations

import fnmatch

import pytest

from harness.families.hostile import checks as hostile
from harness.cases.model import Case
from harness.families.items import RENDERERS, Item

CASE = Case(id="hostile-templates", kind="hostile", description="hostile chat templates (harness/families/hostile/checks.py)",
            file="harness/families/hostile/checks.py", line=1, raw={}, contexts=(), known_defects=())


def hostile_items(cases, available) -> list[Item]:
    # the renderers the hostile family knows how to bound (hostile.RENDERERS); llama.cpp's chat
    # layer (llama.cpp-chat) renders in the probe process and is not one of them yet
    names = ["harness-sandbox"] + [r for r in RENDERERS if r in available and r in hostile.RENDERERS]
    return [Item(CASE, "hostile.render", backend=r, extra=(("payload", p.id),))
            for p in hostile.PAYLOADS for r in names]


PARAMETERS = {"hostile_item": hostile_items}


@pytest.fixture(scope="session")
def hostile_renderers():
    """Renderer objects built once, in this process, before any fork (name -> object or the
    reason it is not available)."""
    out = {}
    for name in hostile.PYTHON_RENDERERS:
        try:
            out[name] = hostile.make_renderer(name)
        except Exception as exc:  # a renderer that cannot be built here is skipped with why
            out[name] = f"{type(exc).__name__}: {exc}"
    return out


@pytest.fixture(scope="session")
def hostile_server(harness_runtime, harness_cases):
    """(built llama-server, model path) or the reason there is none."""
    from harness.backends.server import resolve_server
    from harness.cases.model import discover

    def weights(cases):
        return sorted((c for c in cases if c.kind == "model" and c.has_weights),
                      key=lambda c: (c.model["gguf"].get("size") or 1 << 62, c.id))
    # the smallest selected model with weights; with none selected (--case hostile-templates), any
    hosts = weights(harness_cases.cases) or weights(discover(harness_cases.root).cases)
    if not hosts:
        return "no model case has weights to serve the templates with"
    try:
        model = harness_runtime.model_files(hosts[0])
        built = resolve_server(harness_runtime.options_for("llama-server").extra)
    except Exception as exc:  # no model or no build: the llama-server items skip with the reason
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return built, model.gguf


@pytest.fixture(scope="session")
def hostile_prefetched(request, hostile_renderers, tmp_path_factory):
    """The findings of every Python-renderer item this session runs, rendered several at a time
    (harness/families/hostile/batch.py) when the first of them runs; each test takes its own."""
    from harness.families.hostile import batch as hostile_batch
    if request.config.getoption("--case") and not any(
            fnmatch.fnmatchcase(CASE.id, g) for g in request.config.getoption("--case")):
        return {}
    jobs = []
    for item in request.session.items:
        it = getattr(getattr(item, "callspec", None), "params", {}).get("hostile_item")
        renderer = hostile_renderers.get(it.backend) if it is not None else None
        if renderer is not None and not isinstance(renderer, str):
            jobs.append((it.backend, renderer, hostile.payload(dict(it.extra)["payload"])))
    return hostile_batch.render_python_many(jobs, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def hostile_server_prefetched(request, hostile_server, tmp_path_factory):
    """The same for the llama-server items: a few servers at a time (harness/families/hostile/batch.py)."""
    from harness.families.hostile import batch as hostile_batch
    if isinstance(hostile_server, str):
        return {}
    payloads = []
    for item in request.session.items:
        it = getattr(getattr(item, "callspec", None), "params", {}).get("hostile_item")
        if it is not None and it.backend == "llama-server":
            payloads.append(hostile.payload(dict(it.extra)["payload"]))
    return hostile_batch.render_server_many(hostile_server[0], hostile_server[1], payloads,
                                            tmp_path_factory.getbasetemp())


def test_hostile_template(hostile_item, hostile_renderers, request, record_property, tmp_path_factory):
    it = hostile_item
    selected = request.config.getoption("--case")
    if selected and not any(fnmatch.fnmatchcase(CASE.id, g) for g in selected):
        pytest.skip("the hostile template set runs when --case selects 'hostile-templates' (or no --case)")
    payload = hostile.payload(dict(it.extra)["payload"])
    parent = tmp_path_factory.getbasetemp()
    if it.backend == "llama-server":
        server = request.getfixturevalue("hostile_server")
        if isinstance(server, str):
            pytest.skip(f"llama-server: {server}")
        finding = request.getfixturevalue("hostile_server_prefetched").pop(payload.id, None)
        if finding is None:           # not prefetched (a rerun of this item): rendered on its own
            with hostile.Canary(parent) as canary:
                finding = hostile.render_server(server[0], server[1], payload, canary)
    else:
        renderer = hostile_renderers.get(it.backend)
        if isinstance(renderer, str) or renderer is None:
            pytest.skip(f"{it.backend}: {renderer}")
        finding = request.getfixturevalue("hostile_prefetched").pop((it.backend, payload.id), None)
        if finding is None:           # not prefetched (a rerun of this item): rendered on its own
            with hostile.Canary(parent) as canary:
                finding = hostile.render_python(it.backend, renderer, payload, canary)
    record_property("backend_info", {"renderer": it.backend, "payload": payload.id, "kind": payload.kind,
                                     "outcome": finding.outcome, "detail": finding.detail})
    if finding.outcome == "escaped":
        pytest.fail(f"ESCAPED: {finding.line()}", pytrace=False)
    if it.backend == "harness-sandbox" and finding.outcome != "blocked":
        pytest.fail(f"the harness's own renderer must block every payload: {finding.line()}", pytrace=False)
