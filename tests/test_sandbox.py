"""The harness's own renderer (harness/backends/sandbox.py): renders real templates exactly as
transformers does, and refuses everything hostile by itself, within its limits."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from harness.backends import sandbox as sb
from harness.backends.sandbox_guards import Limits, RenderLimitExceeded, SandboxViolation, TemplateRaised
from harness.backends.sandbox import render, render_chat

REPO = Path(__file__).resolve().parents[1]
MSGS = [{"role": "user", "content": "hi"}]


def chat(template: str, **kw) -> str:
    return render_chat(template, MSGS, **kw)


@pytest.fixture(scope="module")
def llama_cpp_templates():
    from harness.models.sources import llama_cpp_tree
    paths = sorted((llama_cpp_tree() / "models" / "templates").glob("*.jinja"))
    assert len(paths) > 50
    return paths


def test_renders_every_llama_cpp_template_exactly_like_transformers(llama_cpp_templates, preloaded_backends):
    from transformers.utils.chat_template_utils import render_jinja_template

    from harness.backends.rendering import FIXED_DATE_STRING, frozen_clock
    from harness.cases.model import discover
    contexts = list(discover(REPO / "cases").contexts.values())
    same = errors = 0
    for path in llama_cpp_templates:
        source = path.read_text(encoding="utf-8")
        for ctx in contexts:
            tools = ctx.tools.tools if ctx.tools else None
            kw = dict(bos_token="<s>", eos_token="</s>", date_string=FIXED_DATE_STRING)
            with frozen_clock():
                try:
                    want = render_jinja_template(conversations=[list(ctx.messages)], tools=tools, chat_template=source,
                                                 add_generation_prompt=True, **kw)[0][0]
                except Exception as exc:  # transformers' verdict: ours must give the same one
                    want = (type(exc).__name__, str(exc).rstrip("."))
                try:
                    got = render_chat(source, list(ctx.messages), tools=tools, add_generation_prompt=True, **kw)
                except Exception as exc:  # the same verdict, in our exception types
                    got = (type(exc).__name__, str(exc).rstrip("."))
            if isinstance(want, tuple):
                errors += 1
                assert isinstance(got, tuple) and got[1] == want[1], (path.name, ctx.id, want, got)
            else:
                same += 1
                assert got == want, (path.name, ctx.id)
    assert same > 400


@pytest.mark.parametrize("template, message", [
    ("{{ ''.__class__ }}", "access to attribute '__class__' of 'str' object is unsafe"),
    ("{% if ''.__class__ %}yes{% endif %}", "is unsafe"),                # refused at once, not a falsy Undefined
    ("{{ cycler.__init__.__globals__ }}", "access to attribute '__init__'"),
    ("{{ ''|attr('__class__') }}", "is unsafe"),
    ("{{ ''['__class__'] }}", "is unsafe"),
    ("{{ '{0.__class__}'.format(1) }}", "is unsafe"),
    ("{{ messages.append(1) }}", "access to attribute 'append' of 'list' object is unsafe"),
    ("{{ messages[0].update({'a': 1}) }}", "access to attribute 'update' of 'dict' object is unsafe"),
    ("{% set ns = namespace() %}{% set ns._x = 1 %}", "underscore-prefixed names are not allowed"),
    ("{% include 'x' %}", "no loader and no file access"),
    ("{% import 'x' as y %}", "no loader and no file access"),
    ("{% extends 'x' %}", "no loader and no file access"),
    ("{% from 'x' import y %}", "no loader and no file access"),
])
def test_refuses_unsafe_access(template, message):
    with pytest.raises(SandboxViolation, match=message.replace("(", r"\(").replace("[", r"\[")):
        chat(template)


@pytest.mark.parametrize("template, kind", [
    ("{{ 'x' * 100000000 }}", "size"),
    ("{{ 100000000 * 'x' }}", "size"),
    ("{{ [1] * 100000000 }}", "size"),
    ("{{ 10 ** (10 ** 10) }}", "size"),
    ("{% set ns = namespace(x=3) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}{% endfor %}", "size"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "size"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "size"),
    ("{{ 'x'|center(100000000) }}", "size"),
    ("{{ 'x'.ljust(100000000) }}", "size"),
    ("{{ ('x' * 1000000).replace('', 'yyyyyyyyyy') }}", "size"),
    ("{{ range(1000)|join('x' * 100000) }}", "size"),
    ("{{ ('x' * 1000).split('') if false }}{{ ('\t' * 10000).expandtabs(10000) }}", "size"),
    ("{{ ('x\n' * 100000)|indent('y' * 1000) }}", "size"),
    ("{{ {'a': 1}|tojson(indent=100000) }}", "size"),
    ("{{ '%0999999999d' % 1 }}", "size"),
    ("{{ '%*d' % (999999999, 1) }}", "size"),
    ("{{ '{:>999999999}'.format(1) }}", "size"),
    ("{{ '{:{}}'.format(1, 999999999) }}", "size"),
    ("{{ lipsum(1000) }}", "size"),
    ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "output"),
    ("{% set x %}{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}{% endset %}", "size"),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursion"),
    ("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", "recursion"),
    ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "recursion"),
])
def test_limits_stop_blowups_by_themselves(template, kind):
    t0 = time.monotonic()
    with pytest.raises(RenderLimitExceeded) as exc:
        chat(template, limits=Limits(time_s=5))
    assert exc.value.kind == kind, str(exc.value)
    assert time.monotonic() - t0 < 2


def test_time_limit_stops_a_loop_with_an_empty_body():
    t0 = time.monotonic()
    with pytest.raises(RenderLimitExceeded, match="time limit of 0.5s") as exc:
        chat("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
             limits=Limits(time_s=0.5))
    assert exc.value.kind == "time"
    assert time.monotonic() - t0 < 3


def test_a_deadline_never_leaks_out_of_the_render():
    """Many renders that finish close to their deadline: no stray exception afterwards."""
    limits = Limits(time_s=0.002)
    for _ in range(300):
        try:
            chat("{% for i in range(2000) %}{{ i }}{% endfor %}", limits=limits)
        except RenderLimitExceeded:
            pass
    for _ in range(200000):      # plenty of bytecodes for a pending async exception to surface
        pass
    assert chat("{{ messages[0].content }}") == "hi"


def test_works_outside_the_main_thread():
    out = {}

    def run():
        try:
            chat("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                 limits=Limits(time_s=0.3))
        except RenderLimitExceeded as exc:
            out["kind"] = exc.kind
        out["ok"] = chat("{{ messages|length }}")
    t = threading.Thread(target=run)
    t.start()
    t.join(10)
    assert out == {"kind": "time", "ok": "1"}


def test_source_size_limit():
    with pytest.raises(RenderLimitExceeded, match="template source"):
        render("x" * 100, {}, limits=Limits(source_chars=10))


def test_raise_exception_is_the_templates_own_refusal():
    with pytest.raises(TemplateRaised, match="no system role"):
        chat("{{ raise_exception('no system role') }}")


def test_input_is_copied_to_plain_data():
    messages = [{"role": "user", "content": "hi"}]
    assert render_chat("{{ messages[0].content }}", messages) == "hi"
    with pytest.raises(TypeError, match="plain JSON-like values"):
        render("{{ x }}", {"x": object()})


def test_renderer_interface_records_errors_like_the_backends():
    from harness.backends.base import RenderRequest
    r = sb.SandboxRenderer()
    ok = r.render_prompt(RenderRequest(messages=MSGS, template="{{ messages[0].content }}{{ bos_token }}",
                                       bos_token="<s>"))
    assert ok.text == "hi<s>"
    bad = r.render_prompt(RenderRequest(messages=MSGS, template="{{ ''.__class__ }}"))
    assert bad.text is None and bad.error.startswith("SandboxViolation: access to attribute '__class__'")
    refused = r.render_prompt(RenderRequest(messages=MSGS, template="{{ raise_exception('nope') }}"))
    assert refused.rejected and refused.error == "TemplateRejected: nope"
    broken = r.render_prompt(RenderRequest(messages=MSGS, template="{% for %}"))
    assert broken.error.startswith("TemplateSyntaxError")
