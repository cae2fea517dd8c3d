"""Suite runs (pytester, a real pytest over harness/suite/) around llama-server and OpenAI-compatible
endpoints, on SmolLM2 with the real compiled llama.cpp:

* the llama-server process is SIGKILLed in the middle of a run: the check that finds it dead fails
  (server.py restarts it once and fails that one call), later checks pass on the restarted server,
  llama-cpp-python is unaffected, the run completes, and no server process outlives it;
* `--openai-url` against a llama-server this test starts itself (--jinja): the chat, generation and
  tool-call checks run on the `openai` backend, as declared by `--openai-capabilities @file`;
* a llama.cpp tree that does not build: the build failure is reported once (run summary and
  results.json "errors", with the build log's tail), the server checks skip with a one-line reason,
  the other backends run, and a model that cannot be resolved or a server that crashes on load
  still fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import CASES, SUITE, pid_gone

CASE_ID = "smollm2-135m-instruct"
# pytester points HOME at its tmp dir: the runs must keep using the real harness cache (the built
# llama-server, the unpacked llama-cpp-python sdist), or each would download and build everything
REAL_CACHE = os.environ.get("HARNESS_CACHE") or str(Path.home() / ".cache" / "llm-harness")
BASE = ["-p", "no:cacheprovider", "-p", "no:randomly", "--snapshot-update", "-rA"]


def case_text(contexts: list[str], *, case_id: str = CASE_ID) -> str:
    """SmolLM2's real case file (checks and known defects included), with fewer contexts."""
    text = (CASES / f"{CASE_ID}.yaml").read_text()
    text, n = re.subn(r"^contexts: \[[^\]]*\]\n", f"contexts: [{', '.join(contexts)}]\n", text, flags=re.M)
    assert n == 1, "the case's top-level contexts list moved"
    return text.replace(f"id: {CASE_ID}", f"id: {case_id}")


