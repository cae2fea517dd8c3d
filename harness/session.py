"""The run's state, owned by one HarnessSession object (as syrupy's SnapshotSession and
pytest-benchmark's BenchmarkSession own theirs).

harness/plugin.py creates it in pytest_configure, keeps it in `config.stash[SESSION_KEY]` and
registers it as a plugin (it implements the hooks that carry no config: each test's report on
the controller, a worker going down). Every other hook is a few lines that hand off to it.

    HarnessOptions   the harness's command-line options, read once
    RunState         what the run collects for results.json, the report and the summary
    HarnessSession   the case set, the runtime, the records, the llama-server prebuild, the
                     memory watch, the stale-golden sweep, and writing the results
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.cases.model import CaseSet, discover
from harness.run.options import openai_capabilities
from harness.run.records import ADDRESS, memory_summary, result_summary, stable_message
from harness.run.session_end import empty_shard, prebuild_server, stale_golden_sweep


@dataclass(frozen=True)
class HarnessOptions:
    """The options pytest_addoption declares (harness/plugin.py), read once."""
    cases_dir: Path
    case_globs: list[str]
    backends: list[str]
    golden_dir: Path
    report_dir: Path
    model_dirs: list[Path]
    server_url: str | None
    server_binary: str | None
    llama_cpp_tree: str | None
    openai_url: str | None
    openai_caps: list[str]
    threads: int
    seed: int
    case_timeout: float
    memory_ceiling: int
    shard: str | None

    @classmethod
    def read(cls, config: pytest.Config) -> "HarnessOptions":
        def path(option: str, default: str) -> Path:
            value = config.getoption(option)
            return Path(value).resolve() if value else Path(config.rootpath) / default
        try:
            caps = openai_capabilities(config.getoption("--openai-capabilities"))
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
        if config.getoption("--openai-url"):
            from harness.backends.openai_compat import POSSIBLE
            unknown = sorted(set(caps) - POSSIBLE)
            if unknown:
                raise pytest.UsageError(f"--openai-capabilities: the openai backend cannot provide {unknown} "
                                        f"(possible: {', '.join(sorted(POSSIBLE))})")
        return cls(
            cases_dir=path("--cases", "cases"), case_globs=list(config.getoption("--case") or []),
            backends=list(config.getoption("--backend") or []), golden_dir=path("--golden-dir", "golden"),
            report_dir=path("--report-dir", "reports"), model_dirs=[Path(d) for d in config.getoption("--model-dir")],
            server_url=config.getoption("--server-url"), server_binary=config.getoption("--server-binary"),
            llama_cpp_tree=config.getoption("--llama-cpp-tree"), openai_url=config.getoption("--openai-url"),
            openai_caps=caps, threads=config.getoption("--threads"), seed=config.getoption("--seed"),
            case_timeout=config.getoption("--case-timeout"), memory_ceiling=config.getoption("--memory-ceiling"),
            shard=config.getoption("--shard"))


@dataclass
class RunState:
    """What a run collects. Handed to the writers (harness/report/results.py, review.py) as
    `vars(state)`: results.json's fields by the same names."""
    tests: list[dict] = field(default_factory=list)       # one record per suite check
    used: bool = False                                    # a suite module was parametrized
    shard: dict | None = None                             # --shard: this slice (harness/run/shard.py)
    runtime: Any = None                                   # the session's Runtime, while it lives
    backends: dict | None = None                          # backend infos, at the end of the session
    models: dict = field(default_factory=dict)            # where each model came from
    own_errors: list[dict] = field(default_factory=list)  # this process's run-level errors
    errors: list[dict] = field(default_factory=list)      # every process's, once each
    golden_mtimes: dict | None = None                     # at session start (what the run wrote)
    workers: dict[str, dict] = field(default_factory=dict)  # xdist worker -> its memory
    memory: dict = field(default_factory=dict)
    stale_goldens: dict | None = None
    written: Path | None = None                           # results.json, once written


