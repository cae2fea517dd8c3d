"""Hugging Face tokenizers through transformers: the reference side.

Built from a hub folder (tokenizer.json + tokenizer_config.json) or, offline, from the
GGUF itself via `gguf_file=` (transformers converts the GGUF vocab and keeps its chat
template; that path needs torch). Template-only cases (no model) can still render.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import (DETOKENIZE, RENDER, TOKENIZE, VOCAB, BackendError, BackendOptions, ModelFiles,
                   Rendered, RenderRequest, Unsupported, VocabInfo)
from .hf_failures import conversion_failure, read_failure, write_failure
from .rendering import FIXED_DATE_STRING, capture


class HFBackend:
    name = "hf"

    def __init__(self, model: ModelFiles | None, options: BackendOptions):
        import transformers
        self._transformers = transformers
        self.options = options
        self.model = model
        self.tokenizer = None
        self.source = None
        if model is not None and model.hf_tokenizer_missing and not model.hf_from_gguf:
            raise BackendError(model.hf_tokenizer_missing)      # the case allows no fallback
        if model is not None and (model.hf_tokenizer_dir or (model.gguf and model.hf_from_gguf)):
            self.tokenizer, self.source = self._load(model)
            if model.hf_tokenizer_missing:                    # recorded with every result
                self.source += f" (fallback: {model.hf_tokenizer_missing})"
        self.capabilities = frozenset({RENDER} | ({TOKENIZE, DETOKENIZE, VOCAB} if self.tokenizer else set()))

    @staticmethod
    def _load(model: ModelFiles):
        from transformers import AutoTokenizer
        try:
            if model.hf_tokenizer_dir:
                return AutoTokenizer.from_pretrained(str(model.hf_tokenizer_dir)), f"hub:{model.hf_tokenizer_dir}"
            return from_gguf_cached(model), "gguf_file"
        except Exception as exc:  # transformers raises many types for unsupported vocabs
            if model.hf_tokenizer_dir:
                raise BackendError(f"transformers could not load the tokenizer of {model.key}: "
                                   f"{type(exc).__name__}: {exc}") from exc
            # checks that need the HF side skip, with transformers' own words as the reason
            name, text = conversion_failure(exc)
            first = text.strip().splitlines()[0][:300] if text.strip() else ""
            raise Unsupported(f"transformers {_tf_version()} cannot build a tokenizer from this GGUF: "
                              f"{name}: {first}") from exc

    def info(self) -> dict[str, Any]:
        import tokenizers
        return {"backend": self.name, "transformers": self._transformers.__version__,
                "tokenizers": tokenizers.__version__, "tokenizer_source": self.source}

    def close(self) -> None:
        self.tokenizer = None

    # --- render ---------------------------------------------------------------------
    def render_prompt(self, req: RenderRequest) -> Rendered:
        import jinja2
        from transformers.utils.chat_template_utils import render_jinja_template

        template = req.template
        if template is None:
            template = getattr(self.tokenizer, "chat_template", None)
            if not template:
                return Rendered(error="NoChatTemplate: the tokenizer has no chat template")
        variables: dict[str, Any] = {"date_string": FIXED_DATE_STRING, **req.extra}
        if self.tokenizer is not None and req.template is None:
            # the public path users take: special tokens come from the tokenizer
            def run() -> str:
                return self.tokenizer.apply_chat_template(
                    list(req.messages), tools=req.tools, add_generation_prompt=req.add_generation_prompt,
                    tokenize=False, **variables)
        else:
            variables.update(bos_token=req.bos_token or "", eos_token=req.eos_token or "")

            def run() -> str:
                rendered, _ = render_jinja_template(
                    conversations=[list(req.messages)], tools=req.tools, chat_template=template,
                    add_generation_prompt=req.add_generation_prompt, **variables)
                return rendered[0]
        return capture(run, jinja2.exceptions.TemplateError)  # transformers' raise_exception

    # --- tokens ------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        # HF always parses added/special tokens in text; `split_special_tokens=True` turns that off
        return list(self.tokenizer.encode(text, add_special_tokens=add_special,
                                          split_special_tokens=not parse_special))

    def detokenize(self, ids: list[int], *, render_special: bool) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=not render_special)

    def token_pieces(self, ids: list[int], *, render_special: bool) -> list[str]:
        """Each id decoded on its own, many in one call: the decode of the Rust tokenizer that
        transformers' decode() calls, without its Python wrapper per id (which adds only the
        clean-up of spaces some tokenizers ask for). For the every-id check, which looks for
        errors: a batch that raises is split down to detokenize([id]) calls."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:              # a slow (Python) tokenizer: one decode per id
            return [self.detokenize([int(i)], render_special=render_special) for i in ids]
        return backend.decode_batch([[int(i)] for i in ids], skip_special_tokens=not render_special)

    def detokenize_stream(self, ids: list[int], *, render_special: bool) -> list[str]:
        """Token by token with previous-token context, as llama-cpp-python's
        LlamaHFTokenizer.detokenize(prev_tokens=...) does."""
        from llama_cpp.llama_tokenizer import LlamaHFTokenizer
        hf = LlamaHFTokenizer(self.tokenizer)
        pieces = []
        for i in range(len(ids)):
            pieces.append(hf.detokenize([ids[i]], prev_tokens=list(ids[:i]) or None,
                                        special=render_special).decode("utf-8", errors="replace"))
        return pieces

    def vocab_info(self) -> VocabInfo:
        tok = self.tokenizer
        added = tok.get_added_vocab()
        specials = sorted({i for i in tok.all_special_ids if i is not None})
        return VocabInfo(
            n_vocab=None, reported_size=tok.vocab_size, n_ids=max([len(tok), *(i + 1 for i in added.values())]),
            bos_id=tok.bos_token_id, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
            add_bos=getattr(tok, "add_bos_token", None), add_eos=getattr(tok, "add_eos_token", None),
            special_ids=specials,
            extra={"bos_token": tok.bos_token, "eos_token": tok.eos_token, "pad_token": tok.pad_token,
                   "len": len(tok)})


