"""llama-cpp-python in process: the compiled llama.cpp through its Python bindings.

One `Llama` per model per worker (the plugin caches backends for the session). Models
without usable weights are loaded with `vocab_only=True`.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from typing import Any

from .base import (CHAT, COMPLETE, DETOKENIZE, GRAMMAR, JSON_SCHEMA, RENDER, STREAM, TOKENIZE, TOOLS, VOCAB,
                   BackendError, BackendOptions, ChatRequest, CompletionRequest, Generation, ModelFiles,
                   Rendered, RenderRequest, Unsupported, VocabInfo)
from .rendering import FIXED_DATE_STRING, capture

# llama.h enum llama_token_attr: LLAMA_TOKEN_ATTR_USER_DEFINED = 1 << 4
USER_DEFINED_ATTR = 1 << 4


class LlamaCppBackend:
    name = "llama-cpp-python"

    def __init__(self, model: ModelFiles | None, options: BackendOptions):
        import llama_cpp
        self._llama_cpp = llama_cpp
        self.options = options
        self.model = model
        self.llm = None
        self._formatters: dict[tuple, Any] = {}     # Jinja2ChatFormatter per template (render_prompt)
        caps = {RENDER}
        if model is not None and model.gguf is not None:
            try:
                self.llm = llama_cpp.Llama(
                    model_path=str(model.gguf), vocab_only=model.vocab_only, n_ctx=options.n_ctx,
                    n_threads=options.threads, n_threads_batch=options.threads, seed=options.seed,
                    verbose=False)
            except Exception as exc:  # llama-cpp-python raises ValueError for any load failure
                raise BackendError(f"llama-cpp-python could not load {model.gguf.name}: {exc}") from exc
            caps |= {TOKENIZE, DETOKENIZE, VOCAB}
            if not model.vocab_only:
                caps |= {COMPLETE, CHAT, STREAM, GRAMMAR, JSON_SCHEMA, TOOLS}
        self.capabilities = frozenset(caps)

    def info(self) -> dict[str, Any]:
        out = {"backend": self.name, "llama_cpp_python": self._llama_cpp.__version__,
               "system_info": self._llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
               "threads": self.options.threads, "seed": self.options.seed}
        if self.llm is not None:
            out["chat_format"] = self.llm.chat_format
        return out

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None

    # --- the model's template, as llama-cpp-python uses it ------------------------------
    @property
    def embedded_template(self) -> str | None:
        return self.llm.metadata.get("tokenizer.chat_template") if self.llm else None

    def _special_text(self, token_id: int) -> str:
        return self.llm._model.token_get_text(token_id) if token_id != -1 else ""

    def render_prompt(self, req: RenderRequest) -> Rendered:
        from llama_cpp import llama_chat_format
        template, bos, eos = req.template, req.bos_token, req.eos_token
        if template is None:
            if self.llm is None:
                raise Unsupported("no model and no template given")
            template = self.embedded_template
            if template is None:
                return Rendered(error=f"NoChatTemplate: the GGUF has none; llama-cpp-python falls back "
                                      f"to chat_format={self.llm.chat_format!r}")
            if self.llm.chat_format != "chat_template.default":
                # llama-cpp-python recognised the template and uses its hand-written formatter instead
                raise Unsupported(f"llama-cpp-python renders this model with its hand-written "
                                  f"'{self.llm.chat_format}' format, not the template")
            bos = self._special_text(self.llm.token_bos()) if bos is None else bos
            eos = self._special_text(self.llm.token_eos()) if eos is None else eos

        def run() -> str:
            # the formatter compiles its template when made and keeps nothing between calls:
            # one per (template, specials, generation prompt) for this backend, not one per render
            key = (template, eos or "", bos or "", req.add_generation_prompt)
            formatter = self._formatters.get(key)
            if formatter is None:
                formatter = llama_chat_format.Jinja2ChatFormatter(
                    template=template, eos_token=eos or "", bos_token=bos or "",
                    add_generation_prompt=req.add_generation_prompt)
                self._formatters[key] = formatter
            return formatter(messages=list(req.messages), tools=req.tools,
                             date_string=FIXED_DATE_STRING, **req.extra).prompt

        # Jinja2ChatFormatter turns the template's raise_exception into ValueError
        return capture(run, ValueError)

    # --- tokens --------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)

    def _check_ids(self, ids) -> None:
        """llama.cpp aborts the whole process (GGML_ASSERT) on an id outside the vocab, so an
        out-of-range id is refused here with a clear error instead."""
        n = self.llm.n_vocab()
        bad = [i for i in ids if not 0 <= int(i) < n]
        if bad:
            raise BackendError(f"token ids outside llama.cpp's vocab (n_vocab={n}): {bad[:10]}")

    def token_text(self, token_id: int) -> str:
        self._check_ids([token_id])
        return self.llm._model.token_get_text(token_id)

    def detokenize(self, ids: list[int], *, render_special: bool) -> str:
        self._check_ids(ids)
        return self.llm.detokenize(list(ids), special=render_special).decode("utf-8", errors="replace")

    def token_piece(self, token_id: int, *, render_special: bool) -> bytes:
        """The raw bytes of one token, through the C API with a buffer that always fits."""
        self._check_ids([token_id])
        lib = self._llama_cpp
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = lib.llama_token_to_piece(self.llm._model.vocab, token_id, buf, size, 0, render_special)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def token_pieces(self, ids: list[int], *, render_special: bool) -> list[bytes]:
        """token_piece of many ids: one range check, then the same C call per id (the piece
        check over a whole vocab spent most of its time in the Python around each call)."""
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        to_piece, vocab = self._llama_cpp.llama_token_to_piece, self.llm._model.vocab
        size = 64
        buf = ctypes.create_string_buffer(size)
        out = []
        for token_id in ids:
            n = to_piece(vocab, token_id, buf, size, 0, render_special)
            while n < 0:
                size = -n
                buf = ctypes.create_string_buffer(size)
                n = to_piece(vocab, token_id, buf, size, 0, render_special)
            out.append(buf.raw[:n])
        return out

    def vocab_info(self) -> VocabInfo:
        # computed once per backend: the EOG/control scans walk the whole vocab
        if getattr(self, "_vocab_info", None) is None:
            self._vocab_info = self._compute_vocab_info()
        return self._vocab_info

    def _compute_vocab_info(self) -> VocabInfo:
        lib, llm = self._llama_cpp, self.llm
        vocab = llm._model.vocab
        n_vocab = lib.llama_vocab_n_tokens(vocab)
        eog = [i for i in range(n_vocab) if lib.llama_vocab_is_eog(vocab, i)]
        control = [i for i in range(n_vocab) if lib.llama_vocab_is_control(vocab, i)]
        user_defined = [i for i in range(n_vocab) if lib.llama_vocab_get_attr(vocab, i) & USER_DEFINED_ATTR]

        def opt(v: int) -> int | None:
            return None if v < 0 else v
        return VocabInfo(
            n_vocab=n_vocab, reported_size=n_vocab, n_ids=n_vocab,
            bos_id=opt(lib.llama_vocab_bos(vocab)), eos_id=opt(lib.llama_vocab_eos(vocab)),
            eot_id=opt(lib.llama_vocab_eot(vocab)), pad_id=opt(lib.llama_vocab_pad(vocab)),
            add_bos=bool(lib.llama_vocab_get_add_bos(vocab)), add_eos=bool(lib.llama_vocab_get_add_eos(vocab)),
            eog_ids=eog, special_ids=control, embedding_rows=embedding_rows(self.model.gguf),
            extra={"metadata_keys": sorted(k for k in llm.metadata if k.startswith("tokenizer.")),
                   "user_defined_ids": user_defined})

    # --- generation ------------------------------------------------------------------------
    def _grammar(self, grammar: str | None, schema: dict | None):
        from llama_cpp import LlamaGrammar
        if grammar is not None:
            return LlamaGrammar.from_string(grammar, verbose=False)
        if schema is not None:
            import json
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        return None

    def complete(self, req: CompletionRequest) -> Generation:
        prompt = list(req.prompt) if isinstance(req.prompt, tuple) else req.prompt
        kwargs = dict(max_tokens=req.max_tokens, temperature=req.temperature, seed=req.seed,
                      stop=list(req.stop) or None, grammar=self._grammar(req.grammar, req.json_schema))
        if req.stop_ids:
            raise Unsupported("llama-cpp-python's create_completion takes no stop token ids")
        if req.render_special:
            # create_completion always detokenizes with special=False; only Llama.detokenize
            # (special=True) renders special tokens, so a request for rendered specials cannot be met
            raise Unsupported("llama-cpp-python's create_completion has no flag to render special tokens "
                              "(it detokenizes with special=False; Llama.detokenize(special=True) does)")
        self.llm.reset()
        if not req.stream:
            out = self.llm.create_completion(prompt, **kwargs)
            choice = out["choices"][0]
            return Generation(text=choice["text"], finish_reason=choice["finish_reason"],
                              info={"usage": out.get("usage")})
        chunks, finish = [], None
        for part in self.llm.create_completion(prompt, stream=True, **kwargs):
            choice = part["choices"][0]
            chunks.append(choice["text"])
            finish = choice.get("finish_reason") or finish
        return Generation(text="".join(chunks), finish_reason=finish, chunks=chunks)

    def chat(self, req: ChatRequest) -> Generation:
        kwargs: dict[str, Any] = dict(
            messages=list(req.messages), max_tokens=req.max_tokens, temperature=req.temperature,
            seed=req.seed, stop=list(req.stop) or None, response_format=req.response_format,
            grammar=self._grammar(req.grammar, None))
        if req.tools is not None:
            kwargs.update(tools=list(req.tools), tool_choice=req.tool_choice)
        self.llm.reset()
        info = {"chat_format": self.llm.chat_format}
        if not req.stream:
            out = self.llm.create_chat_completion(**kwargs)
            choice = out["choices"][0]
            msg = choice["message"]
            return Generation(text=msg.get("content") or "", finish_reason=choice["finish_reason"],
                              tool_calls=msg.get("tool_calls"), info=info)
        from .stream import normalise_stream
        gen = normalise_stream(list(self.llm.create_chat_completion(stream=True, **kwargs)), kind="chat")
        gen.info.update(info)
        return gen


@lru_cache(maxsize=None)
def embedding_rows(path) -> int | None:
    """Rows of the token embedding matrix as stored in the GGUF (None: no weights). Read once
    per file with the harness's streaming metadata reader (gguf.GGUFReader takes 5-15 s on
    large vocabularies)."""
    from harness.models.gguf import read_gguf
    shape = read_gguf(path).tensor_shape("token_embd.weight")
    return int(shape[-1]) if shape else None   # GGUF dims are innermost-first: [n_embd, n_vocab]