class HarnessSession:
    def __init__(self, config: pytest.Config):
        self.config = config
        self.options = HarnessOptions.read(config)
        self.state = RunState()
        self.worker = hasattr(config, "workerinput")
        self._cases: CaseSet | None = None
        self.memory_watch: Any = None

    # --- what the checks use ---------------------------------------------------------------
    def caseset(self) -> CaseSet:
        if self._cases is None:
            self._cases = discover(self.options.cases_dir, select=self.options.case_globs or None)
        return self._cases

    def new_runtime(self):
        """The run's Runtime, from the command line (nothing is loaded until a check asks)."""
        from harness.backends.base import BackendOptions
        from harness.run.runtime import Runtime
        o = self.options
        extra = {k: v for k, v in {
            "server_url": o.server_url, "server_binary": o.server_binary, "llama_cpp_tree": o.llama_cpp_tree,
            "base_url": o.openai_url, "capabilities": o.openai_caps,
        }.items() if v}
        return Runtime(BackendOptions(threads=o.threads, seed=o.seed, extra=extra),
                       backend_filter=o.backends or None, model_dirs=o.model_dirs)

    def runtime_started(self, rt) -> None:
        self.state.runtime = rt

    def runtime_closing(self, rt) -> None:
        self.state.backends = rt.backend_infos()
        self.state.models = rt.resolutions
        self.state.own_errors = [dict(e) for e in rt.build_failures.values()]

    # --- limits -----------------------------------------------------------------------------
    def watch_memory(self, nodeid: str | None) -> Any:
        """--memory-ceiling: one MemoryWatch per process, started at its first suite check."""
        if self.memory_watch is None:
            from harness.run.memory_watch import MemoryWatch
            self.memory_watch = MemoryWatch(self.options.memory_ceiling).start()
        self.memory_watch.running(nodeid)
        return self.memory_watch

    def stop(self) -> None:
        if self.memory_watch is not None:
            self.memory_watch.stop()

    # --- records (hooks of this object: on the controller with xdist too) ------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # when "???": xdist's report for the check a worker crashed on (harness/run/scheduler.py)
        if not (report.when in ("call", "???") or (report.when == "setup" and report.outcome != "passed") or (
                report.when == "teardown" and report.outcome == "failed")):
            return
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
        self.state.tests.append({
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

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: collect each worker's models and memory (a crashed worker sends none)."""
        usage = getattr(node, "workeroutput", {}).get("harness")
        if not usage:
            return
        self.state.models.update(usage["models"])
        self.state.workers[node.gateway.id] = usage["memory"]
        self.merge_errors(usage.get("errors") or [])
        if usage.get("shard") and not self.state.shard:
            self.state.shard = usage["shard"]           # every worker plans the same shards

    def own_usage(self) -> dict[str, Any]:
        """This process's share of the run: where its models came from, its peak memory and that
        of the llama-servers it started (MiB, from /proc)."""
        from harness.run.memory import rss_mib
        from harness.run.server_process import SERVER_PEAKS_MIB
        return {"models": dict(self.state.models or {}),
                "memory": {"peak_rss_mib": rss_mib()[1], "llama_server_peaks_mib": list(SERVER_PEAKS_MIB)},
                "errors": list(self.state.own_errors or []), "shard": self.state.shard}

    def merge_errors(self, errors: list[dict]) -> None:
        """Run-level errors from this process and every xdist worker, once each."""
        from harness.report.results import merge_errors
        merge_errors(self.state.errors, errors)

    # --- start and finish --------------------------------------------------------------------
    def start(self) -> None:
        """The controller (or a serial run), before any worker starts."""
        if self.worker:
            return
        from harness.report.review import golden_mtimes
        golden_dir = self.options.golden_dir
        self.state.golden_mtimes = golden_mtimes(golden_dir) if golden_dir.is_dir() else None
        prebuild_server(self)

    def finish(self, session: pytest.Session, exitstatus: int) -> None:
        config, state = self.config, self.state
        if self.worker:
            config.workeroutput["harness"] = self.own_usage()     # to the controller (pytest_testnodedown)
            return
        if not state.tests:
            return
        stale_golden_sweep(self, session)
        own = self.own_usage()
        state.models.update(own["models"])
        self.merge_errors(own["errors"])
        state.memory = memory_summary(own["memory"], state.workers)
        self.write_results(exitstatus)
        from harness.report.build import write_report
        write_report(state.written.parent, golden_dir=self.options.golden_dir)

    def finish_after_others(self, session: pytest.Session) -> None:
        """After the other plugins' session end: a worker stops its llama-servers; an empty
        shard writes its empty results and sets its exit status (after syrupy's)."""
        if self.worker:
            from harness.run.server_process import session_finished
            session_finished()
        elif not self.state.tests and self.options.shard:
            empty_shard(self, session)

    def write_results(self, exitstatus: int) -> Path:
        from harness.report.results import write_results
        self.state.written = write_results(self.options.report_dir, vars(self.state), self.config, exitstatus)
        return self.state.written

    def summary(self, terminalreporter) -> None:
        state = self.state
        if not state.tests:
            return
        from harness.report.results import summary_lines
        terminalreporter.section("conformance summary")
        for line in summary_lines(vars(state)):
            terminalreporter.write_line(line)
        for e in state.errors:
            # once per run, however many checks it skipped (each skip names only the first line)
            terminalreporter.write_line(f"{e['backend']}: {e['error']}, {e['skipped_checks']} check(s) skipped: "
                                        f"{e['message']}", red=True, bold=True)
            if e.get("tail"):
                terminalreporter.write_line("  last lines of the build log:")
                for line in e["tail"].splitlines():
                    terminalreporter.write_line(f"    {line}")
        for how, files in (state.stale_goldens or {}).items():
            verb = ("removed (--update-goldens)" if how == "removed"
                    else "no check produced them; run with --update-goldens to remove")
            terminalreporter.write_line(f"goldens: {len(files)} stale, {verb}:", red=how == "found", bold=True)
            for f in files[:20]:
                terminalreporter.write_line(f"  {f}")
            if len(files) > 20:
                terminalreporter.write_line(f"  ... and {len(files) - 20} more")
        if state.written:
            terminalreporter.write_line(f"results written to {os.path.relpath(state.written)}")
        from harness.report.review import write_review
        write_review(terminalreporter, self.config, vars(state))


SESSION_KEY = pytest.StashKey[HarnessSession]()


def harness_session(config: pytest.Config) -> HarnessSession:
    return config.stash[SESSION_KEY]


def caseset(config: pytest.Config) -> CaseSet:
    """The run's case set (discovered once, on first use)."""
    return harness_session(config).caseset()
