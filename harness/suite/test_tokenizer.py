"""Tokenizers: llama.cpp against its HF-generated reference ids and against transformers on
generated strings; round trips; streaming detokenization; special tokens; vocab sizes."""

import codecs

import pytest

from harness.families.tokenizer import checks as tk
from harness.families.tokenizer.token_table_check import token_table_items
from harness.backends.base import DETOKENIZE, TOKENIZE, VOCAB, Unsupported
from harness.checks import Mismatch
from harness.models.markers import END_OF_TURN
from harness.suite import open_backend, skip_unsupported

PARAMETERS = {
    "reference_item": tk.reference_items,
    "differential_item": tk.differential_items,
    "special_texts_item": tk.differential_items_for("tokenizer.special_texts"),
    "roundtrip_item": tk.per_backend_items("tokenizer.roundtrip"),
    "all_ids_item": tk.per_backend_items("tokenizer.all_ids"),
    "stream_item": tk.per_backend_items("tokenizer.stream"),
    "special_render_item": tk.per_backend_items("tokenizer.special_render"),
    "special_item": tk.per_case_items("tokenizer.special"),
    "sizes_item": tk.per_case_items("tokenizer.sizes"),
    "token_table_item": token_table_items,
}


def _piece_fn(backend):
    if hasattr(backend, "token_piece"):
        return lambda i: backend.token_piece(i, render_special=True)
    return lambda i: backend.detokenize([i], render_special=True)


def test_reference_ids(reference_item, harness_runtime, record_property):
    """llama.cpp's own HF-generated reference: tokenize exactly as test-tokenizer-0 does."""
    it = reference_item
    ref = tk.reference_of(it.case)[int(it.params["string"].split("-")[1])]
    backend = open_backend(harness_runtime, it.backend, it.case, TOKENIZE, record_property)
    # llama.cpp's test parses no special tokens; the HF generator used encode() defaults
    ids = backend.tokenize(ref.text, add_special=False, parse_special=(it.backend == "hf"))
    if list(ref.ids) != ids:
        at = tk.first_divergence(list(ref.ids), ids)
        raise Mismatch(f"{it.case.location()}: {it.backend} tokenizes reference string {ref.index} "
                       f"{ref.text!r} differently from the recorded HF ids\n"
                       + tk.describe_ids("recorded", list(ref.ids), at, _piece_fn(backend)) + "\n"
                       + tk.describe_ids(it.backend, ids, at, _piece_fn(backend)))


def _vocab_special_texts(rt, case, record_property) -> tuple[str, ...]:
    """The texts of the vocab's control and user-defined tokens, in id order, as llama.cpp has them."""
    llama = open_backend(rt, "llama-cpp-python", case, VOCAB, record_property)
    info = llama.vocab_info()
    ids = sorted(set(info.special_ids) | set(info.extra.get("user_defined_ids", ())))
    return tuple(llama.token_text(i) for i in ids)


def _describe_pair(hf, other, name, ids, text) -> str:
    a, b = ids(text)
    at = tk.first_divergence(a, b)
    return (f"  {text!r}\n    " + tk.describe_ids("hf", a, at, _piece_fn(hf)).replace("\n", "\n    ")
            + "\n    " + tk.describe_ids(name, b, at, _piece_fn(other)).replace("\n", "\n    "))


