"""The generation check family: real weights, greedy decoding, every generating backend.

Case files declare, under `checks.generation`, the grammars (GBNF or JSON schema, with
strings each must accept and reject), stops, special-token prompts and the conversations
for the chat-template check; this module expands them into items and does the checking,
so that harness/suite/test_generation.py stays a thin list of tests.

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

import contextlib
import ctypes
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from harness.backends.base import (CHAT, COMPLETE, GRAMMAR, JSON_SCHEMA, RENDER, STREAM, Backend,
                            BackendError, ChatRequest, CompletionRequest, Generation, RenderRequest,
                            Unsupported)
from harness.cases.model import Case, CaseSet
from harness.checks import Mismatch, mismatch
from harness.families.items import GENERATORS, Item
from harness.errors import raise_again

FAMILY = "generation"
# End-of-turn texts that must never appear in returned text (plus each model's EOG token texts).
GENERIC_EOT = ("<|im_end|>", "</s>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>", "<|end|>",
               "<|eom_id|>", "<|END_OF_TURN_TOKEN|>")
MIN_ACCEPT_REJECT = 20       # accept + reject strings per grammar
WHITESPACE_RUN = 8           # this much trailing whitespace at the token limit = looping on whitespace
OOV_PROBES = ("prompt", "detokenize", "grammar")
MASK_SAMPLE = 1500           # tokens per grammar whose mask verdict is re-checked with the engine


# =====================================================================================
# items
# =====================================================================================
@dataclass(frozen=True)
class GenItem(Item):
    """An Item with the id `case,kind=entry,variant...,backend,stream|nostream` (no ":": syrupy drops it
    from golden file names)."""
    kind: str = ""                   # grammar | stop | special | masks | oov | chat-template
    entry_id: str = ""
    mode: str = ""                   # "stream" | "nostream" | "" (not a generation)
    entry: Any = field(default=None, compare=False, hash=False)
    line: int = 0

    @property
    def id(self) -> str:
        parts = [self.case.id, f"{self.kind}={self.entry_id}" if self.entry_id else self.kind]
        parts += [v for _, v in self.extra]
        if self.backend is not None:
            parts.append(self.backend)
        if self.mode:
            parts.append(self.mode)
        return ",".join(parts)

    @property
    def params(self) -> dict[str, str]:
        p = super().params
        p["stream"] = self.mode
        if self.entry_id:
            p[self.kind] = self.entry_id
        return p

    @property
    def stream(self) -> bool:
        return self.mode == "stream"

    def location(self) -> str:
        return f"{self.case.file}:{self.line or self.case.line}"

    def option(self, key: str, default: Any = None) -> Any:
        """An entry's option, else the family-wide one, else `default`."""
        if isinstance(self.entry, dict) and key in self.entry:
            return self.entry[key]
        return self.case.check_options(FAMILY).get(key, default)

    @property
    def max_tokens(self) -> int:
        return int(self.option("max_tokens", 32))


MODES = ("nostream", "stream")


def _cases(cases: CaseSet) -> list[Case]:
    return [c for c in cases.cases if c.kind == "model" and c.has_weights and c.check_options(FAMILY)]


def _generators(available: Iterable[str]) -> list[str]:
    available = list(available)
    return [b for b in GENERATORS if b in available]


@lru_cache(maxsize=64)
def _marks(path: str, mtime_ns: int):
    from harness.cases.yamlio import load_file
    return load_file(Path(path))


def entry_line(cases: CaseSet, case: Case, path: tuple) -> int:
    """The line of checks.generation.<path> in the case file (the case's line if unknown)."""
    file = cases.root.parent / case.file
    try:
        located = _marks(str(file), file.stat().st_mtime_ns)
    except Exception:  # the case already validated; a line number is only a convenience
        return case.line
    return located.where(("checks", FAMILY, *path))[0]


def _entries(cases: CaseSet, case: Case, key: str) -> Iterator[tuple[dict, int]]:
    for i, entry in enumerate(case.check_options(FAMILY).get(key) or []):
        yield entry, entry_line(cases, case, (key, i))


