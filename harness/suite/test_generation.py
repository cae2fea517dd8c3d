"""Generation with real weights, greedy and seeded, on every generating backend: grammars
(and the grammar engine alone), token masks, stops, special-token rendering, missing chat
templates; each generation also streamed and compared with the non-streamed result.
The checking itself lives in harness/families/generation/checks.py."""

from harness.families.generation import checks as gen
from harness.families.generation.constrained import constrained_items
from harness.backends.base import CHAT, COMPLETE, RENDER, STREAM, VOCAB
from harness.suite import conclude, needs, open_backend, run_check, skip_unsupported

PARAMETERS = {
    "engine_item": gen.engine_items,
    "grammar_item": gen.grammar_items,
    "agree_item": gen.agree_items,
    "masks_item": gen.masks_items,
    "oov_item": gen.oov_items,
    "stop_item": gen.stop_items,
    "special_item": gen.special_items,
    "template_item": gen.template_items,
    "constrained_item": constrained_items,
}


def test_grammar_engine(engine_item, harness_runtime, golden, record_property):
    """Strings each grammar must accept and reject, through llama.cpp's grammar engine alone
    (for a JSON schema: on the GBNF of llama-cpp-python's converter and of llama.cpp's own)."""
    to_gbnf = None
    if engine_item.backend is not None:          # llama.cpp's C++ converter, through the chat probe
        backend = open_backend(harness_runtime, engine_item.backend, engine_item.case, RENDER, record_property)
        to_gbnf = backend.json_schema_to_grammar
    conclude(run_check(gen.check_grammar_engine, engine_item, to_gbnf), golden, record_property)


def test_grammar(grammar_item, harness_runtime, golden, record_property):
    """Constrained output conforms, ends by itself, leaks no end-of-turn text; streamed == not."""
    it = grammar_item
    caps = gen.grammar_caps(it, it.params["endpoint"])
    backend = open_backend(harness_runtime, it.backend, it.case, caps[0], record_property)
    needs(backend, *caps)
    conclude(run_check(gen.check_grammar, harness_runtime, it, backend), golden, record_property)


def test_endpoints_agree(agree_item, harness_runtime, golden, record_property):
    """The completion endpoint on the chat endpoint's own prompt returns what chat returns."""
    it = agree_item
    backend = open_backend(harness_runtime, it.backend, it.case, COMPLETE, record_property)
    needs(backend, *gen.grammar_caps(it, "chat"))
    conclude(run_check(gen.check_endpoints_agree, harness_runtime, it, backend), golden, record_property)


def test_masks(masks_item, harness_runtime, golden, record_property):
    """Every special id and every id a grammar sampler allows is within n_vocab."""
    it = masks_item
    backend = open_backend(harness_runtime, it.backend, it.case, VOCAB, record_property)
    conclude(run_check(gen.check_masks, harness_runtime, it, backend), golden, record_property)


def test_out_of_vocab(oov_item, harness_runtime, golden, record_property):
    """A token id >= n_vocab is refused with an error, never a crash."""
    it = oov_item
    backend = open_backend(harness_runtime, it.backend, it.case, COMPLETE, record_property)
    conclude(run_check(gen.check_out_of_vocab, harness_runtime, it, backend), golden, record_property)


def test_stop(stop_item, harness_runtime, golden, record_property):
    """Stops cut the output exactly at the first stop, with the right finish reason."""
    it = stop_item
    backend = open_backend(harness_runtime, it.backend, it.case, COMPLETE, record_property)
    if it.stream:
        needs(backend, STREAM)
    conclude(run_check(gen.check_stop, harness_runtime, it, backend), golden, record_property)


def test_special_rendering(special_item, harness_runtime, golden, record_property):
    """With and without rendering of special tokens, the text is what the backend documents."""
    it = special_item
    backend = open_backend(harness_runtime, it.backend, it.case, COMPLETE, record_property)
    if it.stream:
        needs(backend, STREAM)
    conclude(run_check(gen.check_special, harness_runtime, it, backend), golden, record_property)


def test_chat_template(template_item, harness_runtime, golden, record_property):
    """A chat call reports the template it used; a model without one must not be silently
    formatted in a fallback."""
    it = template_item
    backend = open_backend(harness_runtime, it.backend, it.case, CHAT, record_property)
    if it.stream:
        needs(backend, STREAM)
    conclude(run_check(gen.check_chat_template, harness_runtime, it, backend), golden, record_property)


def test_constrained(constrained_item, harness_runtime, record_property):
    """A constrained-decoding library drives a real llama-cpp-python generation on each JSON
    schema (families/generation/constrained.py): the output conforms, ends with an end-of-generation
    token, and no allowed id is >= n_vocab; llama.cpp's own grammar on the same prompt is recorded."""
    from harness.backends.base import Unsupported
    from harness.families.generation.constrained import LLAMA_GRAMMAR, check_constrained
    it, rt = constrained_item, harness_runtime
    llama = open_backend(rt, "llama-cpp-python", it.case, COMPLETE, record_property)
    hf = None if it.params["library"] == LLAMA_GRAMMAR else open_backend(rt, "hf", it.case, VOCAB, record_property)
    try:
        details, finding = check_constrained(rt, it, llama, hf)
    except Unsupported as exc:
        skip_unsupported(exc)
    record_property("details", {"constrained": details})
    if finding is not None:
        raise finding
