"""llama.cpp's own chat layer (common/chat.h) as a backend, through the native chat probe.

No weights: the probe (harness/native/chat_probe.cpp, built by harness.run.probe_build next to
llama-server from the same tree) renders templates with llama.cpp's Jinja engine, derives the chat
params, parses outputs (non-streamed and streamed as the server does) and converts JSON schemas
to grammars. One long-lived probe process per backend (per worker); JSON lines both ways. A probe
that dies (GGML_ABORT, std::terminate, segfault) fails only the request that killed it, with the
process's last stderr lines and exit status, and is restarted for the next request.

options.extra: chat_probe_binary (a built probe; its lib dir is its own folder unless
chat_probe_lib_dir), probe_args (extra CLI args, e.g. the debug op switch), or whatever
llama-server's resolve_server takes (llama_cpp_tree, built_server, cmake_options).
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from harness.backends.base import (PARSE, RENDER, BackendError, BackendOptions, ModelFiles,
                                   Rendered, RenderRequest, Unsupported)
from harness.backends.rendering import FIXED_NOW

# the harness's frozen instant (harness/backends/rendering.py), read in this machine's time zone as
# the in-process renderers read it; the probe answers it for llama.cpp's clock
FIXED_NOW_UNIX = int(FIXED_NOW.timestamp())


class ProbeCrashed(BackendError):
    """The probe process died on a request (abort, crash); it is restarted for the next one."""


class ProbeError(BackendError):
    """llama.cpp refused the request (it threw); the message is llama.cpp's."""


