"""gated_act in Triton: y = g * act(x + b) over the last dim, and its fused backward.

Forward: (BLOCK_M x BLOCK_N) tiles, one read of x and one write of y. Backward: a program per
(row chunk, unit block) walks its chunk BLOCK_M rows at a time, recomputes act(x + b) from x
(nothing extra is saved), writes dx and sums dgate/dbias over its rows into a (chunk, N)
partial; a second small kernel adds the chunks in a fixed order, so the result does not
depend on scheduling (no float atomics). Offsets are 32-bit below 2^31 elements.
"""
import functools

import torch
import triton
import triton.language as tl

from .. import alloc
from ..reference import ACTIVATIONS
from .tuning import Tuned, config


@triton.jit
def _tanh(u):
    # tanh without libdevice (unavailable in the interpreter); saturates correctly at +-inf.
    return 1.0 - 2.0 / (tl.exp(2.0 * u) + 1.0)


@triton.jit
def _act(z, ACT: tl.constexpr):
    if ACT == 0:
        a = 0.5 * z * (1.0 + tl.erf(z * 0.7071067811865476))
    elif ACT == 1:
        a = 0.5 * z * (1.0 + _tanh(0.7978845608028654 * (z + 0.044715 * z * z * z)))
    elif ACT == 2:
        a = tl.maximum(z, 0.0)
    else:
        a = z * tl.sigmoid(z)
    return a


@triton.jit
def _act_and_grad(z, ACT: tl.constexpr):
    if ACT == 0:
        cdf = 0.5 * (1.0 + tl.erf(z * 0.7071067811865476))
        a = z * cdf
        da = cdf + z * tl.exp(-0.5 * z * z) * 0.3989422804014327
    elif ACT == 1:
        t = _tanh(0.7978845608028654 * (z + 0.044715 * z * z * z))
        a = 0.5 * z * (1.0 + t)
        da = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * z * z)
    elif ACT == 2:
        a = tl.maximum(z, 0.0)
        da = tl.where(z > 0.0, 1.0, 0.0)
    else:
        s = tl.sigmoid(z)
        a = z * s
        da = s * (1.0 + z * (1.0 - s))
    return a, da


@triton.jit
def _offsets(rows, cols, N, I64: tl.constexpr):
    if I64:
        rows = rows.to(tl.int64)
    return rows[:, None] * N + cols[None, :]


@triton.jit
def _fwd_kernel(X, B, G, Y, M, N, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, I64: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    mask = (rows < M)[:, None] & col_ok[None, :]
    offs = _offsets(rows, cols, N, I64)
    z = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        z += tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    g = tl.load(G + cols, mask=col_ok, other=0.0).to(tl.float32)
    tl.store(Y + offs, (g[None, :] * _act(z, ACT)).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_kernel(DY, X, B, G, DX, PART, M, N, ROWS_PER_CHUNK, HAS_BIAS: tl.constexpr,
                ACT: tl.constexpr, I64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    chunk = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    g = tl.load(G + cols, mask=col_ok, other=0.0).to(tl.float32)
    b = tl.zeros([BLOCK_N], dtype=tl.float32)
    if HAS_BIAS:
        b = tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)
    acc_g = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_N], dtype=tl.float32)
    first = chunk * ROWS_PER_CHUNK
    last = tl.minimum(first + ROWS_PER_CHUNK, M)
    for r0 in range(first, last, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)
        mask = (rows < last)[:, None] & col_ok[None, :]
        offs = _offsets(rows, cols, N, I64)
        z = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32) + b[None, :]
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        a, da = _act_and_grad(z, ACT)
        dz = dy * g[None, :] * da
        tl.store(DX + offs, dz.to(DX.dtype.element_ty), mask=mask)
        acc_g += tl.sum(dy * a, axis=0)  # dy is 0 outside the tensor
        acc_b += tl.sum(dz, axis=0)
    chunks = tl.num_programs(0)
    tl.store(PART + chunk * N + cols, acc_g, mask=col_ok)
    tl.store(PART + (chunks + chunk) * N + cols, acc_b, mask=col_ok)


