"""Run risky work in a forked child: a wall-clock timeout, a memory cap, and a clear outcome.

    outcome = run_isolated(fn, *args, timeout_s=10, memory_mib=512)
    outcome.status   "ok" | "raised" | "timeout" | "signal" | "memory" | "exit"
    outcome.value    fn's return value (status "ok"; pickled back through a pipe)
    outcome.detail   "timed out after 10s" / "killed by SIGSEGV" / "exceeded 512 MiB" / "ValueError: ..."

Used for
  * rendering untrusted chat templates through every Python renderer (harness/families/hostile/checks.py):
    a template that loops forever or allocates without bound is killed, not waited for;
  * probing a GGUF with a risky loader before the worker loads it in process
    (`probe_backend`, called from harness/run/runtime.py): a file that crashes llama.cpp (an
    abort or a segfault in native code) becomes a BackendError for that model's cases instead
    of killing the pytest worker; a successful probe is remembered per file sha256 in the
    harness cache, so each GGUF is probed once per machine and llama.cpp version;
  * `check_gguf`: a cheap structural check of a GGUF (magic, version, every header length,
    known metadata types, tensor data inside the file) that names the cause of a corrupt file.

The child: resets SIGINT/SIGTERM to their defaults and forgets the parent's llama-server
children (so it never stops them), dies with the parent (PR_SET_PDEATHSIG), caps its address
space at its current size + memory_mib (RLIMIT_AS), optionally captures its stderr (the tail
goes into the outcome: faulthandler's stack for a crash, llama.cpp's log for a load error),
and always leaves with os._exit (no atexit handlers, no pytest teardown in the child). The
parent kills and reaps it on timeout and on any interruption (Ctrl-C included).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import pickle
import resource
import select
import signal
import struct
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.atomic import write_atomic
from harness.errors import SourceError
from harness.run.memory import rss_mib

_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


@dataclass
class Outcome:
    status: str                       # ok | raised | timeout | signal | memory | exit
    value: Any = None
    exc_type: str | None = None       # status raised/memory: the exception's type name
    detail: str = ""                  # one line a human reads
    stderr: str = ""                  # tail of the child's stderr, when captured
    seconds: float = 0.0
    signal: str | None = None         # status signal: e.g. "SIGSEGV"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        tail = _interesting_tail(self.stderr)
        return self.detail + (f"; last lines of its stderr:\n{tail}" if tail and not self.ok else "")


def _interesting_tail(text: str, n: int = 12) -> str:
    """The lines that say what happened: faulthandler's report and the innermost frames of
    the crashing thread when there is one, else the last lines."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    fatal = next((i for i, ln in enumerate(lines) if ln.startswith("Fatal Python error")), None)
    if fatal is not None:
        current = next((i for i, ln in enumerate(lines) if ln.startswith(("Current thread", "Stack ("))
                        and i > fatal), fatal + 1)
        return "\n".join([lines[fatal]] + lines[current:current + n])
    return "\n".join(lines[-n:])


def _vm_size_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _child_setup(memory_mib: int | None, stderr_fd: int | None) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)          # Ctrl-C kills the child at once
    signal.signal(signal.SIGALRM, signal.SIG_IGN)   # a copied pytest-timeout handler must not fire here
    try:                                            # never stop the parent's llama-server children
        from harness.run import server_build
        server_build.forget_children()
    except Exception:  # the module may not be importable in a minimal environment
        pass
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if stderr_fd is not None:
        os.dup2(stderr_fd, 2)
        os.close(stderr_fd)
        import faulthandler   # pytest points it at a dup of the original stderr: use the captured one
        faulthandler.enable(file=2, all_threads=False)
    if memory_mib is not None:
        limit = _vm_size_bytes() + memory_mib * 1024 * 1024
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _exc_attrs(exc: BaseException) -> dict[str, Any]:
    """What survives the pipe besides the message: the types along the cause chain (a wrapper
    such as BackendError often hides the real cause) and a line number where there is one."""
    chain, seen, e = [], set(), exc
    while e is not None and id(e) not in seen and len(chain) < 8:
        seen.add(id(e))
        chain.append((type(e).__name__, str(e)[:2000], getattr(e, "lineno", None)))
        e = e.__cause__ or e.__context__
    return {"chain": chain}


