"""gather_compact in Triton: runs the copy program of a plan table (plan.py, CopyProgram),
one program per task: a SPAN is a contiguous run copied in BLOCK-element pieces; ROWS and
GATHER tasks are (BLOCK_R x BLOCK_C) tiles, consecutive lanes on consecutive columns.

Sources are reached through a table of their addresses (the interpreter loads those too),
cached per set of source tensors, so the sources are not concatenated. Elements move as
same-width integers, so any dtype works (bf16 in the interpreter too). Like the CUDA kernel,
every task and offset is bounds-checked: nothing outside a source or the output is touched.
"""
from collections import OrderedDict

import torch
import triton
import triton.language as tl

from .. import alloc
from ..plan import TASK, build_program

_AS_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@triton.jit
def _field(t, i, V: tl.constexpr):
    # Task field i; V > 1: declared a multiple of V. The hint must sit on the load itself
    # (Triton drops hints on function arguments), hence the helpers below load their fields.
    x = tl.load(t + i)
    if V > 1:
        x = tl.multiple_of(x, V)
    return x


@triton.jit
def _source(SOURCES, sid, OUT, V: tl.constexpr):
    src = tl.load(SOURCES + sid).to(tl.pointer_type(OUT.dtype.element_ty), bitcast=True)
    if V > 1:
        src = tl.multiple_of(src, 16)
    return src


