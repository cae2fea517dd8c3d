"""harness/run/tb_cache.py: pytest's failure reports are the same text with the parsed-tree cache."""

from __future__ import annotations

import pytest
from _pytest._code import code, source

from harness.run import tb_cache


def _fail(n: int) -> None:
    values = list(range(n))
    assert values == [0, 1, 2], "the list differs"     # a multi-line statement region follows
    return None


def _report() -> str:
    with pytest.raises(AssertionError) as exc:
        _fail(2)
    return str(exc.getrepr(style="long"))


def test_reports_are_identical_with_the_cache(monkeypatch):
    assert tb_cache.install()
    wrapped = source.getstatementrange_ast
    assert code.getstatementrange_ast is wrapped
    cached_first, cached_again = _report(), _report()
    monkeypatch.setattr(source, "getstatementrange_ast", wrapped.__wrapped__)
    monkeypatch.setattr(code, "getstatementrange_ast", wrapped.__wrapped__)
    plain = _report()
    assert "the list differs" in plain and "def _fail" in plain
    assert cached_first == cached_again == plain


def test_the_tree_is_parsed_once_per_source(monkeypatch):
    tb_cache.install()
    calls = []
    real_parse = tb_cache.ast.parse
    monkeypatch.setattr(tb_cache.ast, "parse", lambda *a, **k: calls.append(1) or real_parse(*a, **k))
    tb_cache.clear()
    _report()
    first = len(calls)
    _report()
    assert first >= 1 and len(calls) == first
