"""The token-table check (harness/token_tables.py): the verdict rules on hand-made tables, and
the real libraries' tables on a tiny real tokenizer (tokenizers + transformers, no model)."""

from __future__ import annotations

import pytest

from harness import token_tables as tt
from harness.backends.base import Unsupported, VocabInfo
from harness.checks import Mismatch


def text(i):
    return f"<{i}>"


def test_a_table_within_the_vocab_with_the_eog_ids_is_clean():
    table = tt.Table("x", "build()", size=10, stop_ids=[9], allowed=[0, 1, 2, 9])
    assert tt.table_problems(table, 10, {"eos": 9}, text) == []


def test_an_allowed_id_at_or_beyond_n_vocab_is_named():
    table = tt.Table("x", "build()", size=12, stop_ids=[9], allowed=[0, 9, 10, 11])
    [problem] = tt.table_problems(table, 10, {"eos": 9}, text)
    assert "allows ids >= llama.cpp n_vocab 10: 10 '<10>', 11 '<11>'" in problem


def test_an_eog_id_outside_the_table_or_not_a_stop_id_is_named():
    table = tt.Table("x", "build()", size=8, stop_ids=[5], allowed=[0, 1, 5])
    problems = tt.table_problems(table, 10, {"eos": 9, "eot": 7}, text)
    assert problems == ["cannot allow the model's end-of-generation eot id 7 '<7>': not a stop id (stop ids [5])",
                        "cannot allow the model's end-of-generation eos id 9 '<9>': outside the table (size 8)"]


def test_a_documented_call_that_fails_is_the_finding():
    table = tt.Table("x", "build(n_vocab=4)", error="ValueError: too small")
    assert tt.table_problems(table, 10, {"eos": 9}, text) == ["build(n_vocab=4) fails: ValueError: too small"]


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


class FakeLlama:
    """A unit-test double for the llama.cpp side: n_vocab 6, eos 1."""
    llm = None

    def vocab_info(self):
        return VocabInfo(n_vocab=6, reported_size=6, n_ids=6, eos_id=1, eog_ids=[1])

    def token_text(self, i):
        return ["<s>", "</s>", "a", "b", "ab", "Ġ"][i]


class FakeHF:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer


def item(library, variant):
    from harness.cases import Case
    case = Case(id="tiny", kind="model", description="", file="cases/tiny.yaml", line=1, raw={}, contexts=(),
                known_defects=())
    return tt.TableItem(case, tt.CHECK, extra=(("library", library), ("vocab_size", variant)))


@pytest.mark.parametrize("library, variant, finding", [
    (tt.XGRAMMAR, "default", "allows ids >= llama.cpp n_vocab 6: 6 '<extra>'"),
    (tt.XGRAMMAR, "n_vocab", None),
    (tt.LLGUIDANCE, "default", None),
    (tt.LLGUIDANCE, "n_vocab", "fails: ValueError: vocab size too small; 6 vs 7"),
    (tt.OUTLINES, "default", None),
])
def test_real_libraries_on_a_tokenizer_with_an_id_beyond_the_model(tiny_tokenizer, library, variant, finding):
    pytest.importorskip(tt.DISTRIBUTION[library].replace("-", "_"))
    details, got = tt.check_token_table(item(library, variant), FakeHF(tiny_tokenizer), FakeLlama())
    assert details["library"] == library and details["llama.cpp n_vocab"] == 6
    if finding is None:
        assert got is None, got
        assert 1 in [*details["stop ids"]] and details["max allowed id"] <= 5
    else:
        assert isinstance(got, Mismatch) and finding in str(got)
        assert "cases/tiny.yaml:1" in str(got)


def test_hf_vocab_size_equal_to_n_vocab_is_not_built_twice(tiny_tokenizer):
    with pytest.raises(Unsupported, match="same table as the n_vocab variant"):
        tt.check_token_table(item(tt.XGRAMMAR, "hf_vocab_size"), FakeHF(tiny_tokenizer), FakeLlama())


def test_a_library_that_does_not_import_skips_with_one_reason(monkeypatch):
    import importlib
    real = importlib.import_module

    def broken(name, *a, **k):
        if name == "lmformatenforcer.integrations.transformers":
            raise ImportError("transformers is not installed")
        return real(name, *a, **k)
    monkeypatch.setattr(importlib, "import_module", broken)
    if importlib.util.find_spec("lmformatenforcer") is None:
        pytest.skip("lm-format-enforcer not installed")
    with pytest.raises(Unsupported, match=r"`import lmformatenforcer.integrations.transformers` fails"):
        tt.build_table(tt.LMFE, "default", None, None, 6)


def test_a_library_that_is_not_installed_skips(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(metadata, "version", missing)
    with pytest.raises(Unsupported, match="xgrammar is not installed"):
        tt.library_version(tt.XGRAMMAR)


def test_items_cover_every_library_and_variant():
    assert {lib for lib in tt.VARIANTS} == {tt.LMFE, tt.LMFE_LLAMA, tt.XGRAMMAR, tt.LLGUIDANCE, tt.OUTLINES}
    assert item(tt.XGRAMMAR, "n_vocab").params["vocab_size"] == "n_vocab"
    assert item(tt.XGRAMMAR, "n_vocab").id == "tiny,xgrammar,n_vocab"
