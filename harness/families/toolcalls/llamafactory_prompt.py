"""`toolcalls.llamafactory_prompt`: LLaMA-Factory's tool prompt against the model's own template.

LLaMA-Factory does not render a model's chat template: its `template.py` registers hand-written
slots per model family, and `Template._encode` puts the first turn together as
`format_prefix + format_system(system + format_tools(tools)) + format_user(query)`, where
`format_tools` is the family's `ToolUtils.tool_formatter` (tool_utils.py). For each tool format
of 0.9.5 whose model template the harness has offline (llama.cpp's models/templates, from the
pinned sdist), the system block LLaMA-Factory builds for the shared tools (cases/tools/) and a
system message must appear, byte for byte, in the model template's rendering (transformers'
Jinja renderer, the reference) of the same system message, a user message and the same tools.
The finding names the LLaMA-Factory template and shows the diff against the part of the
reference prompt before the user message.

`template.py` imports datasets, torch, torchaudio and the multimodal plugins, so it is not
imported: its `register_template(...)` calls are read with `ast` (the slots are literals), and
the tool text comes from tool_utils.py loaded from its file (llamafactory.py).
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from harness.backends.base import Unsupported
from harness.cases.model import CaseSet
from harness.checks import Mismatch, short_diff
from harness.families.items import Item
from harness.families.toolcalls.common import options
from harness.families.toolcalls.llamafactory import WIRE_FORMAT, tool_utils

CHECK = "toolcalls.llamafactory_prompt"
TOOLS_ID = "weather"
SYSTEM = "You are a helpful assistant."
USER = "What is the weather in Paris?"
# tool format -> (LLaMA-Factory template, model template in llama.cpp's models/templates, bos, eos)
PAIRS: dict[str, tuple[str, str | None, str, str]] = {
    "gemma4": ("gemma4", "google-gemma-4-31B-it.jinja", "<bos>", "<eos>"),
    "glm4": ("glm4", None, "", ""),
    "glm4_moe": ("glm4_moe", "GLM-4.6.jinja", "", ""),
    "lfm2": ("lfm2", "LFM2-8B-A1B.jinja", "<|startoftext|>", "<|im_end|>"),
    "ling": ("bailing_v2", "inclusionai-ling-3.0-flash.jinja", "", ""),
    "llama3": ("llama3", "meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "minimax1": ("minimax1", "MiniMax-M1.jinja", "", ""),
    "minimax2": ("minimax2", "MiniMax-M2.jinja", "", ""),
    "mistral": ("mistral", "mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>"),
    "qwen": ("qwen", "Qwen-Qwen2.5-7B-Instruct.jinja", "", "<|im_end|>"),
    "qwen3_5": ("qwen3_5", "Qwen3.5-4B.jinja", "", "<|im_end|>"),
    "seed_oss": ("seed_oss", "ByteDance-Seed-OSS.jinja", "<seed:bos>", "<seed:eos>"),
}
NO_TEMPLATE = {
    "default": "LLaMA-Factory's own ReAct prompt (DEFAULT_TOOL_PROMPT): no model template defines it",
    "glm4": "GLM-4's own template (glm-4-9b-chat, GLM-4-0414) is not among the templates the harness has offline "
            "(llama.cpp's models/templates has GLM-4.6 and GLM-4.7 only), so seed 003's GLM-4 system block cannot "
            "be compared here",
}


def prompt_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [Item(c, CHECK, extra=(("tool_utils", name),))
            for c in cases.cases if c.kind == "model" and options(c).get("llamafactory") for name in WIRE_FORMAT]


@lru_cache(maxsize=1)
def registered_templates() -> dict[str, dict[str, Any]]:
    """name -> {slot keyword: literal slots / tool format} of every register_template call in the
    installed llamafactory/data/template.py, read with ast."""
    module, _ = tool_utils()
    path = Path(module.__file__).with_name("template.py")
    out: dict[str, dict[str, Any]] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register_template"):
            continue
        entry: dict[str, Any] = {}
        for kw in node.keywords:
            value = kw.value
            if isinstance(value, ast.Call):
                args = {k.arg: k.value for k in value.keywords}
                if "slots" in args:
                    entry[kw.arg] = ast.literal_eval(args["slots"])
                if "tool_format" in args:
                    entry[f"{kw.arg}.tool_format"] = ast.literal_eval(args["tool_format"])
                entry[f"{kw.arg}.class"] = getattr(value.func, "id", None)
            elif kw.arg in ("name", "default_system"):
                entry[kw.arg] = ast.literal_eval(value)
            elif kw.arg == "template_class":
                entry[kw.arg] = ast.unparse(value)
        out[entry["name"]] = entry
    return out


def render_slots(slots: list, bos: str, eos: str, **values: str) -> str:
    """StringFormatter.apply followed by the text the ids stand for (sets: bos/eos, dicts: a token)."""
    text = []
    for slot in slots:
        if isinstance(slot, str):
            for name, value in values.items():
                slot = slot.replace("{{" + name + "}}", value, 1)
            text.append(slot)
        elif isinstance(slot, dict):
            text.append(slot.get("token", ""))
        elif isinstance(slot, set):
            text.append(bos if "bos_token" in slot else eos if "eos_token" in slot else "")
    return "".join(text)


def llamafactory_system_block(name: str, tools: list[dict]) -> tuple[str, str, dict[str, Any]]:
    """LLaMA-Factory's prefix and first-turn system block for `tools` (Template._encode, turn 0)."""
    template_name, _, bos, eos = PAIRS[name]
    entry = registered_templates().get(template_name)
    if entry is None:
        raise Unsupported(f"LLaMA-Factory has no template {template_name!r}")
    from harness.backends.rendering import frozen_clock
    module, _ = tool_utils()
    with frozen_clock():    # Llama3ToolUtils prints today's date, as the Llama 3.1 template does
        tool_text = module.get_tool_utils(entry["format_tools.tool_format"]).tool_formatter(tools)
    prefix = render_slots(entry.get("format_prefix", []), bos, eos)
    system = render_slots(entry.get("format_system", ["{{content}}"]), bos, eos, content=SYSTEM + tool_text)
    return prefix, system, entry