def test_differential(differential_item, harness_runtime, record_property):
    """llama.cpp vs transformers on the harness's generated corpus (harness/corpus.py:
    `examples` distinct strings from a fixed, recorded seed, the same on every machine), every
    one evaluated; disagreements are counted, the shortest is shrunk and the shortest are listed
    with both id sequences."""
    it, rt = differential_item, harness_runtime
    hf = open_backend(rt, "hf", it.case, TOKENIZE, record_property)
    other = open_backend(rt, it.backend, it.case, TOKENIZE, record_property)
    opts = it.case.check_options("tokenizer").get("differential", {})
    n, run_seed = opts.get("examples", 2000), opts.get("seed", 20241121)
    special = it.params["mode"] == "special"
    # the vocab's own special texts as llama.cpp has them, whichever backend is compared: every
    # backend of one vocab is tested on the same corpus
    specials = tk.corpus_special_texts(_vocab_special_texts(rt, it.case, record_property))
    corpus = tk.differential_corpus(specials, n, run_seed)

    def ids(text):
        return (hf.tokenize(text, add_special=False, parse_special=special),
                other.tokenize(text, add_special=False, parse_special=special))

    def differs(text):
        a, b = ids(text)
        return a != b

    bad = [text for text in corpus if differs(text)]
    with_special = [t for t in bad if tk.probe_texts_in(t, specials)]
    details = {"strings": len(corpus), "distinct": len(set(corpus)), "seed": run_seed,
               "generator": tk.corpus.GENERATOR, "corpus_sha256_16": tk.corpus_digest(corpus),
               "parse_special": special, "disagree": len(bad), "disagree_with_special_text": len(with_special)}
    record_property("details", {"differential": details})
    if not bad:
        return
    shortest = sorted(bad, key=lambda t: (len(t), t))
    shrunk = tk.shrink_disagreement(shortest[0], differs)
    hf_ids, other_ids = ids(shrunk)
    details["shrunk"] = {"text": shrunk, "hf": hf_ids, it.backend: other_ids}
    head = (f"{it.case.location()}: {it.backend} and hf tokenize {len(bad)} of {len(corpus)} generated "
            f"strings differently ({len(with_special)} of them contain a special-token text; "
            f"parse_special={special}, {tk.corpus.GENERATOR} seed {run_seed}, corpus {details['corpus_sha256_16']})\n")
    head += "shrunk from the shortest:\n" + _describe_pair(hf, other, it.backend, ids, shrunk) + "\n"
    raise Mismatch(head + f"shortest of the {len(bad)} failing strings:\n"
                   + "\n".join(_describe_pair(hf, other, it.backend, ids, t) for t in shortest[:8]))


def test_special_texts(special_texts_item, harness_runtime, record_property):
    """Special-token texts in user text, probed explicitly: the well-known ones (</s>, <|im_end|>,
    <s>, ...) and every control and user-defined token of the vocab, alone and next to ordinary
    text, tokenized by llama.cpp and transformers with special parsing off (plain) and on."""
    it, rt = special_texts_item, harness_runtime
    hf = open_backend(rt, "hf", it.case, TOKENIZE, record_property)
    other = open_backend(rt, it.backend, it.case, TOKENIZE, record_property)
    special = it.params["mode"] == "special"
    vocab_texts = _vocab_special_texts(rt, it.case, record_property)
    probes = tk.special_text_probes(vocab_texts)

    def ids(text):
        return (hf.tokenize(text, add_special=False, parse_special=special),
                other.tokenize(text, add_special=False, parse_special=special))

    pairs = [ids(p) for p in probes]            # each probe tokenized once by each backend
    bad = [p for p, (a, b) in zip(probes, pairs) if a != b]
    texts = sorted({t for p in bad for t in tk.probe_texts_in(p, vocab_texts)})
    details = {"special_texts": {"probes": len(probes), "vocab_texts": len(vocab_texts),
                                 "parse_special": special, "disagree": len(bad), "texts": texts}}
    record_property("details", details)
    if not bad:
        return
    shown = sorted(bad, key=lambda t: (len(t), t))[:12]
    hf_ids, other_ids = ids(shown[0])
    details["special_texts"]["shortest"] = {"text": shown[0], "hf": hf_ids, it.backend: other_ids}
    raise Mismatch(f"{it.case.location()}: {it.backend} and hf tokenize {len(bad)} of {len(probes)} special-text "
                   f"probes differently (parse_special={special}); texts involved: {texts}\n"
                   + "\n".join(_describe_pair(hf, other, it.backend, ids, t) for t in shown))


