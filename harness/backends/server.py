"""llama.cpp's `llama-server`, driven over HTTP.

One server process per (model, template override, --special) is started on a free
loopback port, in its own process group, and stopped at close(), at interpreter exit
and on SIGTERM/SIGINT, so no orphan outlives the harness. `options.extra["server_url"]`
attaches to a server the user runs instead (never stopped by us).

Where the server can only do something server-wide, that is reflected honestly:
  * /apply-template uses the template the server was started with (no per-request
    template), so a RenderRequest with another template raises Unsupported;
  * rendering special tokens in generated text is the `--special` CLI flag, so such a
    completion goes to a sibling server started with it;
  * /detokenize always renders special tokens (there is no flag), so
    render_special=False raises Unsupported.
Other behaviour worth knowing (read from tools/server/*.cpp, checked against the build):
  * /apply-template honours messages, tools, tool_choice, add_generation_prompt
    (default true), chat_template_kwargs, continue_final_message; but a trailing
    assistant message is continued (no end-of-turn) unless the server runs with
    --no-prefill-assistant, and templates without a system role get the system text
    merged into the first user turn;
  * /tokenize: add_special defaults false, parse_special defaults *true*; `content` may
    hold token ids, and with_pieces returns non-UTF-8 pieces as byte lists (token_piece
    uses that);
  * /completion tokenizes a string prompt with add_special and parse_special on.

options.extra keys: server_url | built_server | server_binary | llama_cpp_tree (else
$HARNESS_LLAMA_CPP_TREE), cmake_options, server_args (extra CLI args),
start_timeout_s, cache_prompt (default False: KV reuse changes batch shapes and so,
slightly, the numbers).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable, NoReturn

from harness.backends.base import (CHAT, COMPLETE, DETOKENIZE, GRAMMAR, JSON_SCHEMA, RENDER,
                                   STREAM, TIMINGS, TOKENIZE, TOOLS, VOCAB, BackendError,
                                   BackendOptions, ChatRequest, CompletionRequest, Generation,
                                   ModelFiles, Rendered, RenderRequest, Unsupported, VocabInfo)
from harness.backends.openai_compat import (ConnectError, HttpClient, HttpError, chat_body,
                                            stream_generation)
from harness.backends.stream import generation_from_reply
from harness.models.sources import file_sha256
from harness.run.server_build import BuiltServer, build_llama_server, server_version
from harness.run.server_process import ServerProcess, describe_exit

CAPABILITIES = frozenset({RENDER, TOKENIZE, DETOKENIZE, VOCAB, COMPLETE, CHAT, STREAM,
                          GRAMMAR, JSON_SCHEMA, TOOLS, TIMINGS})


def resolve_server(extra: dict[str, Any], log: Callable[[str], None] = print,
                   build: bool | None = None) -> BuiltServer:
    """The binary to run: given, prebuilt by path, or built from a llama.cpp tree."""
    if isinstance(extra.get("built_server"), BuiltServer):
        return extra["built_server"]
    if extra.get("server_binary"):
        binary = Path(extra["server_binary"]).resolve()
        if not binary.is_file():
            raise BackendError(f"llama-server binary {binary} does not exist")
        return BuiltServer(binary=binary, lib_dir=binary.parent, tree_hash=extra.get("tree_hash", ""),
                           options={}, build_dir=binary.parent,
                           version=server_version(binary, binary.parent))
    tree = extra.get("llama_cpp_tree") or os.environ.get("HARNESS_LLAMA_CPP_TREE")
    if not tree:
        raise BackendError("llama-server backend needs options.extra['server_url'], "
                           "['server_binary'] or ['llama_cpp_tree'] (or $HARNESS_LLAMA_CPP_TREE)")
    return build_llama_server(Path(tree), cmake_options=extra.get("cmake_options"), log=log, build=build)


def _norm_template(t: str) -> str:
    # Jinja drops one trailing newline of a template, so that one is not a difference.
    return t[:-1] if t.endswith("\n") else t


class ServerBackend:
    name = "llama-server"
    capabilities = CAPABILITIES

    def __init__(self, model: ModelFiles | None, options: BackendOptions):
        self.model, self.options = model, options
        extra = options.extra
        self._servers: dict[tuple[str | None, bool], ServerProcess] = {}
        self._clients: dict[tuple[str | None, bool], HttpClient] = {}
        self._props: dict[tuple[str | None, bool], dict[str, Any]] = {}
        self._broken: dict[tuple[str | None, bool], str] = {}
        self._lock = threading.RLock()
        self._closed = False
        self.built: BuiltServer | None = None
        self.attached_url: str | None = extra.get("server_url")
        tmpl = model.chat_template_file if model else None
        self._main_key = (str(Path(tmpl).resolve()) if tmpl else None, False)
        if self.attached_url:
            self._clients[self._main_key] = HttpClient(self.attached_url, options.timeout_s)
            return
        if model is None or model.gguf is None:
            raise Unsupported("llama-server needs a GGUF model (none given)")
        if model.vocab_only:
            raise Unsupported("llama-server cannot serve a vocab-only GGUF (it loads weights)")
        self.built = resolve_server(extra)
        self._start(self._main_key)              # fail at construction, not at the first check

    # --- process management ---------------------------------------------------------
    def _args(self, key: tuple[str | None, bool]) -> list[str]:
        o = self.options
        assert self.model is not None and self.model.gguf is not None
        args = ["-m", str(self.model.gguf), "-c", str(o.n_ctx), "--threads", str(o.threads),
                "--threads-batch", str(o.threads), "--seed", str(o.seed),
                "--parallel", "1",               # one slot: full context, no cross-request batching
                "--jinja", "--no-webui"]
        template_file, special = key
        if template_file:
            args += ["--chat-template-file", template_file]
        if special:
            args.append("--special")
        return args + [str(a) for a in o.extra.get("server_args", ())]

    def _start(self, key: tuple[str | None, bool]) -> HttpClient:
        assert self.built is not None
        timeout = float(self.options.extra.get("start_timeout_s", max(120.0, self.options.timeout_s)))
        proc = ServerProcess(self.built.binary, self._args(key), env=self.built.env(),
                             start_timeout_s=timeout)
        proc.start()
        self._servers[key] = proc
        if key in self._clients:
            self._clients[key].close()
        self._clients[key] = HttpClient(proc.url, self.options.timeout_s)
        self._props.pop(key, None)
        return self._clients[key]

    def _client(self, key: tuple[str | None, bool], op: str) -> HttpClient:
        """The client for `key`, starting or (after a crash) restarting its server."""
        with self._lock:
            if self._closed:
                raise BackendError(f"{self.name} backend is closed ({op})")
            if key in self._broken:
                raise BackendError(self._broken[key])
            if self.attached_url:
                if key != self._main_key:
                    raise Unsupported("attached llama-server: cannot start a sibling with other flags")
                return self._clients[key]
            proc = self._servers.get(key)
            if proc is None:
                return self._start(key)              # e.g. the --special sibling, on first use
            if not proc.alive():
                self._restart_after_crash(key, op)
            return self._clients[key]

    def _restart_after_crash(self, key: tuple[str | None, bool], op: str) -> NoReturn:
        """Restart once; the call that found the crash fails, so only that case fails."""
        with self._lock:
            proc = self._servers[key]
            crash = f"llama-server crashed ({describe_exit(proc.returncode)}) during {op}"
            tail = proc.log_tail(15)
            proc.stop()
            try:
                self._start(key)
            except BackendError as e:
                self._broken[key] = f"{crash}; restart failed: {e}"
                raise BackendError(self._broken[key]) from None
            raise BackendError(f"{crash}; restarted (pid {self._servers[key].pid}). "
                               f"Last log lines of the crashed server:\n{tail}")

    def _call(self, op: str, path: str, body: Any = None, *, key=None, stream_kind: str | None = None):
        key = key or self._main_key
        http = self._client(key, op)
        try:
            if stream_kind:
                return stream_generation(http, path, body, stream_kind)
            return http.post(path, body) if body is not None else http.get(path)
        except ConnectError:
            proc = self._servers.get(key)
            if proc is not None and not proc.alive(wait_s=2.0):
                self._restart_after_crash(key, op)
            raise

    def processes(self) -> list[ServerProcess]:
        """The llama-server processes this backend started (one per chat template and special mode)."""
        with self._lock:
            return list(self._servers.values())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for proc in self._servers.values():
                proc.stop()                      # never an attached server: it is not in here
            for http in self._clients.values():
                http.close()
            self._servers.clear()

    def __enter__(self) -> "ServerBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def log_tail(self, n: int = 400) -> list[str]:
        """The last `n` lines of the spawned server's log; [] for an attached server."""
        proc = self._servers.get(self._main_key)
        return proc.log_tail(n).splitlines() if proc else []

    @property
    def server_pid(self) -> int | None:
        proc = self._servers.get(self._main_key)
        return proc.pid if proc else None

    def props(self, key=None) -> dict[str, Any]:
        key = key or self._main_key
        if key not in self._props:
            self._props[key] = self._call("props", "/props", key=key)
        return self._props[key]

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.name, "threads": self.options.threads,
                               "seed": self.options.seed, "n_ctx": self.options.n_ctx}
        if self.attached_url:
            out.update(mode="attached", url=self.attached_url)
        else:
            assert self.built is not None and self.model is not None and self.model.gguf is not None
            proc = self._servers.get(self._main_key)
            out.update(mode="spawned", url=proc.url if proc else None,
                       server_version=self.built.version, tree_hash=self.built.tree_hash,
                       build_options=self.built.options, binary=str(self.built.binary),
                       server_args=self._args(self._main_key),
                       ignored_env=proc.stripped_env if proc else [],
                       model_path=str(self.model.gguf),
                       model_sha256=self.model.gguf_sha256 or file_sha256(Path(self.model.gguf)))
        props = self.props()
        out["build_info"] = props.get("build_info")
        out["chat_template_caps"] = props.get("chat_template_caps")
        return out

    # --- rendering --------------------------------------------------------------------
    def _render_key(self, req: RenderRequest) -> tuple[str | None, bool]:
        if req.template is None:
            return self._main_key
        want = _norm_template(req.template)
        for key in list(self._servers) or [self._main_key]:
            if _norm_template(self.props(key).get("chat_template") or "") == want:
                return key
        raise Unsupported("llama-server renders only the template it was started with "
                          "(/apply-template has no per-request template); start it with that "
                          "template as ModelFiles.chat_template_file")

    def render_prompt(self, req: RenderRequest) -> Rendered:
        key = self._render_key(req)
        props = self.props(key)
        for field_, ours in (("bos_token", req.bos_token), ("eos_token", req.eos_token)):
            if ours is not None and ours != props.get(field_):
                raise Unsupported(f"llama-server takes {field_} from the model "
                                  f"({props.get(field_)!r}), cannot use {ours!r}")
        body: dict[str, Any] = {"messages": req.messages,
                                "add_generation_prompt": req.add_generation_prompt}
        if req.tools is not None:
            body["tools"] = req.tools
        if req.extra:
            body["chat_template_kwargs"] = req.extra
        try:
            reply = self._call("render", "/apply-template", body, key=key)
        except HttpError as e:
            # Template errors come back as HTTP 400/500 with the engine's message; the
            # template's own raise_exception() is recognisable only by its text.
            rejected = "raise_exception" in e.message or "Jinja Exception" in e.message
            kind = "TemplateRejected" if rejected else "ServerError"
            return Rendered(error=f"{kind}: {e.message}", rejected=rejected)
        prompt = reply.get("prompt") if isinstance(reply, dict) else None
        if not isinstance(prompt, str):
            raise BackendError(f"/apply-template returned no prompt: {str(reply)[:200]}")
        return Rendered(text=prompt)

    # --- tokens -------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        reply = self._call("tokenize", "/tokenize", {"content": text, "add_special": add_special,
                                                     "parse_special": parse_special})
        return list(reply["tokens"])

    def tokenize_with_pieces(self, text: str, *, add_special: bool,
                             parse_special: bool) -> list[tuple[int, bytes]]:
        reply = self._call("tokenize", "/tokenize", {"content": text, "add_special": add_special,
                                                     "parse_special": parse_special,
                                                     "with_pieces": True})
        return [(t["id"], _piece_bytes(t["piece"])) for t in reply["tokens"]]

    def detokenize(self, ids: list[int], *, render_special: bool) -> str:
        if not render_special:
            raise Unsupported("llama-server /detokenize always renders special tokens (no flag)")
        return self._call("detokenize", "/detokenize", {"tokens": list(ids)})["content"]

    def token_piece(self, id: int, *, render_special: bool) -> bytes:
        if not render_special:
            raise Unsupported("llama-server renders token pieces with special tokens (no flag)")
        # /tokenize accepts token ids in `content` and, with_pieces, returns the raw bytes
        # (as a byte list) where a piece is not valid UTF-8; /detokenize would mangle those.
        reply = self._call("token_piece", "/tokenize", {"content": [int(id)], "with_pieces": True})
        toks = reply["tokens"]
        if len(toks) != 1:
            raise BackendError(f"/tokenize of [{id}] returned {len(toks)} tokens")
        return _piece_bytes(toks[0]["piece"])

    def token_pieces(self, ids: list[int], *, render_special: bool) -> list[bytes]:
        """token_piece of many ids in one /tokenize request (the same per-id code path)."""
        if not render_special:
            raise Unsupported("llama-server renders token pieces with special tokens (no flag)")
        reply = self._call("token_piece", "/tokenize", {"content": [int(i) for i in ids], "with_pieces": True})
        toks = reply["tokens"]
        if len(toks) != len(ids):
            raise BackendError(f"/tokenize of {len(ids)} ids returned {len(toks)} tokens")
        return [_piece_bytes(t["piece"]) for t in toks]

    def vocab_info(self) -> VocabInfo:
        models = self._call("vocab_info", "/v1/models")
        meta = (models.get("data") or [{}])[0].get("meta", {})
        props = self.props()

        def single_id(text: str | None) -> int | None:
            if not text:
                return None
            ids = self.tokenize(text, add_special=False, parse_special=True)
            return ids[0] if len(ids) == 1 else None

        bos, eos = single_id(props.get("bos_token")), single_id(props.get("eos_token"))
        with_special = self.tokenize("a", add_special=True, parse_special=False)
        plain = self.tokenize("a", add_special=False, parse_special=False)
        return VocabInfo(
            n_vocab=meta.get("n_vocab"), reported_size=None, n_ids=meta.get("n_vocab"),
            bos_id=bos, eos_id=eos,
            add_bos=bos is not None and with_special[:1] == [bos] and plain[:1] != [bos],
            add_eos=eos is not None and with_special[-1:] == [eos] and plain[-1:] != [eos],
            extra={"derived": "bos/eos ids: /props token text tokenized; add_bos/add_eos: "
                              "tokenize with vs without add_special",
                   "bos_token": props.get("bos_token"), "eos_token": props.get("eos_token"),
                   **{k: meta.get(k) for k in ("vocab_type", "n_ctx_train", "n_embd",
                                               "n_params", "size", "ftype")}})

    # --- generation -----------------------------------------------------------------------
    def complete(self, req: CompletionRequest) -> Generation:
        if req.stop_ids:
            raise Unsupported("llama-server has no stop-by-token-id parameter")
        body: dict[str, Any] = {
            # a string prompt is tokenized with add_special=true, parse_special=true
            "prompt": req.prompt if isinstance(req.prompt, str) else list(req.prompt),
            "n_predict": req.max_tokens, "temperature": req.temperature, "seed": req.seed,
            "stop": list(req.stop), "return_tokens": True, "stream": req.stream,
            "cache_prompt": bool(self.options.extra.get("cache_prompt", False))}
        if req.grammar is not None:
            body["grammar"] = req.grammar
        if req.json_schema is not None:
            body["json_schema"] = req.json_schema
        key = (self._main_key[0], req.render_special)    # --special is server-wide
        if req.stream:
            return self._call("complete", "/completion", body, key=key, stream_kind="completion")
        return generation_from_reply(self._call("complete", "/completion", body, key=key),
                                     "completion")

    def chat(self, req: ChatRequest) -> Generation:
        body = chat_body(req, None)
        body["cache_prompt"] = bool(self.options.extra.get("cache_prompt", False))
        if req.stream:
            return self._call("chat", "/v1/chat/completions", body, stream_kind="chat")
        # verbose adds the native reply under "__verbose", which carries the token ids
        body.update(return_tokens=True, verbose=True)
        return generation_from_reply(self._call("chat", "/v1/chat/completions", body), "chat")


def _piece_bytes(piece: Any) -> bytes:
    if isinstance(piece, str):
        return piece.encode("utf-8")
    if isinstance(piece, list):
        return bytes(piece)
    raise BackendError(f"unexpected token piece {piece!r}")
