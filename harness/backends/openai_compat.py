"""Any OpenAI-compatible endpoint (llamafile, koboldcpp, ollama, vLLM, llama-server ...).

Only `/v1/chat/completions` and `/v1/completions` are used, because those are the only
endpoints such servers share. What a given server can do is not discoverable through
them, so the user declares it: `options.extra["capabilities"]` (default chat + stream).
A request needing an undeclared capability raises `Unsupported`.

Also home of the small JSON-over-HTTP client that the llama-server backend shares.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import requests

from harness.backends.base import (CHAT, COMPLETE, GRAMMAR, JSON_SCHEMA, STREAM, TIMINGS, TOOLS,
                                   BackendError, BackendOptions, ChatRequest, CompletionRequest,
                                   Generation, ModelFiles, Unsupported, ensure_capabilities)
from harness.backends.stream import StreamAccumulator, generation_from_reply, iter_sse_events

# Capabilities this backend can serve through the two OpenAI endpoints at all.
POSSIBLE = frozenset({CHAT, COMPLETE, STREAM, TOOLS, JSON_SCHEMA, GRAMMAR, TIMINGS})
DEFAULT_CAPABILITIES = frozenset({CHAT, STREAM})


class HttpError(BackendError):
    """The server answered with an error status."""

    def __init__(self, path: str, status: int, message: str):
        super().__init__(f"HTTP {status} from {path}: {message}")
        self.path, self.status, self.message = path, status, message


class ConnectError(BackendError):
    """No answer at all (refused, reset, cut off mid-body)."""


def error_message(resp: requests.Response) -> str:
    """The server's own error text: OpenAI/llama.cpp {"error": {"message"}} or the raw body."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:1000] or resp.reason or ""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message", err))
    return str(err if err is not None else body)[:1000]


