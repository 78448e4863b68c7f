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

The GPU backends do not decode that table element by element: `CompactTable.program`
compiles it, once per plan and element size, into copy tasks (see CopyProgram) that move
contiguous spans and rows, cached on the device with the table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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
    _programs: dict = field(default_factory=dict, repr=False, compare=False)

    def program(self, sources: Sequence[torch.Tensor]) -> "CopyProgram":
        """The copy program of this table for `sources`, on their device: built and uploaded
        once per (device, element size, source sizes), then reused (no per-call transfer)."""
        first = sources[0]
        numels = tuple(s.numel() for s in sources)
        key = (first.device, first.element_size(), numels)
        if key not in self._programs:
            self._programs[key] = build_program(self.table, numels, first.element_size()).to(first.device)
        return self._programs[key]


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


# --- copy programs ----------------------------------------------------------------------
# A program is a list of tasks, each at most CHUNK_BYTES of output (one thread block's work),
# TASK int64 each, plus one int64 `offsets` array the tasks point into. A task copies
#
#     out[DST + r * NCOLS + c] = source[SRC][SRC_OFF + row(r) + col(c)]   r < NROWS, c < NCOLS
#
# row(r) = offsets[ROWS_AT + r] (0 for a SPAN), col(c) = offsets[COLS_AT + c] for GATHER, else c.
# KIND: SPAN (one contiguous run), ROWS (rows of contiguous columns: row gathers, whole rows),
# GATHER (rows of gathered columns), plus the VEC flag when NCOLS and every start (of the span,
# of each row, of each group of 16 bytes of columns) are multiples of 16 bytes in elements
# (the kernels also check the pointers).
TASK = 8
KIND, SRC, SRC_OFF, DST, NROWS, NCOLS, ROWS_AT, COLS_AT = range(TASK)
SPAN, ROWS, GATHER, VEC = 0, 1, 2, 4
CHUNK_BYTES = 32 * 1024   # output bytes per task
SPAN_BYTES = 16 * 1024    # contiguous rows whose runs average this are copied as spans
WIDE_ROW_BYTES = 128      # trailing whole dims this long are copied as contiguous rows


@dataclass
class CopyProgram:
    """A gather table compiled into copy tasks (the layout above)."""

    tasks: torch.Tensor    # (n_tasks, TASK) int64
    offsets: torch.Tensor  # int64

    def to(self, device) -> "CopyProgram":
        return CopyProgram(self.tasks.to(device), self.offsets.to(device))


def _broadcast_offsets(coords, strides) -> torch.Tensor:
    # Element offsets of every combination of coords (row-major), one per output row.
    off = torch.zeros(1, dtype=torch.long)
    for c, s in zip(coords, strides):
        off = (off[:, None] + c[None, :] * s).reshape(-1)
    return off


