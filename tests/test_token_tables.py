"""tokenizer.token_table (families/tokenizer/token_table{s,_check}.py): the verdict rules on
hand-made tables, the per-machine cache, and the real libraries' tables on a tiny real tokenizer
(tokenizers + transformers, no model)."""

from __future__ import annotations

import pytest

from harness.backends.base import Unsupported, VocabInfo
from harness.cases.model import Case
from harness.checks import Mismatch
from harness.families.tokenizer import token_table_check as ttc
from harness.families.tokenizer import token_tables as tt


def text(i):
    return f"<{i}>"


def test_a_table_within_the_vocab_with_the_eog_ids_is_clean():
    table = tt.Table("x", "build()", size=10, stop_ids=[9], allowed=[0, 1, 2, 9])
    assert ttc.table_problems(table, 10, {"eos": 9}, text) == []


def test_an_allowed_id_at_or_beyond_n_vocab_is_named():
    table = tt.Table("x", "build()", size=12, stop_ids=[9], allowed=[0, 9, 10, 11])
    [problem] = ttc.table_problems(table, 10, {"eos": 9}, text)
    assert "allows ids >= llama.cpp n_vocab 10: 10 '<10>', 11 '<11>'" in problem


def test_an_eog_id_outside_the_table_or_not_a_stop_id_is_named():
    table = tt.Table("x", "build()", size=8, stop_ids=[5], allowed=[0, 1, 5])
    problems = ttc.table_problems(table, 10, {"eos": 9, "eot": 7}, text)
    assert problems == ["cannot allow the model's end-of-generation eot id 7 '<7>': not a stop id (stop ids [5])",
                        "cannot allow the model's end-of-generation eos id 9 '<9>': outside the table (size 8)"]


def test_a_documented_call_that_fails_is_the_finding():
    table = tt.Table("x", "build(n_vocab=4)", error="ValueError: too small")
    assert ttc.table_problems(table, 10, {"eos": 9}, text) == ["build(n_vocab=4) fails: ValueError: too small"]


def test_refusing_a_size_below_n_vocab_is_right():
    table = tt.Table("x", "build(n_vocab=8)", error="ValueError: too small")
    assert ttc.table_problems(table, 10, {"eos": 9}, text, requested=8) == []
    assert ttc.table_problems(table, 10, {"eos": 9}, text, requested=10) == ["build(n_vocab=8) fails: ValueError: too small"]


def test_the_base_vocab_is_the_size_below_the_trailing_special_block():
    assert tt.base_vocab_size(128256, range(128000, 128256)) == 128000       # Llama 3
    assert tt.base_vocab_size(10, {0, 1, 9}) == 9
    assert tt.base_vocab_size(10, {0, 1}) is None                           # no trailing block


def test_allowed_ids_round_trip_through_ranges():
    ids = [0, 1, 2, 5, 7, 8, 100]
    assert ttc.to_ranges(ids) == [[0, 2], [5, 5], [7, 8], [100, 100]]
    assert ttc.from_ranges(ttc.to_ranges(ids)) == ids