def _child_main(fn: Callable[..., Any], args: tuple, kwargs: dict, wfd: int, memory_mib: int | None,
                stderr_fd: int | None) -> None:
    code = 0
    try:
        _child_setup(memory_mib, stderr_fd)
        try:
            payload = ("ok", fn(*args, **kwargs))
        except MemoryError as exc:
            payload = ("memory", (type(exc).__name__, str(exc) or "MemoryError", "", {}))
        except BaseException as exc:  # the child reports everything; it is about to exit anyway
            attrs = _exc_attrs(exc)
            payload = ("raised", (type(exc).__name__, str(exc)[:20000],
                                  "".join(traceback.format_exception(exc))[-8000:], attrs))
        try:
            data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an unpicklable result is reported, not lost
            data = pickle.dumps(("raised", ("PicklingError", f"result could not be sent back: {exc}", "", {})))
        view = memoryview(struct.pack("<Q", len(data)) + data)
        while view:
            n = os.write(wfd, view)
            view = view[n:]
    except BaseException:  # nothing may escape the child; exit code 70 means "child machinery failed"
        code = 70
    finally:
        os._exit(code)


def _read_available(fd: int, into: bytearray) -> bool:
    """Read what is there; False at EOF."""
    chunk = os.read(fd, 1 << 20)
    if not chunk:
        return False
    into += chunk
    return True


def run_isolated(fn: Callable[..., Any], *args: Any, timeout_s: float = 30.0, memory_mib: int | None = None,
                 capture_stderr: bool = False, **kwargs: Any) -> Outcome:
    """Run fn(*args, **kwargs) in a forked child. Never raises for anything the child does;
    raises only if the fork itself fails (or the caller is interrupted, after killing the child)."""
    return run_isolated_many([(fn, args, kwargs)], concurrency=1, timeout_s=timeout_s, memory_mib=memory_mib,
                             capture_stderr=capture_stderr)[0]


def run_isolated_many(calls: list[tuple[Callable[..., Any], tuple, dict]], *, concurrency: int,
                      timeout_s: float = 30.0, memory_mib: int | None = None,
                      capture_stderr: bool = False) -> list[Outcome]:
    """run_isolated for each (fn, args, kwargs), up to `concurrency` children at a time, all
    forked from this thread (no threads: a fork copies only the forking thread, and a lock held by
    another one would hang the child). Each child has its own deadline, counted from its own fork,
    and its own limits, exactly as run_isolated gives it; the outcomes come back in call order."""
    pending = list(enumerate(calls))
    running: list[_Child] = []
    outcomes: list[Outcome | None] = [None] * len(calls)
    try:
        while pending or running:
            while pending and len(running) < max(1, concurrency):
                index, (fn, args, kwargs) = pending.pop(0)
                running.append(_Child.spawn(index, fn, args, kwargs, timeout_s, memory_mib, capture_stderr))
            now = time.monotonic()
            for child in [c for c in running if not c.open_fds or now >= c.deadline]:
                running.remove(child)
                outcomes[child.index] = child.finish(timed_out=bool(child.open_fds))
            if not running:
                continue
            fds = [fd for c in running for fd in c.open_fds]
            left = min(c.deadline for c in running) - time.monotonic()
            ready, _, _ = select.select(fds, [], [], max(0.0, min(left, 0.5))) if fds else ([], [], [])
            for child in running:
                for fd in [fd for fd in ready if fd in child.open_fds]:
                    if not _read_available(fd, child.open_fds[fd]):
                        del child.open_fds[fd]
    finally:
        for child in running:                   # interrupted (Ctrl-C) or an error here: no orphan
            child.kill()
    return outcomes  # type: ignore[return-value]


