"""The generation check family: real weights, greedy decoding, every generating backend.

Case files declare, under `checks.generation`, the grammars (GBNF or JSON schema, with
strings each must accept and reject), stops, special-token prompts and the conversations
for the chat-template check; this module expands them into items and does the checking,
so that harness/suite/test_generation.py stays a thin list of tests. The pieces: items.py (the
items), engine.py (the GBNF engine, vocab), calls.py (shared calls and output problems),
grammar.py, masks.py (masks, out_of_vocab); this module holds stop, special and chat_template
and is the family's one import for the suite.

Check groups (check names are `generation.<name>`, for `known_defects`):

  grammar_engine   llama.cpp's own GBNF engine, without a model: accept/reject strings
                   (JSON schemas: `jsonschema`, and the GBNF llama-cpp-python converts them to)
  grammar          constrained generation: conforms (re-parsed by the same engine / jsonschema),
                   ends by itself (finish_reason "stop"), no end-of-turn text in the output
  endpoints_agree  completion endpoint on the chat endpoint's own prompt == chat endpoint
  masks            every id the vocab reports or the grammar sampler allows is < n_vocab
  out_of_vocab     ids >= n_vocab (prompt, detokenize, grammar token reference) are refused
                   cleanly: an exception / HTTP 4xx, never a crash
  stop             stop strings: output == the no-stop reference cut at the first stop
                   (special tokens rendered for the search), finish reason, stop not in output
  special          special-token rendering on/off: output == reference tokens rendered the
                   way the backend documents
  chat_template    a chat call reports the template/format it used; a model without a
                   template must not be silently formatted in a fallback
Every generation item also has a `stream` twin whose only job is: the concatenated stream
equals the non-streamed result (text and finish reason), without U+FFFD.

The GBNF engine is llama.cpp's, called the way llama.cpp's own tests/test-grammar-integration.cpp
drives it: `llama_grammar_init_impl(vocab=NULL, ...)`, then `llama_grammar_accept(grammar, cpt)`
for each code point; the text is in the language when some parse stack is empty at the end.
Those functions are exported (C++ linkage) by the libllama.so that llama-cpp-python loads, so
re-parsing uses exactly the parser and matcher that constrain generation on both backends
(llama-server is built from the same vendored tree).
"""

from __future__ import annotations

import json
from typing import Any

from harness.backends.base import Backend, ChatRequest, CompletionRequest, Unsupported
from harness.checks import mismatch
from .calls import (
    Outcome, chat_prompt, cut_at_stops, find_leak, generate, leak_problems, needs, prompt_text,
    reference, run_or_skip, stream_problems, token_range_problems, trailing_whitespace, show_value
)
from .engine import EngineUnavailable, GrammarParseError, Vocab, engine, llama_cpp_python_gbnf, vocab_of
from .grammar import (
    check_endpoints_agree, check_grammar, check_grammar_engine, grammar_caps, grammar_error,
    grammar_mask, require_grammar
)
from .items import (
    GENERIC_EOT, GenItem, agree_items, engine_items, grammar_items, masks_items, oov_items,
    special_items, stop_items, template_items
)
from .masks import check_masks, check_out_of_vocab


# --- 3. stops ------------------------------------------------------------------------------------------
def concrete_stop(rt, item: GenItem) -> dict:
    """The stop entry with a shared stop set's model values filled in (harness/cases/shared.py)."""
    from harness.cases.shared import fill_stop
    if item.entry.get("stop_ids") != "eog" and "{eog_texts}" not in (item.entry.get("stop") or ()):
        return item.entry
    vocab = vocab_of(rt, item.case)
    return fill_stop(item.entry, vocab.eog_ids, vocab._text, item.option("turn_end"))


def stop_request(rt, item: GenItem, stream: bool) -> CompletionRequest:
    s = concrete_stop(rt, item)
    return CompletionRequest(prompt=s["prompt"], max_tokens=item.max_tokens, seed=rt.options.seed,
                             stop=tuple(s.get("stop", ())), stop_ids=tuple(s.get("stop_ids", ())),
                             grammar=s.get("grammar"), stream=stream)