def reference_prompt(name: str, tools: list[dict]) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    from harness.backends.rendering import FIXED_DATE_STRING, frozen_clock
    from harness.models.sources import llama_cpp_tree
    _, jinja, bos, eos = PAIRS[name]
    source = (llama_cpp_tree() / "models" / "templates" / jinja).read_text(encoding="utf-8")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    with frozen_clock():
        rendered, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=source,
                                            add_generation_prompt=True, bos_token=bos, eos_token=eos,
                                            date_string=FIXED_DATE_STRING)
    return rendered[0]


def load_tools(root: Path) -> list[dict]:
    import yaml
    return yaml.safe_load((root / "tools" / f"{TOOLS_ID}.yaml").read_text(encoding="utf-8"))["tools"]


def check_prompt(item: Item, root: Path) -> tuple[dict[str, Any], Mismatch | None]:
    name = item.params["tool_utils"]
    if name in NO_TEMPLATE:
        _, version = tool_utils()
        raise Unsupported(f"llamafactory {version} {name}: {NO_TEMPLATE[name]}")
    _, version = tool_utils()
    tools = load_tools(root)
    prefix, block, entry = llamafactory_system_block(name, tools)
    reference = reference_prompt(name, tools)
    template_name, jinja = PAIRS[name][:2]
    # the reference's text before the user message, without LLaMA-Factory's own prefix: the
    # part the system block must match
    head = reference[:reference.find(USER)] if USER in reference else reference
    if prefix and head.startswith(prefix):
        head = head[len(prefix):]
    details = {"llamafactory": version, "tool_utils": name, "llamafactory template": template_name,
               "template_class": entry.get("template_class"), "model template": jinja, "tools": TOOLS_ID,
               "llamafactory system block": block, "reference prompt": reference}
    if block in reference:
        return details, None
    return details, Mismatch(
        f"{item.case.location()}: LLaMA-Factory {version} template {template_name!r} (tool_utils {name}) builds a "
        f"system block with the {TOOLS_ID} tools that the model template {jinja} (transformers) does not render "
        f"for the same system message and tools:\n"
        + short_diff(head, block, f"{jinja} (before the user message)", f"llamafactory {template_name}"))