def engine_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    """Accept/reject strings through the grammar engine, no model involved."""
    out = []
    for c in _cases(cases):
        for g, line in _entries(cases, c, "grammars"):
            engines = ["llama.cpp"] if "gbnf" in g else ["jsonschema", "llama-cpp-python-gbnf"]
            out += [GenItem(c, f"{FAMILY}.grammar_engine", extra=(("engine", e),), kind="grammar",
                            entry_id=g["id"], entry=g, line=line) for e in engines]
    return out


def _endpoints(entry: dict) -> list[str]:
    return ["complete", "chat"] if "messages" in entry else ["complete"]


def grammar_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [GenItem(c, f"{FAMILY}.grammar", backend=b, extra=(("endpoint", ep),), kind="grammar",
                    entry_id=g["id"], mode=m, entry=g, line=line)
            for c in _cases(cases) for g, line in _entries(cases, c, "grammars")
            for ep in _endpoints(g) for b in _generators(available) for m in MODES]


def agree_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [GenItem(c, f"{FAMILY}.endpoints_agree", backend=b, extra=(("endpoint", "agree"),),
                    kind="grammar", entry_id=g["id"], entry=g, line=line)
            for c in _cases(cases) for g, line in _entries(cases, c, "grammars") if "messages" in g
            for b in _generators(available)]


def stop_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [GenItem(c, f"{FAMILY}.stop", backend=b, kind="stop", entry_id=s["id"], mode=m, entry=s, line=line)
            for c in _cases(cases) for s, line in _entries(cases, c, "stops")
            for b in _generators(available) for m in MODES]


def special_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [GenItem(c, f"{FAMILY}.special", backend=b, extra=(("render", r),), kind="special",
                    entry_id=s["id"], mode=m, entry=s, line=line)
            for c in _cases(cases) for s, line in _entries(cases, c, "special_rendering")
            for r in ("plain", "special") for b in _generators(available) for m in MODES]


def masks_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [GenItem(c, f"{FAMILY}.masks", backend=b, kind="masks",
                    line=entry_line(cases, c, ("eog_ids",)))
            for c in _cases(cases) for b in _generators(available)]


def oov_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    return [GenItem(c, f"{FAMILY}.out_of_vocab", backend=b, kind="oov", entry_id=p)
            for c in _cases(cases) for p in OOV_PROBES for b in _generators(available)]


def template_items(cases: CaseSet, available: Iterable[str]) -> list[Item]:
    out = []
    for c in _cases(cases):
        wanted = c.check_options(FAMILY).get("contexts") or []
        contexts = [cases.contexts[w] for w in wanted if w in cases.contexts]
        line = entry_line(cases, c, ("contexts",))
        out += [GenItem(c, f"{FAMILY}.chat_template", context=ctx, backend=b, kind="chat-template",
                        entry_id=ctx.id, mode=m, entry={"messages": ctx.messages}, line=line)
                for ctx in contexts for b in _generators(available) for m in MODES]
    return out


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


def _show(text: str | None) -> str:
    return json.dumps(text, ensure_ascii=False)


# =====================================================================================
# llama.cpp's grammar engine, without a model
# =====================================================================================
class EngineUnavailable(RuntimeError):
    pass


