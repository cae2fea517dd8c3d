"""LLaMA-Factory's tool_utils.py loaded from its file, and its template.py read with ast
(families/toolcalls/llamafactory.py, llamafactory_prompt.py)."""

from __future__ import annotations

from importlib.util import find_spec

import pytest

from harness.backends.base import Unsupported
from harness.families.toolcalls import llamafactory as lf
from harness.families.toolcalls import llamafactory_prompt as lp

needs_llamafactory = pytest.mark.skipif(find_spec("llamafactory") is None, reason="llamafactory not installed")


def test_not_installed_is_one_clear_skip_reason(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)
    lf.tool_utils.cache_clear()
    monkeypatch.setattr(metadata, "version", missing)
    try:
        with pytest.raises(Unsupported, match="llamafactory is not installed"):
            lf.tool_utils()
    finally:
        lf.tool_utils.cache_clear()


@needs_llamafactory
def test_the_react_extractor_finds_every_action_block():
    """The field report's 'only the first of several ReAct calls' does not occur in 0.9.5."""
    text = ('Action: get_weather\nAction Input: {"city": "Paris"}\n'
            'Action: get_time\nAction Input: {"tz": "CET"}')
    got = lf.lf_extract("default", text)
    assert got["calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}},
                            {"name": "get_time", "arguments": {"tz": "CET"}}]
    assert lf.lf_extract("default", "no call here") == {"calls": [], "content": "no call here"}


@needs_llamafactory
def test_every_tool_utils_of_the_installed_version_is_mapped():
    module, version = lf.tool_utils()
    assert set(lf.WIRE_FORMAT) == set(module.TOOLS), version
    assert set(lp.PAIRS) | set(lp.NO_TEMPLATE) == set(module.TOOLS)


def test_slots_render_as_llamafactory_applies_them():
    slots = [{"bos_token"}, "system\n{{content}}", {"eos_token"}, {"token": "<|x|>"}]
    assert lp.render_slots(slots, "<b>", "<e>", content="hi") == "<b>system\nhi<e><|x|>"


@needs_llamafactory
def test_template_registrations_are_read_without_importing_template_py():
    import sys
    templates = lp.registered_templates()
    assert "llamafactory.data.template" not in sys.modules
    qwen = templates["qwen"]
    assert qwen["format_system"] == ["<|im_start|>system\n{{content}}<|im_end|>\n"]
    assert qwen["format_tools.tool_format"] == "qwen"
    for name, (template, *_rest) in lp.PAIRS.items():
        assert template in templates, name
