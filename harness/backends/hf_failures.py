"""A GGUF that transformers cannot convert is recorded, so later processes do not try again.

transformers parses the whole GGUF in Python before it finds out that it does not support the
architecture (gemma-4's vocab: ~45 s under load; 8 of the 19 reference vocabs fail), and every
process paid that again. The failure is as deterministic as a success: the same transformers
(and the libraries it converts with) on the same bytes fails the same way. So it is kept next
to the successes (`hf-from-gguf/v2/<transformers version>/<GGUF sha256>.failed.json`) with the
exception's type name and text, and re-raised as `ConversionFailed`, which the HF backend turns
into exactly the message the original exception gives (`conversion_failure`).

A record is used only when the versions of the converting libraries are those it was written
with (`environment()`); errors that depend on the machine rather than on the file (memory, I/O,
a missing optional import) are never recorded.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from harness.lock import installed_version

# the packages whose versions decide what the conversion does (transformers is in the path)
CONVERTERS = ("transformers", "tokenizers", "gguf", "sentencepiece", "protobuf", "numpy")
NOT_RECORDED = (MemoryError, OSError, ImportError)


class ConversionFailed(Exception):
    """A recorded conversion failure: `type_name` and `text` are the original exception's."""

    def __init__(self, type_name: str, text: str):
        super().__init__(text)
        self.type_name, self.text = type_name, text


def environment() -> dict[str, str | None]:
    return {name: installed_version(name) for name in CONVERTERS}


def conversion_failure(exc: BaseException) -> tuple[str, str]:
    """The type name and text a message about this failure shows: the original's, recorded or not."""
    if isinstance(exc, ConversionFailed):
        return exc.type_name, exc.text
    return type(exc).__name__, str(exc)


def failure_path(target: Path) -> Path:
    return target.with_name(target.name.removesuffix(".pkl") + ".failed.json")


def read_failure(target: Path) -> ConversionFailed | None:
    path = failure_path(target)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("environment") != environment():
        return None                     # another stack: convert again, as a user's process does
    return ConversionFailed(record["type"], record["text"])


def write_failure(target: Path, exc: Exception) -> None:
    if isinstance(exc, NOT_RECORDED) or isinstance(exc, ConversionFailed):
        return
    record = {"type": type(exc).__name__, "text": str(exc), "environment": environment()}
    path = failure_path(target)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f, ensure_ascii=False, indent=1)
    os.replace(tmp, path)
