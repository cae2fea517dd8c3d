"""Hostile chat templates, as data, and the drivers that render them through every renderer.

A GGUF's chat template is code from a stranger. Each `Payload` here tries one thing a
template must never do: walk attributes to `__globals__`/`__subclasses__` and reach `os` or
`subprocess`, read a file, mutate the caller's data, loop for ever, blow up a string or an
integer, recurse without end. Each is rendered through every renderer the harness drives:

    harness-sandbox     the harness's own renderer (harness/backends/sandbox.py): must block every one
    hf                  transformers' render_jinja_template (ImmutableSandboxedEnvironment)
    llama-cpp-python    llama_cpp's Jinja2ChatFormatter (ImmutableSandboxedEnvironment)
    llama.cpp-builtin   llama_chat_apply_template (C++ heuristics, not a template engine)
    llama-server        llama.cpp's own Jinja engine, a server started with --chat-template-file

Escapes are detected by effect, not by pattern: a `Canary` makes a private folder holding a
file with a random secret, puts a second random secret in the renderer's environment
variables, and names a path no one has created. A payload that touches that path, or whose
output (or error message) contains either secret, escaped. Mutation is checked by comparing
the caller's messages before and after.

(The suite and tests/test_hostile.py run these renders a few at a time: harness/families/hostile/batch.py.)
Python renderers run in a forked child (harness/run/fork.py) with a wall-clock timeout and an
address-space cap; llama-server runs under `ulimit -v` with an HTTP timeout and is stopped
after each payload. So every render ends within a bound whatever the renderer does, and the
outcome is one of:

    blocked    the engine refused (a sandbox SecurityError, the sandbox's range limit, or one of
               the harness's own render limits)
    error      the render failed otherwise (syntax, undefined, a missing loader, a crash, or it
               was killed at the time / memory bound: the detail says which)
    rendered   it rendered, with no effect on the canary
    escaped    the canary saw an effect: a failing finding

Clean-up, Ctrl-C included: a Canary is a context manager (its folder is removed), run_isolated
kills and reaps its child in a finally, and each llama-server is stopped in a finally (and by
harness.server_build's atexit/SIGINT handlers).
"""

from __future__ import annotations

import copy
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.backends.base import BackendOptions, Rendered, RenderRequest, Unsupported
from .payloads import Canary, PAYLOADS, PAYLOAD_IDS, Payload, SECRET_ENV, payload

MESSAGES = [{"role": "user", "content": "hi"}]

RENDERERS = ("harness-sandbox", "hf", "llama-cpp-python", "llama.cpp-builtin", "llama-server")
PYTHON_RENDERERS = ("harness-sandbox", "hf", "llama-cpp-python", "llama.cpp-builtin")

# Large numbers are written out (not 10**10): llama.cpp's Jinja engine has no `**` operator, and
# a payload must reach each engine's evaluator, not stop at its parser.
# Bounds. The harness's own renderer must stop itself (time limit OWN_TIME_S) well before the
# isolation kill (PY_TIMEOUT_S); third-party renderers are killed at PY_TIMEOUT_S.
OWN_TIME_S = 3.0
PY_TIMEOUT_S = 8.0
PY_MEMORY_MIB = 768
SERVER_REQUEST_S = 8.0
SERVER_START_S = 10.0
# llama-server's address-space cap. A SmolLM2 server peaks at about 730 MiB of address space
# (VmPeak; 145 MiB resident), so 1536 MiB leaves it twice that, and keeps four servers at a
# time (batch.SERVER_CONCURRENCY) and each one clearly under the 4 GiB per-process budget (at
# 4096 a blowup payload's server peaked at 4035-4050 MiB). Every finding is the same as at 4096.
SERVER_MEMORY_MIB = 1536


