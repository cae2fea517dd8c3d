"""The harness's own chat-template renderer: a locked-down Jinja environment.

A chat template inside a downloaded GGUF is code written by a stranger (llama-cpp-python
once rendered it unsandboxed: CVE-2024-34359). Every template the harness renders itself
goes through `render()` / `render_chat()` here, which add to Jinja's
`ImmutableSandboxedEnvironment` (no attribute walks to `__globals__`/`__subclasses__`, no
mutation of lists and dicts):

  * no loader: `{% include %}`, `{% import %}`, `{% extends %}` are refused (no file access);
  * unsafe attribute access raises at once (the stock sandbox returns an Undefined that only
    raises when printed, so `{% if x.__class__ %}` silently runs on);
  * size limits on values: the binary operators `*`, `**`, `+`, `%` are intercepted, `~`
    (string concatenation) goes through a guarded join, every filter and every method call is
    checked before (integer arguments, known amplifiers such as `replace`, `join`,
    `expandtabs`, `translate`, format widths) and after (the size of its result); integers are
    capped in bits;
  * a cumulative allocation budget per render, so a loop of medium-sized allocations cannot
    exhaust memory either;
  * an output-size cap, enforced while streaming `Template.generate()`;
  * a hard wall-clock limit over compiling and rendering (a watchdog thread raises into the
    rendering thread, so a loop with an empty body is stopped too);
  * `lipsum` is bounded (it multiplies text by its arguments); `namespace` refuses
    underscore-prefixed names; input data is copied to plain JSON-like types first.

Everything it refuses raises `SandboxViolation` (a jinja2 `SecurityError`), with
`RenderLimitExceeded` for the limits; `raise_exception()` in a template raises
`TemplateRaised`. Otherwise it renders exactly like transformers' `apply_chat_template`
(same extensions, `tojson`, trim_blocks/lstrip_blocks), which tests/test_sandbox.py checks on
every template llama.cpp ships.

Limits that cannot be enforced in process (native code, a C-level loop that never returns to
the interpreter) are the job of harness/run/fork.py, which renders untrusted templates in a
forked child with a wall-clock kill and an address-space cap.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any, Callable

import jinja2
import jinja2.ext

from harness.backends.base import RENDER, BackendOptions, ModelFiles, Rendered, RenderRequest
from .sandbox_env import HarnessSandbox
from .sandbox_guards import (
    DEFAULT_LIMITS, Deadline, Limits, RenderLimitExceeded, RenderState, SandboxViolation, TemplateRaised
)


# --- the render functions ----------------------------------------------------------------
# own prototypes (not ctypes.pythonapi's shared function object, whose argtypes others may set)
set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi))
clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi))


def _with_deadline(fn: Callable[[], str], seconds: float) -> str:
    """Run fn in this thread; after `seconds` a watchdog raises _Deadline into it (delivered
    at the next bytecode boundary: pure-Python loops stop, a single long C call does not)."""
    tid = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def fire() -> None:
        with lock:
            if not state["done"]:
                state["fired"] = True
                set_async_exc(tid, Deadline)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    try:
        timer.start()
        try:
            return fn()
        finally:
            with lock:
                state["done"] = True
                if state["fired"]:
                    clear_async_exc(tid, None)   # a fired but undelivered deadline must not leak out
            timer.cancel()
    except Deadline:
        raise RenderLimitExceeded("time", f"render exceeded its time limit of {seconds:g}s") from None


def plain(value: Any, _depth: int = 0) -> Any:
    """A copy of `value` made only of dict/list/str/int/float/bool/None, so the template sees
    no Python object with methods beyond those of plain data (and cannot touch the caller's)."""
    if _depth > 200:
        raise SandboxViolation("template data nested more than 200 levels")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, _depth + 1) for v in value]
    raise TypeError(f"template data must be plain JSON-like values, got {type(value).__name__}")


_ENVS = threading.local()
_CACHE_SIZE = 256


