"""llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`), started per model.

A third, independent server implementation (its own FastAPI layer, chat handlers, stop handling
and tool-call path over the same llama.cpp), driven through the `openai` backend's two endpoints.
The process is handled like llama-server's (harness/run/server_process.py): a free loopback port,
its own process group, readiness polled (on /v1/models: it has no /health), stopped at close(),
at exit and on SIGTERM/SIGINT, and the log tail in every start failure.

Capabilities, as read from llama_cpp/server/app.py and llama_chat_format.py (0.3.36):
  * /v1/completions and /v1/chat/completions, streamed or not; `stop`; `seed`; `grammar` (a GBNF
    string, on both endpoints); `response_format` {"type": "json_object", "schema"} on chat;
  * tools: the default (GGUF-template) chat handler forces a call only for a *named* tool_choice
    (a grammar from that function's parameters); "required" gets no grammar and no parsing, the
    same library code as the in-process backend, so it is run and its defect declared in the case
    (the chatml-function-calling / functionary handlers need a --chat_format, not started here).
  * not through this backend: /extras/tokenize (not an OpenAI endpoint), logit_bias, token ids.

If the `[server]` extra (fastapi, uvicorn, sse-starlette, starlette-context, pydantic-settings) is
not importable, construction raises Unsupported with that one reason: its checks skip.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from harness.backends.base import (CHAT, COMPLETE, GRAMMAR, JSON_SCHEMA, RENDER, STREAM, TOOLS,
                                   BackendError, BackendOptions, ModelFiles, Rendered, RenderRequest,
                                   Unsupported)
from harness.backends.openai_compat import OpenAICompatBackend
from harness.run.server_process import ServerProcess

NAME = "llama-cpp-python-server"
CAPABILITIES = frozenset({CHAT, COMPLETE, STREAM, GRAMMAR, JSON_SCHEMA, TOOLS})
# the [server] extra of llama-cpp-python 0.3.36 (its pyproject), by import name
SERVER_MODULES = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings", "yaml")


def missing_server_modules() -> list[str]:
    return [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]


def server_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("llama-cpp-python", "fastapi", "uvicorn", "sse-starlette", "starlette"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def server_args(model: ModelFiles, options: BackendOptions) -> list[str]:
    """The command line after the interpreter (ServerProcess appends --host/--port)."""
    assert model.gguf is not None
    args = ["-m", "llama_cpp.server", "--model", str(model.gguf), "--n_ctx", str(options.n_ctx),
            "--n_threads", str(options.threads), "--n_threads_batch", str(options.threads),
            "--seed", str(options.seed), "--verbose", "False"]
    # no --chat-template-file option: the server always renders the GGUF's embedded template
    return args + [str(a) for a in options.extra.get("lcp_server_args", ())]


class LlamaCppServerBackend(OpenAICompatBackend):
    name = NAME

    def __init__(self, model: ModelFiles | None, options: BackendOptions):
        missing = missing_server_modules()
        if missing:
            raise Unsupported(f"{NAME}: llama-cpp-python's [server] extra is not installed "
                              f"(cannot import {', '.join(missing)}); `make setup` installs it")
        if importlib.util.find_spec("llama_cpp") is None:
            raise Unsupported(f"{NAME}: llama-cpp-python is not installed")
        if model is None or model.gguf is None:
            raise Unsupported(f"{NAME} needs a GGUF model (none given)")
        if model.vocab_only:
            raise Unsupported(f"{NAME} cannot serve a vocab-only GGUF (it loads weights)")
        self.args = server_args(model, options)
        timeout = float(options.extra.get("start_timeout_s", max(120.0, options.timeout_s)))
        self.proc = ServerProcess(sys.executable, self.args, env=dict(os.environ), start_timeout_s=timeout,
                                  health_path="/v1/models", bind_error="address already in use")
        self.proc.start()
        extra = {k: v for k, v in options.extra.items() if k not in ("base_url", "capabilities", "model", "api_key")}
        extra.update(base_url=self.proc.url, capabilities=sorted(CAPABILITIES))
        try:
            super().__init__(model, dataclasses.replace(options, extra=extra))
        except BaseException:
            self.proc.stop()
            raise
        # RENDER only for chat_prompt (endpoint agreement, grammars on /v1/completions): the
        # server's own chat prompt, by the same library code from the same GGUF (see render_prompt)
        self.capabilities = CAPABILITIES | {RENDER}
        self._formatter: Any = None

    def render_prompt(self, req: RenderRequest) -> Rendered:
        """The prompt /v1/chat/completions builds: llama_cpp.Llama.__init__ (the server's model
        load, no --chat_format) wraps the GGUF's tokenizer.chat_template in a Jinja2ChatFormatter
        with the model's bos/eos texts, unless guess_chat_format_from_gguf_metadata recognises it
        as a built-in format. Rebuilt here the same way over a vocab-only load of the same file."""
        if req.template is not None or req.tools is not None or req.extra:
            raise Unsupported(f"{NAME} renders only the GGUF's embedded template, without tools")
        if self._formatter is None:
            self._formatter = _server_formatter(str(self.model.gguf))
        try:
            return Rendered(text=self._formatter(messages=list(req.messages)).prompt)
        except Exception as e:                  # the template's own error
            return Rendered(error=f"{type(e).__name__}: {e}", rejected="raise_exception" in str(e))

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update(backend=NAME, mode="spawned", server_args=self.args, versions=server_versions(),
                   server_version=f"llama-cpp-python {server_versions()['llama-cpp-python']} (llama_cpp.server)",
                   threads=self.options.threads, n_ctx=self.options.n_ctx,
                   ignored_env=self.proc.stripped_env)
        return out

    def log_tail(self, n: int = 400) -> list[str]:
        return self.proc.log_tail(n).splitlines()

    def processes(self) -> list[ServerProcess]:
        return [self.proc]

    def close(self) -> None:
        self.proc.stop()
        super().close()


def _server_formatter(gguf: str) -> Any:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter, guess_chat_format_from_gguf_metadata
    llm = Llama(model_path=gguf, vocab_only=True, verbose=False)
    try:
        template = llm.metadata.get("tokenizer.chat_template")
        if template is None:
            raise Unsupported(f"{NAME}: the GGUF has no chat template (the server falls back to 'llama-2')")
        guessed = guess_chat_format_from_gguf_metadata(llm.metadata)
        if guessed is not None:
            raise Unsupported(f"{NAME} uses its built-in chat format {guessed!r} for this template")

        def text(tid: int) -> str:
            return llm.detokenize([tid], special=True).decode("utf-8", "replace") if tid != -1 else ""
        eos, bos = llm.token_eos(), llm.token_bos()
        return Jinja2ChatFormatter(template=template, eos_token=text(eos), bos_token=text(bos),
                                   stop_token_ids=[eos])
    except (ValueError, RuntimeError) as e:
        raise BackendError(f"{NAME}: could not read the chat template of {gguf}: {e}") from None
    finally:
        llm.close()
