"""The pytest entry point (registered as the `harness` pytest11 plugin).

Flow: options -> CaseSet (lazy, once) -> pytest_generate_tests parametrizes the ordinary
test functions of harness/suite/ from each module's PARAMETERS table -> session-scoped
Runtime (models, backends) -> results collected per test and written to reports/.
The run's state is one HarnessSession (harness/session.py), created in pytest_configure; the
hooks here declare the options and hand off to it.

Heavy imports (transformers, llama_cpp) happen inside backends, never at plugin import, so
the plugin costs nothing in test runs that do not use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# harness.suite.conclude compares every Outcome's golden (`assert outcome.golden == golden`): with
# its asserts rewritten, a differing golden fails with syrupy's diff, as a test module's would,
# instead of a bare AssertionError (before any harness.suite import)
pytest.register_assert_rewrite("harness.suite")

from harness.run import tb_cache  # noqa: E402  (one parsed tree per module for failure reports)
tb_cache.install()

from harness.cases.model import CaseSet
from harness.run.session_end import whole_modules
from .session import SESSION_KEY, HarnessSession, harness_session


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "LLM inference conformance harness")
    group.addoption("--cases", default=None, help="folder of case files (default: <rootdir>/cases)")
    group.addoption("--case", action="append", default=[], metavar="GLOB",
                    help="run only cases whose id matches GLOB (repeatable), e.g. 'smollm2-*'")
    group.addoption("--backend", action="append", default=[], metavar="NAME",
                    help="run only these backends (repeatable): hf, llama-cpp-python, llama.cpp-builtin, llama-server")
    group.addoption("--golden-dir", default=None, help="goldens folder (default: <rootdir>/golden)")
    group.addoption("--report-dir", default=None,
                    help="write results.json here at the end of a suite run (default: <rootdir>/reports)")
    group.addoption("--model-dir", action="append", default=[], metavar="DIR",
                    help="look for model files here first (also: HARNESS_MODEL_DIR)")
    group.addoption("--server-url", default=None,
                    help="attach the llama-server backend to a server you started (not stopped by us)")
    group.addoption("--server-binary", default=None, help="use this llama-server binary instead of building one")
    group.addoption("--llama-cpp-tree", default=None,
                    help="build llama-server from this llama.cpp tree (default: the pinned llama-cpp-python sdist)")
    group.addoption("--openai-url", default=None,
                    help="also run the 'openai' backend against this OpenAI-compatible endpoint")
    group.addoption("--openai-capabilities", default="chat,stream",
                    help="capabilities of --openai-url: a comma list (e.g. chat,stream,complete,tools) or "
                         "@FILE, a JSON or YAML list")
    group.addoption("--threads", type=int, default=1, help="backend threads (recorded in results)")
    group.addoption("--seed", type=int, default=1234, help="sampling seed (recorded in results)")
    # limits (harness/run/fork.py, memory_watch.py): a hung check fails alone; a check that eats memory fails alone
    group.addoption("--case-timeout", type=float, default=600.0, metavar="SECONDS",
                    help="fail a suite check that runs longer than this (pytest-timeout, signal method; "
                         "0: off; pytest-timeout's own --timeout / ini timeout win when given)")
    group.addoption("--memory-ceiling", type=int, default=6144, metavar="MIB",
                    help="fail the running check when its process's resident memory passes MIB (0: off)")
    # one slice of the run for a CI matrix (harness/run/shard.py); `harness merge` joins the slices
    group.addoption("--shard", default=None, metavar="K/N",
                    help="run only shard K of N: whole cases, balanced by expected cost (harness/run/shard.py)")
    group.addoption("--shard-durations", default=None, metavar="RESULTS_JSON",
                    help="balance --shard by the check durations of this earlier results.json")


def pytest_configure(config: pytest.Config) -> None:
    hs = config.stash[SESSION_KEY] = HarnessSession(config)
    config.pluginmanager.register(hs, "harness-session")
    config.addinivalue_line("markers", "harness_item(check): a parametrized conformance check")
    config.addinivalue_line("markers", "harness_defect(defect): a known defect with `match:`, checked on failure")
    # checks record their properties for results.json, not for JUnit's xunit2 (which has no place
    # for them): one warning per check would bury the summary of a serial run
    config.addinivalue_line("filterwarnings",
                            "ignore:record_property is incompatible with junit_family:pytest.PytestWarning")
    if hs.worker:
        # xdist worker: its signal handling (harness/run/server_build.py) is in place from the start,
        # so the SIGINT execnet may send it at shutdown is recognised as expected
        from harness.run.server_process import install_cleanup
        install_cleanup()
    if hasattr(config.option, "disable_unused_snapshots"):
        # Unused goldens are found by the harness (review.stale_goldens, in linear time, also
        # under xdist); syrupy's own search compares every golden with every ran test and took
        # more than ten minutes for the default suite run serially.
        config.option.disable_unused_snapshots = True


def pytest_unconfigure(config: pytest.Config) -> None:
    if SESSION_KEY in config.stash:
        harness_session(config).stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """--memory-ceiling: a MemoryWatch per process, started at its first suite check; it fails
    the check that is running when resident memory passes the ceiling."""
    watch, hs = None, harness_session(item.config)
    if getattr(getattr(item, "module", None), "PARAMETERS", None) and hs.options.memory_ceiling:
        watch = hs.watch_memory(item.nodeid)
    try:
        outcome = yield
    finally:
        if watch is not None:
            watch.running(None)
    check_declared_defect(item, outcome)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """--dist loadgroup: never re-run the check a worker crashed on (harness/run/scheduler.py)."""
    if config.getvalue("dist") == "loadgroup":
        from harness.run.scheduler import crash_safe_loadgroup_scheduler
        return crash_safe_loadgroup_scheduler(config, log)
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--shard K/N: keep this shard's cases (after every other selection: harness/run/shard.py).
    --case-timeout: a pytest-timeout marker on every suite check that has none, unless
    pytest-timeout is configured explicitly (--timeout or the ini `timeout`)."""
    if config.getoption("--shard"):
        from harness.run.shard import select
        harness_session(config).state.shard = record = select(config, items)
        record["whole_modules"] = whole_modules(config, shard=False)   # stale goldens: `harness merge`
    limit = harness_session(config).options.case_timeout
    if not limit or not config.pluginmanager.hasplugin("timeout"):
        return
    try:
        explicit = config.getoption("timeout", None) is not None or bool(config.getini("timeout"))
    except ValueError:
        explicit = False
    if explicit:
        return
    for item in items:
        module = getattr(item, "module", None)
        if getattr(module, "PARAMETERS", None) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(limit, method="signal"))


