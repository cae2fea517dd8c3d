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
    of killing the pytest worker (harness/run/probe.py).
The rest of the run's process safety: harness/run/gguf_check.py (a corrupt GGUF named before any
load), harness/run/scheduler.py (xdist never re-runs a check a worker crashed on),
harness/run/memory_watch.py (the suite's memory ceiling).

The child: resets SIGINT/SIGTERM to their defaults and forgets the parent's llama-server
children (so it never stops them), dies with the parent (PR_SET_PDEATHSIG), caps its address
space at its current size + memory_mib (RLIMIT_AS), optionally captures its stderr (the tail
goes into the outcome: faulthandler's stack for a crash, llama.cpp's log for a load error),
and always leaves with os._exit (no atexit handlers, no pytest teardown in the child). The
parent kills and reaps it on timeout and on any interruption (Ctrl-C included).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import resource
import select
import signal
import struct
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable


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
        tail = interesting_tail(self.stderr)
        return self.detail + (f"; last lines of its stderr:\n{tail}" if tail and not self.ok else "")


def interesting_tail(text: str, n: int = 12) -> str:
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
        from harness.run import server_process
        server_process.forget_children()
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
