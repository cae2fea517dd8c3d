"""The run's state and the work the plugin's hooks hand off (harness/plugin.py): the case set, the
OpenAI-compatible endpoint's capabilities, declared defects, the session runtime, result messages,
the llama-server prebuild, worker errors, shards and the stale-golden sweep."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any
import pytest

from harness.cases.model import CaseSet, discover
from harness.report.messages import MESSAGE_CHARS   # harness compare reads the same cut


RESULTS_KEY = pytest.StashKey[dict]()


CASESET_KEY = pytest.StashKey[CaseSet]()


OPENAI_CAPS_KEY = pytest.StashKey[list]()


def option_path(config: pytest.Config, option: str, default: str) -> Path:
    value = config.getoption(option)
    return Path(value).resolve() if value else Path(config.rootpath) / default


def caseset(config: pytest.Config) -> CaseSet:
    if CASESET_KEY not in config.stash:
        config.stash[CASESET_KEY] = discover(option_path(config, "--cases", "cases"),
                                             select=config.getoption("--case") or None)
    return config.stash[CASESET_KEY]


def openai_capabilities(value: str) -> list[str]:
    """--openai-capabilities: "chat,stream,tools" or "@path/to/file" holding a JSON or YAML list.
    Raises ValueError (with the file and the problem) for anything else."""
    if not value.startswith("@"):
        return [c.strip() for c in value.split(",") if c.strip()]
    path = Path(value[1:]).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"--openai-capabilities {value}: cannot read {path}: {exc.strerror or exc}") from None
    import yaml                      # YAML is a superset of JSON: one parser reads both
    try:
        caps = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"--openai-capabilities {value}: {path} is neither JSON nor YAML: {exc}") from None
    if not isinstance(caps, list) or not all(isinstance(c, str) and c.strip() for c in caps):
        raise ValueError(f"--openai-capabilities {value}: {path} must hold a list of capability names, "
                         f"e.g. [chat, stream, tools]; got {json.dumps(caps)[:200]}")
    return [c.strip() for c in caps]


def configure_openai(config: pytest.Config) -> None:
    try:
        caps = openai_capabilities(config.getoption("--openai-capabilities"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("--openai-url"):
        from .backends.openai_compat import POSSIBLE
        unknown = sorted(set(caps) - POSSIBLE)
        if unknown:
            raise pytest.UsageError(f"--openai-capabilities: the openai backend cannot provide {unknown} "
                                    f"(possible: {', '.join(sorted(POSSIBLE))})")
    config.stash[OPENAI_CAPS_KEY] = caps


# --- limits: memory ceiling and per-check timeout (harness/run/memory_watch.py)---------------------
MEMORY_KEY = pytest.StashKey[Any]()


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


# --- fixtures ----------------------------------------------------------------------------
def session_runtime(config: pytest.Config):
    """The run's Runtime, from the command line (nothing is loaded until a check asks)."""
    from .backends.base import BackendOptions
    from harness.run.runtime import Runtime
    extra = {k: v for k, v in {
        "server_url": config.getoption("--server-url"), "server_binary": config.getoption("--server-binary"),
        "llama_cpp_tree": config.getoption("--llama-cpp-tree"), "base_url": config.getoption("--openai-url"),
        "capabilities": config.stash[OPENAI_CAPS_KEY],
    }.items() if v}
    return Runtime(BackendOptions(threads=config.getoption("--threads"), seed=config.getoption("--seed"),
                                  extra=extra),
                   backend_filter=config.getoption("--backend") or None,
                   model_dirs=[Path(d) for d in config.getoption("--model-dir")])