def check_stop(rt, item: GenItem, backend: Backend) -> Outcome:
    s, where = concrete_stop(rt, item), item.location()
    vocab = vocab_of(rt, item.case)
    bad_ids = [i for i in s.get("stop_ids", ()) if not 0 <= i < vocab.n_vocab]
    out = Outcome(golden={})
    if bad_ids:
        out.case_errors.append(f"{where}: stop_ids {bad_ids} are outside [0, n_vocab={vocab.n_vocab})")
        return out
    require_grammar(rt, item, s.get("grammar"))
    req = stop_request(rt, item, item.stream)
    gen = run_or_skip(lambda: generate(backend, req))
    out.golden = gen.as_golden()
    out.problems += token_range_problems(item, gen, vocab.n_vocab)
    if item.stream:
        plain = run_or_skip(lambda: generate(backend, stop_request(rt, item, False)))
        out.problems += stream_problems(item, gen, plain)
        return out
    stops = list(s.get("stop", ()))
    for st in stops:
        if st in gen.text:
            out.problems.append(str(mismatch(where, f"{backend.name}: the stop text {st!r} is in the output",
                                             gen.text[:gen.text.find(st)], gen.text, "cut at the stop", backend.name)))
    if gen.finish_reason != s["expect_finish"]:
        out.problems.append(f"{where}: {backend.name}: finish_reason {gen.finish_reason!r}, the case expects "
                            f"{s['expect_finish']!r}\n  output: {show_value(gen.text)}")
    out.problems += leak_problems(item, gen, vocab.eot_texts(item.option("end_of_turn", ())))
    ref = reference(rt, item, backend, s["prompt"], s.get("grammar"))
    if ref is None:
        out.notes.append(f"{backend.name} returns no token ids: output not compared with a reference")
        return out
    tokens, ref_finish = ref
    out.golden["reference_tokens"] = len(tokens)
    if tokens and tokens[-1] in vocab.eog_ids:     # which end-of-generation token ended it
        out.golden["reference_end"] = vocab.piece(tokens[-1], True).decode("utf-8", "replace")
    expected, exp_finish, hit = cut_at_stops(tokens, vocab, stops, ref_finish)
    if hit is None and stops:
        out.notes.append(f"no stop occurs in the {len(tokens)}-token reference")
    if s.get("spans_tokens"):
        span = 0 if hit is None else hit["last_token"] - hit["first_token"] + 1
        if span < s["spans_tokens"]:
            out.case_errors.append(f"{where}: stop '{s['id']}' must span >= {s['spans_tokens']} tokens of the "
                                   f"reference output, but spans {span}: "
                                   f"{json.dumps([vocab.piece(t, True).decode('utf-8', 'replace') for t in tokens])}")
    if (gen.text, gen.finish_reason) != (expected, exp_finish):
        why = ""
        if hit is not None:
            why = f"; the stop {hit['stop']!r} is at tokens {hit['first_token']}..{hit['last_token']} of the reference"
        out.problems.append(str(mismatch(
            where, f"{backend.name}: the output is not the stop-free generation cut at the first stop "
                   f"(expected finish {exp_finish!r}, got {gen.finish_reason!r}{why})",
            expected, gen.text, "reference cut at the stop", backend.name)))
    return out


# --- 4. special-token rendering ----------------------------------------------------------------
def special_request(rt, item: GenItem, render: str, stream: bool) -> CompletionRequest:
    s = item.entry
    return CompletionRequest(prompt=s["prompt"], max_tokens=item.max_tokens, seed=rt.options.seed,
                             grammar=s.get("grammar"), render_special=render == "special", stream=stream)


