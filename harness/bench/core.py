"""Throughput and harness-overhead measurement (the `harness bench` command).

Three parts, used by the pytest-benchmark modules in harness/bench_suite/:

* **Provenance**: the machine (CPU model and flags from /proc/cpuinfo), the llama.cpp build
  (llama-cpp-python version, the commit and version strings compiled into libggml/libllama,
  llama.cpp's system info, the content hash of the vendored source tree), the llama-server
  build (its `--version`, tree hash and CMake options, read from harness/run/server_build.py's
  cache, never built here), threads, and the sha256 of every GGUF measured.
* **Throughput**: one runner per backend: llama-cpp-python's high-level API
  (`create_completion(stream=True)`), its low-level loop (`Llama.eval` + a llama.cpp sampler
  chain), and llama-server (`/completion`, streamed over raw HTTP). Each round measures,
  on the harness's own clock, time to first token, prompt tokens/s and generation tokens/s,
  and reads the backend's own figures for the same request (llama.cpp's perf counters;
  llama-server's `timings`).
* **Overhead**: a pytest plugin that times every backend call of a suite run (construction,
  every method, children given a GGUF) so that wall time minus backend time is what the
  harness itself costs; it also counts how often each GGUF is loaded. And the collection
  time of generated case files.

Definitions, identical for every backend so that harness and backend figures compare:
  ttft      = first generated token received - request sent
  pp tok/s  = prompt tokens / ttft                         (backend: prompt tokens / prompt eval time)
  tg tok/s  = (generated tokens - 1) / (last token - first token)
              (backend: llama.cpp n_eval / t_eval; llama-server predicted_n / predicted_ms)
"""

from __future__ import annotations

import ctypes
import hashlib
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import pytest

from . import overhead_phases

# --- what a case declares ---------------------------------------------------------------------
EVAL_BACKEND = "llama-cpp-python-eval"     # the low-level loop over the same Llama object
BACKENDS = ("llama-cpp-python", EVAL_BACKEND, "llama-server")
# which registered backend each benchmark backend needs
NEEDS = {"llama-cpp-python": "llama-cpp-python", EVAL_BACKEND: "llama-cpp-python", "llama-server": "llama-server"}
CONSTRAINTS = ("none", "gbnf", "json_schema")
DEFAULTS = {"prompt_tokens": 128, "gen_tokens": 48, "constraints": ["none", "gbnf", "json_schema"],
            "backends": list(BACKENDS), "rounds": 3}

# A grammar that never completes, so it never allows end-of-generation: every request
# generates exactly gen_tokens, and every token goes through the grammar sampler.
GBNF = 'root ::= [a-z ,.] root\n'
# A JSON schema whose grammar (llama.cpp's json-schema-to-grammar) needs many tokens to
# complete: at least 24 strings of lower-case words.
JSON_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["words"],
    "properties": {"words": {"type": "array", "minItems": 24,
                             "items": {"type": "string", "pattern": "^[a-z]+( [a-z]+)*$"}}},
}
PROMPT_TEXT = (
    "The history of the river valley begins with small farming villages along its banks. Over "
    "the centuries the villages grew into market towns, and the towns into a city whose bridges, "
    "mills and warehouses still line the water. Travellers wrote about the floods in spring, the "
    "fairs in autumn and the long barges that carried grain, timber and stone down to the sea. "
)


def throughput_options(case) -> dict[str, Any]:
    """The case's `checks.throughput` with defaults filled in ({} when not declared)."""
    raw = (case.raw.get("checks") or {}).get("throughput")
    if raw is None:
        return {}
    return {**DEFAULTS, **raw}


def throughput_items(cases, available: Iterable[str]):
    """One benchmark per (case, constraint, backend) for cases with `checks.throughput`."""
    from harness.families.items import Item
    available = list(available)
    out = []
    for case in cases.cases:
        opts = throughput_options(case)
        if not opts or case.kind != "model" or not case.has_weights:
            continue
        for constraint in opts["constraints"]:
            for backend in opts["backends"]:
                if NEEDS[backend] in available:
                    out.append(Item(case, "throughput.tokens_per_s", backend=backend,
                                    extra=(("constraint", constraint),)))
    return out