class GrammarEngine:
    """llama.cpp's GBNF parser and matcher (src/llama-grammar.cpp) through ctypes.

    Uses the internal functions llama.cpp's own grammar tests use; they are exported by
    libllama.so with C++ linkage, hence the mangled names (Itanium ABI, libstdc++)."""

    SYMBOLS = {
        "init": "_Z23llama_grammar_init_implPK11llama_vocabPKcS3_bPS3_mPKim",
        "accept": "_Z20llama_grammar_acceptP13llama_grammarj",
        "stacks": "_Z24llama_grammar_get_stacksP13llama_grammar",
        "free": "_Z23llama_grammar_free_implP13llama_grammar",
        "clone": "_Z24llama_grammar_clone_implRK13llama_grammar",
    }

    def __init__(self) -> None:
        try:
            from llama_cpp import llama_cpp as lib_module
        except ImportError as exc:
            raise EngineUnavailable(f"llama-cpp-python is not installed: {exc}") from None
        lib = lib_module._lib
        self.library = getattr(lib, "_name", "libllama")
        try:
            f = {k: getattr(lib, v) for k, v in self.SYMBOLS.items()}
        except AttributeError as exc:
            raise EngineUnavailable(f"{self.library} does not export llama.cpp's grammar internals "
                                    f"({exc}); the GBNF engine cannot be driven without a model") from None
        p = ctypes.c_void_p
        f["init"].restype, f["init"].argtypes = p, [p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_bool,
                                                    p, ctypes.c_size_t, p, ctypes.c_size_t]
        f["accept"].restype, f["accept"].argtypes = None, [p, ctypes.c_uint32]
        f["stacks"].restype, f["stacks"].argtypes = p, [p]
        f["free"].restype, f["free"].argtypes = None, [p]
        f["clone"].restype, f["clone"].argtypes = p, [p]
        self._f = f
        # the std::vector layout is read directly: prove it on grammars with known answers
        checks = {("ab", "ab"): True, ("ab", "a"): False, ("ab", "abc"): False, ("ab", ""): False}
        for (word, text), want in checks.items():
            if self.matches(f'root ::= "{word}"', text) is not want:
                raise EngineUnavailable("llama.cpp's grammar engine gave a wrong answer on a self-test "
                                        "(std::vector layout differs?)")

    # --- handles -------------------------------------------------------------------------
    def parse(self, gbnf: str) -> tuple[int | None, str]:
        """(grammar handle or None, llama.cpp's parse error text)."""
        with _capture_fd2() as err:
            g = self._f["init"](None, gbnf.encode("utf-8"), b"root", False, None, 0, None, 0)
        return (g or None), err.text().strip()

    def free(self, g: int) -> None:
        self._f["free"](g)

    def _stacks(self, g: int) -> list[int]:
        """Lengths of the grammar's parse stacks (std::vector<std::vector<const elem*>>)."""
        outer = (ctypes.c_void_p * 3).from_address(self._f["stacks"](g))
        begin, end = outer[0] or 0, outer[1] or 0
        sizes = []
        for addr in range(begin, end, 3 * ctypes.sizeof(ctypes.c_void_p)):
            inner = (ctypes.c_void_p * 3).from_address(addr)
            sizes.append(((inner[1] or 0) - (inner[0] or 0)) // ctypes.sizeof(ctypes.c_void_p))
        return sizes

    def feed(self, g: int, text: str) -> bool:
        """Feed code points; False as soon as no parse stack survives."""
        accept = self._f["accept"]
        for ch in text:
            accept(g, ord(ch))
            if not self._stacks(g):
                return False
        return True

    @contextlib.contextmanager
    def grammar(self, gbnf: str) -> Iterator[int]:
        g, err = self.parse(gbnf)
        if g is None:
            raise GrammarParseError(err or "llama.cpp could not parse the grammar")
        try:
            yield g
        finally:
            self.free(g)

    # --- questions ------------------------------------------------------------------------
    def matches(self, gbnf: str, text: str) -> bool:
        """Is `text` a complete sentence of the grammar?"""
        with self.grammar(gbnf) as g:
            return self.feed(g, text) and any(n == 0 for n in self._stacks(g))

    def verdicts(self, gbnf: str, texts: Iterable[str]) -> list[bool]:
        with self.grammar(gbnf) as base:
            return [self._from(base, t, complete=True) for t in texts]

    def viable(self, gbnf: str, prefixes: Iterable[str]) -> list[bool]:
        """For each text: can some sentence of the grammar start with it?"""
        with self.grammar(gbnf) as base:
            return [self._from(base, t, complete=False) for t in prefixes]

    def _from(self, base: int, text: str, *, complete: bool) -> bool:
        g = self._f["clone"](base)
        try:
            if not self.feed(g, text):
                return False
            return any(n == 0 for n in self._stacks(g)) if complete else True
        finally:
            self.free(g)


class GrammarParseError(ValueError):
    pass


class _Captured:
    def __init__(self) -> None:
        self.data = b""

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@contextlib.contextmanager
def _capture_fd2() -> Iterator[_Captured]:
    """llama.cpp prints grammar parse errors with fprintf(stderr): catch them at the fd."""
    out = _Captured()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield out
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.data = tmp.read()


_ENGINE: list[GrammarEngine | Exception] = []


def engine() -> GrammarEngine:
    if not _ENGINE:
        try:
            _ENGINE.append(GrammarEngine())
        except EngineUnavailable as exc:
            _ENGINE.append(exc)
    got = _ENGINE[0]
    if isinstance(got, Exception):
        raise_again(got)
    return got


def llama_cpp_python_gbnf(schema: dict) -> str:
    """The GBNF llama-cpp-python constrains generation with for a JSON schema."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf
    return json_schema_to_gbnf(json.dumps(schema))


# =====================================================================================
# vocab facts (from the model's GGUF through llama-cpp-python)
# =====================================================================================
@dataclass
class Vocab:
    n_vocab: int
    eog_ids: list[int]
    control_ids: list[int]
    special: dict[str, int | None]
    _piece: Callable[[int, bool], bytes]
    _text: Callable[[int], str]
    _pieces: dict[tuple[int, bool], bytes] = field(default_factory=dict)

    def piece(self, token: int, special: bool) -> bytes:
        key = (token, special)
        if key not in self._pieces:
            self._pieces[key] = self._piece(token, special)
        return self._pieces[key]

    def render(self, tokens: Iterable[int], special: bool) -> str:
        return b"".join(self.piece(t, special) for t in tokens).decode("utf-8", errors="replace")

    def eot_texts(self, extra: Iterable[str] = ()) -> list[str]:
        own = [self._text(i) for i in self.eog_ids]
        return list(dict.fromkeys([t for t in (*own, *GENERIC_EOT, *extra) if t]))


_VOCABS: "weakref.WeakKeyDictionary[Any, Vocab]" = weakref.WeakKeyDictionary()


def vocab_of(rt, case: Case) -> Vocab:
    """The model's vocab via llama-cpp-python (the same GGUF every backend here serves)."""
    llama = rt.backend("llama-cpp-python", case)
    if llama not in _VOCABS:
        info = llama.vocab_info()
        _VOCABS[llama] = Vocab(
            n_vocab=info.n_vocab, eog_ids=list(info.eog_ids), control_ids=list(info.special_ids),
            special={"bos": info.bos_id, "eos": info.eos_id, "eot": info.eot_id, "pad": info.pad_id},
            _piece=lambda t, s: llama.token_piece(t, render_special=s),
            _text=lambda t: llama.llm._model.token_get_text(t))
    return _VOCABS[llama]


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
                   f"{plain.finish_reason!r} when not\n  non-streamed text: {_show(plain.text)}\n"
                   f"  streamed text:     {_show(streamed.text)}")
    bad = [i for i, c in enumerate(streamed.chunks or []) if "\ufffd" in c]
    if "\ufffd" in streamed.text and "\ufffd" not in plain.text or bad:
        out.append(f"{where}: {item.backend}: U+FFFD in the stream (chunks {bad[:10]}) — a multi-byte "
                   f"character was split\n  non-streamed text: {_show(plain.text)}\n"
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


# --- 1. grammar engine, no model ------------------------------------------------------------
def check_grammar_engine(item: GenItem) -> Outcome:
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
        who = "llama.cpp's grammar engine" if eng == "llama.cpp" else \
            "llama.cpp's engine on llama-cpp-python's GBNF for the schema"
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
                    f"  output:  {_show(text)}\n  fits up to: {_show(text[:k])}\n  grammar: {g['gbnf'].strip()}"]
        return []
    import jsonschema
    problems = []
    try:
        jsonschema.validate(json.loads(text), g["json_schema"])
    except ValueError as exc:
        problems.append(f"{where}: {backend.name}: the output is not JSON ({exc})\n  output: {_show(text)}")
    except jsonschema.ValidationError as exc:
        problems.append(f"{where}: {backend.name}: the output breaks the JSON schema of '{g['id']}': "
                        f"{exc.message}\n  output: {_show(text)}")
    if getattr(backend, "llm", None) is not None:      # llama-cpp-python: its own GBNF for the schema
        gbnf = llama_cpp_python_gbnf(g["json_schema"])
        if not engine().matches(gbnf, text):
            problems.append(f"{where}: {backend.name}: the output is not a sentence of the GBNF llama-cpp-python "
                            f"made from the schema (re-parsed by llama.cpp's engine)\n  output: {_show(text)}")
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
        with _capture_fd2() as err:
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
        import pytest
        pytest.fail(f"{item.location()}: llama.cpp cannot parse the grammar of '{item.entry_id}' (not sent to "
                    f"any backend: llama-cpp-python segfaults on an unparsable grammar): {msg}", pytrace=False)


