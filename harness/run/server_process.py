"""A running llama-server: start on a free port, wait until healthy, stop; every child the harness
started is stopped on exit, on SIGINT/SIGTERM and when the parent dies, and its peak memory is
recorded."""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
import requests

from harness.backends.base import BackendError


LOG_TAIL_LINES = 40


# --- running it ------------------------------------------------------------------
# Every live child is tracked here so atexit and SIGTERM/SIGINT can stop them all.
_LIVE: set["ServerProcess"] = set()


def forget_children() -> None:
    """In a forked child: the parent's llama-server processes are not this process's to stop."""
    _LIVE.clear()


_PREV_HANDLERS: dict[int, Any] = {}


_atexit_installed = False


_LIBC = None


def describe_exit(rc: int | None) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"exit code {rc}, killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"exit code {rc}"
    return f"exit code {rc}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free now. Another process (an xdist worker) can take it
    before the server binds it; ServerProcess.start() retries on a bind failure."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_all_servers() -> None:
    for proc in list(_LIVE):
        proc.stop()


_SESSION_FINISHED = False


def session_finished() -> None:
    """Called by the plugin when this process's pytest session has finished (its results sent)."""
    global _SESSION_FINISHED
    _SESSION_FINISHED = True


def _on_signal(signum: int, frame: Any) -> None:
    stop_all_servers()
    if signum == signal.SIGINT and _SESSION_FINISHED and os.environ.get("PYTEST_XDIST_WORKER"):
        # Expected, not an interrupt: execnet (xdist's transport) sends a worker SIGINT itself
        # when the worker is still executing 5 s after the controller asked it to exit
        # (gateway_base WorkerGateway._terminate_execution; it os._exit()s 10 s later). The
        # session is over and its results are with the controller: the servers are stopped,
        # and the teardown may finish. Raising KeyboardInterrupt here printed a traceback from
        # wherever the teardown was (a gc callback).
        return
    prev = _PREV_HANDLERS.get(signum)
    if callable(prev):
        prev(signum, frame)                      # e.g. KeyboardInterrupt for SIGINT
    elif prev != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)    # die the way we would have died
        os.kill(os.getpid(), signum)


def install_cleanup() -> None:
    """Stop every live llama-server at exit and on SIGTERM/SIGINT (idempotent)."""
    global _atexit_installed, _LIBC
    if not _atexit_installed:
        atexit.register(stop_all_servers)
        _atexit_installed = True
    if threading.current_thread() is not threading.main_thread():
        return                                   # signal.signal only works in the main thread
    for sig in (signal.SIGTERM, signal.SIGINT):
        cur = signal.getsignal(sig)
        if cur is not _on_signal:
            _PREV_HANDLERS[sig] = cur
            signal.signal(sig, _on_signal)
    if _LIBC is None and sys.platform.startswith("linux"):
        _LIBC = ctypes.CDLL(None, use_errno=True)   # loaded before fork, used after


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the harness is SIGKILLed (no atexit,
    # no handler), the kernel still kills the server. Only armed from the main thread,
    # because PR_SET_PDEATHSIG fires when the forking *thread* exits.
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)           # PR_SET_PDEATHSIG


# Peak resident memory (MiB) of every llama-server this process stopped, read from /proc just
# before stopping it: the run's memory report (results.json "memory") includes the servers.
SERVER_PEAKS_MIB: list[int] = []


class ServerProcess:
    """One llama-server child: own process group, log file, readiness via /health."""

    def __init__(self, binary: Path, args: list[str], *, env: dict[str, str],
                 start_timeout_s: float = 120.0, host: str = "127.0.0.1",
                 health_path: str = "/health", bind_error: str = "couldn't bind"):
        self.binary, self.args, self.host = Path(binary), list(args), host
        # another server (llama-cpp-python's) has no /health and words a port clash differently
        self.health_path, self.bind_error = health_path, bind_error
        self.start_timeout_s = start_timeout_s
        # LLAMA_ARG_* variables silently override CLI defaults of llama.cpp tools.
        self.stripped_env = sorted(k for k in env if k.startswith("LLAMA_ARG_"))
        self.env = {k: v for k, v in env.items() if k not in self.stripped_env}
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self._log: Any = None                    # unlinked temp file: nothing to leak

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def alive(self, wait_s: float = 0.0) -> bool:
        if self.proc is None:
            return False
        if wait_s:
            try:                                 # a dropped connection may precede the exit a little
                self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                pass
        return self.proc.poll() is None

    def log_tail(self, n: int = LOG_TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
        if self._log is None:
            return "(no log)"
        fd = self._log.fileno()
        size = os.fstat(fd).st_size
        data = os.pread(fd, max_bytes, max(0, size - max_bytes))
        return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-n:])

    def start(self) -> None:
        install_cleanup()
        for _attempt in range(4):
            self.port = free_port(self.host)
            self._spawn()
            if self._wait_ready():
                return
        raise BackendError(f"llama-server could not bind a free port after 4 attempts; "
                           f"last lines:\n{self.log_tail()}")

    def _spawn(self) -> None:
        # The server's output goes to an already-unlinked file: readable through our fd
        # for error messages, and gone with the last fd even if we are SIGKILLed.
        self._log = tempfile.TemporaryFile(prefix="llama-server-", suffix=".log")
        cmd = [str(self.binary), *self.args, "--host", self.host, "--port", str(self.port)]
        main = threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True,   # own group: killpg reaches all
                                     preexec_fn=_die_with_parent if main else None)
        _LIVE.add(self)

    def _wait_ready(self) -> bool:
        """True when /health says ok; False on a port clash (caller retries)."""
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        delay = 0.05
        with requests.Session() as s:
            s.trust_env = False
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    tail = self.log_tail()
                    self._forget()
                    if self.bind_error in tail:
                        return False
                    raise BackendError(f"llama-server exited ({describe_exit(self.proc.returncode)}) "
                                       f"before it was ready; last lines of its log:\n{tail}")
                try:
                    if s.get(self.url + self.health_path, timeout=2).status_code == 200:
                        return True
                except requests.RequestException:
                    pass                         # not listening yet
                time.sleep(delay)
                delay = min(delay * 1.5, 0.5)
        tail = self.log_tail()
        self.stop()
        raise BackendError(f"llama-server not ready after {self.start_timeout_s:.0f}s "
                           f"(503 while loading); last lines:\n{tail}")

    def stop(self, timeout_s: float = 10.0) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            from harness.run.memory import rss_mib
            if (peak := rss_mib(proc.pid)[1]):
                SERVER_PEAKS_MIB.append(peak)
            for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._forget()

    def _forget(self) -> None:
        _LIVE.discard(self)
        if self._log is not None:
            self._log.close()
            self._log = None
