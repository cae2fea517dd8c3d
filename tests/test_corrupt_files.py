"""Corrupt and odd model files, through the real suite.

One run of the template family (as `harness run` runs it: `-n 2 --dist loadgroup`) over a
case tree holding one good case and one case per kind of broken file, all derived from real
files: SmolLM2 cut to 60% (a partial download), a vocab-only GGUF with a flipped magic, the same
vocab rewritten with `tokenizer.ggml.bos_token_id` as a string, the same vocab carrying a chat
template that is not valid Jinja, a pinned sha256 the bytes do not have (found locally and on
the PyPI mirror: the IntegrityError path), and a file that is nowhere. Each kind's test checks
the message (the file and the cause) and that the good case in the same run passed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CASES, REPO, SUITE

pytestmark = pytest.mark.usefixtures("preloaded_backends")

BACKENDS = ["hf", "llama-cpp-python", "llama.cpp-builtin"]
BROKEN_TEMPLATE = "{% for m in messages %}{{ m.content }"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rewrite_gguf(src: Path, dst: Path, override: dict) -> None:
    """Copy a vocab-only GGUF with some metadata values replaced: {key: (value, GGUFValueType)}."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter
    reader = GGUFReader(str(src))
    assert not reader.tensors, "only vocab-only GGUFs are rewritten here"
    writer = GGUFWriter(str(dst), reader.fields["general.architecture"].contents())
    override = dict(override)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key in override:
            writer.add_key_value(key, *override.pop(key))
            continue
        vtype = field.types[0]
        writer.add_key_value(key, field.contents(), vtype,
                             sub_type=field.types[-1] if vtype == GGUFValueType.ARRAY else None)
    for key, (value, vtype) in override.items():
        writer.add_key_value(key, value, vtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def model_case(case_id: str, path: Path, *, weights: bool, template: str = "none", sha: str | None = None,
               file: str | None = None, mirror: str = "", contexts: str = "[single-user]") -> str:
    return (f"schema: 1\nid: {case_id}\ndescription: crafted model file for tests/test_corrupt_files.py\n"
            f"model:\n  gguf:\n    file: {file or path.name}\n    sha256: {sha or sha256(path)}\n{mirror}"
            f"  weights: {'true' if weights else 'false'}\n  chat_template: {template}\n"
            f"contexts: {contexts}\n")


def good_case() -> str:
    text = (CASES / "smollm2-135m-instruct.yaml").read_text()
    start, end = text.index("contexts:"), text.index("known_defects:")
    return text[:start] + "contexts: [single-user, system-user]\n" + text[end:]


@pytest.fixture(scope="module")
def run(tmp_path_factory, smollm2_gguf):
    from gguf import GGUFValueType

    from harness.models.sources import llama_cpp_tree
    root = tmp_path_factory.mktemp("corrupt")
    cases, models = root / "cases", root / "models"
    shutil.copytree(CASES / "contexts", cases / "contexts")
    shutil.copytree(CASES / "tools", cases / "tools")
    models.mkdir()
    vocab = llama_cpp_tree() / "models" / "ggml-vocab-gpt-2.gguf"

    # the good case: the real SmolLM2, found in --model-dir
    (models / smollm2_gguf.name).symlink_to(smollm2_gguf)
    (cases / "smollm2.yaml").write_text(good_case())
    # truncated: a partial download of SmolLM2 (pinned as it is, so only its structure is wrong)
    trunc = models / "SmolLM2-trunc.gguf"
    with open(smollm2_gguf, "rb") as f:
        trunc.write_bytes(f.read(int(smollm2_gguf.stat().st_size * 0.6)))
    (cases / "trunc.yaml").write_text(model_case("trunc", trunc, weights=True, template="embedded"))
    # wrong magic
    magic = models / "vocab-magic.gguf"
    data = bytearray(vocab.read_bytes())
    data[0:4] = b"XGUF"
    magic.write_bytes(bytes(data))
    (cases / "magic.yaml").write_text(model_case("magic", magic, weights=False))
    # a metadata value of the wrong type
    badtype = models / "vocab-badtype.gguf"
    rewrite_gguf(vocab, badtype, {"tokenizer.ggml.bos_token_id": ("50256", GGUFValueType.STRING)})
    (cases / "badtype.yaml").write_text(model_case("badtype", badtype, weights=False))
    # an embedded chat template that is not valid Jinja
    badtmpl = models / "vocab-badtmpl.gguf"
    rewrite_gguf(vocab, badtmpl, {"tokenizer.chat_template": (BROKEN_TEMPLATE, GGUFValueType.STRING)})
    (cases / "badtmpl.yaml").write_text(model_case("badtmpl", badtmpl, weights=False, template="embedded"))
    # a pinned sha256 the bytes do not have: a local copy and the PyPI mirror both have other bytes
    shutil.copy(vocab, models / vocab.name)
    mirror = ("    mirror:\n      - pypi_sdist: llama-cpp-python==0.3.36\n"
              f"        member: llama_cpp_python-0.3.36/vendor/llama.cpp/models/{vocab.name}\n")
    (cases / "wrongsha.yaml").write_text(model_case("wrongsha", vocab, weights=False, sha="ab" * 32,
                                                    mirror=mirror))
    # a file that is nowhere
    (cases / "missing.yaml").write_text(model_case("missing", vocab, weights=False, sha="cd" * 32,
                                                   file="nowhere.gguf"))

    reports = root / "reports"
    cmd = [sys.executable, "-m", "pytest", str(SUITE / "test_templates.py"), str(SUITE / "test_case_files.py"),
           f"--rootdir={REPO}", f"--cases={cases}", f"--golden-dir={root / 'golden'}", f"--report-dir={reports}",
           f"--model-dir={models}", *[f"--backend={b}" for b in BACKENDS], "--snapshot-update",
           "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup", "--max-worker-restart", "20", "-q", "-rfE"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    results = json.loads((reports / "results.json").read_text())
    return {"proc": proc, "out": proc.stdout + proc.stderr, "results": results, "tests": results["tests"]}


def items(run, case_id: str) -> list[dict]:
    got = [t for t in run["tests"] if t.get("case") == case_id]
    assert got, f"no results for {case_id}:\n{run['out'][-3000:]}"
    return got


def failed_messages(run, case_id: str) -> list[str]:
    return [t["message"] for t in items(run, case_id) if t["outcome"] in ("failed", "error")]


def assert_all_fail_with(run, case_id: str, *needles: str) -> None:
    tests = items(run, case_id)
    bad = [t for t in tests if t["outcome"] not in ("failed", "error", "skipped")]
    assert not bad, bad
    msgs = failed_messages(run, case_id)
    assert msgs, tests
    for m in msgs:
        for needle in needles:
            assert needle in m, (needle, m)


def test_the_run_completes_and_the_good_case_passes(run):
    proc, tests = run["proc"], run["tests"]
    assert proc.returncode == 1, run["out"][-3000:]               # failures, not an internal error
    assert "Traceback" not in "".join(t["message"] for t in tests), "a corrupt file raised an unexpected exception"
    assert "crashed" not in run["out"], "no worker may crash on a corrupt file"
    good = items(run, "smollm2-135m-instruct")
    assert {t["outcome"] for t in good} <= {"passed", "skipped", "xfailed"}, good
    assert sum(t["outcome"] == "passed" for t in good) >= 6
    case_files = [t for t in tests if "test_case_file" in t["nodeid"]]
    assert case_files and all(t["outcome"] == "passed" for t in case_files)   # every case file is valid


def test_truncated_gguf(run):
    assert_all_fail_with(run, "trunc", "cases/trunc.yaml", "SmolLM2-trunc.gguf: truncated: the tensor data ends at byte",
                         "but the file has 59,017,459 bytes")


def test_wrong_magic(run):
    assert_all_fail_with(run, "magic", "cases/magic.yaml", "vocab-magic.gguf: not a GGUF file: magic b'XGUF', "
                                                           "expected b'GGUF'")


def test_metadata_value_of_the_wrong_type(run):
    assert_all_fail_with(run, "badtype", "vocab-badtype.gguf: metadata tokenizer.ggml.bos_token_id has type STRING, "
                                         "expected UINT32")


def test_embedded_template_that_is_not_valid_jinja(run):
    tests = items(run, "badtmpl")
    by_backend: dict[str, list[dict]] = {}
    for t in tests:
        by_backend.setdefault(t["params"].get("backend") or "", []).append(t)
    # llama-cpp-python compiles the template when it opens the model: it refuses the model
    lcp = [t for t in tests if "llama-cpp-python" in t["nodeid"] and t["outcome"] != "skipped"]
    assert lcp and all(t["outcome"] == "failed" for t in lcp), lcp
    for t in lcp:
        assert ("vocab-badtmpl.gguf: its embedded chat template (tokenizer.chat_template) is not valid Jinja "
                "(line 1): unexpected '}'") in t["message"], t["message"]
    # transformers opens it and fails at the render, naming the engine's error
    hf = [t for t in by_backend.get("hf", []) if "test_render[" in t["nodeid"]]
    assert hf and all(t["outcome"] == "failed" for t in hf), hf
    for t in hf:
        assert "cases/badtmpl.yaml" in t["message"] and "TemplateSyntaxError: unexpected '}'" in t["message"]


def test_pinned_sha256_that_the_bytes_do_not_have(run):
    vocab_sha = "cedc56ca6e2e89f63e781696d1fd76b4b1d49e6720dee86463e915f6e90016ac"
    assert_all_fail_with(run, "wrongsha", "could not resolve ggml-vocab-gpt-2.gguf (sha256 abababababab...)",
                         f"ggml-vocab-gpt-2.gguf: rejected: sha256 {vocab_sha} != pinned {'ab' * 32}",
                         f"pypi llama-cpp-python==0.3.36 (sdist):", f"sha256 {vocab_sha} != pinned {'ab' * 32}")


def test_file_that_is_not_there(run):
    assert_all_fail_with(run, "missing", "could not resolve nowhere.gguf", "no such file",
                         "pypi mirror: the case names no mirror package", "how to fix:")


def test_check_gguf_names_each_cause(tmp_path, smollm2_gguf):
    """The structural check on its own, including the causes the suite run does not cover."""
    from harness.run.gguf_check import ModelFileError, check_gguf
    data = smollm2_gguf.read_bytes()[:200_000]
    cases = {
        "empty": (b"", "truncated: the file ends at byte 0 inside the magic number"),
        "header": (data[:5000], "truncated: the file ends at byte 5000 inside tokenizer.ggml.tokens["),
        "version": (data[:4] + (7).to_bytes(4, "little") + data[8:], "unsupported GGUF version 7"),
        "counts": (data[:8] + (1 << 40).to_bytes(8, "little") + data[16:], "implausible header"),
    }
    for name, (blob, cause) in cases.items():
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(blob)
        with pytest.raises(ModelFileError) as exc:
            check_gguf(path)
        assert f"{name}.gguf: {cause}" in str(exc.value)
    with pytest.raises(ModelFileError, match="nothere.gguf: cannot open: No such file"):
        check_gguf(tmp_path / "nothere.gguf")
    assert check_gguf(smollm2_gguf)["tensors"] == 272
