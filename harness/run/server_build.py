"""Build llama.cpp's `llama-server` from a source tree, once, cache it, and run it.

The cache key is a content hash of the parts of the tree that go into the binary plus
the CMake options, so a changed tree or changed options rebuild, and everything else
reuses. A file lock makes concurrent callers (pytest-xdist workers) wait for one build
instead of racing. A failed build leaves a marker so the same failure is reported at
once for the rest of that run instead of recompiling for every worker and test.

`ServerProcess` runs the binary as a child in its own process group and makes sure it
is stopped at exit, on SIGTERM/SIGINT and (Linux) when the harness itself is killed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from harness.backends.base import BackendError
from harness.run import ccache
from harness.run.build_progress import BuildProgress, run_logged
from harness.atomic import write_atomic
from harness.cpu_target import ggml_options
from .server_process import (
    LOG_TAIL_LINES, SERVER_PEAKS_MIB, ServerProcess, describe_exit, install_cleanup,
    session_finished
)

# Options every build gets; user options override entries in this table.
DEFAULT_CMAKE_OPTIONS: dict[str, str] = {
    "CMAKE_BUILD_TYPE": "Release",
    "LLAMA_BUILD_SERVER": "ON",
    "LLAMA_BUILD_TOOLS": "ON",          # tools/ holds the server; OFF would drop it
    "LLAMA_BUILD_TESTS": "OFF",
    "LLAMA_BUILD_EXAMPLES": "OFF",
    "LLAMA_BUILD_APP": "OFF",           # the unified `llama` binary is not needed
    "LLAMA_CURL": "OFF",                # no model downloads from the server
    # No web UI (the harness runs llama-server with --no-webui), and nothing fetched or written
    # into the tree for it. Both options are spelled out because their defaults differ between
    # trees: LLAMA_BUILD_UI is OFF in llama-cpp-python 0.3.36's tree but ON in 0.3.30's, where
    # ON runs `npm install` and `npm run build` inside tools/ui (668 MB of node_modules, and
    # generated files under a hashed path, so the tree's hash and the build's key changed).
    "LLAMA_BUILD_UI": "OFF",
    "LLAMA_USE_PREBUILT_UI": "OFF",     # else the UI is downloaded from a Hugging Face bucket
    # the reference stack's CPU target, the same as llama-cpp-python's wheel (harness.cpu_target)
    **ggml_options(),
}

# What goes into the binary. Docs, models, tests and conversion scripts do not.
HASHED_PATHS = (
    "CMakeLists.txt", "cmake", "src", "ggml", "common", "include", "vendor",
    "tools/CMakeLists.txt", "tools/server", "tools/mtmd", "tools/ui", "tools/cli/CMakeLists.txt",
    "scripts/ui-assets.cmake",
)
_SKIP_DIRS = {"__pycache__", ".git", "node_modules", "build"}

BINARY_NAME = "llama-server"

# Set by the controller once its prebuild has run (harness/run/session_end.py): from then on a
# process that finds no finished build reports that instead of building inside a check.
PREBUILT_ENV = "HARNESS_SERVER_PREBUILT"


class ServerBuildError(BackendError):
    """llama-server could not be built (the build failed, or could not run). The message carries
    the tail of the build log; `headline` is its first line, `log_path` and `tail` the log's
    path and last lines (None / "" when no build ran). A suite run skips the server's checks with
    the headline and reports the tail once (harness/suite/__init__.py, harness/plugin.py)."""

    def __init__(self, message: str, log_path: str | Path | None = None, tail: str = ""):
        super().__init__(message)
        self.log_path = str(log_path) if log_path is not None else None
        self.tail = tail

    def __reduce__(self):                        # picklable with its attributes (xdist, forks)
        return type(self), (str(self), self.log_path, self.tail)

    @property
    def headline(self) -> str:
        return str(self).split("\n", 1)[0].removesuffix("; last lines:").rstrip(":")


@dataclass
class BuiltServer:
    binary: Path
    lib_dir: Path                      # put on LD_LIBRARY_PATH (shared libggml/libllama)
    tree_hash: str
    options: dict[str, str]
    build_dir: Path
    version: str = ""                  # `llama-server --version` output
    key: str = ""                      # cache key (tree hash + options)
    build_seconds: float | None = None # wall time of the build that produced it
    cached: bool = False               # True when this call reused an earlier build
    source_tree: Path | None = None

    def env(self) -> dict[str, str]:
        """Environment to run the binary with (its shared libraries first on the path)."""
        return _env_with_libs(self.lib_dir)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("binary", "lib_dir", "build_dir", "source_tree"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d


def default_cache_root() -> Path:
    env = os.environ.get("HARNESS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llm-harness"


# --- tree hashing ---------------------------------------------------------------
def _tree_files(tree: Path) -> list[Path]:
    files: list[Path] = []
    for rel in HASHED_PATHS:
        p = tree / rel
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
                files.extend(Path(root) / n for n in sorted(names) if not n.endswith(".pyc"))
    return files


def tree_hash(source_tree: Path, *, memo_file: Path | None = None) -> str:
    """sha256 over relative paths and contents of the files that go into the build.

    Hashing ~40 MB takes a fraction of a second, but a stat fingerprint (path, size,
    mtime) is cheaper still, so the content hash is memoised per tree path + fingerprint.
    """
    tree = Path(source_tree).resolve()
    files = _tree_files(tree)
    if not files:
        raise ServerBuildError(f"{tree} does not look like a llama.cpp source tree "
                               f"(none of {', '.join(HASHED_PATHS[:4])} ...)")
    fp = hashlib.sha256()
    for f in files:
        st = f.stat()
        fp.update(f"{f.relative_to(tree)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    fingerprint = fp.hexdigest()
    memo: dict = {}
    if memo_file is not None and memo_file.exists():
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, ValueError):
            memo = {}
        hit = memo.get(str(tree))
        if hit and hit.get("fingerprint") == fingerprint:
            return hit["hash"]
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(tree)).encode() + b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    digest = h.hexdigest()
    if memo_file is not None:
        memo[str(tree)] = {"fingerprint": fingerprint, "hash": digest}
        write_atomic(memo_file, json.dumps(memo, indent=1))
    return digest


def tree_listing(source_tree: Path) -> dict[str, tuple[int, int]]:
    """Every file under the tree (untracked and unhashed ones too) with its size and mtime: what a
    build must leave exactly as it found it."""
    tree = Path(source_tree).resolve()
    listing: dict[str, tuple[int, int]] = {}
    for root, dirs, names in os.walk(tree):
        dirs.sort()
        for n in names:
            f = Path(root) / n
            try:
                st = f.lstat()
            except OSError:
                continue
            listing[str(f.relative_to(tree))] = (st.st_size, st.st_mtime_ns)
    return listing


def listing_changes(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    """'added/removed/changed <path>' for each difference, sorted."""
    out = [f"added {k}" for k in after.keys() - before.keys()]
    out += [f"removed {k}" for k in before.keys() - after.keys()]
    out += [f"changed {k}" for k in before.keys() & after.keys() if before[k] != after[k]]
    return sorted(out, key=lambda x: x.split(" ", 1)[1])


def _cpu_flags() -> str:
    # GGML_NATIVE (on by default) builds for this CPU; a cache shared with a machine
    # lacking e.g. AVX-512 must not hand it this binary (SIGILL).
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        flags = platform.processor()
    return hashlib.sha256(flags.encode()).hexdigest()[:16]


def _cache_key(tree: str, options: dict[str, str]) -> str:
    # The machine and compiler choice change the binary as much as the options do.
    ident = {"tree": tree, "options": options, "machine": platform.machine(),
             "cc": os.environ.get("CC", ""), "cxx": os.environ.get("CXX", "")}
    if options.get("GGML_NATIVE", "ON").upper() not in ("OFF", "0", "FALSE", "NO"):
        ident["cpu"] = _cpu_flags()
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def _run_id() -> str:
    """Identifies "this run": all xdist workers of one pytest session share it."""
    return (os.environ.get("HARNESS_RUN_ID") or os.environ.get("PYTEST_XDIST_TESTRUNUID")
            or f"pid-{os.getpid()}")


def _tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no build log)"
    return "\n".join(lines[-n:])


def _env_with_libs(lib_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    old = env.get("LD_LIBRARY_PATH")
    env["LD_LIBRARY_PATH"] = str(lib_dir) + (os.pathsep + old if old else "")
    return env


def server_version(binary: Path, lib_dir: Path) -> str:
    try:
        p = subprocess.run([str(binary), "--version"], env=_env_with_libs(lib_dir),
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"(--version failed: {e})"
    # llama.cpp prints the version on stderr; keep only the version lines.
    out = (p.stdout + p.stderr).strip().splitlines()
    keep = [ln for ln in out if ln.startswith(("version:", "built with"))]
    return "\n".join(keep or out[-2:])


def _check_tree_untouched(tree: Path, before: dict[str, tuple[int, int]], what: str, log_path: Path) -> None:
    """A build that wrote into its source tree is a failed build: its key no longer names the
    tree it was built from, and the tree is not the one the user gave."""
    changes = listing_changes(before, tree_listing(tree))
    if not changes:
        return
    shown = "\n".join(changes[:20]) + (f"\n... and {len(changes) - 20} more" if len(changes) > 20 else "")
    raise BuildStepFailed(
        f"the {what} build wrote into its source tree {tree} ({len(changes)} paths); "
        f"a build must leave the tree untouched (its hash is the build's key):\n{shown}",
        rc="tree-modified", cmd=["cmake", "--build"], log_path=log_path, tail=shown)


class BuildStepFailed(ServerBuildError):
    """One step of run_build_steps failed: its exit status (or "tree-modified") and command."""

    def __init__(self, message: str, *, rc: int | str, cmd: list[str], log_path: Path | None = None,
                 tail: str = ""):
        super().__init__(message, log_path, tail)
        self.rc, self.cmd = rc, cmd

    def __reduce__(self):
        return (_rebuild_step_failed, (str(self), self.rc, self.cmd, self.log_path, self.tail))


def _rebuild_step_failed(message, rc, cmd, log_path, tail):
    return BuildStepFailed(message, rc=rc, cmd=cmd, log_path=log_path, tail=tail)


def run_build_steps(what: str, target: str, steps: list[list[str]], log_path: Path, *,
                    tree: Path | None, env: dict[str, str] | None = None) -> float:
    """Run the cmake `steps` of one build, logged to `log_path` with a progress bar named `target`;
    return the seconds taken. Every build of the harness goes through here, so each one gets the
    same rules: a failing step raises BuildStepFailed with the log's tail, and when `tree` is given
    a build that changed any file of the tree (listed before and after) fails, naming the paths."""
    t0 = time.monotonic()
    listing = tree_listing(tree) if tree is not None else None
    progress = BuildProgress(target, str(log_path))
    try:
        with open(log_path, "w") as out:
            for cmd in steps:
                out.write("$ " + " ".join(cmd) + "\n")
                out.flush()
                rc = run_logged(cmd, out, progress.feed, env=env)
                if rc != 0:
                    tail = _tail(log_path)
                    raise BuildStepFailed(f"{what} build failed (exit {rc}) running {' '.join(cmd[:3])} ...; "
                                          f"log {log_path}; last lines:\n{tail}",
                                          rc=rc, cmd=cmd, log_path=log_path, tail=tail)
    finally:
        progress.close()
    if listing is not None:
        _check_tree_untouched(tree, listing, what, log_path)
    return round(time.monotonic() - t0, 1)


def may_build(build: bool | None) -> bool:
    """A build call's `build` argument: None means "unless the controller has already prebuilt"
    ($HARNESS_SERVER_PREBUILT), after which a missing build is reported, never built in a check."""
    return not os.environ.get(PREBUILT_ENV) if build is None else build


# --- the build --------------------------------------------------------------------
_PROCESS_MEMO: dict[str, BuiltServer] = {}


def build_llama_server(source_tree: Path, *, cmake_options: dict[str, str] | None = None,
                       cache_root: Path | None = None, log: Callable[[str], None] = print,
                       jobs: int | None = None, lock_timeout_s: float = 3 * 3600,
                       build: bool | None = None) -> BuiltServer:
    """Return a built llama-server for `source_tree`, building it at most once per key.

    build=False (the default once the controller has prebuilt: $HARNESS_SERVER_PREBUILT) only
    looks the build up: a missing one is a ServerBuildError, never a build inside a check."""
    build = may_build(build)
    tree = Path(source_tree).resolve()
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    base = root / "llama-server"
    th = tree_hash(tree, memo_file=base / "tree-hashes.json")
    options = {**DEFAULT_CMAKE_OPTIONS, **{k: str(v) for k, v in (cmake_options or {}).items()}}
    # Stamp the tree hash into `--version` (the vendored tree has no git to ask).
    options.setdefault("LLAMA_BUILD_COMMIT", f"tree-{th[:12]}")
    key = _cache_key(th, options)
    memo_key = f"{root.resolve()}::{key}"
    if memo_key in _PROCESS_MEMO:
        return dataclasses.replace(_PROCESS_MEMO[memo_key], cached=True)
    kdir = base / key
    done, failed = kdir / "built.json", kdir / "failed.json"

    built = _load_built(done, cached=True)
    if built is None and not build:
        _raise_if_failed_this_run(failed, keep=True)
        raise ServerBuildError(
            f"llama-server for tree {th[:12]} (key {key}) was not built before the checks started, "
            f"and no build runs inside a check; the controller's prebuild did not produce it "
            f"(did the tree {tree} change during the run?)")
    if built is None:
        kdir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(kdir / "build.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log(f"llama-server: another process is building {key}; waiting for it")
            try:
                lock.acquire(timeout=lock_timeout_s)
            except Timeout:
                raise ServerBuildError(f"timed out after {lock_timeout_s:.0f}s waiting for "
                                       f"the build lock {kdir / 'build.lock'}") from None
        try:
            built = _load_built(done, cached=True)       # built while we waited?
            if built is None:
                _raise_if_failed_this_run(failed)
                built = _build(tree, th, options, key, kdir, log, jobs or _default_jobs())
        finally:
            lock.release()
    _PROCESS_MEMO[memo_key] = built
    return built


def _default_jobs() -> int:
    return int(os.environ.get("HARNESS_BUILD_JOBS", "2"))


def _load_built(done: Path, *, cached: bool) -> BuiltServer | None:
    try:
        d = json.loads(done.read_text())
    except (OSError, ValueError):
        return None
    b = BuiltServer(binary=Path(d["binary"]), lib_dir=Path(d["lib_dir"]), tree_hash=d["tree_hash"],
                    options=d["options"], build_dir=Path(d["build_dir"]), version=d.get("version", ""),
                    key=d.get("key", ""), build_seconds=d.get("build_seconds"), cached=cached,
                    source_tree=Path(d["source_tree"]) if d.get("source_tree") else None)
    return b if b.binary.exists() else None


def _raise_if_failed_this_run(failed: Path, keep: bool = False) -> None:
    try:
        d = json.loads(failed.read_text())
    except (OSError, ValueError):
        return
    if d.get("run_id") == _run_id():
        # the first line as the failed build said it, so every worker reports the same failure
        cmd = d.get("cmd") or []
        raise ServerBuildError(f"llama-server build failed (exit {d.get('rc')}) running {' '.join(cmd[:3])} ...; "
                               f"log {d.get('log')}; last lines:\n{d.get('tail', '')}\n"
                               f"(this build already failed in this run: not retried)",
                               d.get("log"), d.get("tail", ""))
    if not keep:
        failed.unlink(missing_ok=True)     # a new run retries (the failure may have been transient)


def _build(tree: Path, th: str, options: dict[str, str], key: str, kdir: Path,
           log: Callable[[str], None], jobs: int) -> BuiltServer:
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise ServerBuildError(f"'{tool}' not found on PATH; needed to build llama-server")
    build_dir = kdir / "build"
    log_path = kdir / "build.log"
    launcher = ccache.find_ccache()
    configure = ["cmake", "-S", str(tree), "-B", str(build_dir)] + [
        f"-D{k}={v}" for k, v in sorted(options.items())] + ccache.launcher_options(launcher)
    env = ccache.ccache_env(kdir.parents[1]) if launcher else None
    compile_ = ["cmake", "--build", str(build_dir), "--target", BINARY_NAME, "-j", str(jobs)]
    log(f"llama-server: building {key} (tree {th[:12]}) in {build_dir}; log {log_path}")
    try:
        seconds = run_build_steps("llama-server", BINARY_NAME, [configure, compile_], log_path,
                                  tree=tree, env=env)
    except BuildStepFailed as exc:
        write_atomic(kdir / "failed.json", json.dumps(
            {"run_id": _run_id(), "rc": exc.rc, "cmd": exc.cmd, "log": str(log_path),
             "tail": exc.tail, "time": time.time()}, indent=1))
        raise
    binary = build_dir / "bin" / BINARY_NAME
    if not binary.exists():
        raise ServerBuildError(f"build finished but {binary} is missing; log {log_path}", log_path,
                               _tail(log_path))
    lib_dir = build_dir / "bin"
    built = BuiltServer(binary=binary, lib_dir=lib_dir, tree_hash=th, options=options,
                        build_dir=build_dir, version=server_version(binary, lib_dir), key=key,
                        build_seconds=seconds, cached=False, source_tree=tree)
    write_atomic(kdir / "built.json", json.dumps(built.to_dict(), indent=1))
    (kdir / "failed.json").unlink(missing_ok=True)
    log(f"llama-server: built in {seconds:.0f}s: {built.version.splitlines()[0] if built.version else ''}")
    return built


if __name__ == "__main__":   # python -m harness.server_build <llama.cpp tree> [-DKEY=VAL ...]
    import sys
    opts = dict(a[2:].split("=", 1) for a in sys.argv[2:] if a.startswith("-D"))
    b = build_llama_server(Path(sys.argv[1]), cmake_options=opts)
    print(json.dumps(b.to_dict(), indent=1))
