"""Throughput runners, one per backend, timed on the harness's own clock and reading the backend's own
figures for the same request (definitions in harness/bench/core.py)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from .declared import CONSTRAINTS, EVAL_BACKEND, GBNF, JSON_SCHEMA, PROMPT_TEXT


# --- prompts and constraints ---------------------------------------------------------------------
def prompt_ids(tokenize: Callable[[str], list[int]], n: int) -> list[int]:
    """Exactly n prompt tokens (the model's own tokenizer, with its BOS), from a fixed text."""
    text = PROMPT_TEXT
    ids = tokenize(text)
    while len(ids) < n:
        text += PROMPT_TEXT
        ids = tokenize(text)
    return ids[:n]


def constraint_grammar(constraint: str) -> str | None:
    """GBNF for a constraint (the JSON schema converted by llama-cpp-python's converter, the
    same one its high-level API uses)."""
    if constraint == "none":
        return None
    if constraint == "gbnf":
        return GBNF
    if constraint == "json_schema":
        from llama_cpp.llama_grammar import json_schema_to_gbnf
        return json_schema_to_gbnf(json.dumps(JSON_SCHEMA))
    raise ValueError(f"unknown constraint {constraint!r}; known: {', '.join(CONSTRAINTS)}")


# --- one measured request ---------------------------------------------------------------------------
@dataclass
class Sample:
    """One request: the harness's clock and the backend's own figures for it."""
    n_prompt: int
    n_gen: int
    ttft_s: float
    total_s: float
    gen_window_s: float                    # first token -> last token
    backend_prompt_n: int | None = None
    backend_prompt_ms: float | None = None
    backend_gen_n: int | None = None
    backend_gen_ms: float | None = None
    backend_sample_n: int | None = None        # llama.cpp sampler perf (eval loop: our own chain)
    backend_sample_ms: float | None = None
    cpu_s: float | None = None                 # CPU time of the harness process + the server for the request
    text_sha256: str = ""

    @property
    def pp_tps(self) -> float | None:
        return self.n_prompt / self.ttft_s if self.ttft_s > 0 else None

    @property
    def tg_tps(self) -> float | None:
        return (self.n_gen - 1) / self.gen_window_s if self.n_gen > 1 and self.gen_window_s > 0 else None

    @property
    def backend_pp_tps(self) -> float | None:
        if self.backend_prompt_n and self.backend_prompt_ms:
            return self.backend_prompt_n / self.backend_prompt_ms * 1000.0
        return None

    @property
    def backend_tg_tps(self) -> float | None:
        if self.backend_gen_n and self.backend_gen_ms:
            return self.backend_gen_n / self.backend_gen_ms * 1000.0
        return None

    @property
    def backend_tg_tps_with_sampling(self) -> float | None:
        """Decoding plus sampling (grammar included), the work between two tokens: llama.cpp's
        t_eval plus the sampler's t_sample for the samples inside the generation window."""
        if self.backend_sample_n and self.backend_sample_ms is not None and self.backend_gen_n and self.backend_gen_ms:
            inside = self.backend_sample_ms * (self.backend_sample_n - 1) / self.backend_sample_n
            return self.backend_gen_n / (self.backend_gen_ms + inside) * 1000.0
        return None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(pp_tps=self.pp_tps, tg_tps=self.tg_tps, backend_pp_tps=self.backend_pp_tps,
                 backend_tg_tps=self.backend_tg_tps, backend_tg_tps_with_sampling=self.backend_tg_tps_with_sampling)
        return d


def process_cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of a live process (Linux /proc), None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_clock(pids: Callable[[], Iterable[int]] = lambda: ()) -> Callable[[], float]:
    """A clock that advances with CPU time, not wall time: this process, its waited-for
    children (subprocesses that finished) and the live processes `pids()` names (a server).
    Far less sensitive to other load on a shared machine than wall time; blind to waiting."""
    import resource

    def clock() -> float:
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        live = sum(v for p in pids() if (v := process_cpu_seconds(p)) is not None)
        return time.process_time() + ch.ru_utime + ch.ru_stime + live
    return clock


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class LlamaRunner:
    """llama-cpp-python, high-level API or the low-level eval loop, on one loaded Llama."""

    def __init__(self, llm, *, eval_loop: bool):
        import llama_cpp
        self._lib = llama_cpp
        self.llm = llm
        self.eval_loop = eval_loop
        self.name = EVAL_BACKEND if eval_loop else "llama-cpp-python"
        self.clock = cpu_clock()                          # llama.cpp runs in this process

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def _perf(self) -> tuple[int, float, int, float]:
        p = self._lib.llama_perf_context(self.llm.ctx)
        return int(p.n_p_eval), float(p.t_p_eval_ms), int(p.n_eval), float(p.t_eval_ms)

    def run(self, prompt: list[int], gen_tokens: int, constraint: str) -> Sample:
        self.llm.reset()                                   # no prefix reuse: the prompt is evaluated every time
        self._lib.llama_perf_context_reset(self.llm.ctx)
        c0 = self.clock()
        if self.eval_loop:
            sample = self._run_eval(prompt, gen_tokens, constraint)
        else:
            sample = self._run_high_level(prompt, gen_tokens, constraint)
        sample.cpu_s = self.clock() - c0
        return sample

    def _grammar_object(self, constraint: str):
        if constraint == "none":
            return None
        from llama_cpp import LlamaGrammar
        # a fresh grammar object per request: llama-cpp-python keeps parse state in it
        return LlamaGrammar.from_string(constraint_grammar(constraint), verbose=False)

    def _run_high_level(self, prompt: list[int], gen_tokens: int, constraint: str) -> Sample:
        grammar = self._grammar_object(constraint)
        pieces: list[str] = []
        first = last = None
        t0 = time.perf_counter()
        for chunk in self.llm.create_completion(list(prompt), max_tokens=gen_tokens, temperature=0.0,
                                                seed=1234, stream=True, grammar=grammar):
            now = time.perf_counter()
            choice = chunk["choices"][0]
            if choice.get("finish_reason") is not None and not choice["text"]:
                continue                     # the closing chunk carries no token
            if first is None:
                first = now
            last = now
            pieces.append(choice["text"])
        t_end = time.perf_counter()
        n_p, t_p, n_e, t_e = self._perf()
        first = first or t_end
        return Sample(n_prompt=len(prompt), n_gen=len(pieces), ttft_s=first - t0, total_s=t_end - t0,
                      gen_window_s=(last or first) - first, backend_prompt_n=n_p, backend_prompt_ms=t_p,
                      backend_gen_n=n_e, backend_gen_ms=t_e, text_sha256=_sha("".join(pieces)))

    def _sampler(self, constraint: str):
        lib = self._lib
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = False                             # keep the sampler's own timings
        chain = lib.llama_sampler_chain_init(params)
        gbnf = constraint_grammar(constraint)
        if gbnf is not None:
            vocab = self.llm._model.vocab
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root"))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        return chain

    def _run_eval(self, prompt: list[int], gen_tokens: int, constraint: str) -> Sample:
        lib, llm = self._lib, self.llm
        vocab = llm._model.vocab
        chain = self._sampler(constraint)
        try:
            out: list[int] = []
            t0 = time.perf_counter()
            llm.eval(prompt)
            tok = lib.llama_sampler_sample(chain, llm.ctx, -1)
            first = last = time.perf_counter()
            while True:
                if lib.llama_vocab_is_eog(vocab, tok):
                    break
                out.append(tok)
                last = time.perf_counter()
                if len(out) >= gen_tokens:
                    break
                llm.eval([tok])
                tok = lib.llama_sampler_sample(chain, llm.ctx, -1)
            t_end = time.perf_counter()
            sp = lib.llama_perf_sampler(chain)
        finally:
            lib.llama_sampler_free(chain)
        n_p, t_p, n_e, t_e = self._perf()
        text = llm.detokenize(out).decode("utf-8", errors="replace")
        return Sample(n_prompt=len(prompt), n_gen=len(out), ttft_s=first - t0, total_s=t_end - t0,
                      gen_window_s=last - first, backend_prompt_n=n_p, backend_prompt_ms=t_p,
                      backend_gen_n=n_e, backend_gen_ms=t_e, backend_sample_n=int(sp.n_sample),
                      backend_sample_ms=float(sp.t_sample_ms), text_sha256=_sha(text))


class ServerRunner:
    """llama-server's native /completion, streamed; read with http.client so that each SSE
    event is timed when it arrives (no client-side buffering)."""

    name = "llama-server"

    def __init__(self, url: str, timeout_s: float = 300.0, pid: int | None = None):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout_s = timeout_s
        self.pid = pid                                     # the server's, for its CPU time (None: attached)
        self.clock = cpu_clock(lambda: [self.pid] if self.pid else [])
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _post(self, path: str, body: dict[str, Any]) -> http.client.HTTPResponse:
        data = json.dumps(body).encode()
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
                return conn.getresponse()
            except (http.client.HTTPException, ConnectionError):
                self.close()                      # a stale keep-alive connection: retry once
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def tokenize(self, text: str) -> list[int]:
        resp = self._post("/tokenize", {"content": text, "add_special": True, "parse_special": False})
        return list(json.loads(resp.read())["tokens"])

    def run(self, prompt: list[int], gen_tokens: int, constraint: str) -> Sample:
        body: dict[str, Any] = {"prompt": list(prompt), "n_predict": gen_tokens, "temperature": 0.0, "seed": 1234,
                                "stream": True, "cache_prompt": False, "return_tokens": True}
        if constraint == "gbnf":
            body["grammar"] = GBNF
        elif constraint == "json_schema":
            body["json_schema"] = JSON_SCHEMA
        c0 = self.clock()
        t0 = time.perf_counter()
        resp = self._post("/completion", body)
        if resp.status != 200:
            raise RuntimeError(f"llama-server /completion: HTTP {resp.status}: {resp.read()[:500]!r}")
        first = last = None
        n_gen, pieces, timings = 0, [], None
        while True:
            line = resp.readline()
            if not line:
                break
            if not line.startswith(b"data: "):
                continue
            now = time.perf_counter()
            event = json.loads(line[6:])
            toks = event.get("tokens") or []
            if toks:
                first = first or now
                last = now
                n_gen += len(toks)
            pieces.append(event.get("content") or "")
            if event.get("stop"):
                timings = event.get("timings") or {}
                break
        resp.read()                               # drain, keep the connection reusable
        t_end = time.perf_counter()
        timings = timings or {}
        first = first or t_end
        return Sample(n_prompt=len(prompt), n_gen=n_gen, ttft_s=first - t0, total_s=t_end - t0,
                      gen_window_s=(last or first) - first, backend_prompt_n=timings.get("prompt_n"),
                      backend_prompt_ms=timings.get("prompt_ms"), backend_gen_n=timings.get("predicted_n"),
                      backend_gen_ms=timings.get("predicted_ms"), cpu_s=self.clock() - c0,
                      text_sha256=_sha("".join(pieces)))


def summarise(samples: list[Sample]) -> dict[str, Any]:
    """Means (and spread) over rounds; ratios harness / backend."""
    def stat(values: list[float | None]) -> dict[str, float] | None:
        vals = [v for v in values if v is not None]
        if not vals:
            return None
        return {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals),
                "stdev": statistics.stdev(vals) if len(vals) > 1 else 0.0}
    out: dict[str, Any] = {
        "rounds": len(samples),
        "n_prompt": samples[0].n_prompt if samples else None,
        "n_gen": sorted({s.n_gen for s in samples}),
        "ttft_ms": stat([s.ttft_s * 1000 for s in samples]),
        "request_s": stat([s.total_s for s in samples]),
        "cpu_s": stat([s.cpu_s for s in samples]),
        "pp_tps": stat([s.pp_tps for s in samples]),
        "tg_tps": stat([s.tg_tps for s in samples]),
        "backend_ttft_ms": stat([s.backend_prompt_ms for s in samples]),
        "backend_pp_tps": stat([s.backend_pp_tps for s in samples]),
        "backend_tg_tps": stat([s.backend_tg_tps for s in samples]),
        "backend_tg_tps_with_sampling": stat([s.backend_tg_tps_with_sampling for s in samples]),
        "text_sha256": sorted({s.text_sha256 for s in samples}),
        "samples": [s.to_dict() for s in samples],
    }
    for kind in ("pp", "tg"):
        h, b = out[f"{kind}_tps"], out[f"backend_{kind}_tps"]
        out[f"{kind}_ratio"] = (h["mean"] / b["mean"]) if h and b and b["mean"] else None
    h, b = out["tg_tps"], out["backend_tg_tps_with_sampling"]
    out["tg_ratio_with_sampling"] = (h["mean"] / b["mean"]) if h and b and b["mean"] else None
    return out
