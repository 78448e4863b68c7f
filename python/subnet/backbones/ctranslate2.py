"""Reader (and a small writer, for tests) of CTranslate2 ``model.bin`` files.

Layout, all little-endian (checked byte by byte against the Whisper tiny.en file, version 6):

    u32 version | str spec_name | u32 revision | u32 n_variables
    n_variables x (str name | u8 rank | rank x u32 dim | u8 dtype | u32 n_bytes | bytes)
    u32 n_aliases | n_aliases x (str alias | str target)

A ``str`` is a u16 length that counts a trailing NUL, then the bytes. Scalars such as
``decoder/activation`` are rank-0 variables. Older versions, as CTranslate2's own loader reads
them: < 2 has no spec name/revision, < 3 no aliases, < 4 stores (u8 item size, u32 item count)
instead of (u8 dtype, u32 byte count), the type following from the item size.
"""
from __future__ import annotations

import math
import mmap
import os
import struct
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

# CTranslate2 DataType enum order.
DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16: raw 16-bit words, reinterpreted by torch below
}
_CODES = {DTYPES[k].str: k for k in (0, 1, 2, 3, 4)}  # writer: numpy dtype string -> code
_LEGACY_CODES = {4: 0, 2: 2, 1: 1}  # version < 4: item size -> dtype code (f32, i16, i8)
MAX_KNOWN_VERSION = 6


class CT2FormatError(ValueError):
    """A ``model.bin`` that is truncated, corrupt or of an unknown layout."""


@dataclass
class CT2Model:
    """Contents of a ``model.bin``: variables (aliases resolved to the same tensor)."""

    path: str
    version: int
    spec: str
    revision: int
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str] = field(default_factory=dict)


class _Cursor:
    """Bounds-checked little-endian reads over a buffer; errors name the file and offset."""

    def __init__(self, buf, path: str):
        self.buf, self.path, self.pos = buf, path, 0

    def fail(self, what: str, at: int | None = None) -> CT2FormatError:
        at = self.pos if at is None else at
        return CT2FormatError(f"{self.path}, byte offset {at}: {what} (the file has {len(self.buf)} bytes)")

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.buf):
            raise self.fail(f"truncated file: {what} needs {n} bytes, {len(self.buf) - self.pos} left")
        view = memoryview(self.buf)[self.pos : self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def string(self, what: str) -> str:
        start = self.pos
        (n,) = self.unpack("H", f"length of {what}")
        raw = bytes(self.take(n, what))
        if n == 0 or raw[-1] != 0:
            raise self.fail(f"corrupt {what}: string of length {n} lacks its trailing NUL", start)
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"corrupt {what}: not UTF-8", start) from None


