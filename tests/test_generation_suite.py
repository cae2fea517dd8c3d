"""The generation family end to end (pytester, real SmolLM2 on llama-cpp-python): a run-away
grammar, a leaked end-of-turn marker and a stream that differs from the non-streamed text each
fail with a Mismatch naming the case file and line and showing both outputs."""

from __future__ import annotations

import json
import shutil
import textwrap

import pytest

from conftest import CASES, SUITE

FAST = ["--backend=llama-cpp-python", "-p", "no:cacheprovider", "-p", "no:randomly"]

GENERATION = textwrap.dedent("""\
    checks:
      generation:
        grammars:
          - id: runaway
            gbnf: 'root ::= [a-z ]{60,}'
            prompt: "Say something."
            max_tokens: 4
            accept: ["x"]
            reject: ["y"]
          - id: leak
            gbnf: 'root ::= "ok<|im_end|>"'
            prompt: "Say ok."
            max_tokens: 16
            accept: ["x"]
            reject: ["y"]
          - id: fine
            gbnf: 'root ::= "yes" | "no"'
            prompt: "<|im_start|>user\\nIs the sky blue?<|im_end|>\\n<|im_start|>assistant\\n"
            max_tokens: 4
            accept: ["x"]
            reject: ["y"]
    """)

# Makes llama-cpp-python's *streamed* completions drop one character, as a broken
# incremental detokenizer would; the non-streamed path is untouched.
DROP_A_CHARACTER = textwrap.dedent("""\
    import pytest

    @pytest.fixture(autouse=True)
    def drop_a_streamed_character(monkeypatch):
        from harness.backends import llama_cpp
        original = llama_cpp.LlamaCppBackend.complete

        def complete(self, req):
            gen = original(self, req)
            if req.stream and gen.text:
                gen.text = gen.text[:1] + gen.text[2:]
                gen.chunks = [gen.text]
            return gen
        monkeypatch.setattr(llama_cpp.LlamaCppBackend, "complete", complete)
    """)


def case_text() -> str:
    text = (CASES / "smollm2-135m-instruct.yaml").read_text()
    head = text[:text.index("contexts:")].replace("id: smollm2-135m-instruct", "id: smol-fail")
    return head + "contexts: [single-user]\n" + GENERATION


@pytest.fixture
def project(pytester, case_tree, monkeypatch, preloaded_backends, smollm2_gguf):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    shutil.copytree(case_tree, pytester.path / "cases")
    (pytester.path / "cases" / "smol-fail.yaml").write_text(case_text())
    return pytester


def test_runaway_leak_and_stream_differences_fail_with_location_and_both_outputs(project):
    project.makepyfile(drop_a_character=DROP_A_CHARACTER)     # loaded as a plugin (-p): the suite is elsewhere
    project.syspathinsert()
    text = (project.path / "cases" / "smol-fail.yaml").read_text().splitlines()
    line = {name: text.index(f"      - id: {name}") + 1 for name in ("runaway", "leak", "fine")}
    result = project.runpytest_subprocess(str(SUITE / "test_generation.py"), f"--cases={project.path / 'cases'}",
                               f"--golden-dir={project.path / 'golden'}",
                               f"--report-dir={project.path / 'reports'}", *FAST, "--snapshot-update",
                               "-p", "drop_a_character",
                               "-k", "test_grammar and not test_grammar_engine")
    report = json.loads((project.path / "reports" / "results.json").read_text())
    by_id = {t["nodeid"].split("[", 1)[1].rstrip("]"): t for t in report["tests"]}

    runaway = by_id["smol-fail,grammar=runaway,complete,llama-cpp-python,nostream"]
    assert runaway["outcome"] == "failed"
    assert f"cases/smol-fail.yaml:{line['runaway']}" in runaway["message"]
    assert "did not end by itself" in runaway["message"] and '"finish_reason": "length"' in runaway["message"]
    assert '"finish_reason": "stop"' in runaway["message"]           # the expected side

    leak = by_id["smol-fail,grammar=leak,complete,llama-cpp-python,nostream"]
    assert leak["outcome"] == "failed"
    assert f"cases/smol-fail.yaml:{line['leak']}" in leak["message"]
    assert "end-of-turn text '<|im_end|>' leaks" in leak["message"]
    assert "ok<|im_end|>" in leak["message"] and "without end-of-turn text" in leak["message"]

    # the non-streamed result is fine; its stream twin drops a character and says so
    assert by_id["smol-fail,grammar=fine,complete,llama-cpp-python,nostream"]["outcome"] == "passed"
    stream = by_id["smol-fail,grammar=fine,complete,llama-cpp-python,stream"]
    assert stream["outcome"] == "failed"
    assert f"cases/smol-fail.yaml:{line['fine']}" in stream["message"]
    assert "the concatenated stream differs from the non-streamed result" in stream["message"]
    assert "--- non-streamed" in stream["message"] and "+++ streamed" in stream["message"]
    assert result.ret != 0
