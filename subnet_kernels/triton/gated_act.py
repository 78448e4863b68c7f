"""gated_act in Triton: y = g * act(x + b) over the last dim, and its fused backward.

The backward recomputes act(x + b) and writes dx; dgate and dbias are summed per program
over its rows into a (programs x N) partial buffer, then reduced with one torch sum, so the
result does not depend on scheduling (no float atomics).
"""
import torch
import triton
import triton.language as tl

from .. import alloc
from ..reference import ACTIVATIONS


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
def _fwd_kernel(X, B, G, Y, M, N, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    mask = (rows < M)[:, None] & col_ok[None, :]
    offs = rows[:, None].to(tl.int64) * N + cols[None, :]
    z = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        z += tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    g = tl.load(G + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = g[None, :] * _act(z, ACT)
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_kernel(DY, X, B, G, DX, PART_G, PART_B, M, N, ROWS_PER_PROG,
                HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    g = tl.load(G + cols, mask=col_ok, other=0.0).to(tl.float32)
    if HAS_BIAS:
        b = tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)
    acc_g = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_N], dtype=tl.float32)
    first = pid_m * ROWS_PER_PROG
    for r0 in range(0, ROWS_PER_PROG, BLOCK_M):
        rows = first + r0 + tl.arange(0, BLOCK_M)
        mask = (rows < M)[:, None] & col_ok[None, :]
        offs = rows[:, None].to(tl.int64) * N + cols[None, :]
        z = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            z += b[None, :]
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        a, da = _act_and_grad(z, ACT)
        dz = dy * g[None, :] * da
        tl.store(DX + offs, dz.to(DX.dtype.element_ty), mask=mask)
        acc_g += tl.sum(dy * a, axis=0)  # dy is 0 outside the tensor
        acc_b += tl.sum(dz, axis=0)
    tl.store(PART_G + pid_m * N + cols, acc_g, mask=col_ok)
    tl.store(PART_B + pid_m * N + cols, acc_b, mask=col_ok)


def _blocks(n):
    return min(128, triton.next_power_of_2(max(n, 16)))


def gated_act_fwd(x, bias, gate, act, block_m=16):
    """Launches the forward; x: (..., N) contiguous."""
    x = x.contiguous()
    n = x.shape[-1]
    m = x.numel() // max(n, 1)
    y = alloc.empty(x.shape, x.dtype, x.device)
    if x.numel() == 0:
        return y
    bn = _blocks(n)
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, bn))
    _fwd_kernel[grid](x, bias.contiguous() if bias is not None else gate, gate.contiguous(), y, m, n,
                      HAS_BIAS=bias is not None, ACT=ACTIVATIONS.index(act),
                      BLOCK_M=block_m, BLOCK_N=bn)
    return y


def gated_act_bwd(grad, x, bias, gate, act, block_m=16, row_programs=None):
    """Launches the backward: (dx, dbias, dgate); dbias is (N,) even without bias."""
    x, grad = x.contiguous(), grad.contiguous()
    n = x.shape[-1]
    m = x.numel() // max(n, 1)
    dx = alloc.empty(x.shape, x.dtype, x.device)
    bdtype = gate.dtype if bias is None else bias.dtype
    if x.numel() == 0:
        return dx, torch.zeros(n, dtype=bdtype, device=x.device), torch.zeros_like(gate)
    bn = _blocks(n)
    tiles = triton.cdiv(m, block_m)
    progs = row_programs or min(tiles, 64)
    rows_per_prog = triton.cdiv(tiles, progs) * block_m
    progs = triton.cdiv(m, rows_per_prog)
    part = alloc.empty((2, progs, n), torch.float32, x.device)
    _bwd_kernel[(progs, triton.cdiv(n, bn))](
        grad, x, bias.contiguous() if bias is not None else gate, gate.contiguous(), dx, part[0], part[1],
        m, n, rows_per_prog, HAS_BIAS=bias is not None, ACT=ACTIVATIONS.index(act),
        BLOCK_M=block_m, BLOCK_N=bn)
    # Separate sums: returning two views of one tensor would alias the custom op's outputs.
    return dx, part[1].sum(dim=0).to(bdtype), part[0].sum(dim=0).to(gate.dtype)