def _mask_grammars(item: GenItem) -> list[tuple[str, str]]:
    out = []
    for g in item.case.check_options(FAMILY).get("grammars") or []:
        gbnf = g.get("gbnf") or llama_cpp_python_gbnf(g["json_schema"])
        out.append((g["id"], gbnf))
    return out


def check_masks(rt, item: GenItem, backend: Backend) -> Outcome:
    vocab = vocab_of(rt, item.case)
    n = vocab.n_vocab
    declared = item.option("eog_ids")
    golden: dict[str, Any] = {"n_vocab": n, "eog_ids": vocab.eog_ids, "n_control_ids": len(vocab.control_ids),
                              "special_ids": vocab.special}
    out = Outcome(golden=golden)
    where = item.location()
    if declared is not None and sorted(declared) != sorted(vocab.eog_ids):
        out.problems.append(str(mismatch(where, "the model's end-of-generation ids differ from the case's eog_ids",
                                         sorted(declared), vocab.eog_ids, "case", "llama.cpp")))
    ids = {**{f"eog {i}": i for i in vocab.eog_ids}, **{f"control {i}": i for i in vocab.control_ids},
           **{k: v for k, v in vocab.special.items() if v is not None}}
    bad = {k: v for k, v in ids.items() if not 0 <= v < n}
    if bad:
        out.problems.append(f"{where}: special ids outside [0, n_vocab={n}): {bad}")
    llm = getattr(backend, "llm", None)
    if llm is not None:
        info = backend.vocab_info()
        golden["embedding_rows"] = info.embedding_rows
        if info.embedding_rows is not None and info.embedding_rows != n:
            out.problems.append(f"{where}: token_embd has {info.embedding_rows} rows but n_vocab is {n}")
        golden["logits_row"] = _logits_row(llm, out, where, n)
        golden["grammar_first_token"] = {}
        for gid, gbnf in _mask_grammars(item):
            golden["grammar_first_token"][gid] = _mask_problems(llm, vocab, gid, gbnf, out, where)
    else:
        info = run_or_skip(backend.vocab_info)
        golden["server_n_vocab"] = info.n_vocab
        if info.n_vocab != n:
            out.problems.append(str(mismatch(where, f"{backend.name} reports a different n_vocab than the GGUF",
                                             n, info.n_vocab, "llama.cpp (GGUF)", backend.name)))
        for k in ("bos_id", "eos_id"):
            v = getattr(info, k)
            if v is not None and not 0 <= v < n:
                out.problems.append(f"{where}: {backend.name} {k}={v} is outside [0, n_vocab={n})")
    return out


