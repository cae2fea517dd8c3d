"""The sandbox's Jinja environment (HarnessSandbox): an immutable sandbox whose every attribute, call,
loop and output is checked against the render's limits."""

from __future__ import annotations

import functools
import string
from itertools import islice
from typing import Any, Callable, Iterable
import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .sandbox_guards import (
    DEFAULT_LIMITS, DIGITS, GuardedCodeGenerator, GuardedDict, GuardedNamespace, IgnoreGeneration,
    Limits, PERCENT, RenderLimitExceeded, RenderState, SandboxViolation, raise_template_exception,
    template_strftime_now, tojson, value_size
)


class HarnessSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment with no loader and the limits of `Limits`. Not shared
    between threads: `state` holds the current render's budget and deadline."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = GuardedCodeGenerator

    def __init__(self, limits: Limits = DEFAULT_LIMITS):
        super().__init__(loader=None, autoescape=False, trim_blocks=True, lstrip_blocks=True,
                         extensions=[IgnoreGeneration, jinja2.ext.loopcontrols])
        self.state = RenderState(limits)
        self.limits = limits
        self.globals["lipsum"] = self._lipsum
        self.globals.update(raise_exception=raise_template_exception, strftime_now=template_strftime_now, dict=GuardedDict(),
                            namespace=GuardedNamespace)
        self.filters["tojson"] = tojson
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
                if value_size(seq) is not None and isinstance(n, int):
                    st.charge(len(seq) * max(n, 0), f"repetition ({type(seq).__name__} * {n})")
            if isinstance(left, int) and isinstance(right, int):
                self._check_bits(abs(left).bit_length() + abs(right).bit_length(), "integer product")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                self._check_bits(max(abs(left).bit_length(), 1) * right if abs(left) > 1 else 1, "integer power")
        elif operator == "+":
            a, b = value_size(left), value_size(right)
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
        for m in PERCENT.finditer(fmt):
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
            for d in DIGITS.findall(spec or ""):
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
        n = value_size(result)
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