class _Child:
    """One forked child of run_isolated_many: its pipes, what it sent, its deadline."""

    def __init__(self, index: int, pid: int, rfd: int, efd_r: int | None, t0: float, timeout_s: float,
                 memory_mib: int | None):
        self.index, self.pid, self.rfd, self.efd_r, self.t0 = index, pid, rfd, efd_r, t0
        self.timeout_s, self.memory_mib, self.deadline = timeout_s, memory_mib, t0 + timeout_s
        self.data, self.err = bytearray(), bytearray()
        self.open_fds = {rfd: self.data} | ({efd_r: self.err} if efd_r is not None else {})
        self.reaped = False

    @classmethod
    def spawn(cls, index: int, fn: Callable[..., Any], args: tuple, kwargs: dict, timeout_s: float,
              memory_mib: int | None, capture_stderr: bool) -> "_Child":
        rfd, wfd = os.pipe()
        efd_r, efd_w = os.pipe() if capture_stderr else (None, None)
        sys.stdout.flush()
        sys.stderr.flush()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:  # child
            os.close(rfd)
            if efd_r is not None:
                os.close(efd_r)
            _child_main(fn, args, kwargs, wfd, memory_mib, efd_w)
        os.close(wfd)
        if efd_w is not None:
            os.close(efd_w)
        return cls(index, pid, rfd, efd_r, t0, timeout_s, memory_mib)

    def _close(self) -> None:
        os.close(self.rfd)
        if self.efd_r is not None:
            os.close(self.efd_r)

    def kill(self) -> None:
        if not self.reaped:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.reaped = True
            self._close()

    def finish(self, *, timed_out: bool) -> Outcome:
        if timed_out:
            os.kill(self.pid, signal.SIGKILL)
        try:
            _, status = os.waitpid(self.pid, 0)
        except BaseException:
            self.kill()
            raise
        self.reaped = True
        self._close()
        return self._outcome(status, timed_out)

    def _outcome(self, status: int, timed_out: bool) -> Outcome:
        seconds = round(time.monotonic() - self.t0, 3)
        stderr = self.err.decode("utf-8", errors="replace")[-16000:]
        timeout_s, memory_mib, data = self.timeout_s, self.memory_mib, self.data
        if timed_out:
            return Outcome("timeout", detail=f"timed out after {timeout_s:g}s (killed)", stderr=stderr, seconds=seconds)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
            detail = f"killed by {name}"
            if memory_mib is not None and sig == signal.SIGABRT:
                detail += f" (native code aborts when an allocation fails: its memory cap was {memory_mib} MiB)"
            return Outcome("signal", detail=detail, stderr=stderr, seconds=seconds, signal=name)
        code = os.WEXITSTATUS(status)
        if len(data) >= 8:
            (n,) = struct.unpack("<Q", data[:8])
            if len(data) >= 8 + n:
                kind, value = pickle.loads(bytes(data[8:8 + n]))
                if kind == "ok":
                    return Outcome("ok", value=value, detail="ok", stderr=stderr, seconds=seconds)
                exc_type, message, tb, attrs = value
                if kind == "memory":
                    return Outcome("memory", exc_type=exc_type, stderr=stderr, seconds=seconds,
                                   detail=f"exceeded {memory_mib} MiB (MemoryError)" if memory_mib else "MemoryError")
                return Outcome("raised", exc_type=exc_type, detail=f"{exc_type}: {message}", stderr=stderr,
                               seconds=seconds, extra={"traceback": tb, "message": message, **attrs})
        return Outcome("exit", detail=f"exited with code {code} without a result", stderr=stderr, seconds=seconds)


# --- GGUF: a structural check that names the cause ---------------------------------------
class ModelFileError(SourceError):
    """A model file was found and verified, but it is not a usable GGUF (truncated, wrong
    magic, a metadata value of the wrong type...). The message names the file and the cause."""

    def __init__(self, path: Path, cause: str):
        self.path, self.cause = Path(path), cause
        self.what, self.attempts = str(path), []
        Exception.__init__(self, f"{Path(path).name}: {cause} ({path})")


GGUF_MAGIC = b"GGUF"
# gguf value types (ggml/include/gguf.h)
_U8, _I8, _U16, _I16, _U32, _I32, _F32, _BOOL, _STR, _ARR, _U64, _I64, _F64 = range(13)
_TYPE_NAMES = ["UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL", "STRING", "ARRAY",
               "UINT64", "INT64", "FLOAT64"]