def _logits_row(llm, out: Outcome, where: str, n: int) -> int:
    import numpy as np
    llm.reset()
    llm.eval([llm.token_bos() if llm.token_bos() >= 0 else 0])
    row = llm.scores[llm.n_tokens - 1]
    llm.reset()
    if len(row) != n or not np.isfinite(row).all():
        out.problems.append(f"{where}: the logits row has {len(row)} entries (finite: {bool(np.isfinite(row).all())}); "
                            f"n_vocab is {n}")
    return int(len(row))


def _mask_problems(llm, vocab: Vocab, gid: str, gbnf: str, out: Outcome, where: str) -> dict[str, Any]:
    allowed = grammar_mask(llm, gbnf)
    n = vocab.n_vocab
    eog_allowed = sorted(set(allowed) & set(vocab.eog_ids))
    accepts_empty = engine().matches(gbnf, "")
    summary = {"allowed": len(allowed), "eog_allowed": bool(eog_allowed)}
    if not allowed:
        out.problems.append(f"{where}: grammar '{gid}': the grammar sampler allows no token at all")
    outside = [t for t in allowed if not 0 <= t < n]
    if outside:
        out.problems.append(f"{where}: grammar '{gid}': the sampler allows ids outside [0, {n}): {outside[:10]}")
    if bool(eog_allowed) != accepts_empty:
        out.problems.append(f"{where}: grammar '{gid}': end-of-generation ids allowed first: {eog_allowed}, "
                            f"but the engine says the empty output is {'' if accepts_empty else 'not '}a sentence")
    if "<[" in gbnf:        # token references: the text engine cannot judge those tokens
        return summary
    allowed_set = set(allowed)
    eog = set(vocab.eog_ids)
    step_a = max(1, len(allowed) // MASK_SAMPLE)
    rejected = [t for t in range(n) if t not in allowed_set]
    step_r = max(1, len(rejected) // MASK_SAMPLE)
    sample = [(t, True) for t in allowed[::step_a]] + [(t, False) for t in rejected[::step_r]]
    texts, keep = [], []
    for t, ok in sample:
        if t in eog:
            continue
        try:
            piece = vocab.piece(t, True).decode("utf-8")
        except UnicodeDecodeError:
            continue             # partial UTF-8: judged by the sampler's partial-sequence logic
        if not piece:
            if ok:
                out.problems.append(f"{where}: grammar '{gid}': the sampler allows token {t} with an empty piece")
            continue
        texts.append(piece)
        keep.append((t, ok, piece))
    viable = engine().viable(gbnf, texts)
    disagree = [(t, piece, ok) for (t, ok, piece), v in zip(keep, viable) if v != ok]
    summary["rechecked"] = len(keep)
    if disagree:
        shown = [{"id": t, "piece": p, "sampler": "allowed" if ok else "rejected",
                  "engine": "rejected" if ok else "allowed"} for t, p, ok in disagree[:12]]
        out.problems.append(f"{where}: grammar '{gid}': the token mask disagrees with llama.cpp's engine on "
                            f"{len(disagree)} of {len(keep)} re-checked tokens: "
                            f"{json.dumps(shown, ensure_ascii=False)}")
    return summary


# --- 2. out-of-vocabulary ids ------------------------------------------------------------------------
_PROBE_SCRIPT = r"""
import json, sys
import llama_cpp
kind, path, n_vocab, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=path, vocab_only=(kind == "detokenize"), n_ctx=256, n_threads=threads,
                      n_threads_batch=threads, verbose=False)
print("PROBE-LOADED", flush=True)
try:
    if kind == "prompt":
        out = llm.create_completion([n_vocab], max_tokens=1, temperature=0.0)
        result = {"returned": out["choices"][0]["text"]}
    elif kind == "detokenize":
        result = {"returned": llm.detokenize([n_vocab]).decode("utf-8", "replace")}
    else:
        grammar = llama_cpp.LlamaGrammar.from_string("root ::= <[%d]>" % n_vocab)
        out = llm.create_completion("Hello", max_tokens=2, temperature=0.0, grammar=grammar)
        result = {"returned": out["choices"][0]["text"]}
except Exception as exc:
    result = {"error": "%s: %s" % (type(exc).__name__, exc)}
print("PROBE-RESULT " + json.dumps(result), flush=True)
"""

PROBE_CALLS = {
    "prompt": "create_completion(prompt=[n_vocab])",
    "detokenize": "detokenize([n_vocab])",
    "grammar": 'a GBNF grammar "root ::= <[n_vocab]>"',
}


def probe_llama_cpp_python(gguf: Path, kind: str, n_vocab: int, threads: int) -> dict[str, Any]:
    """Run one probe in a child process: a crash there must not take the test run with it."""
    env = dict(os.environ, GGML_NO_BACKTRACE="1")
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE_SCRIPT, kind, str(gguf), str(n_vocab), str(threads)],
                              capture_output=True, text=True, timeout=300, env=env)
    except subprocess.TimeoutExpired:
        return {"handled": False, "outcome": "timeout: the call hung for 300 s"}
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE-RESULT ")), None)
    if "PROBE-LOADED" not in proc.stdout:
        raise BackendError(f"the probe process could not load the model: {proc.stderr[-1500:]}")
    if line is not None and proc.returncode == 0:
        res = json.loads(line[len("PROBE-RESULT "):])
        if "error" in res:
            return {"handled": True, "outcome": f"exception: {res['error']}"}
        return {"handled": True, "outcome": f"returned {res['returned']!r}"}
    return {"handled": False, "outcome": "crash: " + _crash_summary(proc.returncode, proc.stderr)}


