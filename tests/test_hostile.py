"""The hostile template set (harness/families/hostile/checks.py) from the test command: every payload through
every renderer present. Nothing may escape (effect-checked with a canary), every render ends
within its bound, and the harness's own renderer blocks every payload by itself.

Also: the canary really detects escapes (an unsandboxed Jinja double escapes and is reported
as "escaped"), and a crash or hang of a renderer is contained in its child.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness.families.hostile import checks as hostile
from harness.families.hostile.payloads import PAYLOADS, Canary

PYTHON_BOUND_S = hostile.PY_TIMEOUT_S + 5           # the kill, plus fork and pickling slack
SERVER_BOUND_S = hostile.SERVER_START_S + hostile.SERVER_REQUEST_S + 10


@pytest.fixture(scope="session")
def renderers(preloaded_backends):
    out = {}
    for name in hostile.PYTHON_RENDERERS:
        reason = hostile.renderer_present(name)
        out[name] = reason or hostile.make_renderer(name)
    return out


@pytest.fixture(scope="session")
def server(smollm2_gguf):
    """A built llama-server (cached by tree hash) and SmolLM2 to serve the templates with."""
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        pytest.skip("cmake / c++ not on PATH: cannot build llama-server")
    from harness.run.server_build import build_llama_server
    from harness.models.sources import llama_cpp_tree
    tree = os.environ.get("HARNESS_TEST_LLAMA_CPP_TREE")
    return build_llama_server(Path(tree) if tree else llama_cpp_tree()), smollm2_gguf


@pytest.fixture(scope="session")
def python_findings(renderers, tmp_path_factory):
    """Every payload through every Python renderer present, several children at a time
    (harness/families/hostile/batch.py: each child with its own bounds, as render_python gives it)."""
    from harness.families.hostile import batch as hostile_batch
    jobs = [(name, r, p) for p in PAYLOADS for name, r in renderers.items() if not isinstance(r, str)]
    return hostile_batch.render_python_many(jobs, tmp_path_factory.mktemp("canaries"))


@pytest.fixture(scope="session")
def server_findings(server, tmp_path_factory):
    """Every payload through llama-server, a few servers at a time (harness/families/hostile/batch.py)."""
    from harness.families.hostile import batch as hostile_batch
    built, model = server
    return hostile_batch.render_server_many(built, model, PAYLOADS, tmp_path_factory.mktemp("server-canaries"))


@pytest.mark.parametrize("renderer", hostile.RENDERERS)
@pytest.mark.parametrize("payload", PAYLOADS, ids=[p.id for p in PAYLOADS])
def test_hostile_payload(payload, renderer, request, tmp_path, record_property):
    with Canary(tmp_path) as canary:
        if renderer == "llama-server":
            finding = request.getfixturevalue("server_findings")[payload.id]
            bound = SERVER_BOUND_S
        else:
            r = request.getfixturevalue("renderers")[renderer]
            if isinstance(r, str):
                pytest.skip(f"{renderer}: {r}")
            finding = request.getfixturevalue("python_findings")[(renderer, payload.id)]
            bound = PYTHON_BOUND_S
        assert not canary.touch.exists()
    record_property("finding", finding.line())
    print(finding.line())
    assert finding.outcome != "escaped", finding.line()
    assert finding.seconds < bound, f"did not end within {bound}s: {finding.line()}"
    if renderer == "harness-sandbox":
        assert finding.outcome == "blocked", finding.line()
        # it stops itself: never the isolation kill
        assert "time bound" not in finding.detail and finding.seconds < hostile.PY_TIMEOUT_S, finding.line()


# --- the detector detects ------------------------------------------------------------------
class UnsandboxedRenderer:
    """A renderer with no sandbox at all (plain jinja2.Environment with a file loader), as
    llama-cpp-python was before CVE-2024-34359: the set must report it as escaping."""
    name = "unsandboxed-double"

    def render_prompt(self, req):
        import jinja2
        from harness.backends.base import Rendered
        env = jinja2.Environment(loader=jinja2.FileSystemLoader("/"))
        env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(ValueError(m))
        try:
            return Rendered(text=env.from_string(req.template).render(messages=req.messages))
        except Exception as exc:  # the outcome of the render is what the driver classifies
            return Rendered(error=f"{type(exc).__name__}: {exc}")


ESCAPING = ["subclasses-popen", "cycler-globals-os-popen", "joiner-globals-os-system", "namespace-builtins-import",
            "raise-exception-globals-open", "attr-filter-environ", "format-string-environ", "include-file",
            "mutate-messages"]


@pytest.mark.parametrize("pid", ESCAPING)
def test_an_unsandboxed_renderer_is_reported_as_escaping(pid, tmp_path):
    with Canary(tmp_path) as canary:
        finding = hostile.render_python("unsandboxed-double", UnsandboxedRenderer(), hostile.payload(pid), canary)
    assert finding.outcome == "escaped", finding.line()
    assert finding.evidence, finding.line()


def test_canary_is_removed_and_evidence_names_the_effect(tmp_path):
    with Canary(tmp_path) as canary:
        assert canary.evidence("nothing here") == []
        canary.touch.write_text("x")
        assert canary.evidence(f"leak {canary.secret}") == [
            "pwned was created (a command or a write ran)", "the secret file's content appears in the output"]
        folder = canary.dir
    assert not folder.exists()


def test_every_payload_is_unique_and_described():
    ids = [p.id for p in PAYLOADS]
    assert len(ids) == len(set(ids))
    assert {p.kind for p in PAYLOADS} == {"exec", "file-read", "mutation", "loop", "blowup", "recursion"}
    assert all(p.description and p.template for p in PAYLOADS)