_SCALAR_SIZE = {_U8: 1, _I8: 1, _U16: 2, _I16: 2, _U32: 4, _I32: 4, _F32: 4, _BOOL: 1, _U64: 8, _I64: 8, _F64: 8}
# Keys llama.cpp reads with a fixed type (it refuses the file otherwise, often with a less clear message).
_KEY_TYPES: dict[str, tuple[int, int | None]] = {
    "general.architecture": (_STR, None),
    "general.alignment": (_U32, None),
    "tokenizer.ggml.model": (_STR, None),
    "tokenizer.ggml.pre": (_STR, None),
    "tokenizer.ggml.tokens": (_ARR, _STR),
    "tokenizer.ggml.scores": (_ARR, _F32),
    "tokenizer.ggml.token_type": (_ARR, _I32),
    "tokenizer.ggml.merges": (_ARR, _STR),
    "tokenizer.chat_template": (_STR, None),
    **{f"tokenizer.ggml.{k}_token_id": (_U32, None) for k in (
        "bos", "eos", "unknown", "seperator", "padding", "cls", "mask", "eot", "eom",
        "fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep", "prefix", "suffix", "middle")},
    **{f"tokenizer.ggml.add_{k}_token": (_BOOL, None) for k in ("bos", "eos", "sep", "space_prefix")},
}
MAX_TENSORS = 1 << 20
MAX_KV = 1 << 20
MAX_STRING = 1 << 30


