"""Chat templates: every renderer, every context; byte-for-byte agreement with the HF
reference, goldens, token-level parity of the rendered prompt, and missing templates."""

import dataclasses

import pytest

from harness.families import items as expand
from harness.families.templates import chat_params
from harness.backends.base import RENDER, TOKENIZE, VOCAB, Unsupported
from harness.checks import Mismatch, mismatch
from harness.suite import conclude, open_backend, run_check, skip_unsupported

PARAMETERS = {
    "render_item": expand.render_items,
    "agree_item": expand.agree_items,
    "tokens_item": expand.prompt_token_items,
    "embedded_item": expand.model_items("templates.embedded", lambda c: c.expects_template),
    "missing_item": expand.model_items("templates.missing", lambda c: not c.expects_template),
    "chat_params_item": chat_params.chat_params_items,
}


def _render(rt, name, item, record_property):
    open_backend(rt, name, item.case, RENDER, record_property)
    try:
        return rt.render(name, item.case, item.context, item.gen)
    except Unsupported as exc:
        skip_unsupported(exc)


def test_render(render_item, harness_runtime, golden, record_property):
    """The renderer's output (or its error) is the golden; an engine error is a finding."""
    it = render_item
    rendered = _render(harness_runtime, it.backend, it, record_property)
    assert rendered.as_golden() == golden
    if rendered.error and not rendered.rejected:
        raise Mismatch(f"{it.case.location()}: {it.backend} could not render context '{it.context.id}': "
                       f"{rendered.error}")


def test_render_agrees(agree_item, harness_runtime, record_property):
    """Byte-for-byte agreement with transformers' rendering of the same template."""
    it = agree_item
    actual = _render(harness_runtime, it.backend, it, record_property)
    reference = _reference(harness_runtime, it, record_property)
    if reference.text is not None and actual.text is not None:
        expected = reference.text
        if getattr(harness_runtime.backend(it.backend, it.case), "omits_bos_text", False):
            expected = _strip_bos(harness_runtime, it, expected)
        if actual.text != expected:
            raise mismatch(it.case.location(), f"{it.backend} renders '{it.context.id}' differently from hf",
                           expected, actual.text, "hf", it.backend)
    elif reference.rejected and actual.rejected:
        return  # both refuse the conversation: the template's own rule, applied by both
    elif (reference.text is None) != (actual.text is None) or reference.rejected != actual.rejected:
        raise mismatch(it.case.location(), f"{it.backend} and hf disagree on whether '{it.context.id}' renders",
                       reference.as_golden(), actual.as_golden(), "hf", it.backend)


def _reference(rt, item, record_property):
    """transformers' rendering of the item, given the template variables the renderer under test
    always sets (a backend's `template_variables`, e.g. llama.cpp's chat layer passes
    enable_thinking=true to every template): the engines are compared on the same inputs."""
    variables = getattr(rt.backend(item.backend, item.case), "template_variables", None)
    req = rt.render_request(item.case, item.context, item.gen)
    if variables and req.template is not None:
        # a template that never names a variable cannot read it: the plain render is the same
        variables = {k: v for k, v in variables.items() if k in req.template}
    if not variables:
        return _render(rt, expand.REFERENCE_RENDERER, item, record_property)
    hf = open_backend(rt, expand.REFERENCE_RENDERER, item.case, RENDER, record_property)
    return hf.render_prompt(dataclasses.replace(req, extra={**req.extra, **variables}))


def _strip_bos(rt, item, text: str) -> str:
    """Drop the BOS text a renderer that omits it would have left to the tokenizer: for a
    model, only when its vocab really adds BOS; for a bare template, its declared BOS."""
    bos = item.case.bos_token
    if item.case.kind == "model":
        if not rt.backend("llama-cpp-python", item.case).vocab_info().add_bos:
            return text
        bos = rt.backend("hf", item.case).vocab_info().extra.get("bos_token")
    return text[len(bos):] if bos and text.startswith(bos) else text


