"""Shared fixtures for the harness's own tests. Tests that need a model use a real one,
resolved through the harness's own sources (cache, hub, or the PyPI mirror)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


def _hypothesis_without_local_constants() -> None:
    """Hypothesis (6.13x+) mixes into generation string and number constants it mines from the
    "local" modules loaded in the process at that moment, which differ between xdist workers, with
    test order and with every edit of the harness. The fuzz tests are derandomized so that a run
    tries the same inputs everywhere; without this, which inputs they tried depended on what else
    the worker had imported (a stream bug was found on one machine and not on another). Internal
    API, so guarded: if it moves, only this determinism is lost."""
    try:
        from hypothesis.internal.conjecture import providers
        empty = providers.Constants()
        providers._get_local_constants = lambda: empty
        providers.CONSTANTS_CACHE.cache.clear()
    except (ImportError, AttributeError):
        pass


_hypothesis_without_local_constants()


def _child_runs_keep_bytecode() -> None:
    """Many tests start Python children (pytester.runpytest_subprocess, `python -m pytest` of the
    suite, xdist workers of those runs, probe children). With PYTHONDONTWRITEBYTECODE set (as in
    some sandboxes and CI images) every one of them recompiled harness/ from source and re-ran
    pytest's assertion rewriting of the harness plugin and the suite modules: ~2 s of CPU per
    child, several hundred seconds over the whole test run. The children may write their
    bytecode (into the __pycache__ folders .gitignore already ignores; site-packages has its own
    from pip). Only the children: this process keeps what it was started with."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


_child_runs_keep_bytecode()

REPO = Path(__file__).resolve().parent.parent
CASES = REPO / "cases"
SUITE = REPO / "harness" / "suite"


def resolve_case_model(case_id: str) -> Path:
    from harness.cases.model import discover
    from harness.models.sources import FileSpec, resolve
    case = discover(CASES, select=[case_id]).by_id(case_id)
    return resolve(FileSpec.from_case(case.model["gguf"])).path


def pid_gone(pid: int, within_s: float = 10.0) -> bool:
    """No such process, or only a zombie left for init to reap."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    override = os.environ.get("HARNESS_TEST_SMOLLM2_GGUF")
    if override:
        return Path(override)
    return resolve_case_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def llama_tree() -> Path:
    """The pinned llama.cpp tree, resolved as the harness resolves it (the tree vendored in the
    llama-cpp-python sdist, from the harness cache or PyPI); HARNESS_TEST_LLAMA_CPP_TREE overrides."""
    override = os.environ.get("HARNESS_TEST_LLAMA_CPP_TREE")
    if override:
        return Path(override)
    from harness.models.sources import llama_cpp_tree
    return llama_cpp_tree()


@pytest.fixture(scope="session")
def built_server(llama_tree):
    """llama-server built from the pinned tree (cached after the first build, ~10 min)."""
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        pytest.skip("cmake / c++ not on PATH: cannot build llama-server")
    from harness.run.server_build import build_llama_server
    return build_llama_server(llama_tree)


@pytest.fixture
def case_tree(tmp_path: Path) -> Path:
    """A private copy of the shared pieces (contexts, tool sets, grammars, stop sets, tool-call
    generation setups), with no case files yet."""
    root = tmp_path / "cases"
    for sub in ("contexts", "tools", "grammars", "stops", "toolcall-generation"):
        shutil.copytree(CASES / sub, root / sub)
    return root


@pytest.fixture(scope="session")
def preloaded_backends() -> None:
    """pytester's in-process runs drop modules first imported inside them, and numpy/torch
    cannot be imported twice in one process: import the heavy libraries out here first."""
    import llama_cpp  # noqa: F401
    import transformers  # noqa: F401
    import transformers.utils.chat_template_utils  # noqa: F401
    import tokenizers  # noqa: F401
    import time_machine  # noqa: F401


REAL_HARNESS_CACHE = os.environ.get("HARNESS_CACHE") or str(Path.home() / ".cache" / "llm-harness")


@pytest.fixture(autouse=True)
def _no_xdist_env_in_child_runs(request, monkeypatch):
    """Under `pytest -n 2`, PYTEST_XDIST_* variables would leak into the pytest runs that
    pytester starts, which then behave as xdist workers (no syrupy report, no results file)."""
    if "pytester" in request.fixturenames:
        for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
            monkeypatch.delenv(name, raising=False)
        # pytester points HOME at its tmp dir: child runs keep the real harness cache (verified
        # model files, the llama-server build) unless a test sets its own HARNESS_CACHE
        monkeypatch.setenv("HARNESS_CACHE", REAL_HARNESS_CACHE)


# Test modules whose tests share an expensive module- or session-scoped fixture (a suite run in a
# child process, a batch of renders, a converted tokenizer): under xdist each worker that runs one
# of their tests computes the fixture itself, so their tests are sent to one worker together.
SHARED_FIXTURE_MODULES = frozenset({
    "tests/test_newcase.py",            # offline_cases: new-case on every offline GGUF, two suite runs
    "tests/test_crash_isolation.py",    # crash_run: the suite with crashing backends
    "tests/test_corrupt_files.py",      # run: the suite over the corrupt model files
    "tests/test_hostile.py",            # python_findings, server_findings: every payload, every renderer
    "tests/test_hub_tokenizer.py",      # hf_cache: SmolLM2's tokenizer converted from its GGUF
})


def pytest_xdist_make_scheduler(config, log):
    """`-n N` without --dist (plain `make test`): xdist's load scheduling, except that the tests of
    SHARED_FIXTURE_MODULES go to one worker as one unit, and go first (xdist orders units by
    size), so the long ones do not end up last on one worker while the other idles."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in SHARED_FIXTURE_MODULES else nodeid

    return SharedFixtureScheduling(config, log)
