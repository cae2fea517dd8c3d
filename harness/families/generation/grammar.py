"""Grammar checks: llama.cpp's GBNF engine without a model, constrained generation, and the completion
endpoint agreeing with the chat endpoint."""

from __future__ import annotations

import ctypes
import dataclasses
import json

from harness.backends.base import (
    BackendError, CHAT, COMPLETE, GRAMMAR, JSON_SCHEMA, STREAM, Backend, ChatRequest, CompletionRequest
)
from harness.cases.model import Case
from harness.checks import mismatch
from harness.outcome import CaseProblem, Outcome, run_or_skip
from .calls import (
    chat_prompt, generate, leak_problems, memo, prompt_text, stream_problems, token_range_problems,
    trailing_whitespace, show_value
)
from .engine import GrammarParseError, capture_fd2, engine, llama_cpp_python_gbnf, vocab_of
from .items import CPP_SCHEMA_ENGINE, GenItem, MIN_ACCEPT_REJECT, WHITESPACE_RUN


# --- 1. grammar engine, no model ------------------------------------------------------------
def check_grammar_engine(item: GenItem, to_gbnf=None) -> Outcome:
    """`to_gbnf`: for the llama.cpp-json-schema engine, llama.cpp's C++ JSON-schema converter
    (LlamaChatBackend.json_schema_to_grammar)."""
    g, eng = item.entry, item.extra[0][1]
    accept, reject = list(g["accept"]), list(g["reject"])
    out = Outcome(golden={})
    if len(accept) + len(reject) < MIN_ACCEPT_REJECT:
        out.case_errors.append(f"{item.location()}: grammar '{g['id']}' has {len(accept) + len(reject)} "
                               f"accept/reject strings; at least {MIN_ACCEPT_REJECT} are required")
    if eng == "jsonschema":
        import jsonschema
        verdict = [_schema_ok(g["json_schema"], s, jsonschema) for s in accept + reject]
        out.golden = {"accepted": [s for s, v in zip(accept + reject, verdict) if v],
                      "rejected": [s for s, v in zip(accept + reject, verdict) if not v]}
        wrong = _wrong(accept, reject, verdict)
        if wrong:
            out.case_errors.append(f"{item.location()}: the case's own accept/reject strings disagree with "
                                   f"jsonschema for '{g['id']}': {wrong}")
        return out
    if eng == CPP_SCHEMA_ENGINE:
        try:
            gbnf = to_gbnf(g["json_schema"])
        except BackendError as exc:          # ProbeError / ProbeCrashed: llama.cpp refused it
            out.problems.append(f"{item.location()}: llama.cpp's json_schema_to_grammar refuses the JSON "
                                f"schema of '{g['id']}': {exc}")
            out.golden = {"refused": str(exc).splitlines()[0]}
            return out
    else:
        gbnf = g["gbnf"] if eng == "llama.cpp" else llama_cpp_python_gbnf(g["json_schema"])
    try:
        verdict = engine().verdicts(gbnf, accept + reject)
    except GrammarParseError as exc:
        if eng == "llama.cpp":
            out.case_errors.append(f"{item.location()}: llama.cpp cannot parse grammar '{g['id']}': {exc}")
        else:
            out.problems.append(f"{item.location()}: llama.cpp cannot parse the GBNF llama-cpp-python made from "
                                f"the JSON schema of '{g['id']}': {exc}\n{gbnf}")
        out.golden = {"parse_error": str(exc)}
        return out
    out.golden = {"accepted": [s for s, v in zip(accept + reject, verdict) if v],
                  "rejected": [s for s, v in zip(accept + reject, verdict) if not v]}
    if eng != "llama.cpp":
        out.golden["gbnf"] = gbnf
    wrong = _wrong(accept, reject, verdict)
    if wrong:
        side = "the case's accept/reject lists" if eng == "llama.cpp" else "jsonschema (the case's lists)"
        who = {"llama.cpp": "llama.cpp's grammar engine",
               CPP_SCHEMA_ENGINE: "llama.cpp's engine on llama.cpp's own (C++) GBNF for the schema"}.get(
            eng, "llama.cpp's engine on llama-cpp-python's GBNF for the schema")
        out.problems.append(str(mismatch(item.location(), f"{who} disagrees with {side} on grammar '{g['id']}'",
                                         {"must_accept": wrong["rejected_wrongly"],
                                          "must_reject": wrong["accepted_wrongly"]},
                                         {"engine_rejected": wrong["rejected_wrongly"],
                                          "engine_accepted": wrong["accepted_wrongly"]},
                                         "expected", who)))
    return out