def check_special(rt, item: GenItem, backend: Backend) -> Outcome:
    s, where, render = item.entry, item.location(), item.params["render"]
    vocab = vocab_of(rt, item.case)
    require_grammar(rt, item, s.get("grammar"))
    gen = run_or_skip(lambda: generate(backend, special_request(rt, item, render, item.stream)))
    out = Outcome(golden=gen.as_golden())
    out.problems += token_range_problems(item, gen, vocab.n_vocab)
    if item.stream:
        plain = run_or_skip(lambda: generate(backend, special_request(rt, item, render, False)))
        out.problems += stream_problems(item, gen, plain)
        return out
    ref = reference(rt, item, backend, s["prompt"], s.get("grammar"))
    if ref is None:
        out.notes.append(f"{backend.name} returns no token ids: output not compared with a reference")
        return out
    tokens, _ = ref
    if gen.tokens is not None and gen.tokens != tokens:
        out.problems.append(str(mismatch(where, f"{backend.name}: rendering special tokens changed the generated "
                                                f"tokens", tokens, gen.tokens, "plain", render)))
    control, eog = set(vocab.control_ids), set(vocab.eog_ids)
    controls = [t for t in tokens if t in control and t not in eog]
    out.golden["special_tokens"] = [vocab.piece(t, True).decode("utf-8", "replace") for t in controls]
    if not controls:
        out.case_errors.append(f"{where}: the prompt of '{s['id']}' no longer makes the model emit a special "
                               f"(non end-of-generation) token: {vocab.render(tokens, True)!r}")
    expected = vocab.render(tokens, render == "special")
    documented = ("special tokens rendered as their text (llama-server --special: 'special tokens output "
                  "enabled'), including the end-of-generation token that ended the generation"
                  if render == "special" else "special tokens omitted (detokenized with special=false)")
    if gen.text != expected:
        out.problems.append(str(mismatch(where, f"{backend.name}: with render_special={render == 'special'} the "
                                                f"output is not the tokens rendered as documented: {documented}",
                                         expected, gen.text, f"tokens rendered ({render})", backend.name)))
    if render == "special" and tokens and tokens[-1] in vocab.eog_ids and gen.text.endswith(
            vocab.piece(tokens[-1], True).decode("utf-8", "replace")):
        out.notes.append(f"{backend.name} --special: the end-of-generation token's text "
                         f"{vocab.piece(tokens[-1], True).decode()!r} ends the returned content")
    return out


# --- 6. missing or mismatched chat templates --------------------------------------------------
def template_request(rt, item: GenItem, stream: bool) -> ChatRequest:
    return ChatRequest(messages=tuple(item.entry["messages"]), max_tokens=item.max_tokens, seed=rt.options.seed,
                       stream=stream)


def _format_name(prompt: str) -> str:
    for marker, name in (("<|im_start|>", "chatml"), ("[INST]", "llama-2"), ("<start_of_turn>", "gemma"),
                         ("<|start_header_id|>", "llama-3")):
        if marker in prompt:
            return name
    return "unrecognised"


def chat_format_used(rt, item: GenItem, backend: Backend) -> dict[str, Any]:
    """Which template/format the backend's chat endpoint used, and whether it is the model's own."""
    llama = rt.backend("llama-cpp-python", item.case)
    embedded = llama.embedded_template
    prompt = prompt_text(rt, item.case, run_or_skip(lambda: chat_prompt(backend, tuple(item.entry["messages"]))))
    if getattr(backend, "llm", None) is not None:
        fmt = backend.llm.chat_format
        own = fmt == "chat_template.default" and embedded is not None
        return {"format": f"chat_format={fmt}", "own_template": own, "prompt": prompt}
    if hasattr(backend, "props"):
        template = backend.props().get("chat_template") or ""
        own = embedded is not None and template.rstrip("\n") == embedded.rstrip("\n")
        label = "the GGUF's template" if own else f"a built-in template ({_format_name(prompt)})"
        return {"format": label, "own_template": own, "prompt": prompt}
    raise Unsupported(f"{backend.name}: cannot tell which template its chat endpoint uses")


def check_chat_template(rt, item: GenItem, backend: Backend) -> Outcome:
    gen = run_or_skip(lambda: generate(backend, template_request(rt, item, item.stream)))
    out = Outcome(golden=gen.as_golden())
    vocab = vocab_of(rt, item.case)
    out.problems += token_range_problems(item, gen, vocab.n_vocab)
    if item.stream:
        plain = run_or_skip(lambda: generate(backend, template_request(rt, item, False)))
        out.problems += stream_problems(item, gen, plain)
        return out
    used = chat_format_used(rt, item, backend)
    out.golden.update(used)
    has_template = item.case.expects_template
    finding = f"{backend.name} chat format: {used['format']}"
    out.notes.append(finding)
    if not has_template:
        out.problems.append(str(mismatch(
            item.location(), f"{backend.name}: the model has no chat template, and the chat endpoint silently "
                             f"formats the conversation as {used['format']} (no error, no warning)",
            "an error or a reported fallback", {"format": used["format"], "prompt": used["prompt"],
                                               "output": gen.text}, "expected", backend.name)))
    elif not used["own_template"]:
        out.problems.append(str(mismatch(item.location(), f"{backend.name}: the chat endpoint does not use the "
                                                          f"model's own template but {used['format']}",
                                         "the GGUF's tokenizer.chat_template", used, "expected", backend.name)))
    return out