def _tensor(raw: memoryview, dtype_code: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Zero-copy view of ``raw`` as a torch tensor."""
    arr = np.frombuffer(raw, dtype=DTYPES[dtype_code]).reshape(shape)
    with warnings.catch_warnings():  # torch warns on read-only buffers (``data=bytes``)
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(arr)
    return t.view(torch.bfloat16) if dtype_code == 5 else t


def read_ct2(path: str | os.PathLike, data: bytes | None = None) -> CT2Model:
    """Parse a CTranslate2 ``model.bin``.

    The file is memory-mapped copy-on-write and tensors are views into it: nothing is copied
    until written. The views are generally not aligned to their item size (CT2 packs variables
    back to back); ``.clone()`` a tensor that must be aligned. Pass ``data`` (preferably a
    ``bytearray``) to parse bytes already in memory, e.g. a model joined from split parts.
    Raises ``CT2FormatError`` naming the file and byte offset on truncated or corrupt input.
    """
    path = os.fspath(path)
    if data is None:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            # copy-on-write mapping: no copy up front, and an in-place edit of a returned tensor
            # touches a private page instead of faulting on a read-only one or changing the file
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size else b""
    cur = _Cursor(data, path)
    (version,) = cur.unpack("I", "format version")
    if not 1 <= version <= MAX_KNOWN_VERSION:
        raise cur.fail(f"unsupported CTranslate2 format version {version} (known: 1..{MAX_KNOWN_VERSION})", 0)
    spec, revision = "", 1
    if version >= 2:
        spec = cur.string("spec name")
        (revision,) = cur.unpack("I", "spec revision")
    (count,) = cur.unpack("I", "variable count")
    variables: dict[str, torch.Tensor] = {}
    for i in range(count):
        start = cur.pos
        name = cur.string(f"name of variable {i}")
        (rank,) = cur.unpack("B", f"rank of {name!r}")
        shape = cur.unpack(f"{rank}I", f"shape of {name!r}") if rank else ()
        if version >= 4:
            (code,) = cur.unpack("B", f"dtype of {name!r}")
            if code not in DTYPES:
                raise cur.fail(f"corrupt variable {name!r}: unknown dtype code {code}", cur.pos - 1)
            (nbytes,) = cur.unpack("I", f"byte count of {name!r}")
        else:
            (item,) = cur.unpack("B", f"item size of {name!r}")
            if item not in _LEGACY_CODES:
                raise cur.fail(f"corrupt variable {name!r}: unknown item size {item}", cur.pos - 1)
            code = _LEGACY_CODES[item]
            (nitems,) = cur.unpack("I", f"item count of {name!r}")
            nbytes = nitems * item
        expect = math.prod(shape) * DTYPES[code].itemsize  # exact even for corrupt huge dims
        if nbytes != expect:
            raise cur.fail(f"corrupt variable {name!r}: {nbytes} bytes for shape {list(shape)} "
                           f"dtype code {code} (expected {expect})", start)
        raw = cur.take(nbytes, f"data of {name!r}")
        if name in variables:
            raise cur.fail(f"corrupt file: variable {name!r} appears twice", start)
        variables[name] = _tensor(raw, code, shape)
    aliases: dict[str, str] = {}
    if version >= 3:
        (n_alias,) = cur.unpack("I", "alias count")
        for i in range(n_alias):
            start = cur.pos
            alias = cur.string(f"alias {i}")
            target = cur.string(f"target of alias {alias!r}")
            if target not in variables:
                raise cur.fail(f"corrupt alias {alias!r}: target {target!r} is not a variable", start)
            aliases[alias] = target
            variables[alias] = variables[target]
    if cur.pos != len(data):
        raise cur.fail(f"corrupt file: {len(data) - cur.pos} unexpected trailing bytes")
    return CT2Model(path, version, spec, revision, variables, aliases)


def write_ct2(path: str | os.PathLike, variables: dict, aliases: dict[str, str] | None = None,
              spec: str = "TestSpec", revision: int = 1, version: int = MAX_KNOWN_VERSION) -> None:
    """Write a ``model.bin`` of format ``version`` (used by tests to round-trip the reader).

    Values are numpy arrays, or torch tensors (needed for bfloat16, which numpy lacks).
    """

    def s(text: str) -> bytes:
        raw = text.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", version)]
    if version >= 2:
        out += [s(spec), struct.pack("<I", revision)]
    out.append(struct.pack("<I", len(variables)))
    for name, value in variables.items():
        if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16:
            arr, code = value.contiguous().view(torch.int16).numpy(), 5
        else:
            arr = np.asarray(value.numpy() if isinstance(value, torch.Tensor) else value)
            arr = np.array(arr, dtype=arr.dtype.newbyteorder("<"), order="C")  # keeps 0-d shape
            code = _CODES[arr.dtype.str]
        out += [s(name), struct.pack(f"<B{arr.ndim}I", arr.ndim, *arr.shape)]
        if version >= 4:
            out.append(struct.pack("<BI", code, arr.nbytes))
        else:
            out.append(struct.pack("<BI", arr.itemsize, arr.size))
        out.append(arr.tobytes())
    if version >= 3:
        aliases = aliases or {}
        out.append(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            out += [s(alias), s(target)]
    with open(path, "wb") as f:
        f.write(b"".join(out))
