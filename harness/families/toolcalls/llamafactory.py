"""`toolcalls.llamafactory_extract`: LLaMA-Factory's tool-call extractors against the harness's
reference extractors.

LLaMA-Factory (`llamafactory/data/tool_utils.py`, 0.9.5: 13 formatter/extractor pairs) extracts
tool calls from model output with its own code. Each of its extractors whose wire format has
canned outputs (cases/toolcall-outputs/*.yaml) runs on every one of them, and its calls (name,
JSON arguments) and content are compared with `harness.toolcalls.get_format(fmt).extract`. The
outputs do not depend on a model: the case whose `checks.toolcalls.llamafactory` is true holds
the items (and the known defects).

Install: `pip install --no-deps llamafactory==0.9.5`. `tool_utils.py` itself imports only the
standard library and typing_extensions, but `import llamafactory.data.tool_utils` runs the package
`__init__`s (datasets, peft, trl, gradio, ...), so the module is loaded from its file in the
installed package, which needs nothing else.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from harness.backends.base import Unsupported
from harness.cases.model import CaseSet
from harness.checks import Mismatch
from harness.families.items import Item
from harness.families.toolcalls.common import options
from harness.families.toolcalls.stream import canned_outputs

CHECK = "toolcalls.llamafactory_extract"
# LLaMA-Factory tool-utils name -> the harness's wire format of the same syntax
# (all 13 of 0.9.5's: ling's extractor is Qwen's, on Hermes <tool_call> JSON)
WIRE_FORMAT = {"default": "react", "gemma4": "gemma4", "glm4": "glm4", "glm4_moe": "glm45", "llama3": "llama3-json",
               "lfm2": "lfm2", "minimax1": "minimax-m1", "minimax2": "minimax-m2", "mistral": "mistral",
               "qwen": "hermes", "qwen3_5": "qwen3-coder", "seed_oss": "seed-oss", "ling": "hermes"}


def extract_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    by_format: dict[str, list[str]] = {}
    for fmt, oid in canned_outputs(cases.root):
        by_format.setdefault(fmt, []).append(oid)
    return [Item(c, CHECK, extra=(("tool_utils", name), ("output", oid)))
            for c in cases.cases if c.kind == "model" and options(c).get("llamafactory")
            for name, fmt in WIRE_FORMAT.items() for oid in by_format.get(fmt, [])]


@lru_cache(maxsize=1)
def tool_utils():
    """llamafactory/data/tool_utils.py of the installed package, loaded from its file."""
    import importlib.util
    try:
        version = metadata.version("llamafactory")
    except metadata.PackageNotFoundError as exc:
        raise Unsupported("llamafactory is not installed (pip install --no-deps llamafactory==0.9.5)") from exc
    spec = importlib.util.find_spec("llamafactory")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "tool_utils.py"
    try:
        loader = importlib.util.spec_from_file_location("llamafactory_tool_utils", path)
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
    except Exception as exc:  # one clear reason: its checks skip
        raise Unsupported(f"llamafactory {version}: {path.name} does not load: {type(exc).__name__}: {exc}") from exc
    return module, version


def lf_extract(name: str, text: str) -> dict[str, Any]:
    """LLaMA-Factory's extractor: a string (no calls: all of it is content) or FunctionCalls
    (it keeps no content beside them)."""
    module, _ = tool_utils()
    got = module.get_tool_utils(name).tool_extractor(text)
    if isinstance(got, str):
        return {"calls": [], "content": got}
    calls = []
    for call in got:
        try:
            arguments = json.loads(call.arguments)
        except (TypeError, ValueError):
            arguments = call.arguments
        calls.append({"name": call.name, "arguments": arguments})
    return {"calls": calls, "content": ""}


def check_extract(item: Item, cases_root: Path) -> tuple[dict[str, Any], Mismatch | None]:
    from harness.toolcalls import get_format
    name, oid = item.params["tool_utils"], item.params["output"]
    fmt = WIRE_FORMAT[name]
    canned = canned_outputs(cases_root)[(fmt, oid)]
    _, version = tool_utils()
    try:
        got = lf_extract(name, canned["output"])
    except Exception as exc:  # its extractor raising on model output is the finding
        got = {"error": f"{type(exc).__name__}: {exc}"}
    ref = get_format(fmt).extract(canned["output"], canned["tools"], **canned["message"])
    if ref.reasoning or canned["message"].get("opened"):
        # LLaMA-Factory splits reasoning off in its templates (thought_words), not in the
        # extractor: text with a reasoning block is not what its extractor is given
        raise Unsupported(f"{fmt}::{oid} has a reasoning block; LLaMA-Factory's templates, not its "
                          f"tool_extractor, handle reasoning (thought_words)")
    want = {"calls": [{"name": c.name, "arguments": c.arguments} for c in ref.calls], "content": ref.content}
    details = {"llamafactory": version, "tool_utils": name, "format": fmt, "output": oid,
               "llamafactory result": got, "reference": want}
    problems = []
    if "error" in got:
        problems.append(f"the extractor raises: {got['error']}")
    else:
        if got["calls"] != want["calls"]:
            problems.append(f"calls: llamafactory {json.dumps(got['calls'], ensure_ascii=False)} vs reference "
                            f"{json.dumps(want['calls'], ensure_ascii=False)}")
        # its API returns either the content (no calls) or the calls alone: content is compared
        # only where neither side found a call
        if not got["calls"] and not want["calls"] and got["content"].strip() != want["content"].strip():
            problems.append(f"content: llamafactory {got['content'][:200]!r} vs reference {want['content'][:200]!r}")
    if not problems:
        return details, None
    return details, Mismatch(f"{item.case.location()}: LLaMA-Factory {version} {name} extractor on {fmt}::{oid} "
                             f"({canned['file']}) differs from the reference extractor:\n  " + "\n  ".join(problems))
