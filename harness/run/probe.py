"""Probing a GGUF with a risky loader in a forked child before the worker loads it in process
(`probe_backend`, called from harness/run/runtime.py): a file that crashes llama.cpp becomes a
BackendError for that model's cases instead of killing the pytest worker. A successful probe is
remembered per file sha256 in the harness cache, so each GGUF is probed once per machine and
llama.cpp version."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from harness.atomic import write_atomic
from . import fork
from .fork import Outcome, interesting_tail


# --- probing a risky load --------------------------------------------------------------
# Backends whose construction runs native code over an untrusted file in the worker's own
# process. Tests add their own doubles here.
RISKY_LOADS: set[str] = {"llama-cpp-python"}


PROBE_TIMEOUT_S = 300.0


_PROBED: dict[tuple, Outcome] = {}           # this process: (name, sha256|path, options) -> outcome


def _probe_key(name: str, model: Any, options: Any) -> tuple[str, str]:
    """(memo key, human label). The key changes with the file, the load options and the
    version of the library that loads it."""
    try:
        from importlib.metadata import version
        lib = version("llama-cpp-python")
    except Exception:  # not installed: the key still works for other loaders
        lib = "?"
    ident = model.gguf_sha256 or f"{model.gguf}:{Path(model.gguf).stat().st_size}:{Path(model.gguf).stat().st_mtime_ns}"
    raw = json.dumps([name, ident, bool(model.vocab_only), options.n_ctx, lib], sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:24], f"{name} on {Path(model.gguf).name}"


def _memo_dir() -> Path:
    from harness.models.sources import cache_root
    return cache_root() / "probes"


def _construct_and_close(name: str, model: Any, options: Any) -> str:
    """In the child: open the backend as the worker would, exercise its vocab a little, close."""
    from harness.backends.base import backend_class
    _capture_llama_log()
    backend = backend_class(name)(model, options)
    try:
        tok = getattr(backend, "tokenize", None)
        if tok is not None and "tokenize" in backend.capabilities:
            ids = tok("Hello, world", add_special=True, parse_special=True)
            if "detokenize" in backend.capabilities:
                backend.detokenize(ids, render_special=True)
    finally:
        backend.close()
    return "ok"


def _capture_llama_log() -> None:
    """Send llama.cpp's log to fd 2 (captured by run_isolated) so a load error keeps its cause."""
    if "llama_cpp" not in sys.modules:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def to_stderr(level, text, user_data):  # noqa: ANN001 (ctypes callback)
        try:
            os.write(2, text)
        except OSError:
            pass
    _capture_llama_log.callback = to_stderr   # keep it alive for the child's lifetime
    llama_cpp.llama_log_set(to_stderr, ctypes.c_void_p(0))


def probe_backend(name: str, model: Any, options: Any) -> None:
    """Before `name` opens `model` in this process for the first time: open it once in a
    forked child. Raises BackendError (naming the file and the cause) if that child crashed or
    failed; a timeout is inconclusive and lets the in-process load go ahead."""
    from harness.backends.base import BackendError
    if name not in RISKY_LOADS or model is None or getattr(model, "gguf", None) is None:
        return
    key, label = _probe_key(name, model, options)
    memo = _memo_dir() / f"{key}.ok"
    if key in _PROBED or memo.exists():
        outcome = _PROBED.get(key) or Outcome("ok", detail="ok (probed earlier)")
    else:
        outcome = fork.run_isolated(_construct_and_close, name, model, options, timeout_s=PROBE_TIMEOUT_S,
                               capture_stderr=True)
        _PROBED[key] = outcome
        if outcome.ok:
            _atomic_touch(memo, json.dumps({"probe": label, "seconds": outcome.seconds}))
    if outcome.ok or outcome.status == "timeout":
        return
    syntax = next((c for c in outcome.extra.get("chain", []) if c[0] == "TemplateSyntaxError"), None)
    if outcome.status == "raised" and syntax is not None:
        # llama-cpp-python compiles the embedded template when it opens the model
        _, message, line = syntax
        raise BackendError(f"{model.gguf.name}: its embedded chat template (tokenizer.chat_template) is not "
                           f"valid Jinja{f' (line {line})' if line else ''}: {message}; "
                           f"{name} refuses to open the model [{model.gguf}]")
    if outcome.status == "raised":
        message = outcome.extra.get("message", outcome.detail)
        cause = _llama_error_lines(outcome.stderr)
        raise BackendError(f"{model.gguf.name}: probe load failed ({outcome.exc_type}: {message})"
                           + (f"; llama.cpp said: {cause}" if cause else "") + f" [{model.gguf}]")
    tail = interesting_tail(outcome.stderr)
    raise BackendError(f"{model.gguf.name}: loading it crashed the probe process ({outcome.detail}); "
                       f"{name} is not loaded in the worker [{model.gguf}]" + (f"\n{tail}" if tail else ""))


def _llama_error_lines(log: str) -> str:
    keep = [ln.strip() for ln in log.splitlines()
            if any(w in ln.lower() for w in ("error", "failed", "invalid", "corrupt", "wrong", "exception"))]
    return " | ".join(dict.fromkeys(keep))[-1500:]


def _atomic_touch(path: Path, text: str) -> None:
    try:
        write_atomic(path, text)
    except OSError:
        pass  # a read-only cache only costs a probe next time