class _Reader:
    """Bounds-checked little-endian reads over an mmap of the file."""

    def __init__(self, buf: Any, size: int):
        self.buf, self.size, self.pos = buf, size, 0

    def tell(self) -> int:
        return self.pos

    def read(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated(what, self.pos, n)
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def _uint(self, fmt: str, n: int, what: str) -> int:
        if self.pos + n > self.size:
            raise _Truncated(what, self.pos, n)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v

    def u32(self, what: str) -> int:
        return self._uint("<I", 4, what)

    def u64(self, what: str) -> int:
        return self._uint("<Q", 8, what)

    def string(self, what: str) -> bytes:
        n = self.u64(f"{what} length")
        if n > MAX_STRING:
            raise _Bad(f"{what}: string length {n} is implausible")
        return self.read(n, what)

    def skip_strings(self, count: int, what: str) -> None:
        buf, pos, size, unpack = self.buf, self.pos, self.size, struct.unpack_from
        for j in range(count):
            if pos + 8 > size:
                self.pos = pos
                raise _Truncated(f"{what}[{j}] length", pos, 8)
            (n,) = unpack("<Q", buf, pos)
            pos += 8 + n
            if pos > size:
                self.pos = pos - n
                raise _Truncated(f"{what}[{j}]", pos - n, n)
        self.pos = pos

    def skip(self, n: int, what: str) -> None:
        if self.pos + n > self.size:
            raise _Truncated(what, self.pos, n)
        self.pos += n


class _Truncated(Exception):
    def __init__(self, what: str, pos: int, n: int):
        super().__init__(what)
        self.what, self.pos, self.n = what, pos, n


class _Bad(Exception):
    pass


def _type_name(t: int) -> str:
    return _TYPE_NAMES[t] if 0 <= t < len(_TYPE_NAMES) else f"unknown type {t}"


def check_gguf(path: Path) -> dict[str, Any]:
    """Walk a GGUF's header without loading it; raise ModelFileError naming the cause.
    Returns a small summary (version, counts, data size). Pure Python, reads only the header."""
    import mmap
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except (OSError, ValueError) as exc:
        raise ModelFileError(path, f"cannot open: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return _walk(_Reader(buf, size), path, size)
    except _Truncated as exc:
        raise ModelFileError(path, f"truncated: the file ends at byte {size} inside {exc.what} (byte {exc.pos}, "
                                   f"{exc.n} bytes needed)") from None
    except _Bad as exc:
        raise ModelFileError(path, str(exc)) from None
    finally:
        if size:
            buf.close()


def _walk(r: _Reader, path: Path, size: int) -> dict[str, Any]:
    magic = r.read(4, "the magic number")
    if magic != GGUF_MAGIC:
        raise _Bad(f"not a GGUF file: magic {magic!r}, expected {GGUF_MAGIC!r}")
    version = r.u32("the version")
    if version not in (2, 3):
        raise _Bad(f"unsupported GGUF version {version} (llama.cpp reads 2 and 3)")
    n_tensors, n_kv = r.u64("the tensor count"), r.u64("the metadata count")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise _Bad(f"implausible header: {n_tensors} tensors, {n_kv} metadata keys")
    alignment = 32
    for i in range(n_kv):
        key = r.string(f"metadata key #{i}").decode("utf-8", errors="replace")
        vtype = r.u32(f"the type of {key}")
        expect = _KEY_TYPES.get(key)
        if expect is not None and vtype != expect[0]:
            raise _Bad(f"metadata {key} has type {_type_name(vtype)}, expected {_type_name(expect[0])}")
        if vtype == _ARR:
            etype, count = r.u32(f"the element type of {key}"), r.u64(f"the length of {key}")
            if expect is not None and expect[1] is not None and etype != expect[1]:
                raise _Bad(f"metadata {key} is an array of {_type_name(etype)}, expected {_type_name(expect[1])}")
            if etype == _STR:
                r.skip_strings(count, key)
            elif etype in _SCALAR_SIZE:
                r.skip(_SCALAR_SIZE[etype] * count, f"the values of {key}")
            else:
                raise _Bad(f"metadata {key}: unsupported array element type {_type_name(etype)}")
        elif vtype == _STR:
            value = r.string(f"the value of {key}")
            if key == "tokenizer.chat_template":
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _Bad(f"metadata {key} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        elif vtype in _SCALAR_SIZE:
            raw = r.read(_SCALAR_SIZE[vtype], f"the value of {key}")
            if key == "general.alignment":
                alignment = struct.unpack("<I", raw)[0]
                if alignment == 0 or alignment & (alignment - 1):
                    raise _Bad(f"general.alignment {alignment} is not a power of two")
        else:
            raise _Bad(f"metadata {key} has {_type_name(vtype)}")
    tensors = []
    for i in range(n_tensors):
        name = r.string(f"tensor info #{i} name").decode("utf-8", errors="replace")
        n_dims = r.u32(f"the dimensions of tensor {name}")
        if n_dims > 8:
            raise _Bad(f"tensor {name} has {n_dims} dimensions (at most 4 are valid)")
        dims = [r.u64(f"the shape of tensor {name}") for _ in range(n_dims)]
        ttype = r.u32(f"the type of tensor {name}")
        offset = r.u64(f"the offset of tensor {name}")
        tensors.append((name, dims, ttype, offset))
    data_start = (r.tell() + alignment - 1) // alignment * alignment
    needed, first_cut = data_start, None
    for name, dims, ttype, offset in tensors:
        nbytes = _tensor_nbytes(dims, ttype)
        if nbytes is None:
            raise _Bad(f"tensor {name} has unknown ggml type {ttype}")
        end = data_start + offset + nbytes
        if end > size and first_cut is None:
            first_cut = name
        needed = max(needed, end)
    if first_cut is not None:
        raise _Bad(f"truncated: the tensor data ends at byte {needed:,} but the file has {size:,} bytes "
                   f"({needed - size:,} missing; first tensor cut: {first_cut})")
    return {"version": version, "tensors": n_tensors, "metadata": n_kv, "data_end": needed, "size": size}


def _tensor_nbytes(dims: list[int], ttype: int) -> int | None:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
    except (ValueError, KeyError):
        return None
    n = 1
    for d in dims:
        n *= d
    return n * type_size // block


# --- probing a risky load --------------------------------------------------------------
# Backends whose construction runs native code over an untrusted file in the worker's own
# process. Tests add their own doubles here.
RISKY_LOADS: set[str] = {"llama-cpp-python"}
PROBE_TIMEOUT_S = 300.0
_PROBED: dict[tuple, Outcome] = {}           # this process: (name, sha256|path, options) -> outcome


def _probe_key(name: str, model: Any, options: Any) -> tuple[str, str]:
    """(memo key, human label). The key changes with the file, the load options and the
    version of the library that loads it."""
    try:
        from importlib.metadata import version
        lib = version("llama-cpp-python")
    except Exception:  # not installed: the key still works for other loaders
        lib = "?"
    ident = model.gguf_sha256 or f"{model.gguf}:{Path(model.gguf).stat().st_size}:{Path(model.gguf).stat().st_mtime_ns}"
    raw = json.dumps([name, ident, bool(model.vocab_only), options.n_ctx, lib], sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:24], f"{name} on {Path(model.gguf).name}"


def _memo_dir() -> Path:
    from harness.models.sources import cache_root
    return cache_root() / "probes"


def _construct_and_close(name: str, model: Any, options: Any) -> str:
    """In the child: open the backend as the worker would, exercise its vocab a little, close."""
    from harness.backends.base import backend_class
    _capture_llama_log()
    backend = backend_class(name)(model, options)
    try:
        tok = getattr(backend, "tokenize", None)
        if tok is not None and "tokenize" in backend.capabilities:
            ids = tok("Hello, world", add_special=True, parse_special=True)
            if "detokenize" in backend.capabilities:
                backend.detokenize(ids, render_special=True)
    finally:
        backend.close()
    return "ok"


def _capture_llama_log() -> None:
    """Send llama.cpp's log to fd 2 (captured by run_isolated) so a load error keeps its cause."""
    if "llama_cpp" not in sys.modules:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def to_stderr(level, text, user_data):  # noqa: ANN001 (ctypes callback)
        try:
            os.write(2, text)
        except OSError:
            pass
    _capture_llama_log.callback = to_stderr   # keep it alive for the child's lifetime
    llama_cpp.llama_log_set(to_stderr, ctypes.c_void_p(0))


def probe_backend(name: str, model: Any, options: Any) -> None:
    """Before `name` opens `model` in this process for the first time: open it once in a
    forked child. Raises BackendError (naming the file and the cause) if that child crashed or
    failed; a timeout is inconclusive and lets the in-process load go ahead."""
    from harness.backends.base import BackendError
    if name not in RISKY_LOADS or model is None or getattr(model, "gguf", None) is None:
        return
    key, label = _probe_key(name, model, options)
    memo = _memo_dir() / f"{key}.ok"
    if key in _PROBED or memo.exists():
        outcome = _PROBED.get(key) or Outcome("ok", detail="ok (probed earlier)")
    else:
        outcome = run_isolated(_construct_and_close, name, model, options, timeout_s=PROBE_TIMEOUT_S,
                               capture_stderr=True)
        _PROBED[key] = outcome
        if outcome.ok:
            _atomic_touch(memo, json.dumps({"probe": label, "seconds": outcome.seconds}))
    if outcome.ok or outcome.status == "timeout":
        return
    syntax = next((c for c in outcome.extra.get("chain", []) if c[0] == "TemplateSyntaxError"), None)
    if outcome.status == "raised" and syntax is not None:
        # llama-cpp-python compiles the embedded template when it opens the model
        _, message, line = syntax
        raise BackendError(f"{model.gguf.name}: its embedded chat template (tokenizer.chat_template) is not "
                           f"valid Jinja{f' (line {line})' if line else ''}: {message}; "
                           f"{name} refuses to open the model [{model.gguf}]")
    if outcome.status == "raised":
        message = outcome.extra.get("message", outcome.detail)
        cause = _llama_error_lines(outcome.stderr)
        raise BackendError(f"{model.gguf.name}: probe load failed ({outcome.exc_type}: {message})"
                           + (f"; llama.cpp said: {cause}" if cause else "") + f" [{model.gguf}]")
    tail = _interesting_tail(outcome.stderr)
    raise BackendError(f"{model.gguf.name}: loading it crashed the probe process ({outcome.detail}); "
                       f"{name} is not loaded in the worker [{model.gguf}]" + (f"\n{tail}" if tail else ""))


def _llama_error_lines(log: str) -> str:
    keep = [ln.strip() for ln in log.splitlines()
            if any(w in ln.lower() for w in ("error", "failed", "invalid", "corrupt", "wrong", "exception"))]
    return " | ".join(dict.fromkeys(keep))[-1500:]


def _atomic_touch(path: Path, text: str) -> None:
    try:
        write_atomic(path, text)
    except OSError:
        pass  # a read-only cache only costs a probe next time


# --- xdist: a crashed check must not run again ------------------------------------------------
def group_of(nodeid: str) -> str:
    """The work unit of a check under --dist loadgroup: its case (harness/run/scheduling.py
    unit_of). xdist's own grouping (the xdist_group mark, which the plugin still sets) appends
    `@group` to item._nodeid, which pytest 9 no longer reads (a node's id lives in `_id`): with
    pytest 9.2 and xdist 3.8, loadgroup silently sends every test on its own
    (https://github.com/pytest-dev/pytest-xdist/issues/1386; fix proposed in PR #1388)."""
    from harness.run.scheduling import unit_of
    return unit_of(nodeid)


def crash_safe_loadgroup_scheduler(config: Any, log: Any) -> Any:
    """pytest-xdist's LoadGroupScheduling, grouping by case (group_of), except that the check a
    worker crashed on is marked done before the rest of its group is re-queued.

    xdist 3.8's LoadScopeScheduling.remove_node re-queues the crashed work unit with the crashed
    check still pending: the replacement worker runs that check first and crashes again, until
    --max-worker-restart is used up and the rest of the run is dropped. Here the check that was
    running (the first one of the unit not completed: a unit's checks run in order) is marked
    completed, reported failed by xdist as before, and only the others run again.

    It also forgets a dead worker's collection (pytest-xdist issue #1362, open in 3.8.0): xdist
    keeps it, so while a replacement worker is still collecting the collection looks complete,
    and scheduling it raised `INTERNALERROR KeyError: <WorkerController gwN>`, which ended a run
    with seven crashed workers here after 5,119 of 10,087 checks. A worker without a registered
    collection gets work once its collection arrives (schedule() runs again then)."""
    from xdist.scheduler import LoadGroupScheduling

    from harness.run.scheduling import OrderedUnits

    class CrashSafeLoadGroupScheduling(OrderedUnits, LoadGroupScheduling):   # units, longest first
        def _reschedule(self, node: Any) -> None:
            if node in self.registered_collections:
                super()._reschedule(node)

        def remove_node(self, node: Any) -> str | None:
            workload = self.assigned_work.pop(node)
            if not self._pending_of(workload):
                return None                                      # shutdown (or idle): as xdist
            self.registered_collections.pop(node, None)          # crashed: its replacement registers
            crashitem = next(nodeid for unit in workload.values() for nodeid, done in unit.items() if not done)
            for unit in workload.values():
                if crashitem in unit:
                    unit[crashitem] = True                      # never run it again
            for scope, unit in workload.items():
                if not all(unit.values()):
                    self.workqueue[scope] = unit                 # the rest of the group runs elsewhere
            for other in self.assigned_work:
                self._reschedule(other)
            return crashitem

    return CrashSafeLoadGroupScheduling(config, log)


# --- the suite's memory ceiling ------------------------------------------------------------
class MemoryCeilingExceeded(Exception):
    """The process's resident memory passed the suite's ceiling while a check was running."""


class MemoryWatch:
    """Fail the running check when this process's RSS passes `ceiling_mib`.

    A daemon thread samples VmRSS every `interval_s`; while a check runs (`running()`), going
    over the ceiling raises MemoryCeilingExceeded in the main thread (asynchronously, at its
    next bytecode boundary), once per check. The check fails with that message and the run
    goes on; between checks nothing is raised. Linux only (reads /proc)."""

    def __init__(self, ceiling_mib: int, interval_s: float = 0.25):
        self.ceiling_mib, self.interval_s = ceiling_mib, interval_s
        self.main = threading.main_thread().ident
        self.current: str | None = None
        self.fired_for: str | None = None
        self.peak_mib = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="harness-memory-watch", daemon=True)

    def start(self) -> "MemoryWatch":
        if os.path.exists("/proc/self/status"):
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def running(self, nodeid: str | None) -> None:
        from harness.backends.sandbox import clear_async_exc
        with self._lock:
            self.current = nodeid
            if nodeid is None and self.fired_for is not None:
                clear_async_exc(self.main, None)   # never deliver it outside the check it was for

    def _run(self) -> None:
        from harness.backends.sandbox import set_async_exc
        while not self._stop.wait(self.interval_s):
            cur, peak = rss_mib()
            self.peak_mib = max(self.peak_mib, peak)
            if cur <= self.ceiling_mib:
                continue
            with self._lock:
                if self.current is not None and self.fired_for != self.current:
                    self.fired_for = self.current
                    MemoryCeilingExceeded.last = (f"memory ceiling exceeded: resident memory {cur} MiB > "
                                                  f"--memory-ceiling {self.ceiling_mib} MiB while running "
                                                  f"{self.current}")
                    set_async_exc(self.main, _CeilingHit)


class _CeilingHit(MemoryCeilingExceeded):
    def __init__(self, *args: Any):
        super().__init__(getattr(MemoryCeilingExceeded, "last", "memory ceiling exceeded"))


__all__ = ["Outcome", "run_isolated", "check_gguf", "ModelFileError", "probe_backend", "RISKY_LOADS",
           "MemoryWatch", "MemoryCeilingExceeded", "crash_safe_loadgroup_scheduler"]
