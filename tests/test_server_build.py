"""Building llama-server: content-hash cache, lock between processes, failure marker.

The cache test uses the real llama.cpp tree (vendored in llama-cpp-python 0.3.36; conftest.py's
llama_tree resolves it through the harness's sources).
Locking and failure handling use tiny real CMake projects in tmp dirs (a build of the
real tree takes minutes), run through the same code path with a separate cache root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.run.server_build import (ServerBuildError, build_llama_server, default_cache_root,
                                  tree_hash)

REPO = Path(__file__).resolve().parents[1]

needs_toolchain = pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("c++") is None or shutil.which("cc") is None,
    reason="cmake / a C and C++ compiler are not on PATH")


def tiny_tree(root: Path, *, fail: bool = False, configure_sleep_s: int = 0, tag: str = "1") -> Path:
    """A minimal CMake project whose `llama-server` target answers --version."""
    root.mkdir(parents=True, exist_ok=True)
    sleep = f'execute_process(COMMAND sleep {configure_sleep_s})' if configure_sleep_s else ""
    failure = 'message(FATAL_ERROR "deliberate failure for the harness test")' if fail else ""
    (root / "CMakeLists.txt").write_text(textwrap.dedent(f"""\
        cmake_minimum_required(VERSION 3.14)
        project(tiny_server C)
        {sleep}
        {failure}
        set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${{CMAKE_BINARY_DIR}}/bin)
        add_executable(llama-server src/main.c)
        """))
    (root / "src").mkdir(exist_ok=True)
    (root / "src" / "main.c").write_text(textwrap.dedent(f"""\
        #include <stdio.h>
        int main(void) {{ fprintf(stderr, "version: {tag} (tiny)\\nbuilt with test\\n"); return 0; }}
        """))
    return root


def run_build_in_subprocess(tree: Path, cache: Path, env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    script = textwrap.dedent(f"""
        import json, time
        from pathlib import Path
        from harness.run.server_build import build_llama_server
        t = time.perf_counter()
        b = build_llama_server(Path({str(tree)!r}), cache_root=Path({str(cache)!r}))
        print("RESULT " + json.dumps({{"binary": str(b.binary), "cached": b.cached,
                                       "seconds": time.perf_counter() - t, "version": b.version}}))
        """)
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def result_of(out: str) -> dict:
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    assert line, out
    return json.loads(line[len("RESULT "):])


# --- the real tree ------------------------------------------------------------------
def test_tree_hash_is_fast_and_stable(llama_tree):
    t0 = time.perf_counter()
    h1 = tree_hash(llama_tree)                      # no memo: a full content hash
    cold = time.perf_counter() - t0
    assert h1 == tree_hash(llama_tree) and len(h1) == 64
    assert cold < 5.0, f"hashing the tree took {cold:.1f}s"


@needs_toolchain
def test_second_build_call_returns_the_same_binary_instantly(llama_tree, record_property):
    first = build_llama_server(llama_tree, log=lambda m: None)   # builds (minutes) unless cached
    record_property("build_seconds", first.build_seconds)
    record_property("cache_dir", str(first.build_dir.parent))
    t0 = time.perf_counter()
    second = build_llama_server(llama_tree, log=lambda m: None)
    in_process = time.perf_counter() - t0
    assert second.binary == first.binary and second.binary.is_file()
    assert in_process < 0.5, f"second call took {in_process:.2f}s"
    assert first.version.startswith("version:") and first.tree_hash[:12] in first.version
    assert first.build_dir.is_relative_to(default_cache_root() / "llama-server")

    # a fresh process has no in-memory memo: it must find the build on disk
    proc = run_build_in_subprocess(llama_tree, default_cache_root())
    res = result_of(proc.communicate(timeout=120)[0])
    assert res["cached"] is True and res["binary"] == str(first.binary)
    assert res["seconds"] < 3.0, f"cached lookup in a new process took {res['seconds']:.2f}s"
    record_property("cached_lookup_seconds_new_process", round(res["seconds"], 3))


# --- tiny trees: locking, failures, keys ---------------------------------------------
@needs_toolchain
def test_concurrent_callers_build_once(tmp_path):
    tree = tiny_tree(tmp_path / "tree", configure_sleep_s=2)
    cache = tmp_path / "cache"
    procs = [run_build_in_subprocess(tree, cache) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    results = [result_of(o) for o in outs]
    assert results[0]["binary"] == results[1]["binary"]
    assert sorted(r["cached"] for r in results) == [False, True]
    assert sum("llama-server: building" in o for o in outs) == 1
    assert sum("waiting for it" in o for o in outs) == 1, outs
    log = next(cache.glob("llama-server/*/build.log")).read_text()
    assert log.count("$ cmake -S") == 1
    assert results[0]["version"].startswith("version: 1 (tiny)")


@needs_toolchain
def test_failure_is_reported_once_per_run_and_retried_by_the_next(tmp_path, monkeypatch):
    tree = tiny_tree(tmp_path / "tree", fail=True)
    cache = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_RUN_ID", "run-1")
    with pytest.raises(ServerBuildError, match="deliberate failure for the harness test") as e1:
        build_llama_server(tree, cache_root=cache, log=lambda m: None)
    assert "last lines" in str(e1.value)
    log = next(cache.glob("llama-server/*/build.log"))
    stamp = log.stat().st_mtime_ns

    t0 = time.perf_counter()
    with pytest.raises(ServerBuildError, match="already failed in this run") as e2:
        build_llama_server(tree, cache_root=cache, log=lambda m: None)
    assert time.perf_counter() - t0 < 1.0
    assert "deliberate failure" in str(e2.value)            # the same tail, reported again
    assert log.stat().st_mtime_ns == stamp                   # cmake was not run again

    monkeypatch.setenv("HARNESS_RUN_ID", "run-2")           # a later run tries again
    with pytest.raises(ServerBuildError, match="exit 1"):
        build_llama_server(tree, cache_root=cache, log=lambda m: None)
    assert log.stat().st_mtime_ns != stamp


@needs_toolchain
def test_changed_tree_or_options_get_their_own_build(tmp_path):
    tree = tiny_tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    a = build_llama_server(tree, cache_root=cache, log=lambda m: None)
    b = build_llama_server(tree, cache_root=cache, cmake_options={"CMAKE_BUILD_TYPE": "Debug"},
                           log=lambda m: None)
    assert a.key != b.key and a.binary != b.binary and b.options["CMAKE_BUILD_TYPE"] == "Debug"
    time.sleep(0.01)
    (tree / "src" / "main.c").write_text((tree / "src" / "main.c").read_text().replace(
        "version: 1", "version: 2"))
    c = build_llama_server(tree, cache_root=cache, log=lambda m: None)
    assert c.tree_hash != a.tree_hash and c.key != a.key
    assert c.version.startswith("version: 2")


@needs_toolchain
def test_a_build_that_writes_into_its_tree_fails_and_names_what_it_wrote(tmp_path):
    # the 0.3.30 tree's web-UI build did this (npm into tools/ui): the tree's hash, and so the
    # build's key, changed under the build, and every later caller built again
    tree = tiny_tree(tmp_path / "tree")
    with open(tree / "CMakeLists.txt", "a") as f:
        f.write(textwrap.dedent("""\
            add_custom_target(writes_into_source COMMAND ${CMAKE_COMMAND} -E touch ${CMAKE_SOURCE_DIR}/src/generated.txt)
            add_dependencies(llama-server writes_into_source)
            """))
    cache = tmp_path / "cache"
    with pytest.raises(ServerBuildError, match="wrote into its source tree") as e:
        build_llama_server(tree, cache_root=cache, log=lambda m: None, build=True)
    assert "added src/generated.txt" in str(e.value)
    assert not list(cache.glob("llama-server/*/built.json"))        # never recorded as built


@needs_toolchain
def test_once_prebuilt_a_missing_build_is_reported_not_built(tmp_path, monkeypatch):
    from harness.run.server_build import PREBUILT_ENV
    tree = tiny_tree(tmp_path / "tree", tag="prebuilt")
    cache = tmp_path / "cache"
    monkeypatch.setattr("harness.run.server_build._PROCESS_MEMO", {})
    monkeypatch.setenv(PREBUILT_ENV, "1")
    with pytest.raises(ServerBuildError, match="not built before the checks started"):
        build_llama_server(tree, cache_root=cache, log=lambda m: None)
    assert not list(cache.glob("llama-server/*/build.log"))          # cmake never ran
    built = build_llama_server(tree, cache_root=cache, log=lambda m: None, build=True)  # the controller
    monkeypatch.setattr("harness.run.server_build._PROCESS_MEMO", {})   # as a worker process
    again = build_llama_server(tree, cache_root=cache, log=lambda m: None)
    assert again.binary == built.binary and again.cached


def test_every_ui_option_of_the_pinned_tree_is_set_explicitly(llama_tree):
    """The web-UI options' defaults differ between trees (LLAMA_BUILD_UI: OFF in 0.3.36, ON in
    0.3.30, where ON runs npm inside the tree), so the build states each one."""
    import re
    from harness.run.server_build import DEFAULT_CMAKE_OPTIONS
    names = set(re.findall(r"option\((LLAMA_(?:\w+_)?UI(?:_\w+)?)\s", (llama_tree / "CMakeLists.txt").read_text()))
    assert {"LLAMA_BUILD_UI", "LLAMA_USE_PREBUILT_UI"} <= names
    assert {n: DEFAULT_CMAKE_OPTIONS.get(n) for n in names} == {n: "OFF" for n in names}


@needs_toolchain
def test_a_build_succeeds_on_a_read_only_tree_and_leaves_it_as_it_was(tmp_path):
    # the positive side of the rule: everything a build writes goes to the cache, so a tree the
    # build cannot write to builds, and its hash and full listing (every file) are unchanged
    # (run as root the modes stop nothing; the hash and listing compare still catch a write)
    from harness.run.server_build import tree_listing
    tree = tiny_tree(tmp_path / "tree", tag="readonly")
    before_hash, before_listing = tree_hash(tree), tree_listing(tree)
    paths = [tree, *tree.rglob("*")]
    for p in paths:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        built = build_llama_server(tree, cache_root=tmp_path / "cache", log=lambda m: None, build=True)
    finally:
        for p in paths:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert built.version.startswith("version: readonly") and built.tree_hash == before_hash
    assert tree_hash(tree) == before_hash and tree_listing(tree) == before_listing


def test_every_build_step_runner_fails_a_build_that_writes_into_its_tree(tmp_path):
    # the chat probe's re-configure of llama-server's build dir goes through the same runner as
    # llama-server's own build, so it is held to the same rule
    from harness.run.server_build import BuildStepFailed, run_build_steps
    tree = tiny_tree(tmp_path / "tree")
    writes = [sys.executable, "-c", f"open({str(tree / 'CMakeLists.txt.user')!r}, 'w').write('x')"]
    with pytest.raises(BuildStepFailed, match="chat probe build wrote into its source tree") as e:
        run_build_steps("chat probe", "harness-chat-probe", [writes], tmp_path / "build.log", tree=tree)
    assert e.value.rc == "tree-modified" and "added CMakeLists.txt.user" in str(e.value)
    assert e.value.log_path == str(tmp_path / "build.log")
    clean = [sys.executable, "-c", "print('[ 50%] Building')"]
    assert run_build_steps("chat probe", "t", [clean], tmp_path / "ok.log", tree=tree) >= 0
    with pytest.raises(BuildStepFailed, match=r"exit 3") as e:
        run_build_steps("chat probe", "t", [[sys.executable, "-c", "raise SystemExit(3)"]],
                        tmp_path / "bad.log", tree=tree)
    assert e.value.rc == 3


@needs_toolchain
def test_once_prebuilt_a_missing_chat_probe_is_reported_not_built(tmp_path, monkeypatch):
    from harness.run.probe_build import build_chat_probe
    from harness.run.server_build import PREBUILT_ENV
    tree = tiny_tree(tmp_path / "tree", tag="probe")
    server = build_llama_server(tree, cache_root=tmp_path / "cache", log=lambda m: None, build=True)
    monkeypatch.setattr("harness.run.probe_build._MEMO", {})
    monkeypatch.setenv(PREBUILT_ENV, "1")
    with pytest.raises(ServerBuildError, match="chat probe .* was not built before the checks started"):
        build_chat_probe(server, log=lambda m: None)
    assert not list(server.build_dir.parent.glob("chat-probe-*/build.log"))   # cmake never ran


@needs_toolchain
def test_two_cache_roots_do_not_share_a_build(tmp_path):
    tree = tiny_tree(tmp_path / "tree", tag="roots")
    a = build_llama_server(tree, cache_root=tmp_path / "a", log=lambda m: None, build=True)
    b = build_llama_server(tree, cache_root=tmp_path / "b", log=lambda m: None, build=True)
    assert a.key == b.key and not b.cached
    assert str(a.binary).startswith(str(tmp_path / "a")) and str(b.binary).startswith(str(tmp_path / "b"))
