"""model.tokenizer.hub: the HF reference tokenizer from the repo's own tokenizer.json and
tokenizer_config.json (HF cache, then the hub), with `from_gguf` deciding whether the GGUF
conversion may stand in when they do not resolve.

The hub is never reachable here, so the HF cache is a real cache layout
(models--<org>--<name>/snapshots/<commit>/) holding SmolLM2's real tokenizer files, written by
transformers from the GGUF; huggingface_hub finds them with local_files_only, as it would find a
download.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import CASES

REV = "0123456789abcdef0123456789abcdef01234567"
REPO_ID = "harness-test/SmolLM2-135M-Instruct-tokenizer"
SNAPSHOT = Path(f"models--{REPO_ID.replace('/', '--')}") / "snapshots" / REV


def case_text(tokenizer: str) -> str:
    text = (CASES / "smollm2-135m-instruct.yaml").read_text()
    return re.sub(r"  tokenizer:\n    from_gguf: true\n", tokenizer, text, count=1)


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory, smollm2_gguf: Path) -> Path:
    from transformers import AutoTokenizer
    cache = tmp_path_factory.mktemp("hf-cache")
    snap = cache / SNAPSHOT
    tok = AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    tok.save_pretrained(str(snap))
    assert (snap / "tokenizer.json").exists() and (snap / "tokenizer_config.json").exists()
    return cache


def runtime_and_case(case_tree: Path, tokenizer: str, smollm2_gguf: Path):
    from harness.backends.base import BackendOptions
    from harness.cases.model import discover
    from harness.run.runtime import Runtime
    (case_tree / "smollm2.yaml").write_text(case_text(tokenizer))
    cases = discover(case_tree)
    assert not cases.errors, cases.errors
    return Runtime(BackendOptions(), model_dirs=[smollm2_gguf.parent]), cases.by_id("smollm2-135m-instruct")


HUB = f"  tokenizer:\n    hub: {{repo: {REPO_ID}, revision: {REV}}}\n    from_gguf: {{}}\n"


def test_the_hub_tokenizer_is_loaded_from_the_hf_cache(case_tree, smollm2_gguf, hf_cache, monkeypatch):
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(hf_cache))
    rt, case = runtime_and_case(case_tree, HUB.replace("{}", "false"), smollm2_gguf)
    try:
        hf = rt.backend("hf", case)
        assert hf.info()["tokenizer_source"] == f"hub:{hf_cache / SNAPSHOT}"
        assert rt.resolutions[case.id]["hf_tokenizer"] == f"{REPO_ID}@{REV}"
        lcpp = rt.backend("llama-cpp-python", case)
        text = "Hello world, <|im_end|> 你好"
        assert hf.tokenizer.encode(text, add_special_tokens=False) == lcpp.tokenize(text, add_special=False,
                                                                                   parse_special=True)
        # the chat template comes from tokenizer_config.json
        assert "<|im_start|>" in hf.tokenizer.chat_template
    finally:
        rt.close()


def test_an_unresolvable_hub_tokenizer_without_fallback_fails_the_hf_side_naming_the_sources(
        case_tree, smollm2_gguf, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc
    from harness.backends.base import BackendError
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    rt, case = runtime_and_case(case_tree, HUB.replace("{}", "false"), smollm2_gguf)
    try:
        with pytest.raises(BackendError) as exc:
            rt.backend("hf", case)
        msg = str(exc.value)
        assert f"the HF tokenizer {REPO_ID}@{REV} (tokenizer.json) did not resolve" in msg
        assert f"HF cache hf:{REPO_ID}@{REV}/tokenizer.json" in msg and "HF hub" in msg
        assert "Fix:" in msg
        # the GGUF side is not affected
        assert rt.backend("llama-cpp-python", case).tokenize("Hi", add_special=False, parse_special=False)
    finally:
        rt.close()


def test_with_from_gguf_the_conversion_stands_in_and_says_why(case_tree, smollm2_gguf, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    rt, case = runtime_and_case(case_tree, HUB.replace("{}", "true"), smollm2_gguf)
    try:
        source = rt.backend("hf", case).info()["tokenizer_source"]
        assert source.startswith("gguf_file (fallback: the HF tokenizer ") and "did not resolve" in source
    finally:
        rt.close()


def test_gguf_tokenizer_cache_is_used_only_when_faithful(tmp_path, monkeypatch):
    """The pickled conversion of phi-3's vocab does not behave as the conversion itself ('</s>'
    with split_special_tokens=True), so it is never served from the cache; SmolLM2's is."""
    import pickle

    from conftest import resolve_case_model
    from harness.backends import hf as hfmod
    from harness.backends.base import ModelFiles
    from harness.models.sources import sha256_file
    models = {}
    for case_id in ("vocab-phi-3", "smollm2-135m-instruct"):
        path = resolve_case_model(case_id)            # from the real cache, before it is moved
        models[case_id] = ModelFiles(key=case_id, gguf=path, gguf_sha256=sha256_file(path))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    for case_id, faithful in (("vocab-phi-3", False), ("smollm2-135m-instruct", True)):
        model = models[case_id]
        first = hfmod.from_gguf_cached(model)
        second = hfmod.from_gguf_cached(model)
        assert second is not first
        assert hfmod.special_fingerprint(first) == hfmod.special_fingerprint(second)
        stored = pickle.loads(next(tmp_path.glob(f"hf-from-gguf/v2/*/{model.gguf_sha256}.pkl")).read_bytes())
        assert (stored[0] is not None) == faithful, case_id
    phi3 = hfmod.from_gguf_cached(models["vocab-phi-3"])
    assert phi3.encode("</s>", add_special_tokens=False, split_special_tokens=True) == [1533, 29879, 29958]


def test_a_conversion_failure_is_recorded_and_reraised_with_the_same_message(tmp_path, monkeypatch):
    """transformers cannot convert refact's vocab (architecture not supported): the second
    attempt reads the record instead of parsing the GGUF again, and says exactly what the
    first said; a record written by another stack is not used."""
    import json

    from conftest import resolve_case_model
    from harness.backends import hf as hfmod
    from harness.backends import hf_failures
    from harness.backends.base import ModelFiles, Unsupported
    from harness.models.sources import sha256_file
    path = resolve_case_model("vocab-refact")
    model = ModelFiles(key="vocab-refact", gguf=path, gguf_sha256=sha256_file(path))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    messages = []
    for _ in range(2):
        with pytest.raises(Unsupported) as info:
            hfmod.HFBackend._load(model)
        messages.append(info.value.reason)
    assert messages[0] == messages[1] and "ValueError: GGUF model with architecture refact" in messages[0]
    record_file = next(tmp_path.glob(f"hf-from-gguf/v2/*/{model.gguf_sha256}.failed.json"))
    record = json.loads(record_file.read_text())
    assert record["type"] == "ValueError" and record["environment"] == hf_failures.environment()
    # a record of another stack is ignored: the conversion runs (and fails) again
    record["environment"]["tokenizers"] = "0.0.1"
    record["text"] = "not what transformers says"
    record_file.write_text(json.dumps(record))
    with pytest.raises(Unsupported) as info:
        hfmod.HFBackend._load(model)
    assert info.value.reason == messages[0]
    assert json.loads(record_file.read_text())["environment"] == hf_failures.environment()
