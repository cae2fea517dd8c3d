"""The work around a run's checks: the llama-server prebuild before they start; after them, the
stale-golden sweep and the results of a shard that got no checks."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from harness.run.records import memory_summary


def prebuild_server(hs: Any) -> None:
    """Build (or find in the cache) llama-server once, before the checks start: a first build
    takes ~10 minutes, longer than one check's --case-timeout, and workers would otherwise wait
    for it inside a check. A failure is not raised here: the server's checks skip with it and the
    run reports it once (harness/run/runtime.py build_failed). Workers share this run's id, so a build
    that failed here is not retried by each of them."""
    config, o = hs.config, hs.options
    here = Path(__file__).parent.parent
    suites = (here / "suite", here / "bench_suite")
    args = [Path(str(a).split("::")[0]).resolve() for a in config.args]
    if not any(a == d or d in a.parents for a in args for d in suites):
        return                                   # not a conformance or benchmark run
    os.environ.setdefault("HARNESS_RUN_ID", f"run-{os.getpid()}-{int(time.time())}")
    filters = o.backends
    if (filters and "llama-server" not in filters and "llama.cpp-chat" not in filters) or config.option.collectonly or o.server_url or o.server_binary:
        return
    tr = config.pluginmanager.get_plugin("terminalreporter")
    say = (lambda m: tr.write_line(m)) if tr is not None else (lambda m: None)
    from importlib.metadata import PackageNotFoundError

    from harness.backends.server import resolve_server
    from harness.errors import SourceError
    from harness.run.server_build import PREBUILT_ENV, ServerBuildError
    # From here on no process of this run builds: the workers (and this process's own checks)
    # look the build up, and report a missing one, instead of building inside a check.
    if PREBUILT_ENV not in os.environ:
        os.environ[PREBUILT_ENV] = "1"
        config.add_cleanup(lambda: os.environ.pop(PREBUILT_ENV, None))
    try:
        # the tree and options the server backend itself will resolve (Runtime.options_for), so
        # the workers find exactly this build
        built = resolve_server(hs.new_runtime().options_for("llama-server").extra, log=say, build=True)
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
    from harness.run.probe_build import build_chat_probe
    try:                                         # the llama.cpp-chat backend's probe, same build
        probe = build_chat_probe(built, log=say, build=True)
    except ServerBuildError as exc:
        say(f"chat probe: {exc.headline} (llama.cpp-chat checks will be skipped)")
        return
    say(f"chat probe: {'reused' if probe.cached else f'built in {probe.build_seconds:.0f}s'} ({probe.binary})")


def whole_modules(config: pytest.Config, shard: bool = True) -> bool:
    """The run covers whole test modules: no case, backend, keyword, mark or node selection (and,
    unless shard=False, no --shard: the merge of all shards covers them)."""
    return not (config.getoption("--case") or config.getoption("--backend") or (shard and config.getoption("--shard"))
                or config.option.keyword
                or config.option.markexpr or getattr(config.option, "lf", False)
                or any("::" in str(a) for a in config.args))


def empty_shard(hs: Any, session: pytest.Session) -> None:
    """A shard the plan gave no checks: it says so, writes its (empty) results for the merge
    and exits 0."""
    config, state = hs.config, hs.state
    spec = hs.options.shard
    state.shard = state.shard or {"spec": spec, "index": int(spec.split("/")[0]),
                                  "total": int(spec.split("/")[1]), "items": 0}
    state.memory = memory_summary(hs.own_usage()["memory"], state.workers)
    if session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK
    hs.write_results(session.exitstatus)
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"shard {spec}: no checks in this shard (the plan put every case elsewhere); "
                      f"results written to {os.path.relpath(state.written)}")


def stale_golden_sweep(hs: Any, session: pytest.Session) -> None:
    """A golden no check produced is stale (a renamed check or case, a removed context): the run
    fails until it is removed; --update-goldens (--snapshot-update) removes it."""
    config, state = hs.config, hs.state
    if not whole_modules(config):
        return
    from harness.report.review import stale_goldens
    golden_dir = hs.options.golden_dir
    stale = stale_goldens(golden_dir, state.tests)
    if not stale:
        return
    if config.getoption("--snapshot-update", default=False):
        for f in stale:
            f.unlink(missing_ok=True)
        state.stale_goldens = {"removed": [str(f.relative_to(golden_dir)) for f in stale]}
    else:
        state.stale_goldens = {"found": [str(f.relative_to(golden_dir)) for f in stale]}
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