def test_roundtrip(roundtrip_item, harness_runtime, record_property):
    """decode(encode(s)) == s, where the tokenizer promises it (case option `lossless`)."""
    it = roundtrip_item
    opts = it.case.check_options("tokenizer")
    if opts.get("lossless") is False:
        pytest.skip(f"not lossless by design: {opts.get('lossless_reason', 'declared in the case')}")
    backend = open_backend(harness_runtime, it.backend, it.case, DETOKENIZE, record_property)
    bad = []
    for text in tk.PROBES:
        ids = backend.tokenize(text, add_special=False, parse_special=False)
        try:
            back = backend.detokenize(ids, render_special=False)
        except Unsupported as exc:
            skip_unsupported(exc)
        if back != text:
            bad.append(f"  {text!r} -> {ids[:12]}{'...' if len(ids) > 12 else ''} -> {back!r}")
    if bad:
        raise Mismatch(f"{it.case.location()}: {it.backend}: decode(encode(s)) != s for {len(bad)} of "
                       f"{len(tk.PROBES)} probes:\n" + "\n".join(bad))


def test_every_id_detokenizes(all_ids_item, harness_runtime, record_property):
    """Every id in the vocab has a piece, without error."""
    it = all_ids_item
    backend = open_backend(harness_runtime, it.backend, it.case, VOCAB, record_property)
    n = backend.vocab_info().n_vocab or backend.vocab_info().n_ids
    errors = tk.failing_ids(range(n), _piece_fn(backend), getattr(backend, "token_pieces", None), limit=10)
    if errors:
        raise Mismatch(f"{it.case.location()}: {it.backend} fails to detokenize ids below n_vocab={n}:\n"
                       + "\n".join(errors))


def test_stream_detokenize(stream_item, harness_runtime, record_property):
    """Detokenizing one token at a time reassembles exactly the full decode: llama.cpp's
    byte-level pieces, and transformers with previous-token context as llama-cpp-python's
    LlamaHFTokenizer.detokenize(prev_tokens=...) does. No U+FFFD, no dropped characters."""
    it = stream_item
    backend = open_backend(harness_runtime, it.backend, it.case, DETOKENIZE, record_property)
    # llama-server has no render_special switch: its pieces and /detokenize always render
    # special tokens. The probes are tokenized without special-token parsing, so they hold
    # no special token unless the tokenizer makes one from plain text, which is checked.
    render = it.backend == "llama-server"
    specials = set(backend.vocab_info().special_ids) if render else set()
    bad = []
    for text in tk.PROBES:
        ids = backend.tokenize(text, add_special=False, parse_special=False)
        if specials & set(ids):
            bad.append(f"  {text!r}: plain-text tokenization produced special ids {sorted(specials & set(ids))}")
            continue
        full = backend.detokenize(ids, render_special=render)
        if it.backend == "hf":
            pieces = backend.detokenize_stream(ids, render_special=False)
            streamed = "".join(pieces)
        else:
            try:
                raw = [backend.token_piece(i, render_special=render) for i in ids]
            except Unsupported as exc:
                skip_unsupported(exc)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            streamed = "".join(decoder.decode(p) for p in raw) + decoder.decode(b"", final=True)
        if streamed != full or "\ufffd" in streamed and "\ufffd" not in text:
            bad.append(f"  {text!r}: full {full!r} vs streamed {streamed!r}")
    if bad:
        raise Mismatch(f"{it.case.location()}: {it.backend}: token-by-token detokenization differs from the full "
                       f"decode for {len(bad)} of {len(tk.PROBES)} probes:\n" + "\n".join(bad))


