"""What every generation check shares: outcomes, memoised backend calls, the no-stop reference, and the
output problems (leaks, stream, token range)."""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from harness.backends.base import (
    RENDER, Backend, BackendError, ChatRequest, CompletionRequest, Generation, RenderRequest,
    Unsupported
)
from harness.cases.model import Case
from harness.checks import Mismatch, mismatch
from harness.errors import raise_again
from .engine import Vocab, vocab_of
from .items import GenItem


# =====================================================================================
# outcome of one check
# =====================================================================================
class CaseProblem(Exception):
    """The case file no longer exercises what it claims (not a backend finding)."""


@dataclass
class Outcome:
    golden: dict[str, Any]
    problems: list[str] = field(default_factory=list)     # conformance findings -> Mismatch
    case_errors: list[str] = field(default_factory=list)  # the case is wrong -> plain failure
    notes: list[str] = field(default_factory=list)        # recorded in the results, never fail

    def conclude(self) -> None:
        if self.case_errors:
            import pytest
            pytest.fail("\n\n".join(self.case_errors), pytrace=False)
        if self.problems:
            raise Mismatch("\n\n".join(self.problems))


def show_value(text: str | None) -> str:
    return json.dumps(text, ensure_ascii=False)


# =====================================================================================
# running generations (with a per-session memo, so stream twins and agreement reuse results)
# =====================================================================================
_MEMO: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def memo(backend: Backend, key: tuple, fn: Callable[[], Any]) -> Any:
    store = _MEMO.setdefault(backend, {})
    if key not in store:
        try:
            store[key] = fn()
        except Unsupported as exc:
            store[key] = exc
    got = store[key]
    if isinstance(got, Unsupported):
        raise_again(got)
    return got


def generate(backend: Backend, req: CompletionRequest | ChatRequest) -> Generation:
    key = ("generate", repr(req))
    if isinstance(req, ChatRequest):
        return memo(backend, key, lambda: backend.chat(req))
    return memo(backend, key, lambda: backend.complete(req))


class _PromptCaptured(Exception):
    pass


def chat_prompt(backend: Backend, messages: tuple[dict, ...]) -> str | tuple[int, ...]:
    """The prompt the backend's chat endpoint sends to its model for `messages`.

    llama-cpp-python: its chat handler's own call to create_completion is intercepted
    (prompt token ids, exactly as it tokenized them). Servers: the rendered template text,
    which their chat endpoint tokenizes like their completion endpoint does."""
    def capture():
        llm = getattr(backend, "llm", None)
        if llm is not None:
            seen: dict[str, Any] = {}

            def intercept(*args, **kwargs):
                seen.update(kwargs)
                raise _PromptCaptured

            llm.create_completion = intercept        # instance attribute shadows the method
            try:
                llm.create_chat_completion(messages=[dict(m) for m in messages], max_tokens=1, temperature=0.0)
            except _PromptCaptured:
                pass
            finally:
                del llm.create_completion
            if "prompt" not in seen:
                raise BackendError("llama-cpp-python's chat handler never called create_completion")
            prompt = seen["prompt"]
            return tuple(prompt) if isinstance(prompt, list) else prompt
        if RENDER not in backend.capabilities:
            raise Unsupported(f"{backend.name} cannot show the prompt its chat endpoint uses")
        rendered = backend.render_prompt(RenderRequest(messages=[dict(m) for m in messages]))
        if rendered.text is None:
            raise BackendError(f"{backend.name} could not render the chat prompt: {rendered.error}")
        return rendered.text
    return memo(backend, ("chat_prompt", json.dumps(messages, sort_keys=True)), capture)


def prompt_text(rt, case: Case, prompt: str | tuple[int, ...]) -> str:
    return prompt if isinstance(prompt, str) else vocab_of(rt, case).render(prompt, True)


# --- the reference token stream ------------------------------------------------------------
def reference(rt, item: GenItem, backend: Backend, prompt: str, grammar: str | None) -> tuple[list[int], str] | None:
    """(tokens, finish_reason) of the backend's own greedy generation without stops.

    llama-cpp-python's create_completion returns no token ids, so its reference is the same
    greedy loop through its public Llama.generate (what create_completion iterates over);
    servers return their ids (`return_tokens`). None where a backend gives no ids."""
    def compute():
        llm = getattr(backend, "llm", None)
        if llm is not None:
            from llama_cpp import LlamaGrammar, llama_vocab_is_eog
            ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
            if llm._model.add_bos_token() and llm.token_bos() >= 0:
                ids = [llm.token_bos()] + ids
            out, finish = [], "length"
            llm.reset()
            g = LlamaGrammar.from_string(grammar, verbose=False) if grammar else None
            for tok in llm.generate(ids, temp=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0,
                                    grammar=g):
                out.append(int(tok))
                if llama_vocab_is_eog(llm._model.vocab, tok):
                    finish = "stop"
                    break
                if len(out) >= item.max_tokens:
                    break
            llm.reset()
            return out, finish
        gen = backend.complete(CompletionRequest(prompt=prompt, max_tokens=item.max_tokens, grammar=grammar,
                                                 seed=rt.options.seed))
        return (list(gen.tokens), gen.finish_reason) if gen.tokens else None
    return memo(backend, ("reference", prompt, grammar, item.max_tokens), compute)


