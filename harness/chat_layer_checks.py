"""Checks of llama.cpp's own chat layer through the chat probe (backend `llama.cpp-chat`):

* toolcalls.llama_parse: every canned output of a wire format (cases/toolcall-outputs/) parsed by
  llama.cpp for every template of the set that speaks that format, as llama-server parses a
  generation (tools offered, its default reasoning_format), compared with the harness's
  reference extractor (harness.toolcalls) on calls (name, JSON-equal arguments), content and
  reasoning; and streamed (every two-way split and seeded random groupings of the text, through
  the server's partial re-parse and diffs, applied as an OpenAI client does) equal to the
  non-streamed parse.
* generation.schema_grammar: llama-cpp-python's Python json_schema_to_gbnf against llama.cpp's
  C++ json_schema_to_grammar on every JSON schema a case uses (its grammars' schemas and the
  parameters of the tools its contexts offer): a different grammar, or a refusal, is a finding.

Check functions return an Outcome (golden first, then the problems that make a Mismatch).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .backends.base import RenderRequest
from .cases import CaseSet
from .checks import Mismatch
from .expand import CHAT_LAYER, Item

LLAMA_PARSE = "toolcalls.llama_parse"
SCHEMA_GRAMMAR = "generation.schema_grammar"
RANDOM_GROUPINGS = 8
SEED = 1234
USER_TURN = {"role": "user", "content": "Use the tools to answer."}


@dataclass
class Outcome:
    golden: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    header: str = ""

    def conclude(self) -> None:
        if self.problems:
            raise Mismatch(self.header + "\n" + "\n".join(self.problems))


# --- the canned outputs -------------------------------------------------------------------------
def canned_outputs(root: Path) -> dict[str, dict[str, Any]]:
    """format -> {"tools", "file", "outputs": {id: text}} from cases/toolcall-outputs/*.yaml."""
    import yaml
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((root / "toolcall-outputs").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        entry = out.setdefault(doc["format"], {"tools": doc.get("tools"), "file": f"{root.name}/toolcall-outputs/{path.name}",
                                               "outputs": {}})
        for o in doc.get("outputs") or []:
            entry["outputs"][o["id"]] = o["output"]
    return out


def llama_parse_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    """One item per (template of the set, canned output of the format the template speaks)."""
    if CHAT_LAYER not in available:
        return []
    from .toolcall_checks import format_for, tool_capable
    canned = canned_outputs(cases.root)
    out = []
    for c in cases.cases:
        if c.kind != "template" or c.template_path is None:
            continue
        text = c.template_path.read_text(encoding="utf-8")
        fmt = format_for(c, text) if tool_capable(text) else None
        if fmt not in canned:
            continue
        out += [Item(c, LLAMA_PARSE, None, None, CHAT_LAYER, (("format", fmt), ("output", oid)))
                for oid in canned[fmt]["outputs"]]
    return out


def splits(text: str, seed: int = SEED, groupings: int = RANDOM_GROUPINGS) -> list[list[str]]:
    """Every two-way split of `text`, then `groupings` seeded random groupings into pieces of one
    to eight characters (the same pieces on every run)."""
    out = [[text[:i], text[i:]] for i in range(1, len(text))]
    rng = random.Random(f"{seed}:{text}")
    for _ in range(groupings):
        pieces, i = [], 0
        while i < len(text):
            n = rng.randint(1, 8)
            pieces.append(text[i:i + n])
            i += n
        out.append(pieces)
    return out


def _args(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def llama_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": c["name"], "arguments": _args(c["arguments"])} for c in message.get("tool_calls", [])]


def compare_with_reference(message: dict[str, Any], ref) -> list[str]:
    """What differs between llama.cpp's parse and the reference extraction: calls (name and
    JSON-equal arguments), content and reasoning (surrounding whitespace aside: no wire format
    defines it, and the OpenAI message does not carry it reliably)."""
    problems = []
    want = [{"name": c.name, "arguments": _args(c.arguments)} for c in ref.calls]
    got = llama_calls(message)
    if got != want:
        problems.append(f"calls: reference {json.dumps(want, ensure_ascii=False)}, "
                        f"llama.cpp {json.dumps(got, ensure_ascii=False)}")
    for label, mine, theirs in (("content", message.get("content", ""), ref.content or ""),
                                ("reasoning", message.get("reasoning_content", ""),
                                 getattr(ref, "reasoning", "") or "")):
        if mine.strip() != theirs.strip():
            problems.append(f"{label}: reference {theirs!r}, llama.cpp {mine!r}")
    return problems


def _same_message(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("content", "reasoning_content")
    calls = lambda m: [(c["name"], c["arguments"], c.get("id", "")) for c in m.get("tool_calls", [])]  # noqa: E731
    return all(a.get(k, "") == b.get(k, "") for k in keys) and calls(a) == calls(b)


def stream_problems(message: dict[str, Any], parsed_streams, streams: list[list[str]]) -> list[str]:
    """Streamed must equal non-streamed: the first stream that does not, and how."""
    for pieces, s in zip(streams, parsed_streams):
        where = f"split into {len(pieces)} pieces {json.dumps(pieces[:3], ensure_ascii=False)[:160]}"
        if s.error:
            return [f"stream ({where}) ended with llama.cpp's error: {s.error}"]
        if not _same_message(s.client, message):
            return [f"streamed != non-streamed ({where}): the client rebuilt "
                    f"{json.dumps(s.client, ensure_ascii=False)[:400]}, the non-streamed parse is "
                    f"{json.dumps(message, ensure_ascii=False)[:400]}"]
        if not _same_message(s.final, message):
            return [f"the server's own final message after streaming ({where}) differs from the "
                    f"non-streamed parse: {json.dumps(s.final, ensure_ascii=False)[:400]}"]
    return []


def check_llama_parse(item: Item, backend, cases_root: Path) -> Outcome:
    from .backends.llama_cpp_chat import ChatInputs, ProbeError
    from .toolcalls import get_format
    fmt, oid = item.params["format"], item.params["output"]
    canned = canned_outputs(cases_root)[fmt]
    text, tools = canned["outputs"][oid], canned["tools"]
    case = item.case
    req = RenderRequest(messages=[USER_TURN], add_generation_prompt=True, tools=tools,
                        template=case.template_path.read_text(encoding="utf-8"),
                        bos_token=case.bos_token, eos_token=case.eos_token)
    header = (f"{case.location()}: canned output {fmt}::{oid} ({canned['file']}) parsed by llama.cpp's chat "
              f"layer for template {case.template_path.stem}")
    streams = splits(text)
    ref = get_format(fmt).extract(text, tools)
    # The canned output is what the model wrote after the generation prompt: a thinking template
    # renders "<think>" there unless thinking is off, so the server parses it with thinking off
    # unless the output carries reasoning (the request a client that disables thinking sends).
    thinking = bool(getattr(ref, "reasoning", "") or "")
    inputs = ChatInputs(chat_template_kwargs={"enable_thinking": thinking})
    try:
        parsed = backend.parse(req, text, streams, inputs)
    except ProbeError as exc:
        out = Outcome(golden={"error": str(exc)}, header=header)
        out.problems.append(f"llama.cpp could not parse it: {exc}")
        return out
    golden = {"format": parsed.params["format"], "enable_thinking": thinking, "message": parsed.message}
    out = Outcome(golden=golden, header=header)
    out.problems += [f"llama.cpp vs the harness's {fmt} extractor: {p}" for p in compare_with_reference(parsed.message, ref)]
    out.problems += stream_problems(parsed.message, parsed.streams, streams)
    return out


# --- JSON schema -> grammar -----------------------------------------------------------------------
def _schemas(case) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for g in case.check_options("generation").get("grammars") or []:
        if isinstance(g.get("json_schema"), dict):
            found.append((f"grammar-{g['id']}", g["json_schema"]))
    for ctx in case.contexts:
        for tool in (ctx.tools.tools if ctx.tools else []) or []:
            fn = tool.get("function", {})
            if isinstance(fn.get("parameters"), dict):
                found.append((f"tool-{fn.get('name')}", fn["parameters"]))
    unique: dict[str, dict[str, Any]] = {}
    for sid, schema in found:
        unique.setdefault(sid, schema)
    return sorted(unique.items())


def schema_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    """One item per JSON schema a model case uses (its grammars, its contexts' tools)."""
    if CHAT_LAYER not in available:
        return []
    return [Item(c, SCHEMA_GRAMMAR, None, None, CHAT_LAYER, (("schema", sid),))
            for c in cases.cases if c.kind == "model" for sid, _ in _schemas(c)]


def check_schema_grammar(item: Item, backend) -> Outcome:
    from .backends.llama_cpp_chat import ProbeError
    from .generation import llama_cpp_python_gbnf
    schema = dict(_schemas(item.case))[item.params["schema"]]
    header = (f"{item.case.location()}: JSON schema {item.params['schema']} through llama-cpp-python's "
              f"json_schema_to_gbnf and llama.cpp's json_schema_to_grammar")
    got: dict[str, Any] = {}
    for label, convert in (("llama-cpp-python", llama_cpp_python_gbnf), ("llama.cpp", backend.json_schema_to_grammar)):
        try:
            got[label] = {"grammar": convert(schema)}
        except ProbeError as exc:
            got[label] = {"error": str(exc)}
        except Exception as exc:  # the Python port raises whatever its code hits: that is the finding
            got[label] = {"error": f"{type(exc).__name__}: {exc}"}
    out = Outcome(golden=got, header=header)
    py, cpp = got["llama-cpp-python"], got["llama.cpp"]
    if "error" in py or "error" in cpp:
        out.problems.append(f"refused: llama-cpp-python {py.get('error')!r}, llama.cpp {cpp.get('error')!r}")
    elif py["grammar"] != cpp["grammar"]:
        from .checks import first_difference
        out.problems.append(f"the grammars differ: {first_difference(cpp['grammar'], py['grammar'])}")
    return out