def build_program(table: torch.Tensor, source_numels: Sequence[int], element_size: int) -> CopyProgram:
    """Compiles an encoded table (CompactTable.table) into copy tasks for sources of these
    sizes and element size. Fails, like the C++ check of the table, if any output would read
    outside its source."""
    t = table.tolist()
    chunk = max(1, CHUNK_BYTES // element_size)
    vec = max(1, 16 // element_size)
    tasks, offsets = [], []
    used = 0

    def put(values):  # appends to `offsets`, returns the position
        nonlocal used
        offsets.append(values)
        used += values.numel()
        return used - values.numel()

    def aligned(*values):
        return all(bool((v % vec == 0).all()) for v in values)

    for i in range(t[0]):
        rec = t[HEADER + i * RECORD: HEADER + (i + 1) * RECORD]
        if rec[NUMEL] == 0:
            continue
        sid, dst = rec[SRC_ID], rec[OUT_OFFSET]
        sizes, strides = rec[SIZES:SIZES + MAX_DIMS], rec[STRIDES:STRIDES + MAX_DIMS]
        where = rec[INDEX:INDEX + MAX_DIMS]
        coords = [torch.arange(n) if w < 0 else torch.tensor(t[w:w + n], dtype=torch.long)
                  for n, w in zip(sizes, where)]
        if not 0 <= sid < len(source_numels) or any(bool((c < 0).any()) for c in coords):
            raise ValueError(f"gather_compact: output {i}: bad source id or negative index")
        if sum(int(c.max()) * s for c, s in zip(coords, strides)) >= source_numels[sid]:
            raise ValueError(f"gather_compact: output {i} reads past the end of source {sid}")
        gathered = [d for d in range(MAX_DIMS) if where[d] >= 0]
        q = gathered[-1] if gathered else -1   # the last gathered dim
        inner = _numel(sizes[q + 1:])         # the whole dims after it: contiguous
        if q < 0 or inner * element_size >= WIDE_ROW_BYTES:
            rows, cols, ncols = _broadcast_offsets(coords[:q + 1], strides[:q + 1]), None, inner
        else:  # columns = dim q and the short whole dims after it
            rows = _broadcast_offsets(coords[:q], strides[:q])
            cols = (coords[q][:, None] * strides[q] + torch.arange(inner)).reshape(-1)
            ncols = cols.numel()
            if torch.equal(cols, cols[0] + torch.arange(ncols)):  # gathered, yet contiguous
                rows, cols = rows + cols[0], None
        n = rows.numel()
        if cols is None:
            breaks = (rows[1:] != rows[:-1] + ncols).nonzero().flatten() + 1
            starts = [0] + breaks.tolist()
            if n * ncols * element_size >= SPAN_BYTES * len(starts):  # long runs: spans
                for a, b in zip(starts, starts[1:] + [n]):
                    src, out, length = int(rows[a]), dst + a * ncols, (b - a) * ncols
                    for c0 in range(0, length, chunk):
                        n_c = min(chunk, length - c0)
                        v = VEC if (src + c0) % vec == 0 and (out + c0) % vec == 0 and n_c % vec == 0 else 0
                        tasks.append([SPAN | v, sid, src + c0, out + c0, 1, n_c, -1, -1])
            else:  # short rows: ROWS tasks of several rows each (ncols < chunk here)
                at = put(rows)
                kind = ROWS | (VEC if ncols % vec == 0 and aligned(rows, torch.tensor(dst)) else 0)
                per = max(1, chunk // ncols)
                for r0 in range(0, n, per):
                    tasks.append([kind, sid, 0, dst + r0 * ncols, min(per, n - r0), ncols, at + r0, -1])
        else:
            rows_at, cols_at = put(rows), put(cols)
            groups = cols.view(-1, vec) if ncols % vec == 0 else None
            kind = GATHER | (VEC if groups is not None and aligned(rows, groups[:, 0], torch.tensor(dst))
                             and torch.equal(groups - groups[:, :1], torch.arange(vec).expand_as(groups))
                             else 0)
            if ncols <= chunk:
                per = chunk // ncols
                for r0 in range(0, n, per):
                    tasks.append([kind, sid, 0, dst + r0 * ncols, min(per, n - r0), ncols, rows_at + r0, cols_at])
            else:  # long gathered rows: one task per chunk of columns (chunk is a multiple of vec)
                for r in range(n):
                    for c0 in range(0, ncols, chunk):
                        tasks.append([kind, sid, 0, dst + r * ncols + c0, 1, min(chunk, ncols - c0),
                                      rows_at + r, cols_at + c0])
    return CopyProgram(torch.tensor(tasks, dtype=torch.long).view(-1, TASK),
                       torch.cat(offsets) if offsets else torch.zeros(0, dtype=torch.long))


def program_source_index(program: CopyProgram, source_numels: Sequence[int], total: int) -> torch.Tensor:
    """For every output element, its offset in the flat source buffer, as `program` copies it
    (-1 where no task writes): the pure-PyTorch decoding of a program, for tests."""
    bases = [0]
    for n in source_numels:
        bases.append(bases[-1] + n)
    out = torch.full((total,), -1, dtype=torch.long)
    offs = program.offsets.cpu()
    for kind, sid, src_off, dst, nrows, ncols, rows_at, cols_at in program.tasks.cpu().tolist():
        rows = offs[rows_at:rows_at + nrows] if rows_at >= 0 else torch.zeros(nrows, dtype=torch.long)
        cols = offs[cols_at:cols_at + ncols] if kind & GATHER else torch.arange(ncols)
        where = dst + torch.arange(nrows)[:, None] * ncols + torch.arange(ncols)[None, :]
        out[where.reshape(-1)] = (bases[sid] + src_off + rows[:, None] + cols[None, :]).reshape(-1)
    return out
