"""llama.cpp's own GBNF engine, called without a model (see harness/families/generation/checks.py), and
a model's vocabulary."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
import tempfile
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from harness.cases.model import Case
from harness.errors import raise_again
from .items import GENERIC_EOT


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
        with capture_fd2() as err:
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
def capture_fd2() -> Iterator[_Captured]:
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
