"""The pytest entry point (registered as the `harness` pytest11 plugin).

Flow: options -> CaseSet (lazy, once) -> pytest_generate_tests parametrizes the ordinary
test functions of harness/suite/ from each module's PARAMETERS table -> session-scoped
Runtime (models, backends) -> results collected per test and written to reports/.

Heavy imports (transformers, llama_cpp) happen inside backends, never at plugin import, so
the plugin costs nothing in test runs that do not use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from harness.cases.model import CaseSet
from .session import (
    ADDRESS, CONFIG, MEMORY_KEY, RESULTS_KEY, caseset, check_declared_defect,
    check_stale_goldens, configure_openai, empty_shard, memory_summary, merge_worker_errors,
    option_path, own_usage, prebuild_server, present_backends, result_summary,
    session_runtime, stable_message, whole_modules
)


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
    configure_openai(config)
    config.addinivalue_line("markers", "harness_item(check): a parametrized conformance check")
    config.addinivalue_line("markers", "harness_defect(defect): a known defect with `match:`, checked on failure")
    # checks record their properties for results.json, not for JUnit's xunit2 (which has no place
    # for them): one warning per check would bury the summary of a serial run
    config.addinivalue_line("filterwarnings",
                            "ignore:record_property is incompatible with junit_family:pytest.PytestWarning")
    config.stash[RESULTS_KEY] = {"tests": [], "used": False}
    if hasattr(config, "workerinput"):
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
    if MEMORY_KEY in config.stash:
        config.stash[MEMORY_KEY].stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """--memory-ceiling: a MemoryWatch per process, started at its first suite check; it fails
    the check that is running when resident memory passes the ceiling."""
    watch = None
    if getattr(getattr(item, "module", None), "PARAMETERS", None) and item.config.getoption("--memory-ceiling"):
        watch = item.config.stash.get(MEMORY_KEY, None)
        if watch is None:
            from harness.run.memory_watch import MemoryWatch
            watch = item.config.stash[MEMORY_KEY] = MemoryWatch(item.config.getoption("--memory-ceiling")).start()
        watch.running(item.nodeid)
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
        config.stash[RESULTS_KEY]["shard"] = record = select(config, items)
        record["whole_modules"] = whole_modules(config, shard=False)   # stale goldens: `harness merge`
    limit = config.getoption("--case-timeout")
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
    config = metafunc.config
    cases = caseset(config)
    config.stash[RESULTS_KEY]["used"] = True
    filters = config.getoption("--backend") or None
    for argname, expand in table.items():
        if argname not in metafunc.fixturenames:
            continue
        if argname == "case_file":
            files = cases.files
            metafunc.parametrize(argname, files, ids=[Path(f).name for f in files])
            continue
        from harness.families.items import ALL_BACKENDS
        available = [b for b in ALL_BACKENDS if (not filters or b in filters)
                     and (b != "openai" or config.getoption("--openai-url"))]
        params = []
        for item in expand(cases, present_backends(available)):
            # with `-n N --dist loadgroup`, all items of a case run on one worker: each model
            # is loaded once, and a native crash takes down only that worker's current test.
            # (The scheduler groups by the case in the id, isolation.group_of: under pytest 9
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
    config = request.config
    rt = session_runtime(config)
    config.stash[RESULTS_KEY]["runtime"] = rt
    yield rt
    config.stash[RESULTS_KEY]["backends"] = rt.backend_infos()
    config.stash[RESULTS_KEY]["models"] = rt.resolutions
    config.stash[RESULTS_KEY]["own_errors"] = [dict(e) for e in rt.build_failures.values()]
    rt.close()


@pytest.fixture(scope="session")
def harness_cases(request: pytest.FixtureRequest) -> CaseSet:
    return caseset(request.config)


@pytest.fixture
def golden(snapshot, request: pytest.FixtureRequest):
    """syrupy's snapshot, writing JSON into the repository's golden/ folder."""
    from harness.report.snapshots import golden_extension
    return snapshot.use_extension(golden_extension(option_path(request.config, "--golden-dir", "golden")))


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


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # runs on the controller with xdist too: reports carry user_properties across
    config = CONFIG.get("config")
    if config is None:
        return
    # when "???": xdist's report for the check a worker crashed on (harness/run/scheduler.py)
    if report.when in ("call", "???") or (report.when == "setup" and report.outcome != "passed") or (
            report.when == "teardown" and report.outcome == "failed"):
        props = dict(report.user_properties)
        meta = props.get("harness")
        if meta is None and "harness/suite/" not in report.nodeid:
            return
        outcome = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        elif report.when != "call" and report.outcome == "failed":
            outcome = "error"
        message = ""
        if report.longrepr is not None and outcome != "passed":
            message = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longreprtext)
        config.stash[RESULTS_KEY]["tests"].append({
            "nodeid": report.nodeid, "outcome": outcome, "duration": round(report.duration, 4),
            **(meta or {}), "backend_info": props.get("backend_info"), "rss_mib": props.get("rss_mib"),
            "details": props.get("details"),
            "summary": ADDRESS.sub("0x…", result_summary(report)),
            "worker": getattr(getattr(getattr(report, "node", None), "gateway", None), "id", None),
            # object addresses and xdist's "[gwN] linux -- Python ..." header differ between
            # identical runs; results.json should not
            # (xdist's copy of an xfail's traceback starts with a newline that pytest's own lacks)
            "message": stable_message(message),
        })


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    CONFIG["config"] = session.config
    config = session.config
    if hasattr(config, "workerinput") or RESULTS_KEY not in config.stash:
        return
    # the controller (or a serial run), before any worker starts
    from harness.report.review import golden_mtimes
    value = config.getoption("--golden-dir", default=None)
    golden_dir = Path(value) if value else Path(config.rootpath) / "golden"
    config.stash[RESULTS_KEY]["golden_mtimes"] = golden_mtimes(golden_dir) if golden_dir.is_dir() else None
    prebuild_server(config)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect each worker's models and memory (a crashed worker sends none)."""
    config = CONFIG.get("config")
    usage = getattr(node, "workeroutput", {}).get("harness") if config is not None else None
    if usage:
        state = config.stash[RESULTS_KEY]
        state.setdefault("models", {}).update(usage["models"])
        state.setdefault("workers", {})[node.gateway.id] = usage["memory"]
        merge_worker_errors(state, usage.get("errors") or [])
        if usage.get("shard") and not state.get("shard"):
            state["shard"] = usage["shard"]           # every worker plans the same shards


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash[RESULTS_KEY]
    if hasattr(config, "workerinput"):
        config.workeroutput["harness"] = own_usage(state)     # to the controller (above)
        from harness.run.server_process import session_finished
        session_finished()
        return
    if not state["tests"]:
        if config.getoption("--shard"):
            empty_shard(session, state)
        return
    check_stale_goldens(session, state)
    own = own_usage(state)
    state.setdefault("models", {}).update(own["models"])
    merge_worker_errors(state, own["errors"])
    state["memory"] = memory_summary(own["memory"], state.get("workers", {}))
    from harness.report.results import write_results
    path = write_results(option_path(config, "--report-dir", "reports"), state, config, exitstatus)
    config.stash[RESULTS_KEY]["written"] = path
    from harness.report.build import write_report; write_report(path.parent, golden_dir=option_path(config, "--golden-dir", "golden"))  # noqa: E702 (harness/report/build.py)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(RESULTS_KEY, None)
    if not state or not state.get("tests"):
        return
    from harness.report.results import summary_lines
    terminalreporter.section("conformance summary")
    for line in summary_lines(state):
        terminalreporter.write_line(line)
    for e in state.get("errors") or []:
        # once per run, however many checks it skipped (each skip names only the first line)
        terminalreporter.write_line(f"{e['backend']}: {e['error']}, {e['skipped_checks']} check(s) skipped: "
                                    f"{e['message']}", red=True, bold=True)
        if e.get("tail"):
            terminalreporter.write_line("  last lines of the build log:")
            for line in e["tail"].splitlines():
                terminalreporter.write_line(f"    {line}")
    stale = state.get("stale_goldens") or {}
    for how, files in stale.items():
        verb = "removed (--update-goldens)" if how == "removed" else "no check produced them; run with --update-goldens to remove"
        terminalreporter.write_line(f"goldens: {len(files)} stale, {verb}:", red=how == "found", bold=True)
        for f in files[:20]:
            terminalreporter.write_line(f"  {f}")
        if len(files) > 20:
            terminalreporter.write_line(f"  ... and {len(files) - 20} more")
    if state.get("written"):
        terminalreporter.write_line(f"results written to {os.path.relpath(state['written'])}")
    from harness.report.review import write_review; write_review(terminalreporter, config, state)  # noqa: E702 (harness/report/review.py)
