"""llama.cpp's built-in chat templates: `llama_chat_apply_template`, C++ code that
recognises a template by heuristics and formats role/content messages without Jinja.

This is what llama.cpp uses when Jinja is off (llama-cli and llama-server without
--jinja), so it must agree with the template it claims to implement.
"""

from __future__ import annotations

import ctypes
from typing import Any

from .base import RENDER, BackendOptions, ModelFiles, Rendered, RenderRequest, Unsupported


class LlamaBuiltinTemplates:
    name = "llama.cpp-builtin"
    # llama.cpp's built-in formatters never write the BOS text: llama_tokenize adds the BOS
    # token itself when the vocab asks for it. Comparisons strip one leading BOS from the
    # reference for this renderer; the token-level check catches a doubled BOS.
    omits_bos_text = True

    def __init__(self, model: ModelFiles | None, options: BackendOptions):
        import llama_cpp
        self._lib = llama_cpp
        self.model = model
        self.options = options
        self._embedded: str | None = None
        if model is not None and model.gguf is not None:
            self._embedded = _read_gguf_template(model.gguf)
        self.capabilities = frozenset({RENDER})

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "llama_cpp_python": self._lib.__version__,
                "builtin_templates": self.builtin_names()}

    def close(self) -> None:
        pass

    def builtin_names(self) -> list[str]:
        n = self._lib.llama_chat_builtin_templates(None, 0)
        arr = (ctypes.c_char_p * n)()
        self._lib.llama_chat_builtin_templates(arr, n)
        return sorted(a.decode() for a in arr)

    def render_prompt(self, req: RenderRequest) -> Rendered:
        template = req.template if req.template is not None else self._embedded
        if template is None:
            raise Unsupported("no template to recognise (the model has none)")
        if req.tools or any(m.get("tool_calls") or m["role"] == "tool" for m in req.messages):
            raise Unsupported("llama.cpp's built-in templates take only role and content (no tools)")
        if any(not isinstance(m.get("content"), (str, type(None))) for m in req.messages):
            raise Unsupported("llama.cpp's built-in templates take only string content")
        lib = self._lib
        keep = [(m["role"].encode(), (m.get("content") or "").encode()) for m in req.messages]
        chat = (lib.llama_chat_message * len(keep))(*[lib.llama_chat_message(role=r, content=c) for r, c in keep])
        tmpl = template.encode()
        size = 4096 + sum(len(c) for _, c in keep) * 2
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = lib.llama_chat_apply_template(tmpl, chat, len(keep), req.add_generation_prompt, buf, size)
            if n < 0:
                raise Unsupported("llama_chat_apply_template does not recognise this template")
            if n <= size:
                return Rendered(text=buf.raw[:n].decode("utf-8", errors="replace"))
            size = n
        return Rendered(error="BufferError: template output kept growing")


def _read_gguf_template(path) -> str | None:
    from harness.models.gguf import read_gguf
    return read_gguf(path).chat_template