def test_prompt_tokens(tokens_item, harness_runtime, golden, record_property):
    """The rendered prompt tokenizes to the same ids in llama.cpp as in transformers, as each
    stack's chat path tokenizes it (no specials added: the template carries them), with at
    most one BOS, and with the BOS the model expects."""
    it, rt = tokens_item, harness_runtime
    rendered = _render(rt, expand.REFERENCE_RENDERER, it, record_property)
    if rendered.text is None:
        pytest.skip(f"hf did not render this context: {rendered.error}")
    hf = open_backend(rt, "hf", it.case, TOKENIZE, record_property)
    other = open_backend(rt, it.backend, it.case, TOKENIZE, record_property)
    hf_ids = hf.tokenize(rendered.text, add_special=False, parse_special=True)
    ids = other.tokenize(rendered.text, add_special=False, parse_special=True)
    assert {"ids": ids} == golden
    if ids != hf_ids:
        raise mismatch(it.case.location(), f"{it.backend} tokenizes the rendered prompt differently from hf",
                       hf_ids, ids, "hf", it.backend)
    if VOCAB in other.capabilities:
        vocab = other.vocab_info()
        bos_run = len(ids) - len(list(dropwhile_eq(ids, vocab.bos_id)))
        if vocab.bos_id is not None and bos_run > 1:
            raise Mismatch(f"{it.case.location()}: the prompt starts with {bos_run} BOS tokens (id {vocab.bos_id})")
        if vocab.add_bos and (not ids or ids[0] != vocab.bos_id):
            raise Mismatch(f"{it.case.location()}: the model expects a BOS (add_bos_token=true) but the "
                           f"rendered prompt does not start with one: {ids[:5]}")


def dropwhile_eq(ids, value):
    i = 0
    while i < len(ids) and ids[i] == value:
        i += 1
    return ids[i:]


def test_embedded_template(embedded_item, harness_runtime, record_property):
    """The GGUF's embedded template equals the template on the HF side."""
    it, rt = embedded_item, harness_runtime
    llama = open_backend(rt, "llama-cpp-python", it.case, VOCAB, record_property)
    hf = open_backend(rt, "hf", it.case, TOKENIZE, record_property)
    embedded = llama.embedded_template
    if embedded is None:
        raise Mismatch(f"{it.case.location()}: the case expects an embedded chat template; the GGUF has none")
    if hf.source == "gguf_file":
        pytest.skip("the HF tokenizer was built from this GGUF (no hub access): no independent HF template "
                    "to compare with")
    if hf.tokenizer.chat_template != embedded:
        raise mismatch(it.case.location(), "the GGUF's template differs from the HF repo's", hf.tokenizer.chat_template,
                       embedded, "hf", "gguf")


def test_missing_template(missing_item, harness_runtime, golden, record_property):
    """A model without a chat template must be reported, not silently rendered in a fallback."""
    it, rt = missing_item, harness_runtime
    llama = open_backend(rt, "llama-cpp-python", it.case, VOCAB, record_property)
    if llama.embedded_template is not None:
        raise Mismatch(f"{it.case.location()}: the case says chat_template: none, but the GGUF has one")
    fallback = llama.llm.chat_format
    record_property("finding", f"no chat template; llama-cpp-python falls back to chat_format={fallback!r}")
    assert {"gguf_chat_template": None, "llama_cpp_python_chat_format": fallback} == golden
    if fallback is not None:
        raise Mismatch(f"{it.case.location()}: the GGUF has no chat template, and llama-cpp-python silently "
                       f"formats chats as {fallback!r} instead of refusing or warning")


def test_chat_params(chat_params_item, harness_runtime, golden, record_property):
    """What llama.cpp's chat layer derives from the template for a generation (format, grammar,
    triggers, preserved tokens, stops, generation prompt, thinking tags) is the golden; tools
    offered to a tool-reading template with no tool-call format derived is a finding."""
    it, rt = chat_params_item, harness_runtime
    backend = open_backend(rt, it.backend, it.case, RENDER, record_property)
    conclude(run_check(chat_params.check_chat_params, rt, it, backend), golden, record_property)