# --- findings ----------------------------------------------------------------------------
@dataclass
class Finding:
    payload: str
    renderer: str
    outcome: str                 # blocked | error | rendered | escaped | skipped
    detail: str
    seconds: float
    evidence: list[str] = field(default_factory=list)

    def line(self) -> str:
        ev = f" EVIDENCE: {'; '.join(self.evidence)}" if self.evidence else ""
        return f"{self.renderer} on {self.payload}: {self.outcome} ({self.seconds:.2f}s): {self.detail}{ev}"


BLOCKED_TYPES = {"SecurityError", "SandboxViolation", "RenderLimitExceeded"}
BLOCKED_TEXT = ("is unsafe", "Range too big", "sandbox", "not allowed")


def classify_error(text: str) -> str:
    """blocked if the engine's own sandbox refused, else error."""
    head = text.split(":", 1)[0].strip()
    if head in BLOCKED_TYPES or any(t in text for t in BLOCKED_TEXT):
        return "blocked"
    return "error"


_LOG_STAMP = re.compile(r"\b\d+\.\d{2}\.\d{3}\.\d{3} [A-Z] ")
_CANARY_PATH = re.compile(r"/[^\s'\"]*hostile-canary-[A-Za-z0-9_]+")


def _short(text: str, n: int = 300) -> str:
    """One line, without what differs between runs (canary folder names, log timestamps)."""
    text = _CANARY_PATH.sub("<canary>", " ".join(str(text).split()))
    text = _LOG_STAMP.sub("", text)
    return text if len(text) <= n else text[:n] + "..."


# --- Python renderers ------------------------------------------------------------------
def make_renderer(name: str) -> Any:
    """The renderer object for `name`, built in the parent (heavy imports happen once, before
    any fork). Raises ImportError / Unsupported where it is not present."""
    options = BackendOptions()
    if name == "harness-sandbox":
        from harness.backends.sandbox_guards import Limits
        from harness.backends.sandbox import SandboxRenderer
        return SandboxRenderer(limits=Limits(time_s=OWN_TIME_S))
    from harness.backends.base import backend_class
    renderer = backend_class(name)(None, options)
    if name == "hf":   # import what render_prompt imports lazily, so the child does not
        import transformers.utils.chat_template_utils  # noqa: F401
    if name == "llama-cpp-python":
        import llama_cpp.llama_chat_format  # noqa: F401
    return renderer


def renderer_present(name: str) -> str | None:
    """None if the renderer can run here, else why not."""
    import importlib.util
    needs = {"hf": "transformers", "llama-cpp-python": "llama_cpp", "llama.cpp-builtin": "llama_cpp",
             "llama-server": "llama_cpp", "harness-sandbox": "jinja2"}[name]
    if importlib.util.find_spec(needs) is None:
        return f"{needs} is not installed"
    return None


def _render_in_child(renderer: Any, template: str, env_secret: str) -> dict[str, Any]:
    os.environ[SECRET_ENV] = env_secret       # the second canary lives in the renderer's environment
    messages = copy.deepcopy(MESSAGES)
    req = RenderRequest(messages=messages, add_generation_prompt=True, template=template,
                        bos_token="<s>", eos_token="</s>")
    try:
        rendered = renderer.render_prompt(req)
    except Unsupported as exc:
        rendered = Rendered(error=f"Unsupported: {exc.reason}")
    out = {"text": rendered.text, "error": rendered.error, "rejected": rendered.rejected,
           "mutated": messages != MESSAGES}
    if out["text"] is not None and len(out["text"]) > 100_000:
        out["text_len"] = len(out["text"])
        out["text"] = out["text"][:50_000] + out["text"][-50_000:]
    return out


def render_python(name: str, renderer: Any, p: Payload, canary: Canary, *,
                  timeout_s: float = PY_TIMEOUT_S, memory_mib: int = PY_MEMORY_MIB) -> Finding:
    from harness.run.fork import run_isolated
    fn, args = python_call(renderer, p, canary)
    o = run_isolated(fn, *args, timeout_s=timeout_s, memory_mib=memory_mib, capture_stderr=True)
    return python_finding(name, p, canary, o)


