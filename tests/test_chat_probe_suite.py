"""Through the suite: an input that makes llama.cpp's chat layer abort fails only its own checks,
and the checks after it run on a restarted probe (the real probe, built from the pinned tree).

No real input is known to abort llama.cpp's chat layer, so the probe is started with its test-only
switch `--abort-on-template-marker` (HARNESS_CHAT_PROBE_ARGS), which aborts (std::abort, SIGABRT)
on a request containing "harness-debug-abort". The conversation that carries the marker is a
context of its own, ordered before two ordinary ones; the templates family runs on SmolLM2's GGUF
template with llama.cpp-chat and hf, as `harness run` would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CASES, REPO, SUITE

ABORT_CONTEXT = """schema: 1
id: abort-me
description: carries the probe's test-only abort marker
messages:
  - role: user
    content: please harness-debug-abort now
"""


def _case() -> str:
    text = (CASES / "smollm2-135m-instruct.yaml").read_text()
    start, end = text.index("contexts:"), text.index("checks:")
    return text[:start] + "contexts: [abort-me, single-user, multi-turn]\n" + text[end:]


@pytest.fixture(scope="module")
def abort_run(tmp_path_factory, smollm2_gguf):
    from test_chat_probe import TREE
    if not TREE.is_dir():
        pytest.skip(f"no llama.cpp tree at {TREE}")
    root = tmp_path_factory.mktemp("probe-abort")
    cases = root / "cases"
    (cases / "contexts").mkdir(parents=True)
    for sub in CASES.iterdir():                     # grammars, stops, tools, ... the case refers to
        if sub.is_dir() and sub.name != "contexts":
            os.symlink(sub, cases / sub.name)
    for ctx in (CASES / "contexts").glob("*.yaml"):   # the case's other checks name some of them
        os.symlink(ctx, cases / "contexts" / ctx.name)
    (cases / "contexts" / "abort-me.yaml").write_text(ABORT_CONTEXT)
    (cases / "smollm2.yaml").write_text(_case())
    models = root / "models"
    models.mkdir()
    (models / smollm2_gguf.name).symlink_to(smollm2_gguf)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HARNESS_CHAT_PROBE_ARGS": "--abort-on-template-marker",
           "HARNESS_LLAMA_CPP_TREE": str(TREE)}
    env.pop("HARNESS_SERVER_PREBUILT", None)
    cmd = [sys.executable, "-m", "pytest", str(SUITE / "test_templates.py"), f"--rootdir={REPO}",
           f"--cases={cases}", f"--golden-dir={root / 'golden'}", f"--report-dir={root / 'reports'}",
           f"--model-dir={models}", "--backend=llama.cpp-chat", "--backend=hf", "--snapshot-update",
           "-p", "no:cacheprovider", "-q", "-n", "0", "-k", "test_render and not agrees"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    results = json.loads((root / "reports" / "results.json").read_text())
    tests = {t["nodeid"].split("[", 1)[1][:-1]: t for t in results["tests"] if "test_render[" in t["nodeid"]}
    return {"proc": proc, "tests": tests}


def test_an_abort_fails_only_its_own_checks_and_the_next_ones_run(abort_run):
    tests = abort_run["tests"]
    out = abort_run["proc"].stdout + abort_run["proc"].stderr
    for gen in ("gen", "nogen"):
        crashed = tests[f"smollm2-135m-instruct,abort-me,{gen},llama.cpp-chat"]
        assert crashed["outcome"] == "failed", out
        # llama.cpp's own words: the probe's death, its signal and its last stderr line
        assert "ProbeCrashed: chat probe died on op 'render' (killed by SIGABRT)" in crashed["message"]
        assert "chat_probe: marker abort requested" in crashed["message"]
        # the other renderer of the same conversation is untouched
        assert tests[f"smollm2-135m-instruct,abort-me,{gen},hf"]["outcome"] == "passed"
    # every later check ran, on a restarted probe, and passed
    for ctx in ("single-user", "multi-turn"):
        for gen in ("gen", "nogen"):
            assert tests[f"smollm2-135m-instruct,{ctx},{gen},llama.cpp-chat"]["outcome"] == "passed", out
    assert len(tests) == 12, sorted(tests)