def _schema_ok(schema: dict, text: str, jsonschema) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


def _wrong(accept: list[str], reject: list[str], verdict: list[bool]) -> dict[str, list[str]]:
    va, vr = verdict[:len(accept)], verdict[len(accept):]
    wrong = {"rejected_wrongly": [s for s, v in zip(accept, va) if not v],
             "accepted_wrongly": [s for s, v in zip(reject, vr) if v]}
    return wrong if any(wrong.values()) else {}


# --- 1. constrained generation -----------------------------------------------------------------
def grammar_request(rt, item: GenItem, backend: Backend, endpoint: str, stream: bool) -> CompletionRequest | ChatRequest:
    g = item.entry
    common = dict(max_tokens=item.max_tokens, seed=rt.options.seed, stream=stream)
    if endpoint == "chat":
        if "gbnf" in g:
            return ChatRequest(messages=tuple(g["messages"]), grammar=g["gbnf"], **common)
        return ChatRequest(messages=tuple(g["messages"]),
                           response_format={"type": "json_object", "schema": g["json_schema"]}, **common)
    prompt = g.get("prompt") or chat_prompt(backend, tuple(g["messages"]))
    return CompletionRequest(prompt=prompt, grammar=g.get("gbnf"), json_schema=g.get("json_schema"), **common)


def grammar_caps(item: GenItem, endpoint: str) -> list[str]:
    caps = [CHAT if endpoint == "chat" else COMPLETE, GRAMMAR if "gbnf" in item.entry else JSON_SCHEMA]
    return caps + ([STREAM] if item.stream else [])


def conformance(item: GenItem, backend: Backend, text: str) -> list[str]:
    """Re-parse the output with the same grammar (llama.cpp's engine) / validate the JSON."""
    g, where = item.entry, item.location()
    if "gbnf" in g:
        if not engine().matches(g["gbnf"], text):
            ok_prefix = engine().viable(g["gbnf"], [text[:i] for i in range(len(text) + 1)])
            k = max([i for i, v in enumerate(ok_prefix) if v], default=0)
            return [f"{where}: {backend.name}: the output is not a sentence of grammar '{g['id']}' "
                    f"(re-parsed by llama.cpp's grammar engine); it stops fitting at character {k}\n"
                    f"  output:  {show_value(text)}\n  fits up to: {show_value(text[:k])}\n  grammar: {g['gbnf'].strip()}"]
        return []
    import jsonschema
    problems = []
    try:
        jsonschema.validate(json.loads(text), g["json_schema"])
    except ValueError as exc:
        problems.append(f"{where}: {backend.name}: the output is not JSON ({exc})\n  output: {show_value(text)}")
    except jsonschema.ValidationError as exc:
        problems.append(f"{where}: {backend.name}: the output breaks the JSON schema of '{g['id']}': "
                        f"{exc.message}\n  output: {show_value(text)}")
    if getattr(backend, "llm", None) is not None:      # llama-cpp-python: its own GBNF for the schema
        gbnf = llama_cpp_python_gbnf(g["json_schema"])
        if not engine().matches(gbnf, text):
            problems.append(f"{where}: {backend.name}: the output is not a sentence of the GBNF llama-cpp-python "
                            f"made from the schema (re-parsed by llama.cpp's engine)\n  output: {show_value(text)}")
    return problems