# --- provenance ------------------------------------------------------------------------------------
def cpu_info() -> dict[str, Any]:
    """CPU model, flags and counts from /proc/cpuinfo (platform fallbacks elsewhere)."""
    out: dict[str, Any] = {"model": platform.processor() or platform.machine(), "flags": [],
                           "logical_cpus": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return out
    first = text.split("\n\n", 1)[0]
    fields = {}
    for line in first.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    out["model"] = fields.get("model name", out["model"])
    out["flags"] = sorted(set((fields.get("flags") or fields.get("Features") or "").split()))
    out["flags_sha256"] = hashlib.sha256(" ".join(out["flags"]).encode()).hexdigest()[:16]
    try:
        out["affinity_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    return out


SIMD_FLAGS = ("sse3", "ssse3", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "avx512_vbmi", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd",
              "sve", "dotprod")


def machine_info() -> dict[str, Any]:
    cpu = cpu_info()
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
            "cpu_model": cpu["model"], "logical_cpus": cpu["logical_cpus"], "affinity_cpus": cpu.get("affinity_cpus"),
            "cpu_flags": cpu["flags"], "cpu_flags_sha256": cpu.get("flags_sha256"),
            "simd": [f for f in SIMD_FLAGS if f in cpu["flags"]], "mem_total_bytes": mem}


def _c_string(lib_path: Path, symbol: str) -> str | None:
    try:
        fn = getattr(ctypes.CDLL(str(lib_path)), symbol)
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_char_p
    fn.argtypes = []
    value = fn()
    return value.decode(errors="replace") if value else None


def llama_cpp_python_info() -> dict[str, Any]:
    """llama-cpp-python and the llama.cpp compiled into it. `ggml_commit` is what the build
    stamped (the git HEAD its build found, if any); `vendored_tree_sha256` is the content
    hash of the llama.cpp sources in the installed version's sdist (as harness/run/server_build.py
    hashes them for llama-server), which is what identifies the code."""
    try:
        import llama_cpp
    except ImportError as exc:
        return {"error": f"llama-cpp-python not importable: {exc}"}
    lib = Path(llama_cpp.__file__).parent / "lib"
    out: dict[str, Any] = {
        "llama_cpp_python": llama_cpp.__version__,
        "llama_version": _c_string(lib / "libllama.so", "llama_version"),
        "ggml_version": _c_string(lib / "libggml-base.so", "ggml_version"),
        "ggml_commit": _c_string(lib / "libggml-base.so", "ggml_commit"),
        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        "supports_mmap": bool(llama_cpp.llama_supports_mmap()),
        "max_devices": int(llama_cpp.llama_max_devices()),
    }
    out["build_flags"] = sorted(part.split("=")[0].strip() for part in out["system_info"].replace("CPU :", "")
                                .split("|") if part.strip().endswith("= 1"))
    tree = vendored_tree(llama_cpp.__version__)
    if tree is not None:
        out["vendored_tree"] = str(tree)
        out["vendored_tree_sha256"] = tree_sha256(tree)
    return out


def vendored_tree(version: str) -> Path | None:
    """The unpacked sdist's llama.cpp tree if it is already in the cache (never downloads)."""
    tree = os.environ.get("HARNESS_LLAMA_CPP_TREE")
    if tree:
        return Path(tree)
    from harness.models.sources import cache_root
    hits = sorted((cache_root() / "src").glob(f"llama*cpp*python*{version}/llama_cpp_python-{version}/vendor/llama.cpp"))
    return hits[0] if hits else None


def tree_sha256(tree: Path) -> str | None:
    from harness.run.server_build import default_cache_root, tree_hash
    try:
        return tree_hash(tree, memo_file=default_cache_root() / "llama-server" / "tree-hashes.json")
    except Exception as exc:  # provenance is best effort: record why it is missing
        return f"(unavailable: {exc})"


def server_build_info(tree: Path | None = None) -> dict[str, Any]:
    """The cached llama-server build for `tree` (default options), without building."""
    from harness.run import server_build as sb
    if sb._PROCESS_MEMO:
        built = next(reversed(sb._PROCESS_MEMO.values()))
    else:
        if tree is None:
            try:
                import llama_cpp
                tree = vendored_tree(llama_cpp.__version__)
            except ImportError:
                tree = None
        if tree is None:
            return {"built": False, "reason": "no llama.cpp tree in the cache"}
        th = tree_sha256(tree)
        options = dict(sb.DEFAULT_CMAKE_OPTIONS)
        options.setdefault("LLAMA_BUILD_COMMIT", f"tree-{(th or '')[:12]}")
        key = sb._cache_key(th, options)
        built = sb._load_built(sb.default_cache_root() / "llama-server" / key / "built.json", cached=True)
        if built is None:
            return {"built": False, "reason": f"no cached build {key}", "tree_hash": th}
    return {"built": True, "version": built.version, "tree_hash": built.tree_hash, "cmake_options": built.options,
            "cache_key": built.key, "binary": str(built.binary), "build_seconds": built.build_seconds}


def gguf_sha256(path: str | Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime) (sources.file_sha256)."""
    from harness.models.sources import file_sha256
    return file_sha256(path)


def run_provenance(threads: int, models: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything recorded with a saved run besides the figures."""
    from importlib import metadata
    versions = {}
    for name in ("llama-cpp-python", "pytest-benchmark", "transformers", "requests"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"threads": threads, "machine": machine_info(), "llama_cpp": llama_cpp_python_info(),
            "llama_server": server_build_info(), "packages": versions, "models": models or {}}


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


# --- overhead: a timing plugin for a suite run ---------------------------------------------------------
class Clock:
    """Wall time inside backend calls; nested calls count once."""

    def __init__(self) -> None:
        self.total = 0.0
        self.depth = 0
        self.calls: Counter[str] = Counter()
        self.time_by: defaultdict[str, float] = defaultdict(float)

    def timed(self, label: str, fn: Callable, *args, **kwargs):
        if self.depth:
            return fn(*args, **kwargs)
        self.depth += 1
        t0 = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        finally:
            self._add(label, time.perf_counter() - t0)
            self.depth -= 1
        if isinstance(result, types.GeneratorType):
            return self._timed_steps(label, result)       # streaming: the work happens while iterating
        return result

    def _add(self, label: str, dt: float) -> None:
        self.total += dt
        self.calls[label] += 1
        self.time_by[label] += dt

    def _timed_steps(self, label: str, gen):
        while True:
            outer = not self.depth
            self.depth += 1
            t0 = time.perf_counter()
            try:
                item = next(gen)
            except StopIteration as stop:
                return stop.value
            finally:
                if outer:
                    self.total += time.perf_counter() - t0
                    self.time_by[label] += time.perf_counter() - t0
                self.depth -= 1
            yield item


class OverheadProbe:
    """A pytest plugin object: times backend calls, phases and snapshots; counts GGUF loads."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.phase: dict[str, float] = defaultdict(float)
        self.loads: dict[str, Counter] = defaultdict(Counter)
        self.tests = 0
        self.outside_by_test: dict[str, float] = {}
        self.backend_by_test: dict[str, float] = {}
        self.phases = overhead_phases.PhaseTimer(self.clock)
        self._undo: list[Callable[[], None]] = []
        self._t_collect = self._t_finish = self._t_summary = 0.0

    # patching -------------------------------------------------------------------------------
    def _patch(self, obj: Any, attr: str, new: Any) -> None:
        old = getattr(obj, attr)
        setattr(obj, attr, new)
        self._undo.append(lambda: setattr(obj, attr, old))

    def wrap_class(self, name: str, cls: type) -> None:
        """Time every method of a backend class, however its instances are made (the runtime,
        a check family opening its own server, ...). Nested calls count once (Clock)."""
        import types
        clock = self.clock
        seen: set[str] = set()
        for klass in cls.__mro__:
            if klass is object:
                continue
            for attr, fn in list(vars(klass).items()):
                if attr in seen or not isinstance(fn, types.FunctionType) or (
                        attr.startswith("__") and attr != "__init__"):
                    continue
                seen.add(attr)

                def timed(*args, _fn=fn, _label=f"{name}.{attr}", **kwargs):
                    return clock.timed(_label, _fn, *args, **kwargs)
                own = attr in vars(cls)
                setattr(cls, attr, timed)
                self._undo.append((lambda c=cls, a=attr, f=fn: setattr(c, a, f)) if own
                                  else (lambda c=cls, a=attr: delattr(c, a)))

    def install(self) -> None:
        from harness.backends.base import backend_class, backend_names
        clock, loads = self.clock, self.loads
        for name in backend_names():
            try:
                self.wrap_class(name, backend_class(name))
            except ImportError:                  # a backend whose library is not installed
                continue

        try:
            import llama_cpp
            # check families also drive llama-cpp-python directly (a chat handler given
            # backend.llm): that is backend work too
            self.wrap_class("llama_cpp.Llama", llama_cpp.Llama)
            init = llama_cpp.Llama.__init__

            def llama_init(this, *args, **kwargs):
                path = kwargs.get("model_path", args[0] if args else "?")
                loads[str(Path(path).name)]["llama_cpp.Llama" + (" (vocab_only)" if kwargs.get("vocab_only") else "")] += 1
                return init(this, *args, **kwargs)
            self._patch(llama_cpp.Llama, "__init__", llama_init)
        except ImportError:
            pass
        try:
            import gguf
            reader_init = gguf.GGUFReader.__init__

            def reader(this, path, *args, **kwargs):
                loads[Path(str(path)).name]["gguf.GGUFReader (metadata, mmap)"] += 1
                return clock.timed("gguf.GGUFReader", reader_init, this, path, *args, **kwargs)
            self._patch(gguf.GGUFReader, "__init__", reader)
        except ImportError:
            pass

        popen_init = subprocess.Popen.__init__

        def popen(this, args, *a, **kw):
            argv = [str(x) for x in (args if isinstance(args, (list, tuple)) else [args])]
            flags = " ".join(f for f in ("--special", "--chat-template-file", "--jinja") if f in argv)
            for x in argv:
                if x.endswith(".gguf"):
                    loads[Path(x).name][f"child process ({Path(argv[0]).name}{' ' + flags if flags else ''})"] += 1
            return popen_init(this, args, *a, **kw)
        self._patch(subprocess.Popen, "__init__", popen)

        run = subprocess.run

        def timed_run(args, *a, **kw):
            argv = [str(x) for x in (args if isinstance(args, (list, tuple)) else [args])]
            if any(x.endswith(".gguf") for x in argv):      # a child running llama.cpp on a model
                return clock.timed("subprocess (GGUF)", run, args, *a, **kw)
            return run(args, *a, **kw)
        self._patch(subprocess, "run", timed_run)

        try:
            from syrupy.assertion import SnapshotAssertion
            assert_ = SnapshotAssertion._assert
            phase, phases = self.phase, self.phases

            def snap(this, data):
                t0 = time.perf_counter()
                try:
                    return phases.timed("goldens", assert_, this, data)
                finally:
                    phase["snapshots"] += time.perf_counter() - t0
            self._patch(SnapshotAssertion, "_assert", snap)
        except (ImportError, AttributeError):
            pass
        overhead_phases.install(self)     # input generation, rendering, isolation (per check)

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    # phases --------------------------------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_collection(self, session):
        t0 = time.perf_counter()
        yield
        self.phase["collection"] += time.perf_counter() - t0

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        t0, b0 = time.perf_counter(), self.clock.total
        self.phases.current = item.nodeid
        yield
        self.phases.current = overhead_phases.OUTSIDE_TESTS
        self.tests += 1
        dt, db = time.perf_counter() - t0, self.clock.total - b0
        self.phase["tests"] += dt
        self.phase["tests_backend"] += db
        self.outside_by_test[item.nodeid] = dt - db
        self.backend_by_test[item.nodeid] = db

    @pytest.hookimpl(hookwrapper=True)
    def pytest_sessionfinish(self, session, exitstatus):
        t0, b0 = time.perf_counter(), self.clock.total
        yield
        self.phase["sessionfinish (results.json, report, junit, goldens)"] += time.perf_counter() - t0
        self.phase["sessionfinish_backend"] += self.clock.total - b0

    @pytest.hookimpl(hookwrapper=True)
    def pytest_terminal_summary(self, terminalreporter, exitstatus, config):
        t0 = time.perf_counter()
        yield
        self.phase["terminal summary"] += time.perf_counter() - t0


def measure_suite(pytest_args: list[str]) -> dict[str, Any]:
    """Run pytest in this process with the probe; return wall, backend and phase times."""
    import pytest
    t_proc = time.perf_counter()
    probe = OverheadProbe()
    probe.install()
    try:
        t0 = time.perf_counter()
        rc = int(pytest.main(list(pytest_args), plugins=[probe]))
        wall = time.perf_counter() - t0
    finally:
        probe.uninstall()
    backend = probe.clock.total
    phases = dict(probe.phase)
    tests_outside = phases.get("tests", 0.0) - phases.get("tests_backend", 0.0)
    breakdown = {
        "collection": phases.get("collection", 0.0),
        "tests outside backend calls (checks, rendering requests, comparison)": tests_outside
        - phases.get("snapshots", 0.0),
        "snapshots (syrupy)": phases.get("snapshots", 0.0),
        "reporting (sessionfinish + terminal summary)": phases.get(
            "sessionfinish (results.json, report, junit, goldens)", 0.0)
        - phases.get("sessionfinish_backend", 0.0) + phases.get("terminal summary", 0.0),
    }
    breakdown["startup, configuration, other"] = max(0.0, wall - backend - sum(breakdown.values()))
    return {
        "exit_code": rc, "wall_s": wall, "backend_s": backend, "outside_s": wall - backend,
        "outside_ratio": (wall - backend) / wall if wall else None, "tests": probe.tests,
        "breakdown_s": breakdown,
        "backend_calls": dict(probe.clock.calls.most_common()),
        "backend_time_by_call_s": {k: round(v, 4) for k, v in sorted(probe.clock.time_by.items(),
                                                                     key=lambda kv: -kv[1])},
        "gguf_loads": {k: dict(v) for k, v in sorted(probe.loads.items())},
        "outside_by_test_function_s": _by_function(probe.outside_by_test),
        "outside_top_tests_s": dict(sorted(((k, round(v, 3)) for k, v in probe.outside_by_test.items()),
                                           key=lambda kv: -kv[1])[:10]),
        "instrumented_calls": sum(probe.clock.calls.values()),
        "process_setup_s": t0 - t_proc,
        "by_check_phase_s": probe.phases.table(probe.outside_by_test, probe.backend_by_test),
        "session_phases_s": {"collection": round(breakdown["collection"], 3),
                             "reporting": round(breakdown["reporting (sessionfinish + terminal summary)"], 3),
                             "startup, configuration, other": round(breakdown["startup, configuration, other"], 3)},
        "forks": probe.phases.forks, "fork_overhead_s": probe.phases.fork_overhead_s,
    }


def _by_function(per_test: dict[str, float]) -> dict[str, float]:
    out: defaultdict[str, float] = defaultdict(float)
    for nodeid, v in per_test.items():
        out[nodeid.split("[")[0].split("/")[-1]] += v
    return {k: round(v, 3) for k, v in sorted(out.items(), key=lambda kv: -kv[1])[:12]}


def max_inprocess_loads(gguf_loads: dict[str, dict[str, int]]) -> int:
    """Most in-process llama.cpp loads (Llama objects with weights) of any one GGUF."""
    return max((n for per in gguf_loads.values() for kind, n in per.items() if kind == "llama_cpp.Llama"),
               default=0)


# --- collection time for generated cases ---------------------------------------------------------------
GENERATED_CASE = """\
schema: 1
id: gen-{i:04d}
description: Generated case {i} (collection timing); SmolLM2's GGUF pins, two contexts.
model:
  gguf:
    file: SmolLM2-135M-Instruct.Q4_1.gguf
    sha256: b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    size: 98362432
  weights: true
  chat_template: embedded
  tokenizer: {{from_gguf: true}}
contexts: [single-user, tool-round-trip]
"""


def generate_cases(dest: Path, n: int, source_cases: Path) -> Path:
    """n model case files plus the shared contexts and tool sets: a cases/ folder."""
    import shutil
    root = Path(dest) / "cases"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for sub in ("contexts", "tools"):
        shutil.copytree(Path(source_cases) / sub, root / sub)
    for i in range(n):
        (root / f"gen-{i:04d}.yaml").write_text(GENERATED_CASE.format(i=i), encoding="utf-8")
    return root


def collection_time(n_cases: int, source_cases: Path, workdir: Path, suite: Path | None = None) -> dict[str, Any]:
    """Time `pytest --collect-only` over n generated case files, in a fresh process."""
    import re
    suite = suite or Path(__file__).parent.parent / "suite"
    cases = generate_cases(workdir, n_cases, source_cases)
    cmd = [sys.executable, "-m", "pytest", str(suite), "--collect-only", "-q", "-p", "no:cacheprovider",
           f"--rootdir={workdir}", f"--cases={cases}", f"--golden-dir={workdir / 'golden'}",
           f"--report-dir={workdir / 'reports'}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    m = re.search(r"(\d+) tests? collected in ([\d.]+)s", proc.stdout)
    if m is None:
        raise RuntimeError(f"collection failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return {"cases": n_cases, "items": int(m.group(1)), "pytest_collection_s": float(m.group(2)),
            "process_wall_s": wall, "exit_code": proc.returncode}


# --- formatting ------------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f}%"


def format_overhead(fig: dict[str, Any], target: float = 0.10) -> list[str]:
    lines = [f"default-suite run: {fig['tests']} tests, wall {fig['wall_s']:.1f}s, inside backend calls "
             f"{fig['backend_s']:.1f}s, outside {fig['outside_s']:.1f}s = {_pct(fig['outside_ratio'])} "
             f"(target <= {target:.0%}: {'met' if fig['outside_ratio'] <= target else 'MISSED by ' + _pct(fig['outside_ratio'] - target)})"]
    for k, v in fig["breakdown_s"].items():
        lines.append(f"    {k:<70} {v:8.2f}s  {_pct(v / fig['wall_s'] if fig['wall_s'] else None):>6}")
    by_fn = list((fig.get("outside_by_test_function_s") or {}).items())[:5]
    if by_fn:
        lines.append("    time outside backend calls by test function: " + ", ".join(f"{k} {v:.1f}s" for k, v in by_fn))
    lines += overhead_phases.format_table(fig)
    top = list(fig["backend_time_by_call_s"].items())[:6]
    lines.append("    backend time by call: " + ", ".join(f"{k} {v:.1f}s" for k, v in top))
    worst = max_inprocess_loads(fig["gguf_loads"])
    lines.append(f"GGUF loads per worker (serial run = 1 worker): max in-process llama.cpp loads of one GGUF = {worst} "
                 f"(target <= 1: {'met' if worst <= 1 else 'MISSED'})")
    for name, per in fig["gguf_loads"].items():
        lines.append(f"    {name}: " + ", ".join(f"{k} x{n}" for k, n in sorted(per.items())))
    return lines


def format_collection(fig: dict[str, Any]) -> str:
    return (f"collection of {fig['cases']} generated cases ({fig['items']} items): pytest {fig['pytest_collection_s']:.2f}s, "
            f"process wall {fig['process_wall_s']:.2f}s")


def _within(ratio: float | None, target: float) -> str:
    if ratio is None:
        return "n/a"
    return "ok" if abs(ratio - 1) <= target else f"off {_pct(ratio - 1)}"


def format_throughput(rows: list[dict[str, Any]], target: float = 0.05) -> list[str]:
    """rows: extra_info of throughput benchmarks (with case, backend, constraint)."""
    head = (f"{'model':<22} {'backend':<22} {'constr.':<11} {'ttft ms':>7} {'pp t/s':>7} {'backend':>7} {'ratio':>6} "
            f"{'tg t/s':>7} {'backend':>7} {'ratio':>6} {'+sampl.':>7} {'ratio':>6}  harness vs backend")
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (r["case"], r["constraint"], r["backend"])):
        def g(key: str) -> str:
            v = r.get(key)
            return "-" if not v else f"{v['mean']:.1f}"

        def q(key: str) -> str:
            v = r.get(key)
            return "-" if v is None else f"{v:.3f}"
        status = f"pp {_within(r.get('pp_ratio'), target)}, tg {_within(r.get('tg_ratio'), target)}"
        if r.get("tg_ratio_with_sampling") is not None:
            status += f" (with sampling {_within(r.get('tg_ratio_with_sampling'), target)})"
        lines.append(f"{r['case'][:22]:<22} {r['backend']:<22} {r['constraint']:<11} {g('ttft_ms'):>7} {g('pp_tps'):>7} "
                     f"{g('backend_pp_tps'):>7} {q('pp_ratio'):>6} {g('tg_tps'):>7} {g('backend_tg_tps'):>7} "
                     f"{q('tg_ratio'):>6} {g('backend_tg_tps_with_sampling'):>7} {q('tg_ratio_with_sampling'):>6}  {status}")
    return lines


def throughput_verdict(rows: list[dict[str, Any]], target: float = 0.05) -> list[str]:
    """The ratio target, said plainly: where it holds, where it misses and by how much."""
    out = []
    def worst(rs, key):
        vals = [(abs(r[key] - 1), r) for r in rs if r.get(key) is not None]
        return max(vals, key=lambda v: v[0]) if vals else None
    plain = [r for r in rows if r["constraint"] == "none"]
    for kind in ("pp", "tg"):
        w = worst(plain, f"{kind}_ratio")
        if w:
            out.append(f"{kind} tokens/s without a constraint, all backends: largest harness/backend gap "
                       f"{w[0] * 100:.1f}% ({w[1]['case']}, {w[1]['backend']}) -> target {target:.0%} "
                       f"{'met' if w[0] <= target else 'MISSED by ' + f'{(w[0] - target) * 100:.1f} points'}")
    server = [r for r in rows if r["backend"] == "llama-server"]
    w = worst(server, "tg_ratio")
    if w:
        out.append(f"llama-server, every constraint (its predicted_ms includes sampling): largest tg gap {w[0] * 100:.1f}% "
                   f"-> {'met' if w[0] <= target else 'MISSED'}")
    constrained = [r for r in rows if r["constraint"] != "none" and r["backend"] != "llama-server"]
    w = worst(constrained, "tg_ratio")
    if w and w[0] > target:
        line = (f"llama-cpp-python with a grammar: tg misses by up to {(w[0] - target) * 100:.0f} points against "
                f"llama.cpp's t_eval ({w[1]['case']}, {w[1]['backend']}, {w[1]['constraint']}), because t_eval times "
                f"decoding only and grammar sampling over the vocabulary is the difference")
        ws = worst(constrained, "tg_ratio_with_sampling")
        if ws:
            line += (f"; against t_eval + the sampler's own t_sample (eval loop) the largest gap is {ws[0] * 100:.1f}% "
                     f"-> {'met' if ws[0] <= target else 'MISSED'}")
        out.append(line)
    w = worst([r for r in rows if r["constraint"] != "none"], "pp_ratio")
    if w and w[0] > target:
        out.append(f"pp with a grammar misses by up to {(w[0] - target) * 100:.1f} points ({w[1]['case']}, "
                   f"{w[1]['backend']}): the harness's time to first token includes sampling the first token "
                   f"through the grammar, llama.cpp's prompt time does not")
    return [ln for ln in out if ln]


# --- `python -m harness.bench overhead --out FILE -- PYTEST ARGS` (run in a fresh process) -------------
def main(argv: list[str]) -> int:
    import argparse
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    else:
        rest = []
    p = argparse.ArgumentParser(prog="python -m harness.bench")
    p.add_argument("what", choices=["overhead"])
    p.add_argument("--out", required=True)
    ns = p.parse_args(argv)
    fig = measure_suite(rest)
    Path(ns.out).write_text(json.dumps(fig, indent=1))
    return 0


def format_tokenize(rows: list[dict[str, Any]]) -> list[str]:
    """Strings/s and tokens/s per case and tokenizer backend, fastest first within a case."""
    out = [f"{'case':28} {'backend':18} {'strings':>7} {'tokens':>8} {'strings/s':>10} {'tokens/s':>10}"]
    for r in sorted(rows, key=lambda r: (r["case"], -r["tokens_per_s"])):
        out.append(f"{r['case']:28} {r['backend']:18} {r['strings']:>7} {r['tokens']:>8} "
                   f"{r['strings_per_s']:>10.1f} {r['tokens_per_s']:>10.1f}")
    return out
