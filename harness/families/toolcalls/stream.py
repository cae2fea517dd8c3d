"""The stream check: canned model outputs fed token by token through the wire format's streaming parser
equal the whole-text parse."""

from __future__ import annotations

import codecs
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from harness.cases.model import CaseSet
from harness.checks import first_difference
from harness.families.items import Item
from harness.outcome import Outcome
from .common import STREAM, options, stable


# --- streaming with the model's real tokens ---------------------------------------------------------
@lru_cache(maxsize=4)
def canned_outputs(root: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(format, output id) -> {"output", "tools", "file"} from cases/toolcall-outputs/*.yaml."""
    import yaml
    # libyaml's safe loader where PyYAML has it (the same data, about 8x faster: these files are
    # parsed in every process that collects the suite); PyYAML's own otherwise
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((root / "toolcall-outputs").glob("*.yaml")):
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 (a safe loader)
        for o in doc.get("outputs") or []:
            out[(doc["format"], o["id"])] = {"output": o["output"], "tools": doc.get("tools"),
                                             "file": f"{root.name}/toolcall-outputs/{path.name}",
                                             "expected_calls": (o.get("expect") or {}).get("calls") or [],
                                             "message": {"reasoning": o.get("reasoning_mode", "separate"),
                                                         "opened": bool(o.get("opened"))}}
    return out


def stream_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    out = []
    for c in cases.cases:
        cfg = options(c).get("canned_outputs")
        if not cfg or c.kind != "model":
            continue
        backend = cfg.get("tokenizer", "llama-cpp-python")
        if backend not in available:
            continue
        for fmt, oid in canned_outputs(cases.root):
            out.append(Item(c, STREAM, None, None, backend, (("format", fmt), ("output", oid))))
    return out


def token_texts(backend, text: str) -> tuple[list[int], list[str]]:
    """The model's tokens for `text` (specials parsed, as a model emits them), each as the text
    a streaming server would send for it: pieces decoded incrementally, so a character split
    over tokens arrives with its last byte."""
    ids = backend.tokenize(text, add_special=False, parse_special=True)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pieces = [decoder.decode(backend.token_piece(i, render_special=True)) for i in ids]
    tail = decoder.decode(b"", final=True)
    if tail:
        pieces.append(tail)
    return ids, pieces


def check_stream(item: Item, backend, cases_root: Path) -> Outcome:
    from harness.toolcalls import check_streaming, get_format

    fmt, oid = item.params["format"], item.params["output"]
    canned = canned_outputs(cases_root)[(fmt, oid)]
    text, tools = canned["output"], canned["tools"]
    ids, pieces = token_texts(backend, text)
    ex = get_format(fmt).extract(text, tools, **canned["message"])
    golden = {"extracted": stable(ex.to_dict()), "tokens": len(ids)}
    out = Outcome(golden=golden, header=(f"{item.case.location()}: canned output {fmt}::{oid} ({canned['file']}) "
                                         f"streamed in {item.case.id}'s tokens ({item.backend}, {len(ids)} tokens)"))
    if "".join(pieces) != text:
        out.problems.append(f"the token pieces do not reproduce the text: {first_difference(text, ''.join(pieces))}")
        return out
    # the model's own token pieces (and the whole text) here; every two-way split, one character
    # per delta and the seeded random groupings of every canned output are run by the harness's
    # own tests (tests/test_toolcalls.py), which need no model: repeating them per case and
    # backend only added harness time to every conformance run
    message = check_streaming(fmt, text, tokens_as_text=pieces, tools=tools, kinds=("whole", "tokens"),
                              **canned["message"])
    if message:
        out.problems.append(message)
    return out