def check_grammar(rt, item: GenItem, backend: Backend) -> Outcome:
    endpoint = item.params["endpoint"]
    vocab = vocab_of(rt, item.case)
    require_grammar(rt, item, item.entry.get("gbnf"))
    req = run_or_skip(lambda: grammar_request(rt, item, backend, endpoint, item.stream))
    gen = run_or_skip(lambda: generate(backend, req))
    out = Outcome(golden=gen.as_golden())
    if isinstance(req, CompletionRequest) and "messages" in item.entry:
        out.golden["prompt"] = prompt_text(rt, item.case, req.prompt)
    out.problems += token_range_problems(item, gen, vocab.n_vocab)
    if item.stream:
        plain = run_or_skip(lambda: generate(backend, dataclasses.replace(req, stream=False)))
        out.problems += stream_problems(item, gen, plain)
        return out
    out.problems += leak_problems(item, gen, vocab.eot_texts(item.option("end_of_turn", ())))
    if gen.finish_reason != "stop":
        ws = trailing_whitespace(gen.text)
        why = (f"looping on whitespace ({ws} trailing whitespace characters)" if ws >= WHITESPACE_RUN
               else f"it ran to the token limit ({item.max_tokens})")
        out.problems.append(str(mismatch(item.location(), f"{backend.name} {endpoint}: grammar '{item.entry_id}' "
                                                          f"did not end by itself: {why}",
                                         {"finish_reason": "stop"},
                                         {"finish_reason": gen.finish_reason, "text": gen.text},
                                         "expected", backend.name)))
    out.problems += conformance(item, backend, gen.text)
    return out


def check_endpoints_agree(rt, item: GenItem, backend: Backend) -> Outcome:
    """The completion endpoint, given exactly the prompt the chat endpoint uses, must
    return what the chat endpoint returns (same grammar, same greedy decoding)."""
    require_grammar(rt, item, item.entry.get("gbnf"))
    chat = run_or_skip(lambda: generate(backend, grammar_request(rt, item, backend, "chat", False)))
    comp_req = run_or_skip(lambda: grammar_request(rt, item, backend, "complete", False))
    comp = run_or_skip(lambda: generate(backend, comp_req))
    out = Outcome(golden={"complete": comp.as_golden(), "chat": chat.as_golden()})
    if (comp.text, comp.finish_reason) != (chat.text, chat.finish_reason):
        out.problems.append(str(mismatch(
            item.location(), f"{backend.name}: the completion and chat endpoints disagree on grammar "
                             f"'{item.entry_id}' for the same prompt (finish_reason {comp.finish_reason!r} vs "
                             f"{chat.finish_reason!r})",
            comp.text, chat.text, "completion endpoint", "chat endpoint")))
    return out


# --- 2. masks --------------------------------------------------------------------------------------
def grammar_mask(llm, gbnf: str) -> list[int]:
    """Token ids llama.cpp's grammar sampler (the model's vocab) allows as the first token."""
    import numpy as np
    import llama_cpp as L
    vocab = llm._model.vocab
    n = L.llama_vocab_n_tokens(vocab)
    smpl = L.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
    if not smpl:
        raise GrammarParseError("llama_sampler_init_grammar returned NULL")
    try:
        data = (L.llama_token_data * n)()
        view = np.frombuffer(data, dtype=np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)]))
        view["id"] = np.arange(n, dtype=np.int32)
        view["logit"] = 0.0
        arr = L.llama_token_data_array(data=data, size=n, selected=-1, sorted=False)
        L.llama_sampler_apply(smpl, ctypes.byref(arr))
        size = int(arr.size)
        view = view[:size]
        return [int(i) for i in view["id"][np.isfinite(view["logit"])]]
    finally:
        L.llama_sampler_free(smpl)


def grammar_error(rt, case: Case, gbnf: str | None) -> str | None:
    """llama.cpp's parse error for `gbnf` with the model's vocab (token references need it), or None.

    Checked before any generation: llama-cpp-python does not parse a grammar itself
    (LlamaGrammar.from_string stores the text) and adds the NULL sampler that
    llama_sampler_init_grammar returns for an unparsable one to its chain, which segfaults
    the process on the first token."""
    if not gbnf:
        return None
    import llama_cpp as L

    def parse():
        llm = rt.backend("llama-cpp-python", case).llm
        with capture_fd2() as err:
            smpl = L.llama_sampler_init_grammar(llm._model.vocab, gbnf.encode("utf-8"), b"root")
        if smpl:
            L.llama_sampler_free(smpl)
            return ""
        return err.text().strip() or "llama.cpp could not parse the grammar"
    msg = memo(rt.backend("llama-cpp-python", case), ("grammar_error", gbnf), parse)
    return msg or None


def require_grammar(rt, item: GenItem, gbnf: str | None) -> None:
    msg = grammar_error(rt, item.case, gbnf)
    if msg:
        raise CaseProblem(f"{item.location()}: llama.cpp cannot parse the grammar of '{item.entry_id}' (not sent "
                          f"to any backend: llama-cpp-python segfaults on an unparsable grammar): {msg}")