def result_summary(report) -> str:
    """The finding in one line: the first line of the exception's message, without its type."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if report.outcome == "passed" or crash is None:
        return ""
    first = (crash.message or "").strip().splitlines()[0] if (crash.message or "").strip() else ""
    return re.sub(r"^(?:[\w.]+\.)?(?:Mismatch|Failed|AssertionError): ", "", first)[:500]


CONFIG: dict[str, Any] = {}


ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{8,16}\b")


WORKER_LINE = re.compile(r"^\[gw\d+\] \S+ -- Python .*\n", re.M)


def stable_message(message: str) -> str:
    """A failure message as results.json keeps it: the same for identical runs. Object addresses
    and xdist's worker header are removed before the message is cut to its last MESSAGE_CHARS
    (cut first, an address could lose its 0x and survive as digits that differ per run)."""
    return ADDRESS.sub("0x…", WORKER_LINE.sub("", message).lstrip("\n"))[-MESSAGE_CHARS:]


def memory_summary(controller: dict, workers: dict[str, dict]) -> dict[str, Any]:
    """Peak resident memory of the run, per process; `upper_bound_mib` sums every process's own
    peak (they need not peak together, so the true simultaneous peak is at most that)."""
    procs = {"controller": controller["peak_rss_mib"], **{w: m["peak_rss_mib"] for w, m in sorted(workers.items())}}
    servers = [p for m in (controller, *workers.values()) for p in m["llama_server_peaks_mib"]]
    return {"processes_mib": procs, "max_process_mib": max(procs.values()),
            "llama_server_peaks_mib": sorted(servers, reverse=True),
            "upper_bound_mib": sum(procs.values()) + sum(servers)}


def prebuild_server(config: pytest.Config) -> None:
    """Build (or find in the cache) llama-server once, before the checks start: a first build
    takes ~10 minutes, longer than one check's --case-timeout, and workers would otherwise wait
    for it inside a check. A failure is not raised here: the server's checks skip with it and the
    run reports it once (harness/run/runtime.py build_failed). Workers share this run's id, so a build
    that failed here is not retried by each of them."""
    here = Path(__file__).parent
    suites = (here / "suite", here / "bench_suite")
    args = [Path(str(a).split("::")[0]).resolve() for a in config.args]
    if not any(a == d or d in a.parents for a in args for d in suites):
        return                                   # not a conformance or benchmark run
    os.environ.setdefault("HARNESS_RUN_ID", f"run-{os.getpid()}-{int(time.time())}")
    filters = config.getoption("--backend") or []
    if (filters and "llama-server" not in filters) or config.option.collectonly or any(
            config.getoption(o) for o in ("--server-url", "--server-binary")):
        return
    tr = config.pluginmanager.get_plugin("terminalreporter")
    say = (lambda m: tr.write_line(m)) if tr is not None else (lambda m: None)
    from importlib.metadata import PackageNotFoundError

    from .backends.server import resolve_server
    from .errors import SourceError
    from harness.run.server_build import ServerBuildError
    try:
        # the tree and options the server backend itself will resolve (Runtime.options_for), so
        # the workers find exactly this build
        built = resolve_server(session_runtime(config).options_for("llama-server").extra, log=say)
    except PackageNotFoundError:
        return                                   # no llama-cpp-python and no tree given: no server
    except ServerBuildError as exc:
        say(f"llama-server: {exc.headline} (its checks will be skipped; log tail in the summary)")
        return
    except (SourceError, OSError) as exc:
        say(f"llama-server: no llama.cpp tree to build from: {str(exc).splitlines()[0]}")
        return
    how = "reused cached build" if built.cached else f"built in {built.build_seconds:.0f}s"
    say(f"llama-server: {how} {built.key} ({built.binary})")


def own_usage(state: dict) -> dict[str, Any]:
    """This process's share of the run: where its models came from, its peak memory and that of
    the llama-servers it started (MiB, from /proc)."""
    from harness.run.memory import rss_mib
    from harness.run.server_process import SERVER_PEAKS_MIB
    return {"models": dict(state.get("models") or {}),
            "memory": {"peak_rss_mib": rss_mib()[1], "llama_server_peaks_mib": list(SERVER_PEAKS_MIB)},
            "errors": list(state.get("own_errors") or []), "shard": state.get("shard")}


def merge_worker_errors(state: dict, errors: list[dict]) -> None:
    """Run-level errors from this process and every xdist worker, once each (results.merge_errors)."""
    from harness.report.results import merge_errors
    merge_errors(state.setdefault("errors", []), errors)


def empty_shard(session: pytest.Session, state: dict) -> None:
    """A shard the plan gave no checks: it says so, writes its (empty) results for the merge
    and exits 0."""
    config = session.config
    spec = config.getoption("--shard")
    state.setdefault("shard", None)
    state["shard"] = state["shard"] or {"spec": spec, "index": int(spec.split("/")[0]),
                                        "total": int(spec.split("/")[1]), "items": 0}
    state["memory"] = memory_summary(own_usage(state)["memory"], state.get("workers", {}))
    if session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK
    from harness.report.results import write_results
    state["written"] = write_results(option_path(config, "--report-dir", "reports"), state, config, session.exitstatus)
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"shard {spec}: no checks in this shard (the plan put every case elsewhere); "
                      f"results written to {os.path.relpath(state['written'])}")


def whole_modules(config: pytest.Config, shard: bool = True) -> bool:
    """The run covers whole test modules: no case, backend, keyword, mark or node selection (and,
    unless shard=False, no --shard: the merge of all shards covers them)."""
    return not (config.getoption("--case") or config.getoption("--backend") or (shard and config.getoption("--shard"))
                or config.option.keyword
                or config.option.markexpr or getattr(config.option, "lf", False)
                or any("::" in str(a) for a in config.args))


def check_stale_goldens(session: pytest.Session, state: dict) -> None:
    """A golden no check produced is stale (a renamed check or case, a removed context): the run
    fails until it is removed; --update-goldens (--snapshot-update) removes it."""
    config = session.config
    if not whole_modules(config):
        return
    from harness.report.review import stale_goldens
    golden_dir = option_path(config, "--golden-dir", "golden")
    stale = stale_goldens(golden_dir, state["tests"])
    if not stale:
        return
    if config.getoption("--snapshot-update", default=False):
        for f in stale:
            f.unlink(missing_ok=True)
        state["stale_goldens"] = {"removed": [str(f.relative_to(golden_dir)) for f in stale]}
    else:
        state["stale_goldens"] = {"found": [str(f.relative_to(golden_dir)) for f in stale]}
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