# =====================================================================================
# rules
# =====================================================================================
def find_leak(text: str, eot_texts: Iterable[str]) -> tuple[str, int] | None:
    """The first end-of-turn text in `text` (and where), or None."""
    hits = [(text.find(e), e) for e in eot_texts if e and e in text]
    if not hits:
        return None
    pos, marker = min(hits)
    return marker, pos


def trailing_whitespace(text: str) -> int:
    return len(text) - len(text.rstrip())


def cut_at_stops(tokens: list[int], vocab: Vocab, stops: Iterable[str], finish: str | None,
                 *, render_special: bool = False) -> tuple[str, str | None, dict | None]:
    """What a generation of `tokens` must return with these stop strings.

    The stops are searched in the text with special tokens rendered (a stop that is a
    special token's text must fire on that token); the result is the text before the first
    stop, rendered as the backend renders it. Returns (text, finish_reason, where) with
    `where` = {"stop", "byte", "first_token", "last_token"} of the stop that fired."""
    spans, pos = [], 0
    for t in tokens:
        s = vocab.piece(t, True)
        spans.append((pos, pos + len(s)))
        pos += len(s)
    full = b"".join(vocab.piece(t, True) for t in tokens)
    found = [(full.find(s.encode("utf-8")), s) for s in stops if s and s.encode("utf-8") in full]
    if not found:
        body = b"".join(vocab.piece(t, render_special) for t in tokens)
        return body.decode("utf-8", errors="replace"), finish, None
    at, stop = min(found)
    end = at + len(stop.encode("utf-8"))
    out = []
    for t, (a, b) in zip(tokens, spans):
        if b <= at:
            out.append(vocab.piece(t, render_special))
        elif a < at:
            plain = vocab.piece(t, render_special)
            if plain == vocab.piece(t, True):          # an ordinary token: keep its bytes before the stop
                out.append(plain[:at - a])
            break
        else:
            break
    touched = [i for i, (a, b) in enumerate(spans) if a < end and b > at]
    where = {"stop": stop, "byte": at, "first_token": touched[0] if touched else None,
             "last_token": touched[-1] if touched else None}
    return b"".join(out).decode("utf-8", errors="replace"), "stop", where


def stream_problems(item: GenItem, streamed: Generation, plain: Generation) -> list[str]:
    """The stream must concatenate to the non-streamed result, with no U+FFFD."""
    where = item.location()
    out = []
    joined = "".join(streamed.chunks or [])
    if streamed.chunks is not None and joined != streamed.text:
        out.append(str(mismatch(where, f"{item.backend}: the stream's chunks do not concatenate to its text",
                                streamed.text, joined, "text", "chunks joined")))
    if streamed.text != plain.text:
        out.append(str(mismatch(where, f"{item.backend}: the concatenated stream differs from the non-streamed "
                                       f"result ({len(plain.text)} vs {len(streamed.text)} characters)",
                                plain.text, streamed.text, "non-streamed", "streamed")))
    if streamed.finish_reason != plain.finish_reason:
        out.append(f"{where}: {item.backend}: finish_reason {streamed.finish_reason!r} when streamed, "
                   f"{plain.finish_reason!r} when not\n  non-streamed text: {show_value(plain.text)}\n"
                   f"  streamed text:     {show_value(streamed.text)}")
    bad = [i for i, c in enumerate(streamed.chunks or []) if "\ufffd" in c]
    if "\ufffd" in streamed.text and "\ufffd" not in plain.text or bad:
        out.append(f"{where}: {item.backend}: U+FFFD in the stream (chunks {bad[:10]}) — a multi-byte "
                   f"character was split\n  non-streamed text: {show_value(plain.text)}\n"
                   f"  streamed chunks:   {json.dumps(streamed.chunks, ensure_ascii=False)[:1500]}")
    if streamed.info.get("incomplete_stream"):
        out.append(f"{where}: {item.backend}: the stream ended without a finish marker")
    return out


def token_range_problems(item: GenItem, gen: Generation, n_vocab: int) -> list[str]:
    bad = [t for t in gen.tokens or [] if not 0 <= t < n_vocab]
    if bad:
        return [f"{item.location()}: {item.backend} returned token ids outside [0, n_vocab={n_vocab}): {bad[:10]}"]
    return []


def leak_problems(item: GenItem, gen: Generation, eots: list[str], counterpart: tuple[str, str] | None = None) -> list[str]:
    leak = find_leak(gen.text, eots)
    if leak is None:
        return []
    marker, pos = leak
    other_name, other = counterpart or ("without end-of-turn text", gen.text[:pos])
    return [str(mismatch(item.location(), f"{item.backend}: end-of-turn text {marker!r} leaks into the returned "
                                          f"text at character {pos}", other, gen.text, other_name,
                         f"{item.backend} {item.params.get('endpoint', '')}".strip()))]


# =====================================================================================
# checks
# =====================================================================================
def needs(backend: Backend, *caps: str) -> None:
    import pytest
    missing = [c for c in caps if c not in backend.capabilities]
    if missing:
        pytest.skip(f"{backend.name} lacks {', '.join(missing)}")


def run_or_skip(fn: Callable[[], Any]) -> Any:
    import pytest
    try:
        return fn()
    except Unsupported as exc:
        pytest.skip(f"unsupported: {exc.reason}")