def check_declared_defect(item: pytest.Item, outcome: Any) -> None:
    """A known defect with `match:` expects exactly that finding: any other Mismatch becomes a
    DefectChanged, which the strict xfail (raises=Mismatch) does not accept."""
    marker = item.get_closest_marker("harness_defect")
    excinfo = getattr(outcome, "excinfo", None)
    if marker is None or excinfo is None:
        return
    from .checks import DefectChanged, Mismatch
    defect, exc = marker.args[0], excinfo[1]
    if isinstance(exc, Mismatch) and not defect.explains(str(exc)):
        outcome.force_exception(DefectChanged(
            f"{defect.file}:{defect.line}: the declared known defect expects a message matching "
            f"{defect.match!r}, but the check failed differently:\n{exc}"))


def present_backends(names: list[str]) -> list[str]:
    """Backends whose code is installed here. llama-server joins once its module exists."""
    import importlib.util
    from .backends.base import backend_targets
    out = []
    for n in names:
        module = backend_targets().get(n, "").partition(":")[0]
        if module and importlib.util.find_spec(module) is not None:
            out.append(n)
    return out


# --- parametrization ---------------------------------------------------------------------
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    table = getattr(metafunc.module, "PARAMETERS", None)
    if not table:
        return
    name = metafunc.module.__name__
    if name.startswith("harness.suite."):
        from harness.families import family_of_suite
        if family_of_suite(name) is None:   # a family is one registry entry: no unregistered suite modules
            raise pytest.UsageError(f"{name} is not the suite module of a registered family (harness/families)")
    hs = harness_session(metafunc.config)
    cases = hs.caseset()
    hs.state.used = True
    filters = hs.options.backends or None
    for argname, expand in table.items():
        if argname not in metafunc.fixturenames:
            continue
        if argname == "case_file":
            files = cases.files
            metafunc.parametrize(argname, files, ids=[Path(f).name for f in files])
            continue
        from harness.families.items import ALL_BACKENDS
        available = [b for b in ALL_BACKENDS if (not filters or b in filters)
                     and (b != "openai" or hs.options.openai_url)]
        params = []
        for item in expand(cases, present_backends(available)):
            # with `-n N --dist loadgroup`, all items of a case run on one worker: each model
            # is loaded once, and a native crash takes down only that worker's current test.
            # (The scheduler groups by the case in the id, scheduler.group_of: under pytest 9
            # xdist cannot read this mark's group back; it stays for xdist versions that can.)
            marks = [pytest.mark.xdist_group(item.case.id)]
            defect = item.case.defect_for(item.check, item.params)
            if defect is not None:
                from .checks import Mismatch
                marks.append(pytest.mark.xfail(strict=True, raises=Mismatch, reason=defect.reason()))
                if defect.match is not None:
                    marks.append(pytest.mark.harness_defect(defect))
            params.append(pytest.param(item, id=item.id, marks=marks))
        metafunc.parametrize(argname, params)


@pytest.fixture(scope="session")
def harness_runtime(request: pytest.FixtureRequest):
    hs = harness_session(request.config)
    rt = hs.new_runtime()
    hs.runtime_started(rt)
    yield rt
    hs.runtime_closing(rt)
    rt.close()


@pytest.fixture(scope="session")
def harness_cases(request: pytest.FixtureRequest) -> CaseSet:
    return harness_session(request.config).caseset()


@pytest.fixture
def golden(snapshot, request: pytest.FixtureRequest):
    """syrupy's snapshot, writing JSON into the repository's golden/ folder."""
    from harness.report.snapshots import golden_extension
    return snapshot.use_extension(golden_extension(harness_session(request.config).options.golden_dir))


# --- results ---------------------------------------------------------------------------------
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    if call.when == "call" and getattr(getattr(item, "module", None), "PARAMETERS", None):
        from harness.run.memory import rss_mib      # suite checks only: where memory grows, per check
        item.user_properties.append(("rss_mib", rss_mib()[0]))
    if call.when == "setup":
        callspec = getattr(item, "callspec", None)
        harness_item = next((v for v in (callspec.params.values() if callspec else ())
                             if hasattr(v, "check") and hasattr(v, "case")), None)
        if harness_item is not None:
            item.user_properties.append(("harness", {
                "case": harness_item.case.id, "check": harness_item.check,
                "location": harness_item.case.location(), "params": harness_item.params}))


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    harness_session(session.config).start()


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int):
    """The results and the report are written before the other plugins' session end (xdist's
    waits for every worker process to exit, which need not delay them); an empty shard's exit
    status is set after them (syrupy's ORs the session's own status back in)."""
    hs = harness_session(session.config)
    hs.finish(session, exitstatus)
    result = yield
    hs.finish_after_others(session)
    return result


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if SESSION_KEY in config.stash:
        harness_session(config).summary(terminalreporter)