def python_call(renderer: Any, p: Payload, canary: Canary) -> tuple[Callable, tuple]:
    """What a forked child runs to render payload `p` with `renderer` (harness.run.fork)."""
    return _render_in_child, (renderer, canary.fill(p.template), canary.env_secret)


def python_finding(name: str, p: Payload, canary: Canary, o: Any) -> Finding:
    """The finding of a child's render (an isolation.Outcome), the canary examined."""
    if o.ok:
        r = o.value
        evidence = canary.evidence(r["text"], r["error"])
        if r["mutated"]:
            evidence.append("the caller's messages were changed")
        if evidence:
            return Finding(p.id, name, "escaped", _short(r["text"] or r["error"] or ""), o.seconds, evidence)
        if r["error"] is not None:
            return Finding(p.id, name, classify_error(r["error"]), _short(r["error"]), o.seconds)
        size = r.get("text_len", len(r["text"]))
        return Finding(p.id, name, "rendered", f"{size:,} characters: {_short(r['text'], 80)!r}", o.seconds)
    evidence = canary.evidence(o.stderr, o.detail)
    if evidence:
        return Finding(p.id, name, "escaped", _short(o.detail), o.seconds, evidence)
    if o.status == "raised":   # the renderer itself raised (not captured as a Rendered error)
        return Finding(p.id, name, classify_error(o.detail), _short(o.detail), o.seconds)
    what = {"timeout": "killed at the time bound", "memory": "stopped at the memory bound",
            "signal": "crashed"}.get(o.status, "failed")
    return Finding(p.id, name, "error", f"{what}: {_short(o.detail)}", o.seconds)


# --- llama-server -------------------------------------------------------------------------
def render_server(built: Any, model_path: Path, p: Payload, canary: Canary, *,
                  request_s: float = SERVER_REQUEST_S, start_s: float = SERVER_START_S,
                  memory_mib: int = SERVER_MEMORY_MIB) -> Finding:
    """Start llama-server with the payload as --chat-template-file (under `ulimit -v`), ask
    /apply-template once, stop it. Startup itself renders the template (llama.cpp checks it),
    so a payload can fail or hang the start: that is the finding then."""
    import requests

    from harness.backends.base import BackendError
    from harness.run.server_process import ServerProcess, describe_exit
    template_file = canary.dir.parent / f"{canary.dir.name}-{p.id}.jinja"
    template_file.write_text(canary.fill(p.template), encoding="utf-8")
    # `sh -c 'ulimit -v ...; exec "$0" "$@"' llama-server ARGS`: the server runs under an
    # address-space cap (ServerProcess appends --host/--port to the arguments)
    script = f'ulimit -v {memory_mib * 1024}; exec "$0" "$@"'
    args = ["-c", script, str(built.binary), "-m", str(model_path), "-c", "512", "--threads", "1",
            "--threads-batch", "1", "--parallel", "1", "--jinja", "--no-webui",
            "--chat-template-file", str(template_file)]
    env = {**built.env(), SECRET_ENV: canary.env_secret}
    proc = ServerProcess(Path("/bin/sh"), args, env=env, start_timeout_s=start_s)
    t0 = time.monotonic()
    try:
        try:
            proc.start()
        except BackendError as exc:
            seconds = time.monotonic() - t0
            evidence = canary.evidence(str(exc))
            if evidence:
                return Finding(p.id, "llama-server", "escaped", _short(str(exc)), seconds, evidence)
            text = str(exc)
            if "killed by SIG" in text:
                sig = text.split("killed by ", 1)[1].split(")", 1)[0]
                return Finding(p.id, "llama-server", "error", f"crashed at startup (killed by {sig}) while "
                                                              f"checking the template", seconds)
            if "not ready after" in text:
                return Finding(p.id, "llama-server", "error", f"killed at the time bound: the server did not start "
                                                              f"within {start_s:g}s", seconds)
            return Finding(p.id, "llama-server", "error",
                           f"refused to start: {_short(_server_reason(text), 400)}", seconds)
        try:
            resp = requests.post(proc.url + "/apply-template", json={"messages": MESSAGES,
                                                                    "add_generation_prompt": True},
                                 timeout=request_s, proxies={"http": "", "https": ""})
            status, body = resp.status_code, resp.text
        except requests.Timeout:
            status, body = None, f"no answer within {request_s:g}s"
        except requests.RequestException as exc:
            status, body = None, f"{type(exc).__name__}: {exc}"
        alive = proc.alive(wait_s=0.5 if status is None else 0.0)
        rc = proc.returncode
        seconds = time.monotonic() - t0
        tail = proc.log_tail(10)
    finally:
        proc.stop(timeout_s=3.0)
        template_file.unlink(missing_ok=True)
    evidence = canary.evidence(body, tail)
    if evidence:
        return Finding(p.id, "llama-server", "escaped", _short(body), seconds, evidence)
    if not alive:
        return Finding(p.id, "llama-server", "error", f"crashed ({describe_exit(rc)}) while rendering: "
                                                      f"{_short(_server_reason(tail), 300)}", seconds)
    if status is None:
        return Finding(p.id, "llama-server", "error", f"killed at the time bound: {_short(body)}", seconds)
    if status != 200:
        msg = _server_message(body)
        return Finding(p.id, "llama-server", classify_error(msg), f"HTTP {status}: {_short(msg)}", seconds)
    prompt = _server_prompt(body)
    return Finding(p.id, "llama-server", "rendered", f"{len(prompt):,} characters: {_short(prompt, 80)!r}", seconds)