def _crash_summary(code: int, stderr: str) -> str:
    import signal
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    keys = ("terminate called", "what()", "GGML_ASSERT", "Segmentation", "error", "Abort")
    lines = [ln.strip() for ln in stderr.splitlines() if any(k in ln for k in keys)]
    lines = [re.sub(r"0x[0-9a-f]+", "0x…", ln) for ln in lines][:4]
    # source paths name the build's temporary directory (pip-install-<random>/...); keep
    # the path from the llama.cpp tree on, which is the same for every build of one version
    lines = [re.sub(r"(?:/[^\s:/]+)+/(?:vendor/)?(llama\.cpp/)", r"\1", ln) for ln in lines]
    return f"{how}" + (f"; {' | '.join(lines)}" if lines else "")


def probe_server(backend: Backend, kind: str, n_vocab: int, seed: int) -> dict[str, Any]:
    from harness.backends.openai_compat import HttpError
    calls = {
        "prompt": lambda: backend.complete(CompletionRequest(prompt=(n_vocab,), max_tokens=1, seed=seed)),
        "detokenize": lambda: backend.detokenize([n_vocab], render_special=True),
        "grammar": lambda: backend.complete(CompletionRequest(prompt="Hello", max_tokens=2, seed=seed,
                                                              grammar=f"root ::= <[{n_vocab}]>")),
    }
    try:
        got = calls[kind]()
        result = {"handled": False, "outcome": f"accepted and returned {_short(got)}"}
    except HttpError as exc:
        ok = 400 <= exc.status < 500
        result = {"handled": ok, "outcome": f"HTTP {exc.status}: {exc.message}"}
    except Unsupported:
        raise
    except BackendError as exc:
        result = {"handled": False, "outcome": f"crash or broken connection: {exc}"}
    try:   # the server must still answer
        backend.tokenize("ok", add_special=False, parse_special=False)
    except BackendError as exc:
        result = {"handled": False, "outcome": result["outcome"] + f"; afterwards the server is gone: {exc}"}
    return result


def _short(v: Any) -> str:
    text = v.text if isinstance(v, Generation) else v
    return repr(text)[:200]


def check_out_of_vocab(rt, item: GenItem, backend: Backend) -> Outcome:
    n = vocab_of(rt, item.case).n_vocab
    kind = item.entry_id
    if getattr(backend, "llm", None) is not None:
        res = probe_llama_cpp_python(backend.model.gguf, kind, n, rt.options.threads)
        expectation = "a Python exception (or a harmless return); the process must survive"
    elif hasattr(backend, "props"):
        res = probe_server(backend, kind, n, rt.options.seed)
        expectation = "an HTTP 4xx error naming the bad id; the server must survive"
    else:
        import pytest
        pytest.skip(f"{backend.name}: no way to send raw token ids")
    out = Outcome(golden={"probe": PROBE_CALLS[kind].replace("n_vocab", str(n)), **res})
    if not res["handled"]:
        out.problems.append(str(mismatch(item.location(), f"{backend.name}: token id {n} (= n_vocab, one past the "
                                                          f"last id) via {PROBE_CALLS[kind]} is not handled",
                                         expectation, res["outcome"], "expected", backend.name)))
    return out


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
                            f"{s['expect_finish']!r}\n  output: {_show(gen.text)}")
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
