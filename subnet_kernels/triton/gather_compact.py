"""gather_compact in Triton: every output of a plan table (subnet_kernels/plan.py) in one
launch. Grid = (programs per output, outputs); each program strides over its output's
elements, decodes their 4-D coordinates, maps kept indices through the table and copies.
Elements are moved as same-width integers, so any dtype works (bf16 in the interpreter too).
"""
import torch
import triton
import triton.language as tl

from .. import alloc
from ..plan import HEADER, RECORD, flat_source

_AS_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@triton.jit
def _coord(c, where, TABLE, mask):
    # Source coordinate of output coordinate c: through the kept indices, or c itself.
    return tl.where(where >= 0, tl.load(TABLE + where + c, mask=mask & (where >= 0), other=0), c)


@triton.jit
def _gather_kernel(SRC, OUT, TABLE, HEADER: tl.constexpr, RECORD: tl.constexpr,
                   BLOCK: tl.constexpr):
    rec = TABLE + HEADER + tl.program_id(1) * RECORD
    base = tl.load(rec + 1)
    out_off = tl.load(rec + 2)
    numel = tl.load(rec + 3)
    s1 = tl.load(rec + 5)
    s2 = tl.load(rec + 6)
    s3 = tl.load(rec + 7)
    for start in range(tl.program_id(0) * BLOCK, numel, tl.num_programs(0) * BLOCK):
        e = start + tl.arange(0, BLOCK).to(tl.int64)
        m = e < numel
        c3 = e % s3
        r = e // s3
        c2 = r % s2
        r = r // s2
        c1 = r % s1
        c0 = r // s1
        off = base + _coord(c0, tl.load(rec + 12), TABLE, m) * tl.load(rec + 8)
        off += _coord(c1, tl.load(rec + 13), TABLE, m) * tl.load(rec + 9)
        off += _coord(c2, tl.load(rec + 14), TABLE, m) * tl.load(rec + 10)
        off += _coord(c3, tl.load(rec + 15), TABLE, m) * tl.load(rec + 11)
        v = tl.load(SRC + off, mask=m, other=0)
        tl.store(OUT + out_off + e, v, mask=m)


def gather_flat(sources, table, total, block=1024, max_programs=None):
    """Launches the gather of an encoded table; returns the flat output buffer."""
    src = flat_source([s.contiguous() for s in sources])
    out = alloc.empty((total,), src.dtype, src.device)
    host = table.cpu()
    n_out = int(host[0])
    if total == 0 or n_out == 0:
        return out
    numels = host[HEADER + 3: HEADER + n_out * RECORD: RECORD]
    blocks = triton.cdiv(int(numels.max()), block)
    cap = max_programs or max(1, 8192 // n_out)
    itype = _AS_INT[src.element_size()]
    _gather_kernel[(min(blocks, cap), n_out)](
        src.view(itype), out.view(itype), table.to(src.device), HEADER=HEADER, RECORD=RECORD,
        BLOCK=block)
    return out