@triton.jit
def _span(t, SOURCES, OUT, V: tl.constexpr, BLOCK: tl.constexpr):
    # out[dst:dst+n] = src[src_off:src_off+n]; V > 1: 16-byte accesses (the caller vouches
    # for the alignment of both ends and n % V == 0).
    src = _source(SOURCES, tl.load(t + 1), OUT, V)
    src_off = _field(t, 2, V)
    dst = _field(t, 3, V)
    n = _field(t, 5, V)
    for c0 in range(0, n, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        m = c < n
        tl.store(OUT + dst + c, tl.load(src + src_off + c, mask=m, other=0), mask=m)


@triton.jit
def _tile(t, SOURCES, N_SOURCES, OFFS, OUT, GATHER: tl.constexpr, V: tl.constexpr,
          BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    # Rows of contiguous (GATHER false) or gathered columns; out-of-source rows are skipped.
    sid = tl.load(t + 1)
    src = _source(SOURCES, sid, OUT, V)
    numel = tl.load(SOURCES + N_SOURCES + sid)
    src_off = _field(t, 2, V)
    dst = _field(t, 3, V)
    nrows = tl.load(t + 4)
    ncols = _field(t, 5, V)
    rows_at = tl.load(t + 6)
    cols_at = tl.load(t + 7)
    for r0 in range(0, nrows, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        row_ok = r < nrows
        row_off = tl.load(OFFS + rows_at + r, mask=row_ok, other=0)
        if V > 1:
            row_off = tl.multiple_of(row_off, V)
        row_off += src_off
        for c0 in range(0, ncols, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            col_ok = c < ncols
            if GATHER:
                col_off = tl.load(OFFS + cols_at + c, mask=col_ok, other=0)
                if V > 1:  # groups of V consecutive offsets, the first a multiple of V
                    col_off = tl.max_contiguous(tl.multiple_of(col_off, V), V)
            else:
                col_off = c.to(tl.int64)
            lo = tl.min(tl.where(col_ok, col_off, 0))
            hi = tl.max(tl.where(col_ok, col_off, 0))
            inside = row_ok & (row_off >= 0) & (row_off + hi < numel) & (lo >= 0)
            m = inside[:, None] & col_ok[None, :]
            v = tl.load(src + row_off[:, None] + col_off[None, :], mask=m, other=0)
            tl.store(OUT + dst + r[:, None] * ncols + c[None, :], v, mask=m)


@triton.jit
def _gather_kernel(SOURCES, N_SOURCES, TASKS, OFFS, N_OFFS, OUT, TOTAL, ALIGNED: tl.constexpr,
                   V: tl.constexpr, BLOCK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    t = TASKS + tl.program_id(0).to(tl.int64) * 8
    kind = tl.load(t)
    sid = tl.load(t + 1)
    src_off = tl.load(t + 2)
    dst = tl.load(t + 3)
    nrows = tl.load(t + 4)
    ncols = tl.load(t + 5)
    rows_at = tl.load(t + 6)
    cols_at = tl.load(t + 7)
    shape = kind & 3
    # A task the host could not have built (out of range anywhere) is skipped.
    bad = (sid < 0) | (sid >= N_SOURCES) | (nrows < 0) | (ncols < 0) | (dst < 0) | (dst + nrows * ncols > TOTAL)
    bad = bad | ((shape != 0) & ((rows_at < 0) | (rows_at + nrows > N_OFFS)))
    bad = bad | ((shape == 2) & ((cols_at < 0) | (cols_at + ncols > N_OFFS)))
    numel = tl.load(SOURCES + N_SOURCES + sid, mask=(sid >= 0) & (sid < N_SOURCES), other=0)
    bad = bad | ((shape == 0) & ((nrows != 1) | (src_off < 0) | (src_off + ncols > numel)))
    if bad:
        return
    vec = ALIGNED & ((kind & 4) != 0)
    if shape == 0:  # SPAN
        if vec:
            _span(t, SOURCES, OUT, V, BLOCK)
        else:
            _span(t, SOURCES, OUT, 1, BLOCK)
    elif shape == 1:  # ROWS
        if vec:
            _tile(t, SOURCES, N_SOURCES, OFFS, OUT, False, V, BLOCK_R, BLOCK_C)
        else:
            _tile(t, SOURCES, N_SOURCES, OFFS, OUT, False, 1, BLOCK_R, BLOCK_C)
    else:  # GATHER
        if vec:
            _tile(t, SOURCES, N_SOURCES, OFFS, OUT, True, V, BLOCK_R, BLOCK_C)
        else:
            _tile(t, SOURCES, N_SOURCES, OFFS, OUT, True, 1, BLOCK_R, BLOCK_C)


_SOURCE_TABLES: OrderedDict = OrderedDict()


def _source_table(sources):
    """int64 [addresses..., numels...] of the sources on their device; the last few are kept
    (keyed by address and size), so repeated calls on the same tensors upload nothing."""
    dev = sources[0].device
    values = [s.data_ptr() for s in sources] + [s.numel() for s in sources]
    key = (dev, tuple(values))
    if key in _SOURCE_TABLES:
        _SOURCE_TABLES.move_to_end(key)
        return _SOURCE_TABLES[key]
    host = torch.tensor(values, dtype=torch.int64)
    table = host if dev.type == "cpu" else host.pin_memory().to(dev, non_blocking=True)
    _SOURCE_TABLES[key] = table
    if len(_SOURCE_TABLES) > 8:
        _SOURCE_TABLES.popitem(last=False)
    return table


def gather_run(sources, tasks, offsets, total, block=1024, block_r=4, block_c=256):
    """Launches the copy program (tasks, offsets on the sources' device); the flat output."""
    itype = _AS_INT[sources[0].element_size()]
    out = alloc.empty((total,), sources[0].dtype, sources[0].device)
    if total == 0 or tasks.shape[0] == 0:
        return out
    assert tasks.shape[1] == TASK
    # the address table holds plain pointers: contiguous tensors, read as same-width integers
    sources = [s.contiguous().view(itype) for s in sources]
    aligned = all(t.data_ptr() % 16 == 0 for t in sources + [out])
    _gather_kernel[(tasks.shape[0],)](
        _source_table(sources), len(sources), tasks, offsets, offsets.numel(), out.view(itype), total,
        ALIGNED=aligned, V=max(1, 16 // out.element_size()), BLOCK=block, BLOCK_R=block_r, BLOCK_C=block_c)
    return out


def gather_flat(sources, table, total, program=None):
    """gather_compact of an encoded table: runs its copy program (built here when none is
    given: pass `CompactTable.program(sources)` to reuse the cached one). The flat output."""
    if program is None:
        program = build_program(table.cpu(), [s.numel() for s in sources],
                                sources[0].element_size()).to(sources[0].device)
    return gather_run(sources, program.tasks, program.offsets, total)
