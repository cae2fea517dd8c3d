"""Vocabulary bounds: every id the vocab reports or the grammar sampler allows is < n_vocab, and out-
of-vocabulary ids are refused cleanly (probed in a child process)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.backends.base import Backend, BackendError, CompletionRequest, Generation, Unsupported
from harness.checks import mismatch
from .calls import Outcome, run_or_skip
from .engine import Vocab, engine, llama_cpp_python_gbnf, vocab_of
from .grammar import grammar_mask
from .items import FAMILY, GenItem, MASK_SAMPLE


def _mask_grammars(item: GenItem) -> list[tuple[str, str]]:
    out = []
    for g in item.case.check_options(FAMILY).get("grammars") or []:
        gbnf = g.get("gbnf") or llama_cpp_python_gbnf(g["json_schema"])
        out.append((g["id"], gbnf))
    return out


def check_masks(rt, item: GenItem, backend: Backend) -> Outcome:
    vocab = vocab_of(rt, item.case)
    n = vocab.n_vocab
    declared = item.option("eog_ids")
    golden: dict[str, Any] = {"n_vocab": n, "eog_ids": vocab.eog_ids, "n_control_ids": len(vocab.control_ids),
                              "special_ids": vocab.special}
    out = Outcome(golden=golden)
    where = item.location()
    if declared is not None and sorted(declared) != sorted(vocab.eog_ids):
        out.problems.append(str(mismatch(where, "the model's end-of-generation ids differ from the case's eog_ids",
                                         sorted(declared), vocab.eog_ids, "case", "llama.cpp")))
    ids = {**{f"eog {i}": i for i in vocab.eog_ids}, **{f"control {i}": i for i in vocab.control_ids},
           **{k: v for k, v in vocab.special.items() if v is not None}}
    bad = {k: v for k, v in ids.items() if not 0 <= v < n}
    if bad:
        out.problems.append(f"{where}: special ids outside [0, n_vocab={n}): {bad}")
    llm = getattr(backend, "llm", None)
    if llm is not None:
        info = backend.vocab_info()
        golden["embedding_rows"] = info.embedding_rows
        if info.embedding_rows is not None and info.embedding_rows != n:
            out.problems.append(f"{where}: token_embd has {info.embedding_rows} rows but n_vocab is {n}")
        golden["logits_row"] = _logits_row(llm, out, where, n)
        golden["grammar_first_token"] = {}
        for gid, gbnf in _mask_grammars(item):
            golden["grammar_first_token"][gid] = _mask_problems(llm, vocab, gid, gbnf, out, where)
    else:
        info = run_or_skip(backend.vocab_info)
        golden["server_n_vocab"] = info.n_vocab
        if info.n_vocab != n:
            out.problems.append(str(mismatch(where, f"{backend.name} reports a different n_vocab than the GGUF",
                                             n, info.n_vocab, "llama.cpp (GGUF)", backend.name)))
        for k in ("bos_id", "eos_id"):
            v = getattr(info, k)
            if v is not None and not 0 <= v < n:
                out.problems.append(f"{where}: {backend.name} {k}={v} is outside [0, n_vocab={n})")
    return out


def _logits_row(llm, out: Outcome, where: str, n: int) -> int:
    import numpy as np
    llm.reset()
    llm.eval([llm.token_bos() if llm.token_bos() >= 0 else 0])
    row = llm.scores[llm.n_tokens - 1]
    llm.reset()
    if len(row) != n or not np.isfinite(row).all():
        out.problems.append(f"{where}: the logits row has {len(row)} entries (finite: {bool(np.isfinite(row).all())}); "
                            f"n_vocab is {n}")
    return int(len(row))


def _mask_problems(llm, vocab: Vocab, gid: str, gbnf: str, out: Outcome, where: str) -> dict[str, Any]:
    allowed = grammar_mask(llm, gbnf)
    n = vocab.n_vocab
    eog_allowed = sorted(set(allowed) & set(vocab.eog_ids))
    accepts_empty = engine().matches(gbnf, "")
    summary = {"allowed": len(allowed), "eog_allowed": bool(eog_allowed)}
    if not allowed:
        out.problems.append(f"{where}: grammar '{gid}': the grammar sampler allows no token at all")
    outside = [t for t in allowed if not 0 <= t < n]
    if outside:
        out.problems.append(f"{where}: grammar '{gid}': the sampler allows ids outside [0, {n}): {outside[:10]}")
    if bool(eog_allowed) != accepts_empty:
        out.problems.append(f"{where}: grammar '{gid}': end-of-generation ids allowed first: {eog_allowed}, "
                            f"but the engine says the empty output is {'' if accepts_empty else 'not '}a sentence")
    if "<[" in gbnf:        # token references: the text engine cannot judge those tokens
        return summary
    allowed_set = set(allowed)
    eog = set(vocab.eog_ids)
    step_a = max(1, len(allowed) // MASK_SAMPLE)
    rejected = [t for t in range(n) if t not in allowed_set]
    step_r = max(1, len(rejected) // MASK_SAMPLE)
    sample = [(t, True) for t in allowed[::step_a]] + [(t, False) for t in rejected[::step_r]]
    texts, keep = [], []
    for t, ok in sample:
        if t in eog:
            continue
        try:
            piece = vocab.piece(t, True).decode("utf-8")
        except UnicodeDecodeError:
            continue             # partial UTF-8: judged by the sampler's partial-sequence logic
        if not piece:
            if ok:
                out.problems.append(f"{where}: grammar '{gid}': the sampler allows token {t} with an empty piece")
            continue
        texts.append(piece)
        keep.append((t, ok, piece))
    viable = engine().viable(gbnf, texts)
    disagree = [(t, piece, ok) for (t, ok, piece), v in zip(keep, viable) if v != ok]
    summary["rechecked"] = len(keep)
    if disagree:
        shown = [{"id": t, "piece": p, "sampler": "allowed" if ok else "rejected",
                  "engine": "rejected" if ok else "allowed"} for t, p, ok in disagree[:12]]
        out.problems.append(f"{where}: grammar '{gid}': the token mask disagrees with llama.cpp's engine on "
                            f"{len(disagree)} of {len(keep)} re-checked tokens: "
                            f"{json.dumps(shown, ensure_ascii=False)}")
    return summary


# --- 2. out-of-vocabulary ids ------------------------------------------------------------------------
_PROBE_SCRIPT = r"""
import json, sys
import llama_cpp
kind, path, n_vocab, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=path, vocab_only=(kind == "detokenize"), n_ctx=256, n_threads=threads,
                      n_threads_batch=threads, verbose=False)
