"""LLaMA-Factory's tool_utils.py loaded from its file (harness/llamafactory_checks.py)."""

from __future__ import annotations

import pytest

from harness import llamafactory_checks as lf
from harness.backends.base import Unsupported


def test_not_installed_is_one_clear_skip_reason(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)
    lf.tool_utils.cache_clear()
    monkeypatch.setattr(metadata, "version", missing)
    with pytest.raises(Unsupported, match="llamafactory is not installed"):
        lf.tool_utils()
    lf.tool_utils.cache_clear()


def test_the_react_extractor_finds_every_action_block():
    """The field report's 'only the first of several ReAct calls' does not occur in 0.9.5."""
    from importlib.util import find_spec
    if find_spec("llamafactory") is None:
        pytest.skip("llamafactory not installed")
    text = ('Action: get_weather\nAction Input: {"city": "Paris"}\n'
            'Action: get_time\nAction Input: {"tz": "CET"}')
    got = lf.lf_extract("default", text)
    assert got["calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}},
                            {"name": "get_time", "arguments": {"tz": "CET"}}]
    assert lf.lf_extract("default", "no call here") == {"calls": [], "content": "no call here"}


def test_every_mapped_tool_utils_exists_in_the_installed_version():
    from importlib.util import find_spec
    if find_spec("llamafactory") is None:
        pytest.skip("llamafactory not installed")
    module, version = lf.tool_utils()
    assert set(lf.WIRE_FORMAT) <= set(module.TOOLS), version