@triton.jit
def _sum_chunks_kernel(PART, DG, DB, CHUNKS, N, BLOCK: tl.constexpr):
    # The second pass: dgate/dbias = the chunks' partials added in chunk order.
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < N
    acc_g = tl.zeros([BLOCK], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK], dtype=tl.float32)
    for c in range(0, CHUNKS):
        acc_g += tl.load(PART + c * N + cols, mask=ok, other=0.0)
        acc_b += tl.load(PART + (CHUNKS + c) * N + cols, mask=ok, other=0.0)
    tl.store(DG + cols, acc_g.to(DG.dtype.element_ty), mask=ok)
    tl.store(DB + cols, acc_b.to(DB.dtype.element_ty), mask=ok)


# Hopper: 16-byte accesses need N % 16 == 0 (Triton specialises on it); 4-16K elements a program.
FWD = Tuned(_fwd_kernel, [config(BLOCK_M=4, BLOCK_N=1024), config(BLOCK_M=8, BLOCK_N=512),
                          config(BLOCK_M=16, BLOCK_N=256), config(BLOCK_M=8, BLOCK_N=1024, num_warps=8)],
            key=["M", "N"], interpreter=config(BLOCK_M=16, BLOCK_N=64))
BWD = Tuned(_bwd_kernel, [config(BLOCK_M=8, BLOCK_N=256), config(BLOCK_M=16, BLOCK_N=128),
                          config(BLOCK_M=4, BLOCK_N=512), config(BLOCK_M=8, BLOCK_N=512, num_warps=8)],
            key=["M", "N"], interpreter=config(BLOCK_M=16, BLOCK_N=64))


@functools.lru_cache(maxsize=None)
def _multiprocessors(device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


def _rows_units(x):
    n = x.shape[-1]
    return x.numel() // max(n, 1), n


def gated_act_fwd(x, bias, gate, act, config=None):
    """Launches the forward; x: (..., N). `config` fixes the tile (else autotuned)."""
    x = x.contiguous()
    m, n = _rows_units(x)
    y = alloc.empty(x.shape, x.dtype, x.device)
    if x.numel() == 0:
        return y
    FWD.launch(lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"])),
               x, bias.contiguous() if bias is not None else gate, gate.contiguous(), y, m, n,
               HAS_BIAS=bias is not None, ACT=ACTIVATIONS.index(act), I64=x.numel() >= 2**31,
               config=config)
    return y


def gated_act_bwd(grad, x, bias, gate, act, config=None, chunks=None):
    """Launches the backward: (dx, dbias, dgate); dbias is (N,) even without bias. `chunks`
    fixes the number of row chunks (default: ~8 programs per SM at 128 units a program)."""
    x, grad = x.contiguous(), grad.contiguous()
    m, n = _rows_units(x)
    dx = alloc.empty(x.shape, x.dtype, x.device)
    bdtype = gate.dtype if bias is None else bias.dtype
    if x.numel() == 0:
        return dx, torch.zeros(n, dtype=bdtype, device=x.device), torch.zeros_like(gate)
    if chunks is None:
        chunks = min(triton.cdiv(m, 32), max(1, 8 * _multiprocessors(x.device) * 128 // n))
    rows_per_chunk = triton.cdiv(m, chunks)
    chunks = triton.cdiv(m, rows_per_chunk)
    part = alloc.empty((2, chunks, n), torch.float32, x.device)
    BWD.launch(lambda meta: (chunks, triton.cdiv(n, meta["BLOCK_N"])),
               grad, x, bias.contiguous() if bias is not None else gate, gate.contiguous(), dx, part,
               m, n, rows_per_chunk, HAS_BIAS=bias is not None, ACT=ACTIVATIONS.index(act),
               I64=x.numel() >= 2**31, config=config)
    dg = alloc.empty((n,), gate.dtype, x.device)
    db = alloc.empty((n,), bdtype, x.device)
    _sum_chunks_kernel[(triton.cdiv(n, 256),)](part, dg, db, chunks, n, BLOCK=256)
    return dx, db, dg