def test_special_token_rendering(special_render_item, harness_runtime, record_property):
    """A special token renders as its text when asked, and as nothing when not."""
    it = special_render_item
    backend = open_backend(harness_runtime, it.backend, it.case, VOCAB, record_property)
    info = backend.vocab_info()
    targets = {i for i in (info.eos_id, info.bos_id, info.eot_id) if i is not None}
    llama = open_backend(harness_runtime, "llama-cpp-python", it.case, VOCAB, record_property)
    n_vocab = llama.vocab_info().n_vocab
    outside = sorted(i for i in targets if not 0 <= i < n_vocab)
    if outside:
        raise Mismatch(f"{it.case.location()}: {it.backend} reports special ids {outside} outside llama.cpp's "
                       f"vocab (n_vocab={n_vocab})")
    texts = {i: llama.token_text(i) for i in targets}
    bad = []
    for i in sorted(targets):
        shown = backend.detokenize([i], render_special=True)
        try:
            hidden = backend.detokenize([i], render_special=False)
        except Unsupported as exc:   # e.g. llama-server's /detokenize has no such switch
            record_property("unchecked", f"render_special=False: {exc.reason}")
            hidden = None
        if shown != texts[i]:
            bad.append(f"  id {i}: render_special=True gives {shown!r}, expected its text {texts[i]!r}")
        if hidden not in (None, ""):
            bad.append(f"  id {i} ({texts[i]!r}): render_special=False gives {hidden!r}, expected ''")
    if bad:
        raise Mismatch(f"{it.case.location()}: {it.backend} special-token rendering:\n" + "\n".join(bad))


def test_special_tokens(special_item, harness_runtime, golden, record_property):
    """BOS/EOS/EOT/PAD and add_bos/add_eos agree between GGUF metadata, llama.cpp and HF, and
    every end-of-turn marker in the vocab is an end-of-generation token for llama.cpp."""
    it, rt = special_item, harness_runtime
    llama = open_backend(rt, "llama-cpp-python", it.case, VOCAB, record_property)
    meta, lv = llama.llm.metadata, llama.vocab_info()

    def meta_id(key):
        v = meta.get(f"tokenizer.ggml.{key}")
        return int(v) if v is not None else None

    table = {"gguf": {k: meta_id(f"{k}_token_id") for k in ("bos", "eos", "eot", "padding")},
             "llama.cpp": {"bos": lv.bos_id, "eos": lv.eos_id, "eot": lv.eot_id, "padding": lv.pad_id,
                           "add_bos": lv.add_bos, "add_eos": lv.add_eos, "eog_ids": lv.eog_ids}}
    problems = []
    for k in ("bos", "eos", "eot", "padding"):
        if table["gguf"][k] is not None and table["gguf"][k] != table["llama.cpp"][k]:
            problems.append(f"{k}: GGUF metadata says {table['gguf'][k]}, llama.cpp uses {table['llama.cpp'][k]}")
    try:
        hf = rt.backend("hf", it.case)
    except Exception as exc:  # recorded, not fatal: the llama.cpp side is still checked
        table["hf"] = {"unavailable": str(exc).splitlines()[0]}
        hf = None
    if hf is not None and VOCAB in hf.capabilities:
        hv = hf.vocab_info()
        probe = hf.tokenize("a", add_special=True, parse_special=False)
        hf_add_bos = bool(probe) and probe[0] == hv.bos_id and hv.bos_id is not None
        hf_add_eos = bool(probe) and probe[-1] == hv.eos_id and hv.eos_id is not None
        table["hf"] = {"bos": hv.bos_id, "eos": hv.eos_id, "padding": hv.pad_id,
                       "add_bos": hf_add_bos, "add_eos": hf_add_eos}
        for k, attr in (("bos", "bos_id"), ("eos", "eos_id"), ("padding", "pad_id")):
            hid, lid = getattr(hv, attr), table["llama.cpp"][k]
            # an HF tokenizer without a padding token is common and harmless; a different one is not
            if hid is not None and lid is not None and hid != lid or k != "padding" and hid is not None and lid is None:
                problems.append(f"{k}: hf {hid} vs llama.cpp {lid}")
            elif hid is not None and hid == lid:
                htext, ltext = hf.detokenize([hid], render_special=True), llama.token_text(lid)
                if htext != ltext:
                    problems.append(f"{k} id {hid}: hf text {htext!r} vs llama.cpp text {ltext!r}")
        if hf_add_bos != bool(lv.add_bos):
            problems.append(f"add_bos: hf adds BOS={hf_add_bos}, llama.cpp add_bos={lv.add_bos}")
        if hf_add_eos != bool(lv.add_eos):
            problems.append(f"add_eos: hf adds EOS={hf_add_eos}, llama.cpp add_eos={lv.add_eos}")
    markers = {}
    for text in END_OF_TURN:
        ids = llama.tokenize(text, add_special=False, parse_special=True)
        if len(ids) == 1 and llama.token_text(ids[0]) == text:
            markers[text] = ids[0]
    table["end_of_turn_markers"] = markers
    missing = {t: i for t, i in markers.items() if i not in lv.eog_ids}
    if missing:
        problems.append(f"end-of-turn markers that llama.cpp does not stop on: {missing} (eog ids {lv.eog_ids})")
    assert table == golden
    if problems:
        raise Mismatch(f"{it.case.location()}: special tokens disagree:\n  " + "\n  ".join(problems))


