"""The one small backend interface.

A backend wraps one inference stack (transformers, llama-cpp-python, llama.cpp's
built-in template code, llama-server, any OpenAI-compatible endpoint) for one model
(or for no model, for template-only cases). It declares what it can do as a set of
capability strings; a check family asks for a capability and skips, with the
backend's reason, where it is missing.

Backends are registered lazily by name (module path), so importing this module
never imports torch, transformers or llama_cpp.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol, runtime_checkable

# --- capabilities -------------------------------------------------------------
RENDER = "render"              # render_prompt(): render a chat template (given, or the model's own)
TOKENIZE = "tokenize"          # tokenize()
DETOKENIZE = "detokenize"      # detokenize(), token_piece()
VOCAB = "vocab"                # vocab_info()
COMPLETE = "complete"          # complete(): raw text completion
CHAT = "chat"                  # chat(): chat completion through the stack's own chat path
STREAM = "stream"              # requests with stream=True are honoured
GRAMMAR = "grammar"            # GBNF grammars
JSON_SCHEMA = "json_schema"    # JSON-schema constrained output
STOP_IDS = "stop_ids"          # stops given as token ids
TOOLS = "tools"                # chat() with tools / tool_choice
TIMINGS = "timings"            # Generation.timings carries the backend's own figures
PARSE = "parse"                # parse_chat(): the stack's own parse of raw model output

ALL_CAPABILITIES = frozenset({RENDER, TOKENIZE, DETOKENIZE, VOCAB, COMPLETE, CHAT, STREAM,
                              GRAMMAR, JSON_SCHEMA, STOP_IDS, TOOLS, TIMINGS, PARSE})


class BackendError(Exception):
    """The backend could not do what was asked (load failure, crash, HTTP error)."""


class Unsupported(BackendError):
    """This backend cannot do this particular request; the check skips with `reason`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TemplateRejected(Exception):
    """The chat template itself refused the conversation (raise_exception(...))."""


# --- what a backend is opened on ----------------------------------------------------
@dataclass(frozen=True)
class ModelFiles:
    """Resolved, verified local files for one model (see harness.sources)."""
    key: str                                  # the case id, e.g. "smollm2-135m-instruct"
    gguf: Path | None = None                  # verified GGUF (weights or vocab-only)
    gguf_sha256: str | None = None
    vocab_only: bool = False                  # True: no usable weights, load vocab only
    hf_tokenizer_dir: Path | None = None      # folder with tokenizer.json / tokenizer_config.json
    hf_from_gguf: bool = True                 # else no HF tokenizer without hf_tokenizer_dir
    hf_tokenizer_missing: str | None = None   # why the case's hub tokenizer did not resolve
    chat_template_file: Path | None = None    # template override (else the model's own)


@dataclass(frozen=True)
class BackendOptions:
    """Determinism knobs, recorded with every result."""
    threads: int = 1
    seed: int = 1234
    n_ctx: int = 2048
    timeout_s: float = 120.0
    extra: dict[str, Any] = field(default_factory=dict)


# --- requests and results -------------------------------------------------------
@dataclass(frozen=True)
class RenderRequest:
    messages: list[dict[str, Any]]
    add_generation_prompt: bool = True
    tools: list[dict[str, Any]] | None = None
    template: str | None = None        # None: the model's own template
    bos_token: str | None = None       # None: the model's own
    eos_token: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)   # extra template variables


@dataclass
class Rendered:
    """Outcome of rendering. Exactly one of text / error is set."""
    text: str | None = None
    error: str | None = None           # "TemplateRejected: ..." or "<ExcType>: ..."
    rejected: bool = False             # the template's own raise_exception fired

    def as_golden(self) -> dict[str, Any]:
        if self.text is not None:
            return {"prompt": self.text}
        return {"error": self.error, "rejected_by_template": self.rejected}


