"""llama.cpp's own chat layer, without weights: its Jinja engine (common/jinja/), the chat params
it derives from a template, and its message parser, through the chat probe
(harness/native/chat_probe.cpp) built from the same llama.cpp tree as llama-server.

The probe does what llama-server does with a chat request (tools/server/server-common.cpp) and
with the generated text (tools/server/server-task.cpp), so a render here is what llama-server's
/apply-template would give for the template, and a parse is what its /v1/chat/completions reply
(and its stream) would carry for that raw output.

options.extra: the same keys as llama-server's (llama_cpp_tree, built_server, cmake_options);
`server_binary` alone is not enough (the probe needs the build dir of a tree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timezone
from typing import Any

from harness.backends.base import (PARSE, RENDER, BackendError, BackendOptions, ModelFiles, Rendered,
                                   RenderRequest, Unsupported)
from harness.backends.rendering import FIXED_NOW   # the clock the in-process renderers freeze (UTC)
from harness.native.probe import BuiltProbe, ProbeCrashed, ProbeError, ProbeProcess, build_chat_probe

CAPABILITIES = frozenset({RENDER, PARSE})


@dataclass(frozen=True)
class ChatInputs:
    """What a chat request gives llama.cpp's chat layer besides the messages."""
    tool_choice: str = "auto"
    parallel_tool_calls: bool | None = None     # None: the template's capability (server default)
    # None: llama-server's own default (the probe reads them from the server's argument parser:
    # thinking on where the template supports it, reasoning_format auto/deepseek)
    reasoning_format: str | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)   # e.g. {"enable_thinking": False}


@dataclass
class Streamed:
    """One stream of pieces through the server's re-parse: the message an OpenAI client builds
    from the deltas, the server's own accumulated message, and an error that ended the stream."""
    client: dict[str, Any]
    final: dict[str, Any]
    error: str | None = None


@dataclass
class Parsed:
    """llama.cpp's parse of one raw output: non-streamed, and streamed as the server streams."""
    message: dict[str, Any]                    # content, reasoning_content, tool_calls
    streams: list[Streamed]
    params: dict[str, Any]


def is_template_rejection(message: str) -> bool:
    """llama.cpp's Jinja engine words the template's own raise_exception() "Jinja Exception: ..."."""
    return "Jinja Exception" in message or "raise_exception" in message


