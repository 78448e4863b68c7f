"""Gather plans: which entries of which source tensor each compacted tensor keeps.

A *plan* describes one output tensor: the position of its source in a list of source
tensors, and for each dim of that source either a 1-D int64 tensor of kept indices (in the
order they appear in the output) or None (keep the whole dim). Sources have 1 to 4 dims.

For a single kernel launch, a list of plans is encoded as ONE int64 table (no pointers:
the Triton interpreter cannot load them), and the outputs are written into ONE flat buffer;
`split_outputs` turns that buffer into per-plan views. Table layout (all int64):

    [0] n_out   [1] total (elements over all outputs)
    then n_out records of RECORD int64 each, starting at HEADER:
        SRC_ID      position of the source in the list
        SRC_BASE    element offset of that source in the flat source buffer
                    (the sources concatenated in list order, each flattened contiguously)
        OUT_OFFSET  element offset of the output in the flat output buffer
        NUMEL       number of elements of the output
        SIZES..+4   output sizes, right-aligned to 4 dims (leading 1s)
        STRIDES..+4 contiguous element strides of the source, right-aligned (leading 0s)
        INDEX..+4   table position of the dim's kept indices, or -1 = keep all
    then the index section: every kept-index list, concatenated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

MAX_DIMS = 4
HEADER = 2
RECORD = 16
SRC_ID, SRC_BASE, OUT_OFFSET, NUMEL, SIZES, STRIDES, INDEX = 0, 1, 2, 3, 4, 8, 12


@dataclass(frozen=True)
class GatherPlan:
    """One output: `source` is a position in the source list; `index[d]` keeps those
    entries of dim d (1-D integer tensor, any order, repeats allowed) or all of it (None)."""

    source: int
    index: tuple


def normalize_plans(sources: Sequence[torch.Tensor], plans) -> list[GatherPlan]:
    """Validates `plans` against `sources`; accepts GatherPlan or (source, indices) pairs."""
    out = []
    for i, p in enumerate(plans):
        if not isinstance(p, GatherPlan):
            p = GatherPlan(int(p[0]), tuple(p[1]))
        if not 0 <= p.source < len(sources):
            raise IndexError(f"plan {i}: source {p.source} out of range ({len(sources)} sources)")
        src = sources[p.source]
        if not 1 <= src.dim() <= MAX_DIMS:
            raise ValueError(f"plan {i}: sources must have 1..{MAX_DIMS} dims, got {src.dim()}")
        if len(p.index) != src.dim():
            raise ValueError(f"plan {i}: {len(p.index)} index entries for a {src.dim()}-D source")
        for d, idx in enumerate(p.index):
            if idx is None:
                continue
            if not isinstance(idx, torch.Tensor):
                idx = torch.as_tensor(idx, dtype=torch.long)
            if idx.dim() != 1:
                raise ValueError(f"plan {i} dim {d}: indices must be 1-D")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= src.shape[d]):
                raise IndexError(f"plan {i} dim {d}: index out of range for size {src.shape[d]}")
        p = GatherPlan(p.source, tuple(None if idx is None else
                                       torch.as_tensor(idx, dtype=torch.long).cpu()
                                       for idx in p.index))
        out.append(p)
    return out


@dataclass
class CompactTable:
    """The encoded plans: `table` (int64, on the host) plus the output shapes."""

    table: torch.Tensor
    shapes: list[tuple[int, ...]]
    offsets: list[int]
    total: int


def _contiguous_strides(shape: Sequence[int]) -> list[int]:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= s
    return strides[::-1]


def build_table(sources: Sequence[torch.Tensor], plans) -> CompactTable:
    """Encodes `plans` over `sources` into one int64 table (see the module docstring)."""
    plans = normalize_plans(sources, plans)
    bases, acc = [], 0
    for s in sources:
        bases.append(acc)
        acc += s.numel()
    header, indices, shapes, offsets = [], [], [], []
    index_pos = HEADER + RECORD * len(plans)
    out_offset = 0
    for p in plans:
        src = sources[p.source]
        pad = MAX_DIMS - src.dim()
        shape = [src.shape[d] if idx is None else idx.numel() for d, idx in enumerate(p.index)]
        numel = 1
        for s in shape:
            numel *= s
        rec = [0] * RECORD
        rec[SRC_ID], rec[SRC_BASE], rec[OUT_OFFSET], rec[NUMEL] = p.source, bases[p.source], out_offset, numel
        rec[SIZES:SIZES + MAX_DIMS] = [1] * pad + shape
        rec[STRIDES:STRIDES + MAX_DIMS] = [0] * pad + _contiguous_strides(src.shape)
        where = [-1] * MAX_DIMS
        for d, idx in enumerate(p.index):
            if idx is not None:
                where[pad + d] = index_pos
                indices.append(idx)
                index_pos += idx.numel()
        rec[INDEX:INDEX + MAX_DIMS] = where
        header.extend(rec)
        shapes.append(tuple(shape))
        offsets.append(out_offset)
        out_offset += numel
    parts = [torch.tensor([len(plans), out_offset] + header, dtype=torch.long)] + indices
    return CompactTable(torch.cat(parts), shapes, offsets, out_offset)


def flat_source(sources: Sequence[torch.Tensor]) -> torch.Tensor:
    """All sources as one flat 1-D buffer, in the SRC_BASE layout of `build_table`.

    Zero-copy when the sources already are consecutive contiguous views of one buffer
    (e.g. parameters kept flat by the caller); otherwise one concatenation.
    """
    first = sources[0]
    if all(s.is_contiguous() and s.dtype == first.dtype and s.device == first.device
           for s in sources):
        storage = first.untyped_storage()
        start, expected = first.storage_offset(), first.storage_offset()
        shared = True
        for s in sources:
            if s.untyped_storage().data_ptr() != storage.data_ptr() or s.storage_offset() != expected:
                shared = False
                break
            expected += s.numel()
        if shared:
            return first.new_empty(0).set_(storage, start, (expected - start,), (1,))
    return torch.cat([s.reshape(-1) for s in sources])


def split_outputs(flat: torch.Tensor, table: CompactTable) -> list[torch.Tensor]:
    """Views of the flat output buffer, one per plan, shaped as the plan says."""
    return [flat[o:o + _numel(s)].view(s) for s, o in zip(table.shapes, table.offsets)]


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def table_source_index(table: torch.Tensor) -> torch.Tensor:
    """For every output element (flat order), its element offset in the flat source buffer.

    The pure-PyTorch decoding of the table, used by the reference backend and tests.
    """
    t = table.tolist() if table.device.type == "cpu" else table.cpu().tolist()
    n_out = t[0]
    pieces = []
    for i in range(n_out):
        rec = t[HEADER + i * RECORD: HEADER + (i + 1) * RECORD]
        off = torch.full((1, 1, 1, 1), rec[SRC_BASE], dtype=torch.long)
        for d in range(MAX_DIMS):
            size, stride, where = rec[SIZES + d], rec[STRIDES + d], rec[INDEX + d]
            coord = (torch.arange(size, dtype=torch.long) if where < 0 else
                     torch.tensor(t[where:where + size], dtype=torch.long))
            shape = [1] * MAX_DIMS
            shape[d] = size
            off = off + (coord * stride).view(shape)
        pieces.append(off.reshape(-1))
    if not pieces:
        return torch.empty(0, dtype=torch.long)
    return torch.cat(pieces)
