"""The chat probe (chat_probe.cpp): built once per llama.cpp tree as one more target of
llama-server's build dir, run as one long-lived child per worker speaking JSON lines.

A built probe is kept under `<server key>/probe/<sha of chat_probe.cpp>/`, so a changed probe
source rebuilds only the probe (incremental, same configure) and a running probe binary is never
replaced under a worker. A C++ exception comes back as an error reply; an abort or crash ends the
child: the request that caused it raises `ProbeCrashed` with the child's last stderr lines
(llama.cpp's message), and the next request starts a fresh child.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from harness.backends.base import BackendError
from harness.server_build import (NATIVE_DIR, BuiltServer, ServerBuildError, build_extra_target,
                                  builds_closed, describe_exit)

TARGET = "harness-chat-probe"
SOURCE = NATIVE_DIR / "chat_probe.cpp"


@dataclass
class BuiltProbe:
    binary: Path
    lib_dir: Path
    server_key: str
    source_sha256: str
    build_seconds: float | None = None     # the incremental build that produced it
    cached: bool = False

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        old = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = str(self.lib_dir) + (os.pathsep + old if old else "")
        return env


def source_sha256() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def build_chat_probe(built: BuiltServer, *, log: Callable[[str], None] = print) -> BuiltProbe:
    """The probe for llama-server's build `built` (same tree, options, configure)."""
    if not built.key or not (built.build_dir / "CMakeCache.txt").exists():
        raise ServerBuildError(f"the chat probe needs llama-server's build dir from a llama.cpp tree; "
                               f"{built.binary} was not built by the harness (--server-binary): give "
                               f"--llama-cpp-tree instead")
    sha = source_sha256()
    home = built.build_dir.parent / "probe" / sha[:16]
    stamp = home / "probe.json"
    got = _load(stamp)
    if got is not None:
        return got
    reason = builds_closed()
    if reason:
        raise ServerBuildError(f"the chat probe {sha[:12]} for llama-server {built.key} is not built, and "
                               f"builds do not run inside checks ({reason})")
    log_path, seconds = build_extra_target(built, TARGET, log=log)
    home.mkdir(parents=True, exist_ok=True)
    out = built.build_dir / "bin" / TARGET
    if not out.exists():
        raise ServerBuildError(f"{TARGET} build finished but {out} is missing; log {log_path}", log_path)
    tmp = home / f".{TARGET}.{os.getpid()}"
    shutil.copy2(out, tmp)
    os.replace(tmp, home / TARGET)
    probe = BuiltProbe(binary=home / TARGET, lib_dir=built.lib_dir, server_key=built.key,
                       source_sha256=sha, build_seconds=seconds)
    d = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(probe).items()}
    tmp_stamp = home / f".probe.json.{os.getpid()}"
    tmp_stamp.write_text(json.dumps(d, indent=1))
    os.replace(tmp_stamp, stamp)
    return probe


def _load(stamp: Path) -> BuiltProbe | None:
    try:
        d = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    p = BuiltProbe(binary=Path(d["binary"]), lib_dir=Path(d["lib_dir"]), server_key=d["server_key"],
                   source_sha256=d["source_sha256"], build_seconds=d.get("build_seconds"), cached=True)
    return p if p.binary.exists() else None


class ProbeError(BackendError):
    """llama.cpp threw: the reply's message, as llama.cpp worded it."""


class ProbeCrashed(BackendError):
    """The probe process died (abort, segfault) or hung on a request."""


class ProbeProcess:
    """One probe child. `request()` is one JSON line out, one JSON line back."""

    def __init__(self, binary: Path, env: dict[str, str], *, timeout_s: float = 120.0):
        self.binary, self.env, self.timeout_s = Path(binary), env, timeout_s
        self.proc: subprocess.Popen | None = None
        self._err: Any = None
        self.restarts = 0

    def _start(self) -> None:
        self._err = tempfile.TemporaryFile(prefix="chat-probe-", suffix=".log")
        self.proc = subprocess.Popen([str(self.binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, env=self.env, start_new_session=True)

    def _stderr_tail(self, n: int = 20) -> str:
        if self._err is None:
            return ""
        self._err.seek(0)
        lines = self._err.read().decode("utf-8", errors="replace").splitlines()
        return "\n".join(ln for ln in lines[-n:] if ln.strip())

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.restarts += 1
            self.close()
            self._start()
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        line = json.dumps(req, ensure_ascii=False) + "\n"
        try:
            self.proc.stdin.write(line.encode("utf-8"))
            self.proc.stdin.flush()
            reply = self._readline()
        except (BrokenPipeError, ConnectionResetError):
            reply = b""
        if not reply:
            self._died(req)
        try:
            got = json.loads(reply)
        except ValueError:
            self._kill()
            raise ProbeCrashed(f"the chat probe answered '{req.get('op')}' with a line that is not JSON "
                               f"({reply[:120]!r}); stopped; stderr:\n{self._stderr_tail()}") from None
        if not got.get("ok"):
            raise ProbeError(got.get("error", "(no message)"))
        return got

    def _readline(self) -> bytes:
        assert self.proc is not None and self.proc.stdout
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                raise ProbeCrashed(f"the chat probe did not answer within {self.timeout_s:.0f}s (killed); "
                                   f"stderr:\n{self._stderr_tail()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                return self.proc.stdout.readline()

    def _died(self, req: dict[str, Any]) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._kill()
        tail = self._stderr_tail()
        raise ProbeCrashed(f"the chat probe died on '{req.get('op')}' ({describe_exit(self.proc.returncode)}); "
                           f"llama.cpp said:\n{tail or '(nothing on stderr)'}")

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None and self.proc.stdin:
                try:
                    self.proc.stdin.close()          # EOF: the probe's loop ends
                    self.proc.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    self._kill()
            self._kill()
            for f in (self.proc.stdout, self.proc.stdin):
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass
            self.proc = None
        if self._err is not None:
            self._err.close()
            self._err = None