@pytest.fixture
def project(pytester, case_tree, smollm2_gguf, monkeypatch):
    """A case folder and a model folder (SmolLM2, symlinked, so every llama-server the run starts
    names this folder on its command line)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HARNESS_CACHE", REAL_CACHE)
    shutil.copytree(case_tree, pytester.path / "cases")
    models = pytester.path / "models"
    models.mkdir()
    (models / smollm2_gguf.name).symlink_to(smollm2_gguf)
    return pytester


def run(pytester, modules: list[str], *extra: str, timeout: float = 600):
    return pytester.runpytest_subprocess(
        *[str(SUITE / m) for m in modules], f"--cases={pytester.path / 'cases'}",
        f"--golden-dir={pytester.path / 'golden'}", f"--report-dir={pytester.path / 'reports'}",
        f"--model-dir={pytester.path / 'models'}", *BASE, *extra, timeout=timeout)


def results(pytester) -> dict:
    return json.loads((pytester.path / "reports" / "results.json").read_text())


def backend_of(t: dict) -> str:
    return (t.get("params") or {}).get("backend", "")


def outcomes(tests: list[dict]) -> list[tuple[str, str]]:
    return [(t["nodeid"].split("::")[-1], t["outcome"]) for t in tests]


def llama_servers_naming(folder: Path) -> list[int]:
    """Live llama-server processes whose command line names `folder` (the run's model folder)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            comm = (proc / "comm").read_text().strip()
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if comm == "llama-server" and str(folder) in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


# --- 1. the server is killed in the middle of a run ---------------------------------------------------
KILLER = textwrap.dedent('''
    """Loaded with -p killer: SIGKILLs this process's llama-server just before TARGET runs, and
    writes every llama-server pid it sees (after each check) to server-pids.txt."""
    import os, signal, time
    from pathlib import Path
    import pytest

    TARGET = "test_render[smollm2-135m-instruct,single-user,nogen,llama-server]"
    LOG = Path(__file__).with_name("server-pids.txt")


    def _state(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return None


    def servers():
        """Live llama-server children of this process (found in /proc)."""
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                head, rest = stat.read_text().rsplit(")", 1)
            except OSError:
                continue
            fields = rest.split()
            if int(fields[1]) == os.getpid() and head.split("(", 1)[1] == "llama-server" and fields[0] != "Z":
                out.append(int(stat.parent.name))
        return out


    def _log(line):
        with LOG.open("a") as f:
            f.write(line + "\\n")


    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(item):
        if item.name == TARGET:
            pids = servers()
            assert len(pids) == 1, f"expected one llama-server child, found {pids}"
            os.kill(pids[0], signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _state(pids[0]) not in (None, "Z") and time.monotonic() < deadline:
                time.sleep(0.02)                 # dead (a zombie until the harness reaps it)
            _log(f"killed {pids[0]}")


    def pytest_runtest_teardown(item):
        for pid in servers():
            _log(f"seen {pid} {item.name}")
''')


def test_killing_llama_server_mid_run_fails_only_the_check_that_found_it(project, built_server):
    (project.path / "cases" / "smollm2.yaml").write_text(case_text(["single-user", "system-user"]))
    (project.path / "killer.py").write_text(KILLER)
    result = run(project, ["test_templates.py", "test_generation.py"], "--backend=llama-cpp-python",
                 "--backend=llama-server", "-p", "killer", "-n", "0",
                 "-k", "test_render and not agrees or test_chat_template")
    out = result.stdout.str()

    # the run completed: summary printed, results written
    assert "conformance summary" in out and "results written to" in out, out[-3000:]
    # the server was looked up (here: found in the cache) once, before any check ran
    assert out.count("llama-server: reused cached build") == 1, out[:3000]
    tests = results(project)["tests"]
    log = (project.path / "server-pids.txt").read_text().splitlines()
    killed = [int(line.split()[1]) for line in log if line.startswith("killed")]
    assert len(killed) == 1, log

    # exactly the check that used the dead server failed, naming the crash and the new server
    failed = [t for t in tests if t["outcome"] != "passed"]
    assert [t["nodeid"].split("::")[-1] for t in failed] == [
        "test_render[smollm2-135m-instruct,single-user,nogen,llama-server]"], outcomes(tests)
    restarted = re.search(r"llama-server crashed \(exit code -9, killed by SIGKILL\) during render; "
                          r"restarted \(pid (\d+)\)", failed[0]["message"])
    assert restarted, failed[0]["message"]
    assert result.ret == 1

    # llama-cpp-python never noticed; llama-server's later checks ran on the restarted server
    lcp = [t for t in tests if backend_of(t) == "llama-cpp-python"]
    assert len(lcp) == 6 and all(t["outcome"] == "passed" for t in lcp), outcomes(lcp)
    after_kill = [line.split() for line in log[log.index(f"killed {killed[0]}") + 1:]]
    new_pid = int(restarted.group(1))
    assert {int(pid) for _, pid, _ in after_kill} == {new_pid} and new_pid != killed[0], log
    ran_later = {name for _, _, name in after_kill} - {failed[0]["nodeid"].split("::")[-1]}
    later = [t for t in tests if backend_of(t) == "llama-server" and t["nodeid"].split("::")[-1] in ran_later]
    assert len(later) == 4 and all(t["outcome"] == "passed" for t in later), outcomes(tests)
    assert any(t["check"] == "generation.chat_template" for t in later)          # real generations

    # and no llama-server started by the run is left
    for pid in {int(line.split()[1]) for line in log}:
        assert pid_gone(pid), f"llama-server {pid} outlived the run"
    assert llama_servers_naming(project.path) == []


# --- 2. an OpenAI-compatible endpoint ---------------------------------------------------------------
@pytest.fixture
def endpoint(built_server, smollm2_gguf):
    """A llama-server started here, as a user would start one (--jinja: tools supported)."""
    from harness.run.server_process import ServerProcess
    server = ServerProcess(built_server.binary, ["-m", str(smollm2_gguf), "-c", "2048", "--threads", "1",
                                                 "--threads-batch", "1", "--parallel", "1", "--seed", "1234",
                                                 "--jinja", "--no-webui"], env=built_server.env())
    server.start()
    try:
        yield server.url
    finally:
        pid = server.pid
        server.stop()
        assert pid_gone(pid)


def openai_case() -> str:
    """The case, with the llama-server findings this endpoint (llama-server, SmolLM2's own template)
    shares declared for the `openai` backend too."""
    case = yaml.safe_load(case_text(["system-user", "tools-offered"]))
    case["known_defects"] += [
        {"check": "generation.stop", "where": {"stop": "special-token-text", "backend": "openai", "stream": "nostream"},
         "description": "The endpoint is llama-server without --special: stop=['<|im_start|>'] never fires when "
                        "the model emits <|im_start|> (id 1), as declared for the llama-server backend."},
        {"check": "toolcalls.chat_call", "where": {"backend": "openai"}, "match": "came back as plain content",
         "description": "The endpoint is llama-server with SmolLM2's own template, which cannot express tools, "
                        "and it reads tool_choice only as a string: no call is forced (declared for the "
                        "llama-server backend)."}]
    return yaml.safe_dump(case, sort_keys=False, allow_unicode=True, width=120)


def test_openai_url_runs_chat_generation_and_tool_call_checks(project, endpoint):
    (project.path / "cases" / "smollm2.yaml").write_text(openai_case())
    caps = project.path / "caps.json"
    caps.write_text(json.dumps(["chat", "stream", "complete", "grammar", "json_schema", "tools"]))
    result = run(project, ["test_generation.py", "test_toolcalls.py"], "--backend=openai", f"--openai-url={endpoint}",
                 f"--openai-capabilities=@{caps}", "-n", "0", "-k", "openai")
    out = result.stdout.str()
    assert result.ret == 0, out[-4000:]
    tests = results(project)["tests"]
    assert tests and all(backend_of(t) == "openai" for t in tests), outcomes(tests)
    assert {t["outcome"] for t in tests} <= {"passed", "xfailed", "skipped"}, outcomes(tests)
    info = next(t["backend_info"] for t in tests if t["backend_info"])
    assert info["base_url"] == endpoint + "/v1" and "tools" in info["capabilities"]

    def ran(check: str, outcome: str, **params: str) -> list[dict]:
        return [t for t in tests if t["check"] == check and t["outcome"] == outcome
                and all(t["params"].get(k) == v for k, v in params.items())]

    # chat: constrained chat completions, streamed and not
    assert len(ran("generation.grammar", "passed", endpoint="chat")) >= 6
    # generation: raw /v1/completions with stops, streamed and not
    assert len(ran("generation.stop", "passed")) >= 6
    assert ran("generation.stop", "xfailed", stop="special-token-text")
    # tool calls: a grammar-constrained raw completion whose call is extracted and validated against
    # the tool's schema, and forced calls through the chat API (the declared finding, checked exactly)
    grammar_call = ran("toolcalls.grammar_call", "passed")
    assert len(grammar_call) == 1, outcomes(tests)
    golden = json.loads(next((project.path / "golden" / "test_toolcalls").glob("test_grammar_call*openai*.json"))
                        .read_text())
    assert golden["extracted"]["calls"] and golden["extracted"]["calls"][0]["name"] in ("get_weather", "get_forecast")
    chat_calls = ran("toolcalls.chat_call", "xfailed", template="endpoint")
    assert sorted(t["params"]["tool_choice"] for t in chat_calls) == ["named", "required"], outcomes(tests)
    skipped = [t for t in tests if t["outcome"] == "skipped"]
    assert len(skipped) < len(tests) / 2, outcomes(tests)

    # without the `tools` and `complete` capabilities the tool-call generations skip, saying why
    result = run(project, ["test_toolcalls.py"], "--backend=openai", f"--openai-url={endpoint}",
                 "--openai-capabilities=chat,stream", "-n", "0", "-k", "openai")
    assert result.ret == 0, result.stdout.str()[-3000:]
    tests = results(project)["tests"]
    assert {(t["check"], t["outcome"]) for t in tests} == {("toolcalls.grammar_call", "skipped"),
                                                           ("toolcalls.chat_call", "skipped")}
    messages = {t["check"]: t["message"] for t in tests}
    assert "openai has no 'complete' capability" in messages["toolcalls.grammar_call"]
    assert "openai has no 'tools' capability" in messages["toolcalls.chat_call"]


def test_openai_capabilities_option(tmp_path, pytester):
    from harness.session import openai_capabilities
    assert openai_capabilities("chat, stream,tools") == ["chat", "stream", "tools"]
    (tmp_path / "caps.json").write_text('["chat", "complete"]')
    (tmp_path / "caps.yaml").write_text("# what the endpoint can do\n- chat\n- tools\n")
    (tmp_path / "bad.yaml").write_text("chat: yes\n")
    assert openai_capabilities(f"@{tmp_path / 'caps.json'}") == ["chat", "complete"]
    assert openai_capabilities(f"@{tmp_path / 'caps.yaml'}") == ["chat", "tools"]
    with pytest.raises(ValueError, match="must hold a list of capability names"):
        openai_capabilities(f"@{tmp_path / 'bad.yaml'}")
    with pytest.raises(ValueError, match="cannot read .*nope.yaml"):
        openai_capabilities(f"@{tmp_path / 'nope.yaml'}")
    # a capability the backend cannot have is a usage error at start-up, not an error in every check
    result = pytester.runpytest_subprocess(str(SUITE / "test_case_files.py"), "--openai-url=http://127.0.0.1:9",
                                           "--openai-capabilities=chat,tokenize", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "the openai backend cannot provide ['tokenize']" in result.stderr.str()


def test_openai_chat_calls_are_validated_against_the_tool_schema(case_tree):
    """Unit level: the openai backend's chat-call items (one template: the endpoint's), and a
    forced call whose arguments break the tool's schema is a finding, as for the other backends."""
    from harness.families.toolcalls import checks as tc
    from harness.backends.base import BackendOptions, Generation
    from harness.cases.model import discover
    from harness.checks import Mismatch
    from harness.run.runtime import Runtime

    (case_tree / "m.yaml").write_text(
        f"schema: 1\nid: m\ndescription: demo\nmodel:\n  gguf:\n    file: m.gguf\n    sha256: {'ab' * 32}\n"
        "contexts: [tools-offered]\n"
        "checks:\n  toolcalls:\n    generation:\n      template: {pypi_sdist: x==1, member: a/Qwen-x.jinja}\n"
        "      format: hermes\n      context: tools-offered\n      backends: [llama-server, openai]\n")
    cases = discover(case_tree)
    assert cases.errors == []
    assert [i.id for i in tc.chat_items(cases, ["openai", "llama-server"])] == [
        "m,tools-offered,embedded,required,llama-server", "m,tools-offered,embedded,named,llama-server",
        "m,tools-offered,Qwen-x,required,llama-server", "m,tools-offered,Qwen-x,named,llama-server",
        "m,tools-offered,endpoint,required,openai", "m,tools-offered,endpoint,named,openai"]
    assert [i.id for i in tc.grammar_items(cases, ["openai"])] == ["m,tools-offered,Qwen-x,hermes,openai"]

    class Endpoint:                     # what OpenAICompatBackend.chat returns, without a server
        name = "openai"

        def __init__(self, arguments: str):
            self.arguments = arguments

        def chat(self, req):
            return Generation("", "tool_calls", tool_calls=[{"id": "x", "type": "function", "function": {
                "name": "get_forecast", "arguments": self.arguments}}])

    item = next(i for i in tc.chat_items(cases, ["openai"]) if i.params["tool_choice"] == "required")
    rt = Runtime(BackendOptions())
    tc.check_chat_call(rt, item, Endpoint('{"city": "Oslo", "days": 3}')).conclude()
    out = tc.check_chat_call(rt, item, Endpoint('{"city": "Oslo", "days": 30}'))
    assert "the endpoint's template" in out.header
    with pytest.raises(Mismatch, match=r"get_forecast: arguments .* break the tool's schema at days: "
                                       r"30 is greater than the maximum of 7"):
        out.conclude()


# --- 3. llama-server does not build ----------------------------------------------------------------
def broken_tree(root: Path) -> Path:
    """A CMake project that fails at configure time (tests/test_server_build.py's tiny tree)."""
    (root / "src").mkdir(parents=True)
    (root / "CMakeLists.txt").write_text(textwrap.dedent("""\
        cmake_minimum_required(VERSION 3.14)
        project(tiny_server C)
        message(FATAL_ERROR "deliberate failure for the harness test")
        add_executable(llama-server src/main.c)
        """))
    (root / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    return root


MISSING = ("schema: 1\nid: missing-model\ndescription: a model no source has\nmodel:\n  gguf:\n"
           f"    file: nowhere.gguf\n    sha256: {'cd' * 32}\n    hub: {{repo: nobody/nothing}}\n"
           "contexts: [single-user]\n")


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("cc") is None, reason="no cmake / C compiler")
def test_build_failure_is_reported_once_and_skips_the_server_checks(project, tmp_path_factory, monkeypatch, request):
    cache = tmp_path_factory.mktemp("harness-cache")       # the failed build lands here, not in ~/.cache
    request.addfinalizer(lambda: shutil.rmtree(cache, ignore_errors=True))
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    cases = project.path / "cases"
    (cases / "smollm2.yaml").write_text(case_text(["single-user"]))
    (cases / "smollm2-copy.yaml").write_text(case_text(["single-user"], case_id="smollm2-copy"))   # other worker
    (cases / "missing.yaml").write_text(MISSING)
    tree = broken_tree(tmp_path_factory.mktemp("tree"))
    result = run(project, ["test_templates.py"], "--backend=llama-cpp-python", "--backend=llama-server",
                 f"--llama-cpp-tree={tree}", "-n", "2", "--dist", "loadgroup", "-k", "test_render and not agrees")
    out = result.stdout.str()
    doc = results(project)
    tests = doc["tests"]

    # built once, by the controller before the workers started; they did not retry it
    assert out.count("llama-server: building ") == 1, out
    assert "(its checks will be skipped; log tail in the summary)" in out
    failed_marker = json.loads(next((cache / "llama-server").glob("*/failed.json")).read_text())
    assert failed_marker["run_id"].startswith("run-"), failed_marker

    # reported once: one error with the build log's tail, printed once, for every skipped check
    assert len(doc["errors"]) == 1, doc["errors"]
    err = doc["errors"][0]
    assert (err["backend"], err["error"], err["skipped_checks"]) == ("llama-server", "build failed", 4)
    assert "deliberate failure for the harness test" in err["tail"]
    assert err["log"].startswith(str(cache / "llama-server")) and Path(err["log"]).is_file()
    assert out.count("deliberate failure for the harness test") == 1, out
    assert out.count("llama-server: build failed, 4 check(s) skipped: llama-server build failed (exit 1)") == 1

    # the server checks of resolvable models skip with one short line; llama-cpp-python runs
    good = [t for t in tests if t["case"] in (CASE_ID, "smollm2-copy")]
    server = [t for t in good if backend_of(t) == "llama-server"]
    assert len(server) == 4 and all(t["outcome"] == "skipped" for t in server), outcomes(good)
    for t in server:
        assert "llama-server could not be built: llama-server build failed (exit 1)" in t["message"]
        assert "deliberate failure" not in t["message"] and len(t["message"].splitlines()) == 1, t["message"]
    lcp = [t for t in good if backend_of(t) == "llama-cpp-python"]
    assert len(lcp) == 4 and all(t["outcome"] == "passed" for t in lcp), outcomes(good)
    # a model that cannot be resolved still fails, on every backend (it is resolved before any build)
    missing = [t for t in tests if t["case"] == "missing-model"]
    assert {backend_of(t) for t in missing} == {"llama-cpp-python", "llama-server"}
    assert all(t["outcome"] == "failed" and "could not resolve nowhere.gguf" in t["message"] for t in missing)
    assert result.ret == 1

    # a llama-server that crashes on load still fails its checks (and is no build failure)
    fake = project.path / "crashing-llama-server"
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo "version: 0 (fake)"; exit 0; }\nkill -SEGV $$\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    result = run(project, ["test_templates.py"], "--backend=llama-server", f"--server-binary={fake}", "-n", "0",
                 "-k", f"test_render and not agrees and {CASE_ID}")
    doc = results(project)
    assert result.ret == 1 and doc["errors"] == []
    assert len(doc["tests"]) == 2 and all(t["outcome"] == "failed" for t in doc["tests"]), outcomes(doc["tests"])
    assert all("llama-server exited (exit code -11, killed by SIGSEGV) before it was ready" in t["message"]
               for t in doc["tests"]), doc["tests"][0]["message"]