@dataclass
class VocabInfo:
    n_vocab: int | None                # GGUF / llama.cpp n_vocab
    reported_size: int | None          # the tokenizer's own vocab_size
    n_ids: int | None                  # ids it can actually produce (len(tokenizer) / max id + 1)
    bos_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None
    pad_id: int | None = None
    add_bos: bool | None = None
    add_eos: bool | None = None
    eog_ids: list[int] = field(default_factory=list)
    special_ids: list[int] = field(default_factory=list)
    embedding_rows: int | None = None  # where weights exist
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str | tuple[int, ...]
    max_tokens: int = 64
    temperature: float = 0.0
    seed: int = 1234
    stop: tuple[str, ...] = ()
    stop_ids: tuple[int, ...] = ()
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None
    render_special: bool = False
    stream: bool = False


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[dict[str, Any], ...]
    max_tokens: int = 64
    temperature: float = 0.0
    seed: int = 1234
    stop: tuple[str, ...] = ()
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    grammar: str | None = None
    stream: bool = False


@dataclass
class Generation:
    text: str
    finish_reason: str | None
    tokens: list[int] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    chunks: list[str] | None = None    # the streamed deltas, in order, when streamed
    timings: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)   # e.g. chat format fallen back to

    def as_golden(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "finish_reason": self.finish_reason}
        if self.tool_calls is not None:
            out["tool_calls"] = self.tool_calls
        return out


# --- the protocol ---------------------------------------------------------------
@runtime_checkable
class Backend(Protocol):
    """Constructed as Backend(model: ModelFiles | None, options: BackendOptions)."""
    name: str
    capabilities: frozenset[str]

    def info(self) -> dict[str, Any]:
        """Version and build (library version, llama.cpp commit or tree hash, threads...)."""

    def close(self) -> None: ...

    # Each method below is present only where its capability is declared.
    # render_prompt(RenderRequest) -> Rendered
    # tokenize(text: str, *, add_special: bool, parse_special: bool) -> list[int]
    # detokenize(ids: list[int], *, render_special: bool) -> str
    # token_piece(id: int, *, render_special: bool) -> bytes
    # vocab_info() -> VocabInfo
    # complete(CompletionRequest) -> Generation
    # chat(ChatRequest) -> Generation


def require(backend: Backend, capability: str) -> str | None:
    """None if the backend has the capability, else a human reason to skip."""
    if capability in backend.capabilities:
        return None
    return f"{backend.name} has no '{capability}' capability"


# --- lazy registry -----------------------------------------------------------------
_REGISTRY: dict[str, str] = {
    "hf": "harness.backends.hf:HFBackend",
    "llama-cpp-python": "harness.backends.llama_cpp:LlamaCppBackend",
    "llama.cpp-builtin": "harness.backends.llama_builtin:LlamaBuiltinTemplates",
    "llama-server": "harness.backends.server:ServerBackend",
    "llama.cpp-chat": "harness.backends.llama_chat:LlamaChatBackend",
    "openai": "harness.backends.openai_compat:OpenAICompatBackend",
    "llama-cpp-python-server": "harness.backends.lcp_server:LlamaCppServerBackend",
}


def backend_names() -> list[str]:
    return list(_REGISTRY)


def backend_targets() -> dict[str, str]:
    """name -> "module:Class" of every registered backend (nothing imported)."""
    return dict(_REGISTRY)


def register(name: str, target: str) -> None:
    _REGISTRY[name] = target


def backend_class(name: str) -> type:
    try:
        target = _REGISTRY[name]
    except KeyError:
        import difflib
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise KeyError(f"unknown backend '{name}'{hint}; known: {', '.join(_REGISTRY)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def ensure_capabilities(caps: Iterable[str]) -> frozenset[str]:
    caps = frozenset(caps)
    unknown = caps - ALL_CAPABILITIES
    if unknown:
        raise ValueError(f"unknown capabilities: {sorted(unknown)}")
    return caps