def _environment(limits: Limits) -> HarnessSandbox:
    """This thread's environment for `limits` (compiled templates are cached in it)."""
    envs = getattr(_ENVS, "by_limits", None)
    if envs is None:
        envs = _ENVS.by_limits = {}
    env = envs.get(limits)
    if env is None:
        env = envs[limits] = HarnessSandbox(limits)
        env.compiled = {}
    return env


def _compiled(env: HarnessSandbox, source: str) -> jinja2.Template:
    cache = env.compiled
    template = cache.pop(source, None)
    if template is None:
        template = env.from_string(source)
        if len(cache) >= _CACHE_SIZE:
            cache.pop(next(iter(cache)))
    cache[source] = template          # most recently used last
    return template


def render(source: str, variables: dict[str, Any], *, limits: Limits = DEFAULT_LIMITS) -> str:
    """Compile (cached per thread) and render `source` in a HarnessSandbox within `limits`.

    Raises SandboxViolation / RenderLimitExceeded for anything refused, TemplateRaised for the
    template's own raise_exception(), jinja2.TemplateError for a broken template."""
    if len(source) > limits.source_chars:
        raise RenderLimitExceeded("size", f"template source is {len(source):,} characters "
                                          f"(limit {limits.source_chars:,})")
    env = _environment(limits)
    data = plain(variables)

    def run() -> str:
        env.state = RenderState(limits)    # this render's budget and deadline (compiling counts too)
        template = _compiled(env, source)
        out: list[str] = []
        total = 0
        for chunk in template.generate(**data):
            total += len(chunk)
            if total > limits.output_chars:
                raise RenderLimitExceeded("output", f"rendered output exceeds {limits.output_chars:,} characters")
            out.append(chunk)
            env.state.tick()
        return "".join(out)

    try:
        return _with_deadline(run, limits.time_s)
    except RecursionError:
        raise RenderLimitExceeded("recursion", "template recursion too deep") from None
    except MemoryError:
        raise RenderLimitExceeded("memory", "render ran out of memory") from None


_REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")


def _alias_reasoning(message: Any) -> Any:
    """As transformers does: reasoning under any of its names is visible under all of them."""
    if not isinstance(message, dict):
        return message
    reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is None:
        return message
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}


def render_chat(template: str, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
                add_generation_prompt: bool = True, bos_token: str = "", eos_token: str = "",
                limits: Limits = DEFAULT_LIMITS, **extra: Any) -> str:
    """Render a chat template with the variables transformers passes to it."""
    variables = {"messages": [_alias_reasoning(m) for m in messages], "tools": tools, "documents": None,
                 "add_generation_prompt": add_generation_prompt, "bos_token": bos_token, "eos_token": eos_token,
                 **extra}
    return render(template, variables, limits=limits)


class SandboxRenderer:
    """The harness's renderer with the backend interface's render capability (template given
    with the request; no model)."""
    name = "harness-sandbox"
    capabilities = frozenset({RENDER})

    def __init__(self, model: ModelFiles | None = None, options: BackendOptions | None = None,
                 limits: Limits = DEFAULT_LIMITS):
        self.limits = limits

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "jinja2": jinja2.__version__, "limits": self.limits.__dict__}

    def close(self) -> None:
        pass

    def render_prompt(self, req: RenderRequest) -> Rendered:
        from harness.backends.base import Unsupported
        from harness.backends.rendering import FIXED_DATE_STRING, capture
        if req.template is None:
            raise Unsupported("the harness's renderer renders only a template given with the request")

        def run() -> str:
            return render_chat(req.template, list(req.messages), tools=req.tools,
                               add_generation_prompt=req.add_generation_prompt, bos_token=req.bos_token or "",
                               eos_token=req.eos_token or "", limits=self.limits,
                               **{"date_string": FIXED_DATE_STRING, **req.extra})
        return capture(run, TemplateRaised)


__all__ = ["Limits", "DEFAULT_LIMITS", "SandboxViolation", "RenderLimitExceeded", "TemplateRaised",
           "HarnessSandbox", "render", "render_chat", "plain", "SandboxRenderer"]
