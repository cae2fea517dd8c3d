"""The one CPU target both llama.cpp builds of the reference stack compile for.

llama.cpp's default (GGML_NATIVE=ON) compiles for whatever CPU the build runs on. That makes the
stack under test a property of the machine: the same pins give different binaries, different
kernels (and so different floating-point results) on different hosts, and on a virtual machine
whose CPU advertises more than the hypervisor lets a process use, a binary that dies. Seen here
(2026-12-02, an Intel Xeon VM under Firecracker advertising AMX): the native build's AMX matmul
path trapped on its first `tilezero` (SIGILL in llama-server, SIGSEGV in llama-cpp-python),
failing every generation check of the run.

So the reference stack pins the target: x86-64-v3 (AVX, AVX2, FMA, F16C, BMI2; no AVX-512, no
AMX) on x86_64, the architecture's baseline elsewhere. llama-cpp-python's wheel (`make setup`,
via `python -m harness.cpu_target install`) and llama-server (`harness.server_build`) both use
`ggml_options()`, so both backends run the same kernels on every machine.

Standard library only: `make setup` runs it before the harness's dependencies are installed.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET_VERSION = "1"     # bump when the options below change: the wheel cache key includes it

_X86_64_V3 = {
    "GGML_NATIVE": "OFF",
    "GGML_AVX": "ON", "GGML_AVX2": "ON", "GGML_FMA": "ON", "GGML_F16C": "ON", "GGML_BMI2": "ON",
    "GGML_AVX512": "OFF", "GGML_AVX_VNNI": "OFF",
    "GGML_AMX_TILE": "OFF", "GGML_AMX_INT8": "OFF", "GGML_AMX_BF16": "OFF",
}


def ggml_options(machine: str | None = None) -> dict[str, str]:
    """CMake options that fix the CPU target of a llama.cpp build on this architecture."""
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64"):
        return dict(_X86_64_V3)
    return {"GGML_NATIVE": "OFF"}


def cmake_args(machine: str | None = None) -> str:
    return " ".join(f"-D{k}={v}" for k, v in sorted(ggml_options(machine).items()))


def pinned_version(lock: Path, package: str = "llama_cpp_python") -> str:
    want = re.sub(r"[-_.]+", "_", package).lower()
    for line in lock.read_text().splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep and re.sub(r"[-_.]+", "_", name).lower() == want:
            return version.strip()
    raise SystemExit(f"{lock}: no pin for {package}")


def _cache_root() -> Path:
    return Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "llm-harness")


def _user_cmake_args() -> list[str]:
    """CMAKE_ARGS from the environment, which go after the target's own (so a user's option
    wins). A compiler launcher (ccache) changes how, not what, is compiled: not part of the key."""
    return os.environ.get("CMAKE_ARGS", "").split()


def _key_args() -> list[str]:
    return [a for a in _user_cmake_args() if "_COMPILER_LAUNCHER=" not in a]


def wheel_dir(version: str) -> Path:
    ident = {"package": "llama-cpp-python", "version": version, "target": TARGET_VERSION,
             "cmake_args": cmake_args(), "machine": platform.machine(),
             "python": f"{sys.version_info.major}.{sys.version_info.minor}",
             "cc": os.environ.get("CC", ""), "cxx": os.environ.get("CXX", "")}
    if _key_args():
        ident["user_cmake_args"] = _key_args()
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return _cache_root() / "wheels" / f"llama-cpp-python-{version}-{key}"


def install(lock: Path) -> Path:
    """Build (once per machine and key) and install llama-cpp-python for the pinned target.

    pip's own wheel cache is keyed by the sdist alone, not by CMAKE_ARGS, so it could hand back
    a wheel compiled for another target; the harness keeps its own, keyed by the options.
    """
    version = pinned_version(lock)
    out = wheel_dir(version)
    wheels = sorted(out.glob("*.whl")) if out.is_dir() else []
    if not wheels:
        print(f"llama-cpp-python {version}: compiling for the pinned CPU target ({cmake_args()}); "
              f"about 8-10 minutes once, kept in {out}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            env = pip_env()
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "--no-cache-dir", "--no-binary", "llama-cpp-python", "-w", tmp,
                            f"llama-cpp-python=={version}"], check=True, env=env)
            built = sorted(Path(tmp).glob("*.whl"))
            if len(built) != 1:
                raise SystemExit(f"pip wheel produced {built!r}, expected one wheel")
            staging = Path(tmp) / "done"
            staging.mkdir()
            shutil.move(str(built[0]), staging / built[0].name)
            os.replace(staging, out)            # atomic: a half-built wheel is never used
        wheels = sorted(out.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--force-reinstall", str(wheels[0])], check=True)
    return wheels[0]


def pip_env() -> dict[str, str]:
    """The environment for a pip that may compile llama-cpp-python from source: the target's
    options first, the user's CMAKE_ARGS after them (so a user's option wins)."""
    return {**os.environ, "CMAKE_ARGS": " ".join([cmake_args(), *_user_cmake_args()])}


def pip(args: list[str]) -> int:
    """`python -m pip ARGS` with the pinned target's CMAKE_ARGS, for the installs outside
    `make setup` that compile llama-cpp-python (tox's llama-latest, `make lock`'s scratch venv).
    Callers pass --no-cache-dir or --no-binary: pip's wheel cache ignores CMAKE_ARGS."""
    return subprocess.run([sys.executable, "-m", "pip", *args], env=pip_env()).returncode


def main(argv: list[str]) -> int:
    if argv[:1] == ["pip"] and len(argv) > 1:
        return pip(argv[1:])
    if argv[:1] == ["cmake-args"]:
        print(cmake_args())
        return 0
    if argv[:1] == ["install"] and len(argv) == 2:
        print(f"installed {install(Path(argv[1])).name}")
        return 0
    print("usage: python -m harness.cpu_target cmake-args | install CONSTRAINTS | pip PIP_ARGS...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