print("PROBE-LOADED", flush=True)
try:
    if kind == "prompt":
        out = llm.create_completion([n_vocab], max_tokens=1, temperature=0.0)
        result = {"returned": out["choices"][0]["text"]}
    elif kind == "detokenize":
        result = {"returned": llm.detokenize([n_vocab]).decode("utf-8", "replace")}
    else:
        grammar = llama_cpp.LlamaGrammar.from_string("root ::= <[%d]>" % n_vocab)
        out = llm.create_completion("Hello", max_tokens=2, temperature=0.0, grammar=grammar)
        result = {"returned": out["choices"][0]["text"]}
except Exception as exc:
    result = {"error": "%s: %s" % (type(exc).__name__, exc)}
print("PROBE-RESULT " + json.dumps(result), flush=True)
"""


PROBE_CALLS = {
    "prompt": "create_completion(prompt=[n_vocab])",
    "detokenize": "detokenize([n_vocab])",
    "grammar": 'a GBNF grammar "root ::= <[n_vocab]>"',
}


def probe_llama_cpp_python(gguf: Path, kind: str, n_vocab: int, threads: int) -> dict[str, Any]:
    """Run one probe in a child process: a crash there must not take the test run with it."""
    env = dict(os.environ, GGML_NO_BACKTRACE="1")
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE_SCRIPT, kind, str(gguf), str(n_vocab), str(threads)],
                              capture_output=True, text=True, timeout=300, env=env)
    except subprocess.TimeoutExpired:
        return {"handled": False, "outcome": "timeout: the call hung for 300 s"}
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE-RESULT ")), None)
    if "PROBE-LOADED" not in proc.stdout:
        raise BackendError(f"the probe process could not load the model: {proc.stderr[-1500:]}")
    if line is not None and proc.returncode == 0:
        res = json.loads(line[len("PROBE-RESULT "):])
        if "error" in res:
            return {"handled": True, "outcome": f"exception: {res['error']}"}
        return {"handled": True, "outcome": f"returned {res['returned']!r}"}
    return {"handled": False, "outcome": "crash: " + _crash_summary(proc.returncode, proc.stderr)}


def _crash_summary(code: int, stderr: str) -> str:
    import signal
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    keys = ("terminate called", "what()", "GGML_ASSERT", "Segmentation", "error", "Abort")
    lines = [ln.strip() for ln in stderr.splitlines() if any(k in ln for k in keys)]
    lines = [re.sub(r"0x[0-9a-f]+", "0x…", ln) for ln in lines][:4]
    # source paths name the build's temporary directory (pip-install-<random>/...); keep
    # the path from the llama.cpp tree on, which is the same for every build of one version
    lines = [re.sub(r"(?:/[^\s:/]+)+/(?:vendor/)?(llama\.cpp/)", r"\1", ln) for ln in lines]
    return f"{how}" + (f"; {' | '.join(lines)}" if lines else "")


def probe_server(backend: Backend, kind: str, n_vocab: int, seed: int) -> dict[str, Any]:
    from harness.backends.openai_compat import HttpError
    calls = {
        "prompt": lambda: backend.complete(CompletionRequest(prompt=(n_vocab,), max_tokens=1, seed=seed)),
        "detokenize": lambda: backend.detokenize([n_vocab], render_special=True),
        "grammar": lambda: backend.complete(CompletionRequest(prompt="Hello", max_tokens=2, seed=seed,
                                                              grammar=f"root ::= <[{n_vocab}]>")),
    }
    try:
        got = calls[kind]()
        result = {"handled": False, "outcome": f"accepted and returned {_short(got)}"}
    except HttpError as exc:
        ok = 400 <= exc.status < 500
        result = {"handled": ok, "outcome": f"HTTP {exc.status}: {exc.message}"}
    except Unsupported:
        raise
    except BackendError as exc:
        result = {"handled": False, "outcome": f"crash or broken connection: {exc}"}
    try:   # the server must still answer
        backend.tokenize("ok", add_special=False, parse_special=False)
    except BackendError as exc:
        result = {"handled": False, "outcome": result["outcome"] + f"; afterwards the server is gone: {exc}"}
    return result


def _short(v: Any) -> str:
    text = v.text if isinstance(v, Generation) else v
    return repr(text)[:200]


def check_out_of_vocab(rt, item: GenItem, backend: Backend) -> Outcome:
    n = vocab_of(rt, item.case).n_vocab
    kind = item.entry_id
    if getattr(backend, "llm", None) is not None:
        res = probe_llama_cpp_python(backend.model.gguf, kind, n, rt.options.threads)
        expectation = "a Python exception (or a harmless return); the process must survive"
    elif hasattr(backend, "props"):
        res = probe_server(backend, kind, n, rt.options.seed)
        expectation = "an HTTP 4xx error naming the bad id; the server must survive"
    else:
        import pytest
        pytest.skip(f"{backend.name}: no way to send raw token ids")
    out = Outcome(golden={"probe": PROBE_CALLS[kind].replace("n_vocab", str(n)), **res})
    if not res["handled"]:
        out.problems.append(str(mismatch(item.location(), f"{backend.name}: token id {n} (= n_vocab, one past the "
                                                          f"last id) via {PROBE_CALLS[kind]} is not handled",
                                         expectation, res["outcome"], "expected", backend.name)))
    return out