@pytest.fixture(scope="module")
def tiny_tokenizer():
    """Six ids in the model (0..5), a seventh added special token the model has no row for:
    the shape of the field report (a tokenizer with more ids than the model's vocab)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {"<s>": 0, "</s>": 1, "a": 2, "b": 3, "ab": 4, "Ġ": 5}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")
    tok.add_special_tokens({"additional_special_tokens": ["<extra>"]})
    assert (len(tok), tok.eos_token_id) == (7, 1)
    return tok


class FakeModel:
    gguf_sha256 = None      # no sha256: the cache is not used


class FakeLlama:
    """A unit-test double for the llama.cpp side: n_vocab 6, eos 1."""
    llm = None
    model = FakeModel()

    def vocab_info(self):
        return VocabInfo(n_vocab=6, reported_size=6, n_ids=6, eos_id=1, eog_ids=[1], special_ids=[0, 1])

    def token_text(self, i):
        return ["<s>", "</s>", "a", "b", "ab", "Ġ"][i]

    def info(self):
        return {"llama_cpp_python": "test"}


class FakeHF:
    model = FakeModel()

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def info(self):
        return {"transformers": "test", "tokenizers": "test", "tokenizer_source": "test"}


def item(library, variant):
    case = Case(id="tiny", kind="model", description="", file="cases/tiny.yaml", line=1, raw={}, contexts=(),
                known_defects=())
    return ttc.TableItem(case, ttc.CHECK, extra=(("library", library), ("vocab_size", variant)))


@pytest.mark.parametrize("library, variant, finding", [
    (tt.XGRAMMAR, "default", "allows ids >= llama.cpp n_vocab 6: 6 '<extra>'"),
    (tt.XGRAMMAR, "n_vocab", None),
    (tt.LLGUIDANCE, "default", None),
    (tt.LLGUIDANCE, "n_vocab", "fails: ValueError: vocab size too small; 6 vs 7"),
    (tt.OUTLINES, "default", None),
])
def test_real_libraries_on_a_tokenizer_with_an_id_beyond_the_model(tiny_tokenizer, library, variant, finding):
    pytest.importorskip(tt.MODULES[library][0])
    details, got = ttc.check_token_table(item(library, variant), FakeHF(tiny_tokenizer), FakeLlama())
    assert details["library"] == library and details["llama.cpp n_vocab"] == 6
    assert details["cache"]["hit"] is False and details["cache"]["file"] is None
    if finding is None:
        assert got is None, got
        assert 1 in details["stop ids"] and details["max allowed id"] <= 5
    else:
        assert isinstance(got, Mismatch) and finding in str(got)
        assert "cases/tiny.yaml:1" in str(got)


def test_a_second_build_is_read_from_the_cache(tiny_tokenizer, tmp_path, monkeypatch):
    pytest.importorskip("xgrammar")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))

    class Sha(FakeModel):
        gguf_sha256 = "ab" * 32
    hf, llama = FakeHF(tiny_tokenizer), FakeLlama()
    hf.model = llama.model = Sha()
    first, f1 = ttc.check_token_table(item(tt.XGRAMMAR, "default"), hf, llama)
    second, f2 = ttc.check_token_table(item(tt.XGRAMMAR, "default"), hf, llama)
    assert (first["cache"]["hit"], second["cache"]["hit"]) == (False, True)
    assert first["cache"]["key"] == second["cache"]["key"] and second["cache"]["key"]["version"] == "0.2.8"
    assert str(f1) == str(f2) and first["max allowed id"] == second["max allowed id"] == 6
    assert list((tmp_path / "token-tables" / ttc.FACTS_VERSION).glob("*.json"))


def test_hf_vocab_size_equal_to_n_vocab_is_not_built_twice(tiny_tokenizer):
    with pytest.raises(Unsupported, match="same table as the n_vocab variant"):
        ttc.check_token_table(item(tt.XGRAMMAR, "hf_vocab_size"), FakeHF(tiny_tokenizer), FakeLlama())


def test_a_library_that_does_not_import_skips_with_the_first_error(monkeypatch):
    import importlib
    if importlib.util.find_spec("lmformatenforcer") is None:
        pytest.skip("lm-format-enforcer not installed")
    real = importlib.import_module

    def broken(name, *a, **k):
        if name == "lmformatenforcer.integrations.transformers":
            try:
                raise ImportError("cannot import name 'X' from 'transformers.tokenization_utils'")
            except ImportError:
                raise ImportError("transformers is not installed")
        return real(name, *a, **k)
    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(Unsupported, match=r"`import lmformatenforcer.integrations.transformers` fails: "
                                          r"ImportError: cannot import name 'X'.*re-raised as: transformers is not"):
        tt.import_library(tt.LMFE)


def test_a_library_that_is_not_installed_skips(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(metadata, "version", missing)
    with pytest.raises(Unsupported, match="xgrammar is not installed"):
        tt.library_version(tt.XGRAMMAR)


def test_items_cover_every_library_and_variant():
    assert set(tt.VARIANTS) == {tt.LMFE, tt.LMFE_LLAMA, tt.XGRAMMAR, tt.LLGUIDANCE, tt.OUTLINES}
    assert item(tt.XGRAMMAR, "n_vocab").params["vocab_size"] == "n_vocab"
    assert item(tt.XGRAMMAR, "n_vocab").id == "tiny,xgrammar,n_vocab"


def test_lm_format_enforcers_llama_table_on_a_large_vocab_is_nightly_only(monkeypatch):
    monkeypatch.delenv("HARNESS_TOKEN_TABLES", raising=False)
    tt.require_small_vocab(tt.LMFE_LLAMA_DEFAULT_MAX)
    with pytest.raises(Unsupported, match="HARNESS_TOKEN_TABLES=all"):
        tt.require_small_vocab(tt.LMFE_LLAMA_DEFAULT_MAX + 1)
    monkeypatch.setenv("HARNESS_TOKEN_TABLES", "all")
    tt.require_small_vocab(262144)
