"""What a GGUF says about itself: architecture, tokenizer, special tokens, chat templates.

    meta = read_gguf(path)          # GGUFMeta, or GGUFFormatError naming the file
    meta.architecture, meta.tokenizer_model, meta.tokenizer_pre, meta.n_vocab
    meta.special["eos"]             # SpecialToken(id, text), for bos/eos/eot/eom/pad/unk
    meta.chat_template              # None when the GGUF has none
    meta.has_weights                # False for a vocab-only GGUF (no tensors)
    meta.tensor_shape("token_embd.weight")

The layout, value types and key names come from the `gguf` package (gguf.constants).
The reading itself is a small streaming parser over a memory map instead of
`gguf.GGUFReader`: the reader builds a numpy view for every string of every array, which
takes 5-15 s for a 150k-260k token vocabulary (and as long again for its merges), while
this parser skips arrays it does not need and reads the few token texts it wants.
`read_gguf(path, reader="gguf")` uses GGUFReader instead (slow; for cross-checks).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GGUFFormatError", "GGUFMeta", "SpecialToken", "read_gguf"]

# the special tokens a case reviewer wants to see, as (name, key suffix)
SPECIAL_ROLES = (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("eot", "eot_token_id"),
                 ("eom", "eom_token_id"), ("pad", "padding_token_id"), ("unk", "unknown_token_id"))


class GGUFFormatError(ValueError):
    """The file is not a GGUF this harness can read (wrong magic, truncated, unknown type)."""


@dataclass(frozen=True)
class SpecialToken:
    id: int
    text: str | None          # None when the id is outside the token list

    def __str__(self) -> str:
        return f"{self.id} {self.text!r}" if self.text is not None else f"{self.id} (not in the vocab!)"


@dataclass(frozen=True)
class GGUFMeta:
    path: Path
    version: int
    size: int
    tensor_count: int
    fields: dict[str, Any]                       # every key; arrays summarised (see `arrays`)
    arrays: dict[str, tuple[str, int]]           # array key -> (element type name, length)
    tensors: tuple[tuple[str, tuple[int, ...]], ...] = ()
    special: dict[str, SpecialToken] = field(default_factory=dict)

    # --- the facts a case needs -------------------------------------------------------
    @property
    def architecture(self) -> str | None:
        return self.fields.get("general.architecture")

    @property
    def name(self) -> str | None:
        return self.fields.get("general.name")

    @property
    def tokenizer_model(self) -> str | None:
        return self.fields.get("tokenizer.ggml.model")

    @property
    def tokenizer_pre(self) -> str | None:
        return self.fields.get("tokenizer.ggml.pre")

    @property
    def n_vocab(self) -> int | None:
        """len(tokenizer.ggml.tokens), what llama.cpp reports as n_vocab."""
        arr = self.arrays.get("tokenizer.ggml.tokens")
        return arr[1] if arr else None

    @property
    def add_bos(self) -> bool | None:
        return self.fields.get("tokenizer.ggml.add_bos_token")

    @property
    def add_eos(self) -> bool | None:
        return self.fields.get("tokenizer.ggml.add_eos_token")

    @property
    def chat_template(self) -> str | None:
        return self.fields.get("tokenizer.chat_template")

    @property
    def named_chat_templates(self) -> dict[str, str]:
        """Extra templates (tokenizer.chat_template.<name>, e.g. tool_use, rag)."""
        prefix = "tokenizer.chat_template."
        return {k[len(prefix):]: v for k, v in self.fields.items() if k.startswith(prefix) and isinstance(v, str)}

    @property
    def context_length(self) -> int | None:
        arch = self.architecture
        return self.fields.get(f"{arch}.context_length") if arch else None

    @property
    def has_weights(self) -> bool:
        return self.tensor_count > 0

    @property
    def split_count(self) -> int:
        return int(self.fields.get("split.count") or 1)

    @property
    def file_type(self) -> str | None:
        """general.file_type as a name (e.g. MOSTLY_Q4_1), where the gguf package knows it."""
        value = self.fields.get("general.file_type")
        if value is None:
            return None
        try:
            from gguf.constants import LlamaFileType
            return LlamaFileType(value).name
        except (ImportError, ValueError):
            return str(value)

    def tensor_shape(self, name: str) -> tuple[int, ...] | None:
        """Dims as stored (innermost first: token_embd.weight is [n_embd, n_vocab])."""
        return next((shape for n, shape in self.tensors if n == name), None)


# --- the parser ----------------------------------------------------------------------------
def _constants():
    from gguf.constants import GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUFValueType
    return GGUF_MAGIC, GGUFValueType, GGUF_DEFAULT_ALIGNMENT


_SCALAR_FORMATS = {  # GGUFValueType value -> struct format
    0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d",
}


class _Cursor:
    def __init__(self, buf, path: Path, endian: str):
        self.buf, self.path, self.endian, self.pos = buf, path, endian, 0
        self.what = "the header"

    def _need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise GGUFFormatError(f"{self.path}: truncated GGUF: {len(self.buf)} bytes, but {self.what} needs "
                                  f"{n} bytes at offset {self.pos} (incomplete download?)")

    def scalar(self, fmt: str):
        size = struct.calcsize(fmt)
        self._need(size)
        value = struct.unpack_from(self.endian + fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def string(self) -> str:
        n = self.scalar("Q")
        self._need(n)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.scalar("Q")
        self._need(n)
        self.pos += n


def read_gguf(path: Path | str, *, reader: str = "fast") -> GGUFMeta:
    """Read a GGUF's metadata. Raises GGUFFormatError (naming the file) for anything that is
    not a readable GGUF, FileNotFoundError for a missing file."""
    path = Path(path)
    if reader == "gguf":
        return _read_with_gguf_reader(path)
    magic, types, default_alignment = _constants()
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            raise GGUFFormatError(f"{path}: empty file, not a GGUF")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            head = bytes(buf[:4])
            if len(head) < 4 or struct.unpack("<I", head)[0] != magic:
                raise GGUFFormatError(f"{path}: not a GGUF file (starts with {head!r}, expected b'GGUF')")
            if len(buf) < 24:
                raise GGUFFormatError(f"{path}: truncated GGUF: {len(buf)} bytes, shorter than the 24-byte header")
            version = struct.unpack_from("<I", buf, 4)[0]
            endian = "<"
            if version & 0xFFFF == 0:       # written on a big-endian machine
                endian, version = ">", struct.unpack_from(">I", buf, 4)[0]
            if version not in (2, 3):
                raise GGUFFormatError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
            cur = _Cursor(buf, path, endian)
            cur.pos = 8
            tensor_count, kv_count = cur.scalar("Q"), cur.scalar("Q")
            fields: dict[str, Any] = {}
            arrays: dict[str, tuple[str, int]] = {}
            token_list: tuple[int, int] | None = None        # (offset of first entry, count)
            for i in range(kv_count):
                cur.what = f"metadata entry {i} of {kv_count}"
                key = cur.string()
                cur.what = f"the value of '{key}'"
                vtype = cur.scalar("I")
                if vtype == types.STRING:
                    fields[key] = cur.string()
                elif vtype in _SCALAR_FORMATS:
                    fields[key] = cur.scalar(_SCALAR_FORMATS[vtype])
                elif vtype == types.ARRAY:
                    etype, count = cur.scalar("I"), cur.scalar("Q")
                    try:
                        ename = types(etype).name
                    except ValueError:
                        raise GGUFFormatError(f"{path}: '{key}' is an array of unknown type {etype}") from None
                    arrays[key] = (ename, count)
                    fields[key] = f"<array of {count} {ename}>"
                    if etype == types.STRING:
                        if key == "tokenizer.ggml.tokens":
                            token_list = (cur.pos, count)
                        small = count <= 64 and not key.startswith("tokenizer.ggml.")
                        values = []
                        for _ in range(count):
                            if small:
                                values.append(cur.string())
                            else:
                                cur.skip_string()
                        if small:
                            fields[key] = values
                    elif etype in _SCALAR_FORMATS:
                        width = struct.calcsize(_SCALAR_FORMATS[etype])
                        if count <= 64 and not key.startswith("tokenizer.ggml."):
                            fields[key] = [cur.scalar(_SCALAR_FORMATS[etype]) for _ in range(count)]
                        else:
                            cur._need(width * count)
                            cur.pos += width * count
                    else:
                        raise GGUFFormatError(f"{path}: '{key}' is an array of {ename}, which this reader "
                                              "does not support")
                else:
                    raise GGUFFormatError(f"{path}: '{key}' has unknown value type {vtype} (corrupt file?)")
            tensors = []
            for i in range(tensor_count):
                cur.what = f"tensor info {i} of {tensor_count}"
                name = cur.string()
                n_dims = cur.scalar("I")
                if n_dims > 8:
                    raise GGUFFormatError(f"{path}: tensor '{name}' claims {n_dims} dimensions (corrupt file?)")
                dims = tuple(cur.scalar("Q") for _ in range(n_dims))
                cur.scalar("I")   # ggml type
                cur.scalar("Q")   # data offset
                tensors.append((name, dims))
            if tensor_count:
                alignment = int(fields.get("general.alignment") or default_alignment)
                data_start = -(-cur.pos // alignment) * alignment
                if data_start > len(buf):
                    raise GGUFFormatError(f"{path}: truncated GGUF: the tensor data would start at byte "
                                          f"{data_start}, but the file has {len(buf)} bytes")
            special = _special_tokens(cur, fields, token_list)
    return GGUFMeta(path=path, version=version, size=size, tensor_count=tensor_count, fields=fields,
                    arrays=arrays, tensors=tuple(tensors), special=special)


def _special_tokens(cur: _Cursor, fields: dict, token_list: tuple[int, int] | None) -> dict[str, SpecialToken]:
    ids = {role: fields[f"tokenizer.ggml.{suffix}"] for role, suffix in SPECIAL_ROLES
           if isinstance(fields.get(f"tokenizer.ggml.{suffix}"), int)}
    texts: dict[int, str] = {}
    if token_list and ids:
        wanted = {i for i in ids.values() if 0 <= i < token_list[1]}
        cur.pos, cur.what = token_list[0], "tokenizer.ggml.tokens"
        last = max(wanted, default=-1)
        for i in range(last + 1):
            if i in wanted:
                texts[i] = cur.string()
            else:
                cur.skip_string()
    return {role: SpecialToken(i, texts.get(i)) for role, i in ids.items()}


def _read_with_gguf_reader(path: Path) -> GGUFMeta:
    """The same facts through gguf.GGUFReader (slow on big vocabularies; used to cross-check)."""
    from gguf import GGUFReader, GGUFValueType
    try:
        reader = GGUFReader(str(path), "r")
    except (ValueError, IndexError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise GGUFFormatError(f"{path}: not a readable GGUF ({type(exc).__name__}: {exc})") from None
    fields: dict[str, Any] = {}
    arrays: dict[str, tuple[str, int]] = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if fld.types and fld.types[0] == GGUFValueType.ARRAY:
            ename = fld.types[-1].name
            arrays[key] = (ename, len(fld.data))
            fields[key] = f"<array of {len(fld.data)} {ename}>"
            if len(fld.data) <= 64 and not key.startswith("tokenizer.ggml."):
                fields[key] = list(fld.contents())
        else:
            value = fld.contents()
            fields[key] = value.item() if hasattr(value, "item") else value
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    special = {}
    for role, suffix in SPECIAL_ROLES:
        i = fields.get(f"tokenizer.ggml.{suffix}")
        if isinstance(i, int):
            text = tokens.contents(i) if tokens is not None and 0 <= i < len(tokens.data) else None
            special[role] = SpecialToken(i, text)
    tensors = tuple((t.name, tuple(int(d) for d in t.shape)) for t in reader.tensors)
    version = int(reader.fields["GGUF.version"].contents())
    return GGUFMeta(path=path, version=version, size=path.stat().st_size, tensor_count=len(reader.tensors),
                    fields=fields, arrays=arrays, tensors=tensors, special=special)
