"""A backend that crashes the process fails only its own cases; a hung one fails with a clear
message; interruption leaves no process or temporary file behind.

The crashing backends are test doubles registered under new names (harness.backends.base.register)
by a small pytest plugin written next to the run: `crashy` segfaults (ctypes reads address 0)
in every render call, `crashy-load` segfaults when it is opened on a model (a GGUF that
crashes native code on load). The real suite runs as `harness run` runs it (-n 2 --dist
loadgroup --max-worker-restart 20), next to the real backends on SmolLM2.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import CASES, REPO, SUITE, pid_gone

DOUBLES = textwrap.dedent('''
    """Test doubles for tests/test_crash_isolation.py (loaded with -p crash_doubles)."""
    import ctypes
    import time

    from harness.families import items as expand
    from harness.run import probe
    from harness.backends import base


    class Crashy:
        """Every render segfaults: native code dereferencing NULL."""
        name = "crashy"
        capabilities = frozenset({"render"})

        def __init__(self, model, options):
            pass

        def info(self):
            return {"backend": self.name}

        def close(self):
            pass

        def render_prompt(self, req):
            ctypes.string_at(0)


    class CrashyLoad(Crashy):
        """Opening it on a model segfaults, as llama.cpp would on a hostile GGUF."""
        name = "crashy-load"

        def __init__(self, model, options):
            if model is not None:
                ctypes.string_at(0)


    class Hangs(Crashy):
        """Every render hangs (a generation that never ends)."""
        name = "hangs"

        def render_prompt(self, req):
            while True:
                time.sleep(1)


    for _cls in (Crashy, CrashyLoad, Hangs):
        base.register(_cls.name, f"crash_doubles:{_cls.__name__}")
    expand.RENDERERS = (*expand.RENDERERS, "crashy", "crashy-load", "hangs")
    expand.ALL_BACKENDS = (*expand.ALL_BACKENDS, "crashy", "crashy-load", "hangs")
    probe.RISKY_LOADS.add("crashy-load")     # its load is probed in a child first
''')


def good_case() -> str:
    text = (CASES / "smollm2-135m-instruct.yaml").read_text()
    start, end = text.index("contexts:"), text.index("known_defects:")
    return text[:start] + "contexts: [single-user]\n" + text[end:]


def project(root: Path, smollm2_gguf: Path) -> dict:
    cases = root / "cases"
    cases.mkdir(parents=True)
    for sub in ("contexts", "tools"):
        os.symlink(CASES / sub, cases / sub)
    (cases / "smollm2.yaml").write_text(good_case())
    models = root / "models"
    models.mkdir()
    (models / smollm2_gguf.name).symlink_to(smollm2_gguf)
    (root / "crash_doubles.py").write_text(DOUBLES)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "80", "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return {"cases": cases, "models": models, "env": env}


def suite_cmd(root: Path, p: dict, backends: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "pytest", str(SUITE / "test_templates.py"), f"--rootdir={REPO}",
            f"--cases={p['cases']}", f"--golden-dir={root / 'golden'}", f"--report-dir={root / 'reports'}",
            f"--model-dir={p['models']}", *[f"--backend={b}" for b in backends], "-p", "crash_doubles",
            "--snapshot-update", "-p", "no:cacheprovider", "-q", "-rfE", *extra]


@pytest.fixture(scope="module")
def crash_run(tmp_path_factory, smollm2_gguf):
    root = tmp_path_factory.mktemp("crash")
    p = project(root, smollm2_gguf)
    cmd = suite_cmd(root, p, ["hf", "llama-cpp-python", "llama.cpp-builtin", "crashy", "crashy-load"],
                    "-n", "2", "--dist", "loadgroup", "--max-worker-restart", "20")
    proc = subprocess.run(cmd, cwd=root, env=p["env"], capture_output=True, text=True, timeout=900)
    results = json.loads((root / "reports" / "results.json").read_text())
    return {"proc": proc, "out": proc.stdout + proc.stderr, "tests": results["tests"], "results": results,
            "root": root}


def backend_of(t: dict) -> str:
    return t["nodeid"].rsplit(",", 1)[-1].rstrip("]")


def test_a_segfault_in_a_backend_call_fails_only_its_own_cases(crash_run):
    tests, out = crash_run["tests"], crash_run["out"]
    assert crash_run["proc"].returncode == 1, out[-3000:]
    crashy = [t for t in tests if backend_of(t) == "crashy"]
    # render + agree, with and without the generation prompt
    assert len(crashy) == 4, [t["nodeid"] for t in tests]
    for t in crashy:
        assert t["outcome"] == "error", t                 # xdist's crash report: not from the call phase
        assert "crashed while running" in t["message"], t["message"]
    # each crashed once: one "node down" per crash, and four distinct crashed items (the message
    # itself is printed once or twice depending on the terminal width of the short summary)
    crashed = set(re.findall(r"crashed while running '([^']+)'", out))
    assert out.count("node down") == 4 and len(crashed) == 4, (out.count("node down"), crashed)
    others = [t for t in tests if backend_of(t) not in ("crashy", "crashy-load")]
    assert len(others) >= 10
    assert {t["outcome"] for t in others} <= {"passed", "skipped", "xfailed"}, [
        (t["nodeid"], t["outcome"], t["message"][-300:]) for t in others if t["outcome"] not in
        ("passed", "skipped", "xfailed")]
    assert sum(t["outcome"] == "passed" for t in others) >= 8


def test_a_load_that_segfaults_is_probed_in_a_child_and_fails_its_cases_cleanly(crash_run):
    tests, out = crash_run["tests"], crash_run["out"]
    crashy_load = [t for t in tests if backend_of(t) == "crashy-load"]
    assert len(crashy_load) == 4
    for t in crashy_load:
        assert t["outcome"] == "failed", t
        assert ("crashy-load could not be opened for smollm2-135m-instruct: SmolLM2-135M-Instruct.Q4_1.gguf: "
                "loading it crashed the probe process (killed by SIGSEGV)") in t["message"], t["message"]
        # faulthandler's report from the child, down to the crashing frame
        assert "Fatal Python error: Segmentation fault" in t["message"] and "in __init__" in t["message"]
    # the probe caught it: no worker died for these
    assert not any("crashy-load]" in line for line in out.splitlines() if "crashed while running" in line)


def test_results_record_models_and_memory_of_every_worker_even_when_some_crashed(crash_run):
    """Workers hand their model resolutions and peak memory to the controller (xdist
    workeroutput); a crashed worker sends nothing."""
    doc = crash_run["results"]
    assert doc["models"]["smollm2-135m-instruct"]["sha256"].startswith("b179c952")
    mem = doc["memory"]
    procs = mem["processes_mib"]
    assert procs["controller"] > 0 and all(v > 0 for v in procs.values())
    workers = [w for w in procs if w != "controller"]
    # four workers crashed and were replaced (gw2..gw5); the two that finished report
    assert len(workers) == 2 and all(w.startswith("gw") for w in workers), workers
    assert mem["max_process_mib"] == max(procs.values())
    assert mem["upper_bound_mib"] == sum(procs.values()) + sum(mem["llama_server_peaks_mib"])
    report = (crash_run["root"] / "reports" / "report.md").read_text()
    assert f"at most {mem['upper_bound_mib']} MiB in all" in report
    # and the goldens' totals, though syrupy's own report stays with the workers
    assert re.search(r"goldens: [1-9]\d* compared; [1-9]\d* written, 0 changed, 0 differ, 0 unchanged", crash_run["out"])


def test_run_isolated_outcomes():
    import ctypes

    from harness.run.fork import run_isolated

    def segfault():
        ctypes.string_at(0)

    def spin():
        while True:
            pass

    def allocate():
        return len(bytearray(1 << 34))

    assert run_isolated(sum, [1, 2, 3], timeout_s=30).value == 6
    seg = run_isolated(segfault, timeout_s=30, capture_stderr=True)
    assert (seg.status, seg.detail) == ("signal", "killed by SIGSEGV") and "Segmentation fault" in seg.stderr
    t0 = time.monotonic()
    hang = run_isolated(spin, timeout_s=1)
    assert (hang.status, hang.detail) == ("timeout", "timed out after 1s (killed)")
    assert time.monotonic() - t0 < 10
    mem = run_isolated(allocate, timeout_s=30, memory_mib=256)
    assert (mem.status, mem.detail) == ("memory", "exceeded 256 MiB (MemoryError)")
    err = run_isolated(int, "x", timeout_s=30)
    assert err.status == "raised" and err.detail.startswith("ValueError: invalid literal")
    assert run_isolated(lambda: os.getpid(), timeout_s=30).value != os.getpid()


def test_a_hung_backend_call_fails_its_case_with_a_clear_message(tmp_path, smollm2_gguf):
    """--case-timeout (harness/plugin.py; pytest-timeout underneath) fails a hung check, and
    the run goes on."""
    pytest.importorskip("pytest_timeout")
    p = project(tmp_path, smollm2_gguf)
    cmd = suite_cmd(tmp_path, p, ["llama.cpp-builtin", "hangs"], "--case-timeout=10", "-n", "0",
                    "-k", "test_render and not test_render_agrees")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp_path, env=p["env"], capture_output=True, text=True, timeout=600)
    assert time.monotonic() - t0 < 180, proc.stdout[-2000:]
    tests = json.loads((tmp_path / "reports" / "results.json").read_text())["tests"]
    hung = [t for t in tests if backend_of(t) == "hangs"]
    assert len(hung) == 2 and all(t["outcome"] == "failed" for t in hung), hung
    assert all("Failed: Timeout (>10.0s) from pytest-timeout." in t["message"] for t in hung)
    others = [t for t in tests if backend_of(t) != "hangs"]
    assert others and {t["outcome"] for t in others} <= {"passed", "skipped", "xfailed"}


def _children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


INTERRUPTED = textwrap.dedent('''
    """Starts what the hostile set starts (a forked renderer child, a canary folder, a
    llama-server), says so, then waits to be interrupted."""
    import time
    from pathlib import Path
    from harness.families.hostile import checks as hostile
    from harness.run.fork import run_isolated
    from harness.run.server_build import ServerProcess, build_llama_server
    from harness.models.sources import llama_cpp_tree

    def test_interrupted(tmp_path):
        built = build_llama_server(llama_cpp_tree())
        server = ServerProcess(built.binary, ["-m", "MODEL", "-c", "256", "--threads", "1"], env=built.env())
        server.start()
        with hostile.Canary(Path("PARENT")) as canary:
            print(f"READY server={server.pid} canary={canary.dir}", flush=True)
            run_isolated(time.sleep, 600, timeout_s=600)
''')


def test_ctrl_c_leaves_no_process_and_no_temporary_file(tmp_path, smollm2_gguf):
    """SIGINT (Ctrl-C) to a run that has a renderer child, a llama-server and a canary folder
    open: all three are gone afterwards."""
    import shutil
    if shutil.which("cmake") is None:
        pytest.skip("no cmake: no llama-server build")
    parent = tmp_path / "canaries"
    parent.mkdir()
    test = tmp_path / "test_interrupted.py"
    test.write_text(INTERRUPTED.replace("MODEL", str(smollm2_gguf)).replace("PARENT", str(parent)))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", str(test), "-q", "-s", "-p", "no:cacheprovider",
                             f"--rootdir={tmp_path}", "-p", "no:harness"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        line, deadline = "", time.monotonic() + 300
        while "READY" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert "READY" in line, proc.stdout.read()
        server_pid = int(line.split("server=")[1].split()[0])
        canary = Path(line.split("canary=")[1].strip())
        time.sleep(0.5)
        kids = _children(proc.pid)
        assert server_pid in kids and len(kids) >= 2      # the server and the forked renderer child
        assert canary.is_dir()
        os.killpg(proc.pid, signal.SIGINT)                # what a terminal's Ctrl-C does
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for pid in kids:
        assert pid_gone(pid), f"process {pid} survived the interrupt"
    assert not canary.exists() and not any(parent.iterdir())


def test_memory_ceiling_fails_the_running_check_only():
    """--memory-ceiling's watcher (harness/run/memory_watch.py MemoryWatch): over the ceiling while a
    check runs raises MemoryCeilingExceeded in that check; between checks nothing is raised."""
    from harness.run.memory_watch import MemoryCeilingExceeded, MemoryWatch
    watch = MemoryWatch(ceiling_mib=1, interval_s=0.05).start()     # any process is over 1 MiB
    try:
        time.sleep(0.3)                                              # no check running: nothing raised
        watch.running("tests/x.py::test_big")
        with pytest.raises(MemoryCeilingExceeded, match=r"resident memory \d+ MiB > --memory-ceiling 1 MiB "
                                                        r"while running tests/x.py::test_big"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                sum(range(1000))
        watch.running(None)
        time.sleep(0.3)
        for _ in range(100000):                                      # nothing pending leaks out
            pass
    finally:
        watch.stop()
    assert watch.peak_mib > 1


def test_loadgroup_units_are_cases():
    """pytest 9 ignores xdist's `@group` nodeid suffix (item._nodeid); the scheduler groups suite
    checks by the case in their id instead, so a case's models load on one worker."""
    from harness.run.scheduler import group_of
    assert group_of("harness/suite/test_templates.py::test_render[smollm2-135m-instruct,single-user,gen,hf]") \
        == group_of("harness/suite/test_tokenizer.py::test_differential[smollm2-135m-instruct,plain,llama-server]") \
        == "smollm2-135m-instruct"
    assert group_of("harness/suite/test_templates.py::test_render[llama-cpp-templates@A-b,multi-turn,gen,hf]") \
        == "llama-cpp-templates@A-b"
    assert group_of("harness/suite/test_case_files.py::test_case_file[gemma3-270m.yaml]") == "gemma3-270m.yaml"
    assert group_of("tests/test_x.py::test_a[1]") == "tests/test_x.py::test_a[1]"      # not a suite check
    assert group_of("tests/test_x.py::test_a[1]@g0") == "g0"                            # xdist's own, if it works
