"""Tool calls: round trip through each tool-capable template, the prompts llama-cpp-python's
hand-built tool handlers send, streaming of every wire format in a real model's tokens, and
real tool-call generations (grammar-constrained and through each stack's chat API), with
arguments validated against the tool's schema. The checking lives in harness/families/toolcalls/checks.py.
(Rendering tool conversations and agreement between renderers is test_templates.py.)"""

import dataclasses

import pytest

from harness.families.toolcalls import checks as tc
from harness.families.toolcalls import model_format as model_behaviour
from harness.families.toolcalls.llamafactory import extract_items as llamafactory_items
from harness.families.toolcalls.llamafactory_prompt import prompt_items as llamafactory_prompt_items
from harness.families.toolcalls import llama_parse, server_parse
from harness.backends.base import CHAT, COMPLETE, GRAMMAR, PARSE, RENDER, TOKENIZE, TOOLS, BackendError, Unsupported
from harness.run.server_build import ServerBuildError
from harness.suite import conclude, open_backend, require_capability, run_check, skip_build_failure, skip_unsupported

PARAMETERS = {
    "round_trip_item": tc.round_trip_items,
    "handler_item": tc.handler_items,
    "stream_item": tc.stream_items,
    "grammar_item": tc.grammar_items,
    "chat_item": tc.chat_items,
    "model_format_item": model_behaviour.model_format_items,
    "llamafactory_item": llamafactory_items,
    "llamafactory_prompt_item": llamafactory_prompt_items,
    "llama_parse_item": llama_parse.llama_parse_items,
    "server_parse_item": server_parse.server_parse_items,
}


class _Opened(dict):
    """The family's own backends by key; a short repr, the same in every run (pytest prints
    fixture values in tracebacks, and what is open depends on the order checks ran in)."""

    def __repr__(self) -> str:
        return "<toolcall backends>"   # its size depends on what ran before: not in messages


@pytest.fixture(scope="session")
def toolcall_backends(harness_runtime):
    """Backends only this family needs: a template-only transformers renderer, and llama-server
    processes started with a case's tool-capable template. Closed at the end of the session."""
    opened = _Opened()
    yield opened
    for backend in opened.values():
        if not isinstance(backend, Exception):
            backend.close()


def _template_renderer(rt, opened):
    if "hf-templates" not in opened:
        from harness.backends.hf import HFBackend
        opened["hf-templates"] = HFBackend(None, rt.options)
    return opened["hf-templates"]


def _server_with_template(rt, item, opened, record_property):
    """llama-server for the case's model, started with --chat-template-file <the case's template>."""
    from harness.backends.server import ServerBackend
    path, _ = tc.template_ref(tc.generation_config(item.case)["template"])
    key = ("llama-server", item.case.id, str(path))
    if key not in opened:
        try:
            model = dataclasses.replace(rt.model_files(item.case), chat_template_file=path)
            opened[key] = ServerBackend(model, rt.options_for("llama-server"))
        except (BackendError, Unsupported) as exc:
            opened[key] = exc
    got = opened[key]
    if isinstance(got, Unsupported):
        skip_unsupported(got)
    if isinstance(got, ServerBuildError):
        skip_build_failure(rt, "llama-server", got)
    if isinstance(got, Exception):
        pytest.fail(f"{item.case.location()}: llama-server with {path.name}: {got}", pytrace=False)
    record_property("backend_info", got.info())
    return got


def test_round_trip(round_trip_item, harness_runtime, toolcall_backends, golden, record_property):
    """Tool calls rendered by the template come back from the rendered turn (extracted, or at
    least present), except what the case declares lossy by design. A model's template is the
    one in its GGUF, rendered by transformers' Jinja like a template-set case."""
    it, rt = round_trip_item, harness_runtime
    own = None
    if it.case.kind == "model":
        own = tc.model_template(open_backend(rt, "llama-cpp-python", it.case, RENDER, record_property))
        hf = _template_renderer(rt, toolcall_backends)
    else:
        hf = open_backend(rt, "hf", it.case, RENDER, record_property)
    conclude(run_check(tc.check_round_trip, rt, it, hf, own), golden, record_property)


def test_handler_prompt(handler_item, harness_runtime, toolcall_backends, golden, record_property):
    """The prompt a hand-built llama-cpp-python tool handler sends, captured before it generates,
    against the template it stands in for and the rules every tool prompt keeps."""
    it, rt = handler_item, harness_runtime
    llama = open_backend(rt, "llama-cpp-python", it.case, TOKENIZE, record_property)
    hf_tokenizer = None
    if it.params["handler"].startswith("functionary"):
        # the functionary handlers render through llama.tokenizer_.hf_tokenizer: the model's own
        hf_tokenizer = open_backend(rt, "hf", it.case, TOKENIZE, record_property).tokenizer
    renderer = _template_renderer(rt, toolcall_backends)
    conclude(run_check(tc.check_handler_prompt, rt, it, llama, renderer, hf_tokenizer), golden, record_property)


def test_stream(stream_item, harness_runtime, harness_cases, golden, record_property):
    """Every canned output streams, one real token per delta (and every other split), to the
    calls extract() finds in the finished text; names and ids are sent once."""
    it = stream_item
    backend = open_backend(harness_runtime, it.backend, it.case, TOKENIZE, record_property)
    conclude(run_check(tc.check_stream, it, backend, harness_cases.root), golden, record_property)