def apply_diffs(diffs: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Rebuild the message an OpenAI client sees from the server's deltas: content and
    reasoning_content concatenated; a tool call delta with a new index opens a call, later ones
    add to its name and arguments (the id is taken when sent)."""
    msg: dict[str, Any] = {"content": "", "reasoning_content": "", "tool_calls": []}
    for group in diffs:
        for d in group:
            msg["content"] += d.get("content", "")
            msg["reasoning_content"] += d.get("reasoning_content", "")
            tc = d.get("tool_call")
            if tc is None:
                continue
            calls = msg["tool_calls"]
            while len(calls) <= tc["index"]:
                calls.append({"name": "", "arguments": "", "id": ""})
            call = calls[tc["index"]]
            if tc.get("id"):
                call["id"] = tc["id"]
            call["name"] += tc.get("name", "")
            call["arguments"] += tc.get("arguments", "")
    return msg


class LlamaCppChatBackend:
    name = "llama.cpp-chat"
    capabilities = CAPABILITIES
    # The template writes the BOS text itself when it has bos_token in it, exactly as for the
    # transformers reference; nothing to strip.
    omits_bos_text = False

    def __init__(self, model: ModelFiles | None, options: BackendOptions):
        from harness.backends.server import resolve_server
        self.model, self.options = model, options
        self._embedded: str | None = None
        self._bos = self._eos = ""
        if model is not None and model.gguf is not None:
            from harness.gguf_meta import read_gguf
            meta = read_gguf(model.gguf)
            self._embedded = meta.chat_template
            self._bos = (meta.special.get("bos").text or "") if meta.special.get("bos") else ""
            self._eos = (meta.special.get("eos").text or "") if meta.special.get("eos") else ""
        extra = options.extra
        if extra.get("server_binary") and not extra.get("llama_cpp_tree"):
            raise Unsupported("llama.cpp-chat is built from a llama.cpp tree (--llama-cpp-tree); "
                              "--server-binary alone gives none")
        self.built = resolve_server(extra)
        self.probe: BuiltProbe = build_chat_probe(self.built)
        env = {k: v for k, v in self.probe.env().items() if not k.startswith("LLAMA_ARG_")}  # as for the server
        env = {**env, "HARNESS_FIXED_NOW": str(int(FIXED_NOW.replace(tzinfo=timezone.utc).timestamp())),
               "GGML_NO_BACKTRACE": "1"}          # an abort's message, not a gdb session, on stderr
        self._proc = ProbeProcess(self.probe.binary, env, timeout_s=options.timeout_s)
        self._version: dict[str, Any] | None = None

    # --- plumbing -------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        if self._version is None:
            try:
                self._version = self._proc.request({"op": "version"})
            except BackendError as exc:
                self._version = {"error": str(exc)}
        return {"backend": self.name, "llama_cpp_tree_hash": self.built.tree_hash, "server_key": self.built.key,
                "probe_source_sha256": self.probe.source_sha256, "build": self._version.get("build"),
                "chat_api": self._version.get("api")}

    def close(self) -> None:
        self._proc.close()

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        """One probe request; llama.cpp's exception raises ProbeError, a crash ProbeCrashed."""
        return self._proc.request(req)

    def _base(self, req: RenderRequest, inputs: ChatInputs | None) -> dict[str, Any]:
        template = req.template if req.template is not None else self._embedded
        if template is None:
            raise Unsupported("no chat template to render (the model has none)")
        inputs = inputs or ChatInputs()
        body: dict[str, Any] = {
            "template": template,
            "bos_token": req.bos_token if req.bos_token is not None else self._bos,
            "eos_token": req.eos_token if req.eos_token is not None else self._eos,
            "messages": req.messages, "add_generation_prompt": req.add_generation_prompt,
            "tool_choice": inputs.tool_choice,
            "chat_template_kwargs": {**inputs.chat_template_kwargs, **req.extra},
        }
        if inputs.reasoning_format is not None:
            body["reasoning_format"] = inputs.reasoning_format
        if req.tools is not None:
            body["tools"] = req.tools
        if inputs.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = inputs.parallel_tool_calls
        return body

    # --- capabilities ---------------------------------------------------------------------------
    def render_prompt(self, req: RenderRequest) -> Rendered:
        try:
            reply = self.request({"op": "render", **self._base(req, None)})
        except ProbeError as exc:
            msg = str(exc)
            rejected = is_template_rejection(msg)
            return Rendered(error=f"{'TemplateRejected' if rejected else 'ChatError'}: {msg}", rejected=rejected)
        return Rendered(text=reply["prompt"])

    def chat_params(self, req: RenderRequest, inputs: ChatInputs | None = None) -> dict[str, Any]:
        """What llama.cpp derives from the template for this request (format, grammar, triggers,
        preserved tokens, stops, generation prompt, thinking tags). Raises ProbeError/ProbeCrashed."""
        return self.request({"op": "render", **self._base(req, inputs)})["params"]

    def parse(self, req: RenderRequest, text: str, streams: list[list[str]] | None = None,
              inputs: ChatInputs | None = None) -> Parsed:
        """llama.cpp's parse of `text` generated after the prompt `req` renders; each of `streams`
        (a list of pieces) also streamed through the server's partial re-parse."""
        body = {"op": "parse", **self._base(req, inputs), "text": text, "streams": [list(s) for s in streams or []]}
        reply = self.request(body)
        return Parsed(message=reply["message"], params=reply["params"],
                      streams=[Streamed(apply_diffs(s["diffs"]), s["final"], s.get("error"))
                               for s in reply.get("streams", [])])

    def json_schema_to_grammar(self, schema: dict[str, Any]) -> str:
        return self.request({"op": "json_schema_to_grammar", "schema": schema})["grammar"]


__all__ = ["LlamaCppChatBackend", "ChatInputs", "Parsed", "Streamed", "apply_diffs", "is_template_rejection", "ProbeCrashed", "ProbeError"]