def test_vocab_sizes(sizes_item, harness_runtime, golden, record_property):
    """GGUF n_vocab, llama.cpp, the HF tokenizer's reported size and the ids it really uses,
    and the embedding rows agree; every special id is below the model's vocab size."""
    it, rt = sizes_item, harness_runtime
    llama = open_backend(rt, "llama-cpp-python", it.case, VOCAB, record_property)
    lv = llama.vocab_info()
    sizes = {"llama.cpp n_vocab": lv.n_vocab, "gguf embedding rows": lv.embedding_rows}
    specials = {"llama.cpp control ids": lv.special_ids, "llama.cpp eog ids": lv.eog_ids}
    try:
        hf = rt.backend("hf", it.case)
    except Exception as exc:  # recorded: the llama.cpp side is still checked
        sizes["hf"] = f"unavailable: {str(exc).splitlines()[0]}"
        hf = None
    if hf is not None and VOCAB in hf.capabilities:
        hv = hf.vocab_info()
        sizes.update({"hf vocab_size (reported)": hv.reported_size, "hf len(tokenizer)": hv.extra["len"],
                      "hf ids in use (max id + 1)": hv.n_ids})
        specials["hf special ids"] = hv.special_ids
    assert {"sizes": sizes, "max_special_id": {k: max(v, default=None) for k, v in specials.items()}} == golden
    n_vocab = lv.n_vocab
    problems = [f"{k} = {v} != llama.cpp n_vocab {n_vocab}" for k, v in sizes.items()
                if isinstance(v, int) and k != "llama.cpp n_vocab" and v != n_vocab]
    problems += [f"{k} has ids >= n_vocab {n_vocab}: {[i for i in v if i >= n_vocab][:10]}"
                 for k, v in specials.items() if any(i >= n_vocab for i in v)]
    if problems:
        raise Mismatch(f"{it.case.location()}: vocab sizes disagree (token masks built from the smaller size "
                       f"go out of range):\n  " + "\n  ".join(problems))


def test_token_table(token_table_item, harness_runtime, record_property):
    """A constrained-decoding library's token table (families/tokenizer/token_table_check.py), built
    as its docs say with and without an explicit vocab size: it allows no id >= n_vocab and can
    allow the model's end-of-generation id."""
    from harness.families.tokenizer import token_table_check as ttc
    it, rt = token_table_item, harness_runtime
    llama = open_backend(rt, "llama-cpp-python", it.case, VOCAB, record_property)
    hf = None if it.params["library"] == ttc.LMFE_LLAMA else open_backend(rt, "hf", it.case, VOCAB, record_property)
    try:
        details, finding = ttc.check_token_table(it, hf, llama)
    except Unsupported as exc:
        skip_unsupported(exc)
    record_property("details", {"token_table": details})
    if finding is not None:
        raise finding
