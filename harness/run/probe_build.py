"""Build the harness's native chat probe (harness/native/chat_probe.cpp) next to llama-server.

The probe links llama.cpp's `common` and `llama`, so it is built in the same build dir as a
BuiltServer from harness.run.server_build (same tree, same options, same configure), as one more
target: the build dir is re-configured with -DCMAKE_PROJECT_INCLUDE=harness/native/chat_probe.cmake
(nothing is written into the source tree; every other cache entry stays as llama-server's build
left it, so llama-server itself is not rebuilt) and `harness-chat-probe` is built. The result is
kept under the server's cache key, in a folder named after the probe sources' hash, so a changed
probe rebuilds and an unchanged one is reused. Failures raise ServerBuildError (the same skip
mechanism as llama-server's).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock

from harness.atomic import write_atomic
from harness.run import ccache
from harness.run.server_build import BuiltServer, ServerBuildError, may_build, run_build_steps

NATIVE_DIR = Path(__file__).resolve().parent.parent / "native"
PROBE_SOURCES = ("chat_probe.cpp", "chat_probe.cmake")
TARGET = "harness-chat-probe"


@dataclass(frozen=True)
class BuiltProbe:
    binary: Path
    lib_dir: Path
    server_key: str
    source_hash: str
    build_seconds: float | None = None
    cached: bool = False


def probe_source_hash() -> str:
    h = hashlib.sha256()
    for name in PROBE_SOURCES:
        h.update(name.encode() + b"\0" + (NATIVE_DIR / name).read_bytes() + b"\0")
    return h.hexdigest()[:16]


_MEMO: dict[tuple[str, str], BuiltProbe] = {}


def build_chat_probe(server: BuiltServer, *, log: Callable[[str], None] = print,
                     jobs: int = 2, build: bool | None = None) -> BuiltProbe:
    """The chat probe built from `server`'s tree and build dir (built at most once per key).

    build=False (the default once the controller has prebuilt: $HARNESS_SERVER_PREBUILT) only
    looks the probe up: a missing one is a ServerBuildError, never a build inside a check."""
    build = may_build(build)
    sh = probe_source_hash()
    memo_key = (str(server.build_dir), sh)
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    kdir = server.build_dir.parent / f"chat-probe-{sh}"
    binary = kdir / "chat_probe"
    done = kdir / "built.json"
    if not build and not (done.exists() and binary.exists()):
        raise ServerBuildError(
            f"chat probe for llama-server {server.key} was not built before the checks started, "
            f"and no build runs inside a check; the controller's prebuild did not produce it "
            f"(see its chat probe line at the start of the run)")
    kdir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(kdir / "build.lock")):
        if done.exists() and binary.exists():
            d = json.loads(done.read_text())
            built = BuiltProbe(binary, server.lib_dir, server.key, sh, d.get("build_seconds"), True)
        else:
            built = _build(server, sh, kdir, binary, log, jobs)
    _MEMO[memo_key] = built
    return built


def _build(server: BuiltServer, sh: str, kdir: Path, binary: Path, log: Callable[[str], None],
           jobs: int) -> BuiltProbe:
    if server.source_tree is None or not (server.build_dir / "CMakeCache.txt").exists():
        raise ServerBuildError(f"chat probe: llama-server at {server.binary} has no build dir with "
                               f"a CMake cache to add the probe to (a prebuilt binary?)")
    if not server.source_tree.is_dir():
        # CMake ties a build dir to the source dir it was configured from; the same tree at
        # another path (same hash, same key) cannot re-configure it
        raise ServerBuildError(f"chat probe: llama-server {server.key} was configured from "
                               f"{server.source_tree}, which is gone (moved?); the probe is added to "
                               f"that build dir, so it needs the tree back there, or a fresh build "
                               f"(remove {server.build_dir.parent})")
    log_path = kdir / "build.log"
    configure = ["cmake", "-S", str(server.source_tree), "-B", str(server.build_dir),
                 f"-DCMAKE_PROJECT_INCLUDE={NATIVE_DIR / 'chat_probe.cmake'}"]
    compile_ = ["cmake", "--build", str(server.build_dir), "--target", TARGET, "-j", str(jobs)]
    launcher = ccache.find_ccache()
    env = ccache.ccache_env(server.build_dir.parents[2]) if launcher else None
    log(f"chat probe: building {TARGET} in {server.build_dir}; log {log_path}")
    # the re-configure reads the source tree again: it is held to the same no-writes rule
    seconds = run_build_steps("chat probe", TARGET, [configure, compile_], log_path,
                              tree=server.source_tree, env=env)
    out_bin = server.build_dir / "bin" / TARGET
    if not out_bin.exists():
        raise ServerBuildError(f"chat probe build finished but {out_bin} is missing; log {log_path}",
                               log_path)
    shutil.copy2(out_bin, binary)
    write_atomic(kdir / "built.json", json.dumps({"binary": str(binary), "source_hash": sh,
                                                  "build_seconds": seconds}, indent=1))
    log(f"chat probe: built in {seconds:.0f}s")
    return BuiltProbe(binary, server.lib_dir, server.key, sh, seconds, False)
