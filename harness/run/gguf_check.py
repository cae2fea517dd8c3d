"""`check_gguf`: a cheap structural check of a GGUF (magic, version, every header length, known
metadata types, tensor data inside the file) that names the cause of a corrupt file."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from harness.errors import SourceError


# --- GGUF: a structural check that names the cause ---------------------------------------
class ModelFileError(SourceError):
    """A model file was found and verified, but it is not a usable GGUF (truncated, wrong
    magic, a metadata value of the wrong type...). The message names the file and the cause."""

    def __init__(self, path: Path, cause: str):
        self.path, self.cause = Path(path), cause
        self.what, self.attempts = str(path), []
        Exception.__init__(self, f"{Path(path).name}: {cause} ({path})")


GGUF_MAGIC = b"GGUF"


# gguf value types (ggml/include/gguf.h)
_U8, _I8, _U16, _I16, _U32, _I32, _F32, _BOOL, _STR, _ARR, _U64, _I64, _F64 = range(13)


_TYPE_NAMES = ["UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL", "STRING", "ARRAY",
               "UINT64", "INT64", "FLOAT64"]


_SCALAR_SIZE = {_U8: 1, _I8: 1, _U16: 2, _I16: 2, _U32: 4, _I32: 4, _F32: 4, _BOOL: 1, _U64: 8, _I64: 8, _F64: 8}


# Keys llama.cpp reads with a fixed type (it refuses the file otherwise, often with a less clear message).
_KEY_TYPES: dict[str, tuple[int, int | None]] = {
    "general.architecture": (_STR, None),
    "general.alignment": (_U32, None),
    "tokenizer.ggml.model": (_STR, None),
    "tokenizer.ggml.pre": (_STR, None),
    "tokenizer.ggml.tokens": (_ARR, _STR),
    "tokenizer.ggml.scores": (_ARR, _F32),
    "tokenizer.ggml.token_type": (_ARR, _I32),
    "tokenizer.ggml.merges": (_ARR, _STR),
    "tokenizer.chat_template": (_STR, None),
    **{f"tokenizer.ggml.{k}_token_id": (_U32, None) for k in (
        "bos", "eos", "unknown", "seperator", "padding", "cls", "mask", "eot", "eom",
        "fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep", "prefix", "suffix", "middle")},
    **{f"tokenizer.ggml.add_{k}_token": (_BOOL, None) for k in ("bos", "eos", "sep", "space_prefix")},
}


MAX_TENSORS = 1 << 20


MAX_KV = 1 << 20


MAX_STRING = 1 << 30


class _Reader:
    """Bounds-checked little-endian reads over an mmap of the file."""

    def __init__(self, buf: Any, size: int):
        self.buf, self.size, self.pos = buf, size, 0

    def tell(self) -> int:
        return self.pos

    def read(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated(what, self.pos, n)
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def _uint(self, fmt: str, n: int, what: str) -> int:
        if self.pos + n > self.size:
            raise _Truncated(what, self.pos, n)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v

    def u32(self, what: str) -> int:
        return self._uint("<I", 4, what)

    def u64(self, what: str) -> int:
        return self._uint("<Q", 8, what)

    def string(self, what: str) -> bytes:
        n = self.u64(f"{what} length")
        if n > MAX_STRING:
            raise _Bad(f"{what}: string length {n} is implausible")
        return self.read(n, what)

    def skip_strings(self, count: int, what: str) -> None:
        buf, pos, size, unpack = self.buf, self.pos, self.size, struct.unpack_from
        for j in range(count):
            if pos + 8 > size:
                self.pos = pos
                raise _Truncated(f"{what}[{j}] length", pos, 8)
            (n,) = unpack("<Q", buf, pos)
            pos += 8 + n
            if pos > size:
                self.pos = pos - n
                raise _Truncated(f"{what}[{j}]", pos - n, n)
        self.pos = pos

    def skip(self, n: int, what: str) -> None:
        if self.pos + n > self.size:
            raise _Truncated(what, self.pos, n)
        self.pos += n


class _Truncated(Exception):
    def __init__(self, what: str, pos: int, n: int):
        super().__init__(what)
        self.what, self.pos, self.n = what, pos, n


class _Bad(Exception):
    pass


def _type_name(t: int) -> str:
    return _TYPE_NAMES[t] if 0 <= t < len(_TYPE_NAMES) else f"unknown type {t}"


def check_gguf(path: Path) -> dict[str, Any]:
    """Walk a GGUF's header without loading it; raise ModelFileError naming the cause.
    Returns a small summary (version, counts, data size). Pure Python, reads only the header."""
    import mmap
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except (OSError, ValueError) as exc:
        raise ModelFileError(path, f"cannot open: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return _walk(_Reader(buf, size), path, size)
    except _Truncated as exc:
        raise ModelFileError(path, f"truncated: the file ends at byte {size} inside {exc.what} (byte {exc.pos}, "
                                   f"{exc.n} bytes needed)") from None
    except _Bad as exc:
        raise ModelFileError(path, str(exc)) from None
    finally:
        if size:
            buf.close()


def _walk(r: _Reader, path: Path, size: int) -> dict[str, Any]:
    magic = r.read(4, "the magic number")
    if magic != GGUF_MAGIC:
        raise _Bad(f"not a GGUF file: magic {magic!r}, expected {GGUF_MAGIC!r}")
    version = r.u32("the version")
    if version not in (2, 3):
        raise _Bad(f"unsupported GGUF version {version} (llama.cpp reads 2 and 3)")
    n_tensors, n_kv = r.u64("the tensor count"), r.u64("the metadata count")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise _Bad(f"implausible header: {n_tensors} tensors, {n_kv} metadata keys")
    alignment = 32
    for i in range(n_kv):
        key = r.string(f"metadata key #{i}").decode("utf-8", errors="replace")
        vtype = r.u32(f"the type of {key}")
        expect = _KEY_TYPES.get(key)
        if expect is not None and vtype != expect[0]:
            raise _Bad(f"metadata {key} has type {_type_name(vtype)}, expected {_type_name(expect[0])}")
        if vtype == _ARR:
            etype, count = r.u32(f"the element type of {key}"), r.u64(f"the length of {key}")
            if expect is not None and expect[1] is not None and etype != expect[1]:
                raise _Bad(f"metadata {key} is an array of {_type_name(etype)}, expected {_type_name(expect[1])}")
            if etype == _STR:
                r.skip_strings(count, key)
            elif etype in _SCALAR_SIZE:
                r.skip(_SCALAR_SIZE[etype] * count, f"the values of {key}")
            else:
                raise _Bad(f"metadata {key}: unsupported array element type {_type_name(etype)}")
        elif vtype == _STR:
            value = r.string(f"the value of {key}")
            if key == "tokenizer.chat_template":
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _Bad(f"metadata {key} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        elif vtype in _SCALAR_SIZE:
            raw = r.read(_SCALAR_SIZE[vtype], f"the value of {key}")
            if key == "general.alignment":
                alignment = struct.unpack("<I", raw)[0]
                if alignment == 0 or alignment & (alignment - 1):
                    raise _Bad(f"general.alignment {alignment} is not a power of two")
        else:
            raise _Bad(f"metadata {key} has {_type_name(vtype)}")
    tensors = []
    for i in range(n_tensors):
        name = r.string(f"tensor info #{i} name").decode("utf-8", errors="replace")
        n_dims = r.u32(f"the dimensions of tensor {name}")
        if n_dims > 8:
            raise _Bad(f"tensor {name} has {n_dims} dimensions (at most 4 are valid)")
        dims = [r.u64(f"the shape of tensor {name}") for _ in range(n_dims)]
        ttype = r.u32(f"the type of tensor {name}")
        offset = r.u64(f"the offset of tensor {name}")
        tensors.append((name, dims, ttype, offset))
    data_start = (r.tell() + alignment - 1) // alignment * alignment
    needed, first_cut = data_start, None
    for name, dims, ttype, offset in tensors:
        nbytes = _tensor_nbytes(dims, ttype)
        if nbytes is None:
            raise _Bad(f"tensor {name} has unknown ggml type {ttype}")
        end = data_start + offset + nbytes
        if end > size and first_cut is None:
            first_cut = name
        needed = max(needed, end)
    if first_cut is not None:
        raise _Bad(f"truncated: the tensor data ends at byte {needed:,} but the file has {size:,} bytes "
                   f"({needed - size:,} missing; first tensor cut: {first_cut})")
    return {"version": version, "tensors": n_tensors, "metadata": n_kv, "data_end": needed, "size": size}


def _tensor_nbytes(dims: list[int], ttype: int) -> int | None:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
    except (ValueError, KeyError):
        return None
    n = 1
    for d in dims:
        n *= d
    return n * type_size // block
