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
the interpreter) are the job of harness/run/isolation.py, which renders untrusted templates in a
forked child with a wall-clock kill and an address-space cap.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import functools
import json
import re
import string
import threading
import time
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Iterable

import jinja2
import jinja2.ext
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from harness.backends.base import RENDER, BackendOptions, ModelFiles, Rendered, RenderRequest


# --- limits and errors ----------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    time_s: float = 10.0                 # compile + render, wall clock
    output_chars: int = 8 << 20          # the rendered prompt
    value_chars: int = 8 << 20           # any one string / list produced while rendering
    budget_chars: int = 64 << 20         # all strings / lists produced by guarded operations, summed
    int_bits: int = 1 << 16              # integers (about 19,700 decimal digits)
    source_chars: int = 1 << 20          # the template source itself
    json_indent: int = 64                # tojson(indent=...) and pprint


DEFAULT_LIMITS = Limits()


class SandboxViolation(SecurityError):
    """The template tried something the harness's sandbox does not allow."""


class RenderLimitExceeded(SandboxViolation):
    """A time, size, recursion or memory limit stopped the render. `kind` says which."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class TemplateRaised(TemplateError):
    """The template's own raise_exception(...) fired: it refuses the conversation."""


class _Deadline(BaseException):
    """Raised asynchronously into the rendering thread by the watchdog. A BaseException so
    that no `except Exception` inside Jinja or a filter can swallow it."""


# --- per-render state -----------------------------------------------------------------
class _State:
    def __init__(self, limits: Limits):
        self.limits = limits
        self.deadline = time.monotonic() + limits.time_s
        self.spent = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderLimitExceeded("time", f"render exceeded its time limit of {self.limits.time_s:g}s")

    def charge(self, n: int, what: str) -> None:
        self.tick()
        lim = self.limits
        if n > lim.value_chars:
            raise RenderLimitExceeded("size", f"{what} would produce {n:,} items/characters "
                                              f"(limit {lim.value_chars:,})")
        self.spent += n
        if self.spent > lim.budget_chars:
            raise RenderLimitExceeded("size", f"the template produced more than {lim.budget_chars:,} characters "
                                              f"of intermediate values in total (allocation budget)")


_SIZED = (str, bytes, bytearray, list, tuple, dict, set, frozenset)


def _size(v: Any) -> int | None:
    return len(v) if isinstance(v, _SIZED) else None


# --- guarded code generation: `~` goes through the environment ------------------------------
class _GuardedCodeGenerator(CodeGenerator):
    @optimizeconst
    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            escape = "context.eval_ctx.autoescape"
        else:
            escape = repr(bool(frame.eval_ctx.autoescape))
        self.write("environment.guarded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(f"), {escape})")


class _IgnoreGeneration(jinja2.ext.Extension):
    """transformers' `{% generation %}...{% endgeneration %}` (assistant-mask tracking):
    renders its body unchanged, as transformers does when no mask is requested."""
    tags = {"generation"}

    def parse(self, parser):
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _Namespace(Namespace):
    """namespace() that refuses underscore-prefixed names (as transformers does)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 (jinja's own signature trick)
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SandboxViolation(f"namespace attribute {name!r}: underscore-prefixed names are not allowed")


class _Dict:
    """dict(...) and dict.fromkeys(...) without exposing the dict type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


def _raise_exception(message: Any) -> None:
    raise TemplateRaised(str(message))


def _strftime_now(fmt: str) -> str:
    # the suite freezes the clock around renders (harness/backends/rendering.py)
    return _dt.datetime.now().strftime(fmt)


def _tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


# "%" conversions: width and precision
_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


class HarnessSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment with no loader and the limits of `Limits`. Not shared
    between threads: `state` holds the current render's budget and deadline."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _GuardedCodeGenerator

    def __init__(self, limits: Limits = DEFAULT_LIMITS):
        super().__init__(loader=None, autoescape=False, trim_blocks=True, lstrip_blocks=True,
                         extensions=[_IgnoreGeneration, jinja2.ext.loopcontrols])
        self.state = _State(limits)
        self.limits = limits
        self.globals["lipsum"] = self._lipsum
        self.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_Dict(),
                            namespace=_Namespace)
        self.filters["tojson"] = _tojson
        self.filters = {name: self._guard_filter(name, fn) for name, fn in self.filters.items()}

    def _lipsum(self, n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
        # lipsum multiplies text by its arguments: bounded here, otherwise Jinja's own
        if not all(isinstance(v, int) for v in (n, min, max)) or n > 100 or max > 1000:
            raise RenderLimitExceeded("size", f"lipsum(n={n!r}, max={max!r}): at most 100 paragraphs "
                                              f"of 1000 words")
        from jinja2.utils import generate_lorem_ipsum
        return generate_lorem_ipsum(n=n, html=html, min=min, max=max)

    # --- no files ---------------------------------------------------------------------
    def _load_template(self, name: Any, globals: Any) -> Any:  # noqa: A002 (jinja's signature)
        raise SandboxViolation(f"templates cannot load other templates ({{% include/import/extends %}} of "
                               f"{str(name)[:200]!r}): the harness's renderer has no loader and no file access")

    # --- attributes: refuse at once -----------------------------------------------------
    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SandboxViolation(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe.")

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.state.tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.state.tick()
        return super().getitem(obj, argument)

    # --- operators ------------------------------------------------------------------------
    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        st = self.state
        st.tick()
        lim = self.limits
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if _size(seq) is not None and isinstance(n, int):
                    st.charge(len(seq) * max(n, 0), f"repetition ({type(seq).__name__} * {n})")
            if isinstance(left, int) and isinstance(right, int):
                self._check_bits(abs(left).bit_length() + abs(right).bit_length(), "integer product")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                self._check_bits(max(abs(left).bit_length(), 1) * right if abs(left) > 1 else 1, "integer power")
        elif operator == "+":
            a, b = _size(left), _size(right)
            if a is not None and b is not None:
                st.charge(a + b, f"{type(left).__name__} concatenation")
        elif operator == "%":
            if isinstance(left, str):
                self._check_percent(left, right)
        result = self.binop_table[operator](left, right)
        if isinstance(result, int) and not isinstance(result, bool) and result.bit_length() > lim.int_bits:
            self._check_bits(result.bit_length(), "integer result")
        return result

    def _check_bits(self, bits: int, what: str) -> None:
        if bits > self.limits.int_bits:
            raise RenderLimitExceeded("size", f"{what} would have about {bits:,} bits "
                                              f"(limit {self.limits.int_bits:,})")

    def _check_int_args(self, args: Iterable[Any], what: str) -> None:
        cap = self.limits.value_chars
        for a in args:
            if isinstance(a, int) and not isinstance(a, bool) and abs(a) > cap:
                raise RenderLimitExceeded("size", f"{what}: integer argument {a if a < 10**30 else '(huge)'} "
                                                  f"exceeds {cap:,}")
            if isinstance(a, (tuple, list)) and len(a) <= 64:
                self._check_int_args(a, what)

    def _check_percent(self, fmt: str, args: Any) -> None:
        cap = self.limits.value_chars
        for m in _PERCENT.finditer(fmt):
            for g in m.groups():
                if g and g.isdigit() and (len(g) > 12 or int(g) > cap):
                    raise RenderLimitExceeded("size", f"'%' format width/precision {g[:20]} exceeds {cap:,}")
        values = args if isinstance(args, tuple) else (args,)
        self._check_int_args(values, "'%' formatting")
        if isinstance(args, dict):
            self._check_int_args(args.values(), "'%' formatting")

    def _check_format_string(self, fmt: str, args: tuple, kwargs: dict) -> None:
        cap = self.limits.value_chars
        self._check_int_args(args, "str.format")
        self._check_int_args(kwargs.values(), "str.format")
        try:
            parsed = list(islice(string.Formatter().parse(fmt), 100_000))
        except ValueError:
            return                                  # str.format will raise the same error
        for _literal, _field, spec, _conv in parsed:
            for d in _DIGITS.findall(spec or ""):
                if len(d) > 12 or int(d) > cap:
                    raise RenderLimitExceeded("size", f"str.format width/precision {d[:20]} exceeds {cap:,}")
            if spec and "{" in spec:
                self._check_format_string(spec, args, kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt, is_map = value.__self__, value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            self.state.tick()
            mapping = args[0] if is_map and args and isinstance(args[0], dict) else kwargs
            self._check_format_string(fmt, () if is_map else args, mapping)
            return self._checked_result(wrapped(*args, **kwargs), "str.format")
        checked.__name__ = value.__name__
        return checked

    # --- `~` ----------------------------------------------------------------------------------
    def guarded_concat(self, parts: tuple, autoescape: bool) -> str:
        if autoescape:
            from markupsafe import escape
            strs = [escape(p) for p in parts]
        else:
            strs = [str(p) for p in parts]
        self.state.charge(sum(len(s) for s in strs), "string concatenation (~)")
        return type(strs[0])("").join(strs) if autoescape and strs else "".join(strs)

    # --- calls and filters ----------------------------------------------------------------
    def _checked_result(self, result: Any, what: str) -> Any:
        n = _size(result)
        if n is not None:
            self.state.charge(n, what)
        elif isinstance(result, int) and not isinstance(result, bool):
            self._check_bits(result.bit_length(), f"{what} result")
        return result

    def _materialise(self, value: Any, what: str) -> Any:
        if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
            return value
        items = list(islice(value, self.limits.value_chars + 1))
        self.state.charge(len(items), what)
        return items

    def _estimate_join(self, sep: Any, items: Any, what: str) -> None:
        n = len(items)
        total = len(sep) * max(n - 1, 0) if isinstance(sep, (str, bytes)) else 0
        total += sum(len(x) if isinstance(x, (str, bytes)) else 16 for x in (items.values() if isinstance(
            items, dict) else items))
        self.state.charge(total, what)

    def _estimate_str_method(self, obj: Any, name: str, args: tuple, kwargs: dict) -> tuple:
        """Refuse before the call where a str/bytes method would blow up; returns the args
        (iterables given to join are materialised once, here)."""
        n = len(obj)
        if name == "replace" and len(args) >= 2:
            old, new = args[0], args[1]
            count = args[2] if len(args) > 2 else kwargs.get("count", -1)
            if isinstance(old, (str, bytes)) and isinstance(new, (str, bytes)):
                hits = n + 1 if not old else obj.count(old)
                if isinstance(count, int) and count >= 0:
                    hits = min(hits, count)
                self.state.charge(n + hits * max(len(new) - len(old), 0), "replace()")
        elif name == "join" and args:
            items = self._materialise(args[0], "join()")
            self._estimate_join(obj, items, "join()")
            args = (items, *args[1:])
        elif name == "expandtabs":
            tab = args[0] if args else kwargs.get("tabsize", 8)
            if isinstance(tab, int):
                self.state.charge(n * max(tab, 1), "expandtabs()")
        elif name == "translate" and args and isinstance(args[0], dict):
            longest = max((len(v) for v in args[0].values() if isinstance(v, (str, bytes))), default=1)
            self.state.charge(n * max(longest, 1), "translate()")
        return args

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        self = __self
        self.state.tick()
        what = f"call to {getattr(__obj, '__name__', type(__obj).__name__)}()"
        self._check_int_args(args, what)
        self._check_int_args(kwargs.values(), what)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (str, bytes)):
            args = self._estimate_str_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        return self._checked_result(super().call(__context, __obj, *args, **kwargs), what)

    def _guard_filter(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        # pass_context / pass_environment filters get that object first; the value follows
        skip = 1 if getattr(fn, "jinja_pass_arg", None) is not None else 0
        what = f"filter {name!r}"

        @functools.wraps(fn)   # keeps jinja_pass_arg, so Jinja passes the same arguments
        def guarded(*args: Any, **kwargs: Any) -> Any:
            self.state.tick()
            self._check_int_args(args[skip + 1:], what)
            self._check_int_args(kwargs.values(), what)
            args = self._estimate_filter(name, skip, list(args), kwargs)
            return self._checked_result(fn(*args, **kwargs), what)
        return guarded

    def _estimate_filter(self, name: str, skip: int, args: list, kwargs: dict) -> list:
        if len(args) <= skip:
            return args
        value, rest = args[skip], args[skip + 1:]

        def arg(i: int, key: str, default: Any) -> Any:
            return rest[i] if len(rest) > i else kwargs.get(key, default)
        what = f"filter {name!r}"
        if name == "join":
            value = self._materialise(value, what)
            self._estimate_join(arg(0, "d", ""), value, what)
        elif name == "replace" and isinstance(value, str):
            self._estimate_str_method(value, "replace", tuple(str(a) for a in rest[:2]) + tuple(rest[2:3]), {})
        elif name == "indent" and isinstance(value, str):
            width = arg(0, "width", 4)
            w = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
            self.state.charge(len(value) + (value.count("\n") + 1) * max(w, 0), what)
        elif name == "wordwrap" and isinstance(value, str):
            wrap = arg(3, "wrapstring", None) or "\n"
            self.state.charge(len(value) * (1 + len(str(wrap))), what)
        elif name == "format" and isinstance(value, str):
            self._check_percent(value, tuple(rest) if rest else kwargs)
        elif name in ("tojson", "pprint"):
            indent = arg(1, "indent", None) if name == "tojson" else None
            if isinstance(indent, (int, str)) and not isinstance(indent, bool) and (
                    (len(indent) if isinstance(indent, str) else indent) > self.limits.json_indent):
                raise RenderLimitExceeded("size", f"{what}: indent {str(indent)[:20]!r} exceeds "
                                                  f"{self.limits.json_indent}")
        elif name in ("center",) and isinstance(value, str):
            width = arg(0, "width", 80)
            if isinstance(width, int):
                self.state.charge(max(width, len(value)), what)
        args[skip] = value
        return args


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
                set_async_exc(tid, _Deadline)

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
    except _Deadline:
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
        env.state = _State(limits)    # this render's budget and deadline (compiling counts too)
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
