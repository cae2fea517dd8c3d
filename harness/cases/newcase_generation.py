"""The generation and tool-call generation sections `harness new-case` writes for a model with weights.

A contributor's new case should run every family from the first command. For a GGUF with
tensors new-case therefore names the shared generation pieces (harness/cases/shared.py):

* every shared grammar and JSON schema (cases/grammars/), with `turn_end` set to the model's
  end-of-turn text (the GGUF's eot token, else its eos) so their reject lists name it;
* the stop set and special-token prompts of the model's prompt format where there is one
  (ChatML: the template writes <|im_start|> and the end-of-turn text is <|im_end|>);
* for a template that renders tools in a wire format harness.toolcalls.detect_format knows,
  the shared tool-call generation setup for that format (cases/toolcall-generation/), and the
  canned outputs streamed in the model's own tokens.
"""

from __future__ import annotations

from typing import Any

CHATML_START, CHATML_END = "<|im_start|>", "<|im_end|>"


def turn_end_text(meta) -> str | None:
    for role in ("eot", "eos"):
        tok = meta.special.get(role)
        if tok is not None and getattr(tok, "text", None):
            return tok.text
    return None


def prompt_format(meta) -> str | None:
    template = meta.chat_template or ""
    if CHATML_START in template and turn_end_text(meta) == CHATML_END:
        return "chatml"
    return None


def generation_lines(meta, tool_format: str | None, mentions_tools: bool, pieces, contexts: dict[str, Any]) -> list[str]:
    """YAML lines under `checks:` (2-space indent), or [] for a vocab-only GGUF."""
    if not meta.has_weights or pieces is None:
        return []
    from harness.cases.yamlio import yaml_scalar as q
    out: list[str] = []
    add = out.append
    end = turn_end_text(meta)
    add("  generation:   # real weights: grammars, schemas, stops, special tokens (harness/families/generation/checks.py)")
    add("    max_tokens: 24")
    if meta.chat_template is not None and "system-user" in contexts:
        add("    contexts: [system-user]   # the chat-template check: the chat API must use the model's template")
    grammars = sorted(pieces.grammars)
    if grammars:
        if end is not None:
            add(f"    turn_end: {q(end)}   # the GGUF's end-of-turn text: {{turn_end}} in the shared grammars")
        usable = [g for g in grammars if end is not None or "{turn_end}" not in repr(pieces.grammars[g].data)]
        add(f"    grammars: [{', '.join(usable)}]   # shared grammars and JSON schemas (cases/grammars/)")
    fmt = prompt_format(meta)
    if fmt and fmt in pieces.stops:
        add(f"    stops: {fmt}   # the shared stop set for {fmt} prompts (cases/stops/{fmt}.yaml)")
        if pieces.stops[fmt].data.get("special_rendering"):
            add(f"    special_rendering: {fmt}")
    else:
        add("    # stops: no shared stop set for this prompt format (cases/stops/ has "
            f"{', '.join(sorted(pieces.stops)) or 'none'}); write")
        add("    # a list of {id, prompt, stop | stop_ids, expect_finish} here, or add a shared set")
    if mentions_tools:
        add("  toolcalls:   # harness/families/toolcalls/checks.py")
        add("    canned_outputs: {tokenizer: llama-cpp-python}   # every wire format's canned outputs, in this model's tokens")
        if tool_format:
            add(f"    llama_parse: {{format: {tool_format}}}   # llama.cpp's own parser on the {tool_format} canned "
                "outputs, with the GGUF's template")
        setups = sorted(k for k, p in pieces.toolcall_generation.items() if p.data.get("format") == tool_format)
        context_ok = {k for k in setups if pieces.toolcall_generation[k].data.get("context") in contexts}
        setups = [k for k in setups if k in context_ok]
        if tool_format and setups:
            add(f"    # real tool-call generations in the detected wire format ({tool_format}): forced by a grammar,")
            add("    # and through both stacks' chat APIs (auto, required, named), with the model's own template")
            add("    # and with the setup's reference template")
            add(f"    generation: {setups[0]}   # cases/toolcall-generation/{setups[0]}.yaml")
        else:
            add(f"    # generation: no shared tool-call generation setup for format {tool_format or 'unknown'} "
                "(cases/toolcall-generation/)")
    return out