def test_grammar_call(grammar_item, harness_runtime, toolcall_backends, golden, record_property):
    """Greedy generation under a grammar that follows the wire format; extracted arguments
    satisfy the tool's schema."""
    it, rt = grammar_item, harness_runtime
    backend = open_backend(rt, it.backend, it.case, COMPLETE, record_property)
    require_capability(backend, GRAMMAR)
    renderer = _template_renderer(rt, toolcall_backends)
    conclude(run_check(tc.check_grammar_call, rt, it, backend, renderer), golden, record_property)


def test_chat_call(chat_item, harness_runtime, toolcall_backends, golden, record_property):
    """A forced tool call through the stack's chat API comes back as a tool call whose
    arguments satisfy the tool's schema."""
    it, rt = chat_item, harness_runtime
    backend = _chat_backend(rt, it, toolcall_backends, record_property)
    conclude(run_check(tc.check_chat_call, rt, it, backend), golden, record_property)


def _chat_backend(rt, it, toolcall_backends, record_property):
    """The backend a chat_call item (or its server_parse twin) asks: llama-server started with the
    case's template where the item names one."""
    backend = open_backend(rt, it.backend, it.case, CHAT, record_property)
    require_capability(backend, TOOLS)
    if it.backend == "llama-server" and it.params["template"] != "embedded":
        backend = _server_with_template(rt, it, toolcall_backends, record_property)
    return backend


def test_server_parse(server_parse_item, harness_runtime, toolcall_backends, golden, record_property):
    """llama-server's parse of its own reply (toolcalls.chat_call's) equals the chat probe's parse
    of the same raw text with the same inputs, and the server's chat params the probe's: the
    probe drives llama.cpp's chat layer as the server does."""
    it, rt = server_parse_item, harness_runtime
    server = _chat_backend(rt, it, toolcall_backends, record_property)
    probe = open_backend(rt, "llama.cpp-chat", it.case, PARSE, record_property)
    conclude(run_check(server_parse.check_server_parse, rt, it, server, probe), golden, record_property)


def test_model_format(model_format_item, harness_runtime, golden, record_property):
    """Unforced (tool_choice auto), does the model write its own template's wire format when it
    calls a tool? A property of the model (the report's "Model behaviour"), not a stack finding;
    fails only when the server leaves the template's call markers unparsed."""
    it, rt = model_format_item, harness_runtime
    backend = open_backend(rt, it.backend, it.case, CHAT, record_property)
    require_capability(backend, TOOLS)
    outcome, behaviour = run_check(model_behaviour.check_model_format, rt, it, backend)
    record_property("details", {"model_behaviour": behaviour})
    conclude(outcome, golden, record_property)


def _llamafactory(check, item, root, record_property):
    try:
        details, finding = check(item, root)
    except Unsupported as exc:
        skip_unsupported(exc)
    record_property("details", {"llamafactory": details})
    if finding is not None:
        raise finding


def test_llamafactory_extract(llamafactory_item, harness_cases, record_property):
    """LLaMA-Factory's tool-call extractor of each wire format on that format's canned outputs,
    against the harness's reference extractor (harness/families/toolcalls/llamafactory.py)."""
    from harness.families.toolcalls.llamafactory import check_extract
    _llamafactory(check_extract, llamafactory_item, harness_cases.root, record_property)


def test_llamafactory_prompt(llamafactory_prompt_item, harness_cases, record_property):
    """LLaMA-Factory's first-turn system block with tools (its template.py slots and tool_formatter)
    against the model template's rendering of the same tools (families/toolcalls/llamafactory_prompt.py)."""
    from harness.families.toolcalls.llamafactory_prompt import check_prompt
    _llamafactory(check_prompt, llamafactory_prompt_item, harness_cases.root, record_property)


@pytest.fixture(scope="session")
def llama_parse_cache(harness_cases):
    """llama.cpp's parse of every canned output, per template, computed once (llama_parse.py)."""
    return llama_parse.LlamaParseCache(harness_cases.root)


def test_llama_parse(llama_parse_item, harness_runtime, llama_parse_cache, golden, record_property):
    """llama.cpp's own parser (common_chat_parse) on a canned output with the template's chat params,
    finished and streamed, against the reference extractor (harness/families/toolcalls/llama_parse.py)."""
    it, rt = llama_parse_item, harness_runtime
    backend = open_backend(rt, it.backend, it.case, PARSE, record_property)
    tokenizer = None
    if it.case.kind == "model":                  # its GGUF template, and its real token pieces
        tokenizer = open_backend(rt, "llama-cpp-python", it.case, TOKENIZE, record_property)
        text, bos, eos = tc.model_template(tokenizer)
        run_check(llama_parse.require_format, it.case, it.params["format"], text)
        source = llama_parse.TemplateSource(text, bos, eos, f"{it.case.id}'s GGUF template")
    else:
        source = llama_parse.TemplateSource(it.case.template_path.read_text(encoding="utf-8"), it.case.bos_token or "",
                                            it.case.eos_token or "", f"template {it.case.template_path.stem}")
    canned = llama_parse.canned_for(llama_parse_cache.cases_root, it.params["format"])
    parses = llama_parse_cache.get(backend, it.case, it.params["format"], source, llama_parse.offered_tools(canned))
    conclude(run_check(llama_parse.check_llama_parse, it, parses, canned, backend, tokenizer), golden, record_property)