def from_gguf_cached(model: ModelFiles):
    """transformers' GGUF -> tokenizer conversion takes 5-60 s per vocab (it parses the whole
    GGUF in Python). The converted tokenizer object is pickled once per machine, keyed by
    transformers version and the GGUF's sha256, and later sessions unpickle it in ~0.2 s, but
    only when the copy behaves as the conversion did (special_fingerprint, checked when written
    and when read); otherwise every process converts, as a user's does.

    Pickle, not save_pretrained(): a tokenizer saved to files and loaded back through its
    class is NOT the same tokenizer (seen: Qwen2's reloaded tokenizer gains an NFC normaliser
    the converted one does not have), and a cache must not change what is being tested.
    The pickles are the harness's own files in its own cache folder."""
    import os
    import pickle
    import tempfile

    import transformers
    from filelock import FileLock
    from transformers import AutoTokenizer

    from harness.models.sources import cache_root
    if not model.gguf_sha256:
        return AutoTokenizer.from_pretrained(str(model.gguf.parent), gguf_file=model.gguf.name)
    # "v2": (tokenizer, fingerprint) pairs; earlier bare pickles are not read
    target = cache_root() / "hf-from-gguf" / "v2" / transformers.__version__ / f"{model.gguf_sha256}.pkl"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        failed = read_failure(target)
        if failed is not None:          # this transformers could not convert this GGUF before
            raise failed
        if target.exists():
            with open(target, "rb") as f:
                tok, fingerprint = pickle.load(f)
            if fingerprint is not None and special_fingerprint(tok) == fingerprint:
                return tok
            # unfaithful (or marked so when it was written): convert, as a user's process does
            return AutoTokenizer.from_pretrained(str(model.gguf.parent), gguf_file=model.gguf.name)
        try:
            tok = AutoTokenizer.from_pretrained(str(model.gguf.parent), gguf_file=model.gguf.name)
        except Exception as exc:
            write_failure(target, exc)
            raise
        fingerprint = special_fingerprint(tok)
        copy = pickle.loads(pickle.dumps(tok, protocol=pickle.HIGHEST_PROTOCOL))
        faithful = special_fingerprint(copy) == fingerprint
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
        with os.fdopen(fd, "wb") as f:
            # an unfaithful copy is kept only as the record that this vocab must be converted
            pickle.dump((tok if faithful else None, fingerprint if faithful else None), f,
                        protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, target)
        return tok


def special_fingerprint(tok) -> list:
    """How the tokenizer encodes each of its added tokens' texts with split_special_tokens on and
    off. A pickled copy must give the same, or it is not the tokenizer a user's process builds:
    the Rust tokenizer keeps tokens added as special in its split set even when transformers then
    marks them non-special, and a copy rebuilt from the serialized state loses that (phi-3's
    '</s>': the fresh conversion splits it with split_special_tokens=True, a pickled copy maps it
    to id 2)."""
    return [(i, tok.encode(t.content, add_special_tokens=False, split_special_tokens=True),
             tok.encode(t.content, add_special_tokens=False, split_special_tokens=False))
            for i, t in sorted(tok.added_tokens_decoder.items())]


def _tf_version() -> str:
    import transformers
    return transformers.__version__
