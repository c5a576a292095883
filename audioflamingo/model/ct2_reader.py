"""Read CTranslate2 `model.bin` files with numpy alone (no ctranslate2 needed).

Layout of binary version 6 (all integers little-endian):

    u32 binary_version | string spec_name | u32 spec_revision | u32 n_variables
    n_variables x [ string name | u8 ndim | ndim x u32 dim | u8 dtype_id | u32 n_bytes | n_bytes raw data ]
    u32 n_aliases | n_aliases x [ string alias | string target_name ]

where `string` is a u16 length (counting a trailing NUL) followed by that many bytes. dtype ids:
0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. A quantised weight `.../weight` (int8 or
int16) comes with `.../weight_scale` (float32): the float value is `weight / scale`, with one scale per
output row for int8 (conv weights are flattened to 2-D rows first) and a single scale for int16.

A model may be split into several files (`model.bin.part1`, `model.bin.part2`, ...) that are just the
bytes of one `model.bin` cut in pieces; pass them in order and they are read as one stream.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SUPPORTED_BINARY_VERSIONS = (6,)
_DTYPES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}


class Ct2FormatError(ValueError):
    """The file is not a CTranslate2 model.bin this reader understands."""


@dataclass(frozen=True)
class Ct2Variable:
    name: str
    shape: tuple[int, ...]
    dtype: str  # one of _DTYPES' values
    offset: int  # absolute byte offset of the raw data in the (joined) stream
    n_bytes: int


class _JoinedFiles:
    """Random access over files that, concatenated, form one byte stream."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.sizes = [os.path.getsize(p) for p in paths]
        self.starts = np.cumsum([0] + self.sizes[:-1]).tolist()
        self.size = sum(self.sizes)

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or offset + n > self.size:
            raise Ct2FormatError(
                f"{self.paths[0]}: truncated (wanted bytes {offset}..{offset + n} of {self.size}); are all parts present?"
            )
        chunks = []
        for path, start, size in zip(self.paths, self.starts, self.sizes):
            lo, hi = max(offset, start), min(offset + n, start + size)
            if lo < hi:
                with open(path, "rb") as f:
                    f.seek(lo - start)
                    chunks.append(f.read(hi - lo))
        return b"".join(chunks)


class _Cursor:
    def __init__(self, data: _JoinedFiles):
        self.data, self.pos = data, 0

    def unpack(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        values = struct.unpack("<" + fmt, self.data.read(self.pos, size))
        self.pos += size
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        n = self.unpack("H")
        raw = self.data.read(self.pos, n)
        self.pos += n
        if n == 0 or raw[-1] != 0:
            raise Ct2FormatError(f"{self.data.paths[0]}: bad string at byte {self.pos - n}")
        return raw[:-1].decode("utf-8")


class Ct2Model:
    """Index of the variables in a CTranslate2 model; `get(name)` reads one as float32 numpy."""

    def __init__(self, paths: str | Path | list[str | Path]):
        paths = [Path(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths])]
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"CTranslate2 model file {p} not found")
        self.paths = paths
        self._data = _JoinedFiles(paths)
        cur = _Cursor(self._data)
        self.binary_version = cur.unpack("I")
        if self.binary_version not in SUPPORTED_BINARY_VERSIONS:
            raise Ct2FormatError(
                f"{paths[0]}: CTranslate2 binary version {self.binary_version} is not supported "
                f"(this reader knows {SUPPORTED_BINARY_VERSIONS}); re-convert the model with a recent ctranslate2"
            )
        self.spec_name = cur.string()
        self.spec_revision = cur.unpack("I")
        self.variables: dict[str, Ct2Variable] = {}
        for _ in range(cur.unpack("I")):
            name = cur.string()
            ndim = cur.unpack("B")
            shape = tuple(cur.unpack("I") for _ in range(ndim))
            type_id = cur.unpack("B")
            if type_id not in _DTYPES:
                raise Ct2FormatError(f"{paths[0]}: variable {name!r} has unknown dtype id {type_id}")
            n_bytes = cur.unpack("I")
            self.variables[name] = Ct2Variable(name, shape, _DTYPES[type_id], cur.pos, n_bytes)
            cur.pos += n_bytes
        self.aliases: dict[str, str] = {}
        for _ in range(cur.unpack("I")):
            alias = cur.string()
            self.aliases[alias] = cur.string()
        if cur.pos != self._data.size:
            raise Ct2FormatError(f"{paths[0]}: {self._data.size - cur.pos} unexpected trailing bytes")

    def __contains__(self, name: str) -> bool:
        return name in self.variables or name in self.aliases

    def names(self, prefix: str = "") -> list[str]:
        return [n for n in self.variables if n.startswith(prefix)]

    def raw(self, name: str) -> np.ndarray:
        """The variable as stored (its own dtype; bfloat16 is returned as float32)."""
        var = self.variables.get(self.aliases.get(name, name))
        if var is None:
            raise KeyError(f"{self.paths[0]}: no variable {name!r}")
        buf = self._data.read(var.offset, var.n_bytes)
        if var.dtype == "bfloat16":  # the high half of a float32
            arr = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)  # (numel,)
        else:
            arr = np.frombuffer(buf, dtype=np.dtype(var.dtype).newbyteorder("<"))
        if arr.size != int(np.prod(var.shape)):
            raise Ct2FormatError(f"{self.paths[0]}: {name!r} has {arr.size} values for shape {var.shape}")
        return arr.reshape(var.shape)  # stored shape, e.g. (E, M, 3) for a conv

    def get(self, name: str) -> np.ndarray:
        """The variable as float32, dequantised with its `<name>_scale` when stored as int8/int16."""
        arr = self.raw(name)
        dtype = self.variables[self.aliases.get(name, name)].dtype
        if name + "_zero" in self:
            raise Ct2FormatError(f"{self.paths[0]}: {name!r} is AWQ-quantised (has a zero point); not supported")
        if dtype in ("int8", "int16"):
            scale_name = name + "_scale"
            if scale_name not in self:
                raise Ct2FormatError(f"{self.paths[0]}: {name!r} is {dtype} but has no {scale_name!r}")
            scale = self.raw(scale_name).astype(np.float32)
            if dtype == "int8" and scale.ndim == 1:  # one scale per output row
                scale = scale.reshape((-1,) + (1,) * (arr.ndim - 1))  # (rows, 1[, 1])
            return arr.astype(np.float32) / scale
        return arr.astype(np.float32)