class ChatProbe:
    """One probe process; `call(request)` -> reply dict; restarts after a crash."""

    def __init__(self, binary: Path, lib_dir: Path, args: tuple[str, ...] = (), timeout_s: float = 60.0):
        self.binary, self.lib_dir, self.args, self.timeout_s = Path(binary), Path(lib_dir), args, timeout_s
        self._proc: subprocess.Popen | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.restarts = 0

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = str(self.lib_dir) + (os.pathsep + env["LD_LIBRARY_PATH"]
                                                     if env.get("LD_LIBRARY_PATH") else "")
        self._stderr.clear()
        proc = subprocess.Popen([str(self.binary), *self.args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                text=True, encoding="utf-8", errors="replace", bufsize=1)
        threading.Thread(target=self._drain, args=(proc,), daemon=True).start()
        return proc

    def _drain(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self._stderr.append(line.rstrip("\n"))

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                if self._proc is not None:
                    self.restarts += 1
                self._proc = self._start()
            proc = self._proc
            rid = next(self._ids)
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps({**request, "id": rid}) + "\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
            except (BrokenPipeError, OSError):
                line = ""
            if not line:
                try:
                    rc = proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    rc = proc.wait()
                threading.Event().wait(0.05)            # let the drain thread catch the last lines
                tail = "\n".join(self._stderr)
                self._proc = None
                self.restarts += 1
                raise ProbeCrashed(f"chat probe died on op {request.get('op')!r} ({_describe(rc)}); "
                                   f"last stderr lines:\n{tail}")
            reply = json.loads(line)
            if reply.get("id") != rid:
                raise BackendError(f"chat probe answered id {reply.get('id')} to request {rid}")
            return reply

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


def _describe(rc: int) -> str:
    if rc < 0:
        import signal
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def _byte_ends(pieces: list[str]) -> list[int]:
    """The UTF-8 byte offset at which each piece ends (the probe's strings are bytes)."""
    out, end = [], 0
    for p in pieces:
        end += len(p.encode("utf-8"))
        out.append(end)
    return out


def _resolve_probe(extra: dict[str, Any]) -> tuple[Path, Path]:
    if extra.get("chat_probe_binary"):
        b = Path(extra["chat_probe_binary"]).resolve()
        return b, Path(extra.get("chat_probe_lib_dir") or b.parent)
    from harness.backends.server import resolve_server
    from harness.run.probe_build import build_chat_probe
    built = build_chat_probe(resolve_server(extra))
    return built.binary, built.lib_dir


def model_prompt_rule(prompt: str, bos: str, eos: str, add_bos: bool, add_eos: bool) -> str:
    """llama-server's rule for a model whose vocab adds BOS/EOS (common/chat.cpp,
    common_chat_template_direct_apply_impl: inputs.add_bos/add_eos come from the model): the BOS
    text the template rendered is dropped from the front, the EOS text from the end, as the
    tokenizer adds them. The probe has no model, so its templates see add_bos=false; the backend
    applies the same rule with the GGUF's own flags."""
    if add_bos and bos and prompt.startswith(bos):
        prompt = prompt[len(bos):]
    if add_eos and eos and prompt.endswith(eos):
        prompt = prompt[:-len(eos)]
    return prompt


class LlamaChatBackend:
    name = "llama.cpp-chat"
    capabilities = frozenset({RENDER, PARSE})
    # what llama.cpp sets for every template that transformers leaves undefined unless asked
    # (common/chat.cpp, common_chat_template_direct_apply_impl; the probe's default, as
    # llama-server's with its default --reasoning-budget -1): templates.agree renders the
    # reference with the same, so the two engines are compared on the same inputs
    template_variables = {"enable_thinking": True}

    def __init__(self, model: ModelFiles | None, options: BackendOptions):
        self.model, self.options = model, options
        binary, lib_dir = _resolve_probe(options.extra)
        # HARNESS_CHAT_PROBE_ARGS: extra probe switches for the harness's own tests (the debug aborts)
        args = tuple(options.extra.get("probe_args", ())) + tuple(os.environ.get("HARNESS_CHAT_PROBE_ARGS", "").split())
        self.probe = ChatProbe(binary, lib_dir, args, options.timeout_s)
        self._version: dict[str, Any] | None = None
        self._gguf = None
        self._renders: dict[str, dict[str, Any]] = {}

    def info(self) -> dict[str, Any]:
        if self._version is None:
            self._version = self.probe.call({"op": "version"})
        return {"backend": self.name, "probe": str(self.probe.binary),
                "llama_cpp": self._version.get("build_info"), "commit": self._version.get("commit")}

    def _inputs(self, req: RenderRequest, **kw: Any) -> dict[str, Any]:
        template, bos, eos = req.template, req.bos_token, req.eos_token
        if template is None:
            template, bos, eos = self._model_template(bos, eos)
        d: dict[str, Any] = {"template": template, "bos_token": bos or "",
                             "eos_token": eos or "", "messages": req.messages,
                             "tools": req.tools, "add_generation_prompt": req.add_generation_prompt,
                             "now": FIXED_NOW_UNIX}
        kwargs = dict(req.extra)
        kwargs.update(kw.pop("chat_template_kwargs", None) or {})
        if kwargs:
            d["chat_template_kwargs"] = kwargs
        d.update({k: v for k, v in kw.items() if v is not None})
        return d

    def _model_template(self, bos: str | None, eos: str | None) -> tuple[str, str | None, str | None]:
        """The GGUF's own template and BOS/EOS texts, as llama-server takes them from the model
        (common_chat_templates_init with the model: token_to_piece of the vocab's BOS/EOS)."""
        if self.model is None:
            raise BackendError("llama.cpp-chat needs the template source (no model to read it from)")
        meta = self._meta()
        if meta.chat_template is None:
            raise Unsupported(f"{self.model.gguf.name} has no chat template")
        special = meta.special
        def text(kind: str) -> str | None:
            tok = special.get(kind)
            return tok.text if tok is not None else None
        return meta.chat_template, bos if bos is not None else text("bos"), eos if eos is not None else text("eos")

    def model_template(self) -> tuple[str, str | None, str | None]:
        """(template, BOS text, EOS text) of the model, as llama-server takes them from the GGUF."""
        return self._model_template(None, None)

    def _model_rule(self, prompt: str, bos: str, eos: str) -> str:
        meta = self._meta()
        return model_prompt_rule(prompt, bos, eos, bool(meta.add_bos), bool(meta.add_eos))

    @property
    def omits_bos_text(self) -> bool:
        return self.model is not None and bool(self._meta().add_bos)

    def _meta(self):
        if self._gguf is None:
            from harness.models.gguf import read_gguf
            self._gguf = read_gguf(self.model.gguf)
        return self._gguf

    def call(self, op: str, payload: dict[str, Any]) -> dict[str, Any]:
        reply = self.probe.call({"op": op, **payload})
        if not reply.get("ok"):
            raise ProbeError(reply.get("error", "(no message)"))
        return reply

    def render_chat(self, req: RenderRequest, **kw: Any) -> dict[str, Any]:
        """prompt + params (llama.cpp's common_chat_params) for these inputs; kw: tool_choice,
        parallel_tool_calls, enable_thinking, reasoning_format, chat_template_kwargs."""
        inputs = self._inputs(req, **kw)
        key = json.dumps(inputs, sort_keys=True)
        r = self._renders.get(key)
        if r is None:
            r = self._renders[key] = self.call("render", inputs)
            if len(self._renders) > 256:                 # one case's contexts at a time, roughly
                self._renders.pop(next(iter(self._renders)))
        prompt = r["prompt"]
        if req.template is None:
            prompt = self._model_rule(prompt, inputs["bos_token"], inputs["eos_token"])
        return {"prompt": prompt, "params": r["params"]}

    def parse_chat(self, req: RenderRequest, text: str, pieces: list[str] | None = None,
                   **kw: Any) -> dict[str, Any]:
        payload = {**self._inputs(req, **kw), "text": text}
        if pieces is not None:
            payload["pieces"] = list(pieces)
        r = self.call("parse", payload)
        return {k: r[k] for k in ("message", "streamed", "diffs", "partial_error") if k in r}

    def parse_batch(self, req: RenderRequest, texts: list[tuple[str, list[list[str]]]],
                    **kw: Any) -> dict[str, Any]:
        """One render, then each (text, split sets) parsed non-streamed and streamed once per
        split set (each a list of pieces joining to the text), as parse_chat would one by one.
        -> {"params", "results": [{"message" | "error", "streams": [{"splits": [indices],
        "streamed", "partial_error"?, "final_error"?}], "stream_message" | "stream_error" (with
        deepseek-legacy only: the finished text parsed the way a stream ends)}]}: split sets that
        stream to the same result share one entry."""
        payload = {**self._inputs(req, **kw),
                   "texts": [{"text": text, "splits": [_byte_ends(pieces) for pieces in splits]}
                             for text, splits in texts]}
        r = self.call("parse_batch", payload)
        return {"params": r["params"], "results": r["results"]}

    def json_schema_to_grammar(self, schema: Any) -> str:
        return self.call("json_schema_to_grammar", {"schema": schema})["grammar"]

    def render_prompt(self, req: RenderRequest) -> Rendered:
        try:
            return Rendered(text=self.render_chat(req)["prompt"])
        except ProbeError as e:                      # the template's raise_exception(...) fired
            if "Jinja Exception: " in str(e):
                msg = str(e).rsplit("Jinja Exception: ", 1)[1]
                return Rendered(error=f"TemplateRejected: {msg}", rejected=True)
            return Rendered(error=f"ProbeError: {e}")
        except ProbeCrashed as e:
            return Rendered(error=f"ProbeCrashed: {e}")

    def close(self) -> None:
        self.probe.close()