class HttpClient:
    """JSON over HTTP with the harness's error types."""

    def __init__(self, base_url: str, timeout_s: float, headers: dict[str, str] | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.trust_env = False           # never route loopback calls through a proxy
        self.session.headers.update(headers or {})

    def request(self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None) -> Any:
        try:
            resp = self.session.request(method, self.base_url + path, json=body,
                                        timeout=timeout_s or self.timeout_s)
        except requests.RequestException as e:
            raise ConnectError(f"{method} {path} failed: {type(e).__name__}: {e}") from None
        if resp.status_code != 200:
            raise HttpError(path, resp.status_code, error_message(resp))
        try:
            return resp.json()
        except ValueError:
            raise BackendError(f"{path} answered with non-JSON: {resp.text[:300]!r}") from None

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Any:
        return self.request("POST", path, body, **kw)

    @contextmanager
    def post_stream(self, path: str, body: Any) -> Iterator[Iterator[bytes]]:
        """Yields the response's lines as they arrive (SSE).

        `Connection: close`: llama-server answers SSE with `Keep-Alive` but closes the
        socket after the stream, so a pooled reuse fails with RemoteDisconnected.
        """
        try:
            resp = self.session.post(self.base_url + path, json=body, stream=True,
                                     timeout=self.timeout_s, headers={"Connection": "close"})
        except requests.RequestException as e:
            raise ConnectError(f"POST {path} (stream) failed: {type(e).__name__}: {e}") from None
        try:
            if resp.status_code != 200:
                raise HttpError(path, resp.status_code, error_message(resp))
            yield _guard(resp.iter_lines(chunk_size=None), path)
        finally:
            resp.close()

    def close(self) -> None:
        self.session.close()


def _guard(lines: Iterator[bytes], path: str) -> Iterator[bytes]:
    try:
        yield from lines
    except requests.RequestException as e:       # connection dropped mid-stream
        raise ConnectError(f"stream from {path} broke off: {type(e).__name__}: {e}") from None


def stream_generation(http: HttpClient, path: str, body: dict[str, Any], kind: str) -> Generation:
    """POST with stream=true and normalise the SSE reply (shared by both backends)."""
    acc = StreamAccumulator(kind)
    with http.post_stream(path, body) as lines:
        for event in iter_sse_events(lines):
            acc.feed(event)
    return acc.result()


def chat_body(req: ChatRequest, model: str | None) -> dict[str, Any]:
    """The OpenAI chat request for a ChatRequest (fields left out when unset)."""
    body: dict[str, Any] = {"messages": list(req.messages), "max_tokens": req.max_tokens,
                            "temperature": req.temperature, "seed": req.seed, "stream": req.stream}
    if model:
        body["model"] = model
    if req.stop:
        body["stop"] = list(req.stop)
    if req.tools is not None:
        body["tools"] = list(req.tools)
    if req.tool_choice is not None:
        body["tool_choice"] = req.tool_choice
    if req.response_format is not None:
        body["response_format"] = req.response_format
    if req.grammar is not None:
        body["grammar"] = req.grammar            # llama.cpp-family extension
    return body


class OpenAICompatBackend:
    name = "openai"

    def __init__(self, model: ModelFiles | None, options: BackendOptions):
        self.model, self.options = model, options
        extra = options.extra
        base = extra.get("base_url")
        if not base:
            raise BackendError("the openai backend needs options.extra['base_url'] "
                               "(e.g. http://127.0.0.1:8080 or http://127.0.0.1:11434/v1)")
        base = str(base).rstrip("/")
        self.base_url = base if base.endswith("/v1") else base + "/v1"
        caps = ensure_capabilities(extra.get("capabilities") or DEFAULT_CAPABILITIES)
        if caps - POSSIBLE:
            raise ValueError(f"the openai backend cannot provide {sorted(caps - POSSIBLE)} through "
                             f"/v1/chat/completions and /v1/completions")
        self.capabilities = caps
        headers = {"Authorization": f"Bearer {extra['api_key']}"} if extra.get("api_key") else {}
        self.http = HttpClient(self.base_url, options.timeout_s, headers)
        self.model_name: str | None = extra.get("model")

    # --- helpers ---
    def _need(self, cap: str, what: str) -> None:
        if cap not in self.capabilities:
            raise Unsupported(f"{what} needs the '{cap}' capability, not declared for {self.base_url}")

    def _model(self) -> str:
        """The `model` field: declared, else the server's first listed model (ollama needs it)."""
        if self.model_name is None:
            try:
                data = self.http.get("/models").get("data") or []
                self.model_name = str(data[0]["id"]) if data else ""
            except (BackendError, AttributeError, KeyError, TypeError, IndexError):
                self.model_name = ""
        return self.model_name

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.name, "base_url": self.base_url,
                               "model": self._model() or None,
                               "capabilities": sorted(self.capabilities),
                               "seed": self.options.seed}
        try:
            out["models"] = self.http.get("/models")
        except BackendError as e:
            out["models_error"] = str(e)
        return out

    def close(self) -> None:
        self.http.close()

    # --- generation ---
    def chat(self, req: ChatRequest) -> Generation:
        self._need(CHAT, "chat")
        if req.stream:
            self._need(STREAM, "a streamed request")
        if req.tools or req.tool_choice is not None:
            self._need(TOOLS, "tools / tool_choice")
        if req.response_format is not None:
            self._need(JSON_SCHEMA, "response_format")
        if req.grammar is not None:
            self._need(GRAMMAR, "a GBNF grammar")
        body = chat_body(req, self._model())
        if req.stream:
            return stream_generation(self.http, "/chat/completions", body, "chat")
        return generation_from_reply(self.http.post("/chat/completions", body), "chat")

    def complete(self, req: CompletionRequest) -> Generation:
        self._need(COMPLETE, "a raw completion")
        if req.stream:
            self._need(STREAM, "a streamed request")
        if req.stop_ids:
            raise Unsupported("/v1/completions has no stop-by-token-id parameter")
        if req.render_special:
            raise Unsupported("/v1/completions has no flag to render special tokens")
        if req.json_schema is not None:
            raise Unsupported("/v1/completions has no standard JSON-schema field")
        body: dict[str, Any] = {
            "prompt": req.prompt if isinstance(req.prompt, str) else list(req.prompt),
            "max_tokens": req.max_tokens, "temperature": req.temperature, "seed": req.seed,
            "stream": req.stream}
        if self._model():
            body["model"] = self._model()
        if req.stop:
            body["stop"] = list(req.stop)
        if req.grammar is not None:
            self._need(GRAMMAR, "a GBNF grammar")
            body["grammar"] = req.grammar
        if req.stream:
            return stream_generation(self.http, "/completions", body, "oai_completion")
        return generation_from_reply(self.http.post("/completions", body), "oai_completion")
