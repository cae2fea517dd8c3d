"""Bench provenance: the machine, the llama.cpp builds (llama-cpp-python and llama-server, read from
the server build cache, never built here) and the sha256 of every GGUF measured."""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
from pathlib import Path
from typing import Any


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