def _server_reason(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    keep = [ln for ln in lines if any(w in ln.lower() for w in ("error", "exception", "failed", "invalid",
                                                                 "unknown", "abort", "what()"))]
    return " | ".join((keep or lines)[-4:])


def _server_message(body: str) -> str:
    import json
    try:
        err = json.loads(body).get("error")
        return err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        return body


def _server_prompt(body: str) -> str:
    import json
    try:
        return str(json.loads(body).get("prompt", ""))
    except (ValueError, AttributeError):
        return body


# --- driving the whole set ------------------------------------------------------------------
def run_all(renderers: dict[str, Any], *, server: tuple[Any, Path] | None = None,
            payloads: tuple[Payload, ...] = PAYLOADS, parent: Path | None = None,
            progress: Callable[[Finding], None] | None = None) -> list[Finding]:
    """Every payload through every renderer given (name -> make_renderer(name)) and, with
    `server=(built, model_path)`, llama-server."""
    out = []
    for p in payloads:
        for name, r in renderers.items():
            with Canary(parent) as canary:
                f = render_python(name, r, p, canary)
            out.append(f)
            if progress:
                progress(f)
        if server is not None:
            with Canary(parent) as canary:
                f = render_server(server[0], server[1], p, canary)
            out.append(f)
            if progress:
                progress(f)
    return out


def table(findings: list[Finding]) -> str:
    """A markdown table: payload rows, renderer columns."""
    names = [r for r in RENDERERS if any(f.renderer == r for f in findings)]
    by = {(f.payload, f.renderer): f for f in findings}
    rows = ["| payload | kind | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for p in PAYLOADS:
        if not any((p.id, n) in by for n in names):
            continue
        cells = []
        for n in names:
            f = by.get((p.id, n))
            cells.append("" if f is None else f.outcome + (" (timeout)" if "time bound" in f.detail else "")
                         + (" (memory)" if "memory" in f.detail.lower() and f.outcome == "error" else "")
                         + (" (crash)" if "crashed" in f.detail else ""))
        rows.append(f"| {p.id} | {p.kind} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


__all__ = ["PAYLOADS", "PAYLOAD_IDS", "Payload", "Canary", "Finding", "RENDERERS", "PYTHON_RENDERERS",
           "make_renderer", "renderer_present", "render_python", "python_call", "python_finding", "render_server",
           "run_all", "table", "classify_error", "payload"]
