"""gated_attention in Triton, FlashAttention-2 style (non-causal, key padding, any T).

Forward: one program per (query block, batch*head); online softmax over key blocks, so no
T x T matrix is stored; writes O, y = g_h * O and the row logsumexp. Rows whose keys are all
padding get O = 0 and lse = +inf (which makes their recomputed probabilities 0).

Backward: a preprocessing pass computes delta = rowsum(dO * O) with dO = g_h * dY, and in
the same pass per-block partials of dgate_h = sum(dY_h * O_h), summed afterwards by torch
(deterministic, no float atomics). Then one kernel for dk/dv (program per key block) and one
for dq (program per query block), neither with atomics. Heads with g_h = 0 run zero loop
iterations: their dq/dk/dv are exactly 0.
"""

import torch
import triton
import triton.language as tl

from .. import alloc

LOG2E = 1.4426950408889634


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    # fp32 inputs: full-precision products (tf32 would miss the 1e-4 tolerance).
    if IEEE:
        r = tl.dot(a, b, input_precision="ieee")
    else:
        r = tl.dot(a, b)
    return r


@triton.jit
def _key_valid(KPM, b, n, TK, HAS_MASK: tl.constexpr):
    valid = n < TK
    if HAS_MASK:
        pad = tl.load(KPM + b * TK + n, mask=n < TK, other=1)
        valid = valid & (pad == 0)
    return valid


@triton.jit
def _fwd_kernel(Q, K, V, G, KPM, Y, O, LSE,
                sqb, sqh, sqt, skb, skh, skt, svb, svh, svt,
                H, TQ, TK, D, qk_scale,
                HAS_MASK: tl.constexpr, IEEE: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q_mask = (offs_m < TQ)[:, None] & d_ok[None, :]
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :],
                mask=q_mask, other=0.0)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, TK, BLOCK_N):
        n = start_n + offs_n
        kv_mask = (n < TK)[:, None] & d_ok[None, :]
        k = tl.load(k_base + n[:, None] * skt + offs_d[None, :], mask=kv_mask, other=0.0)
        s = _dot(q, tl.trans(k), IEEE).to(tl.float32) * qk_scale  # log2 units
        valid = _key_valid(KPM, b, n, TK, HAS_MASK)
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # A row with no valid key so far keeps m = -inf; shift by 0 there to avoid inf - inf.
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + n[:, None] * svt + offs_d[None, :], mask=kv_mask, other=0.0)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, IEEE).to(tl.float32)
        m_i = m_new
    has_keys = l_i > 0.0
    o = acc / tl.where(has_keys, l_i, 1.0)[:, None]
    lse = tl.where(has_keys, (m_i + tl.log2(tl.where(has_keys, l_i, 1.0))) / 1.4426950408889634,
                   float("inf"))
    g = tl.load(G + h).to(tl.float32)
    out_offs = bh * TQ * D + offs_m[:, None] * D + offs_d[None, :]
    tl.store(O + out_offs, o.to(O.dtype.element_ty), mask=q_mask)
    tl.store(Y + out_offs, (g * o).to(Y.dtype.element_ty), mask=q_mask)
    tl.store(LSE + bh * TQ + offs_m, lse, mask=offs_m < TQ)


@triton.jit
def _bwd_pre_kernel(O, DY, G, DELTA, DGATE_PART, H, TQ, D,
                    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m < TQ)[:, None] & (offs_d < D)[None, :]
    offs = bh * TQ * D + offs_m[:, None] * D + offs_d[None, :]
    o = tl.load(O + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
    r = tl.sum(dy * o, axis=1)  # rowsum(dY * O)
    g = tl.load(G + bh % H).to(tl.float32)
    tl.store(DELTA + bh * TQ + offs_m, g * r, mask=offs_m < TQ)  # rowsum(dO * O)
    tl.store(DGATE_PART + bh * tl.num_programs(0) + pid_m, tl.sum(r, axis=0))


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, G, KPM, DY, LSE, DELTA, DK, DV,
                     sqb, sqh, sqt, skb, skh, skt, svb, svh, svt,
                     H, TQ, TK, D, qk_scale, scale,
                     HAS_MASK: tl.constexpr, IEEE: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    kv_mask = (offs_n < TK)[:, None] & d_ok[None, :]
    k = tl.load(K + b * skb + h * skh + offs_n[:, None] * skt + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + b * svb + h * svh + offs_n[:, None] * svt + offs_d[None, :], mask=kv_mask, other=0.0)
    valid = _key_valid(KPM, b, offs_n, TK, HAS_MASK)
    g = tl.load(G + h).to(tl.float32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    # A dead head (g = 0) runs no iterations: dk = dv = 0 exactly.
    n_iter = tl.cdiv(TQ, BLOCK_M) * (g != 0.0).to(tl.int32)
    q_base = Q + b * sqb + h * sqh
    for i in range(0, n_iter):
        m = i * BLOCK_M + offs_m
        q_mask = (m < TQ)[:, None] & d_ok[None, :]
        q = tl.load(q_base + m[:, None] * sqt + offs_d[None, :], mask=q_mask, other=0.0)
        do = tl.load(DY + bh * TQ * D + m[:, None] * D + offs_d[None, :], mask=q_mask, other=0.0)
        do = (do.to(tl.float32) * g).to(q.dtype)
        lse2 = tl.load(LSE + bh * TQ + m, mask=m < TQ, other=float("inf")) * 1.4426950408889634
        delta = tl.load(DELTA + bh * TQ + m, mask=m < TQ, other=0.0)
        # Transposed scores (keys x queries): no transposes of p or ds needed below.
        st = _dot(k, tl.trans(q), IEEE).to(tl.float32) * qk_scale
        st = tl.where(valid[:, None], st, float("-inf"))
        pt = tl.exp2(st - lse2[None, :])
        dv += _dot(pt.to(do.dtype), do, IEEE).to(tl.float32)
        dpt = _dot(v, tl.trans(do), IEEE).to(tl.float32)
        dst = pt * (dpt - delta[None, :])
        dk += _dot(dst.to(q.dtype), q, IEEE).to(tl.float32)
    out_offs = bh * TK * D + offs_n[:, None] * D + offs_d[None, :]
    tl.store(DK + out_offs, (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + out_offs, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _bwd_dq_kernel(Q, K, V, G, KPM, DY, LSE, DELTA, DQ,
                   sqb, sqh, sqt, skb, skh, skt, svb, svh, svt,
                   H, TQ, TK, D, qk_scale, scale,
                   HAS_MASK: tl.constexpr, IEEE: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q_mask = (offs_m < TQ)[:, None] & d_ok[None, :]
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], mask=q_mask, other=0.0)
    g = tl.load(G + h).to(tl.float32)
    do = tl.load(DY + bh * TQ * D + offs_m[:, None] * D + offs_d[None, :], mask=q_mask, other=0.0)
    do = (do.to(tl.float32) * g).to(q.dtype)
    lse2 = tl.load(LSE + bh * TQ + offs_m, mask=offs_m < TQ, other=float("inf")) * 1.4426950408889634
    delta = tl.load(DELTA + bh * TQ + offs_m, mask=offs_m < TQ, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    n_iter = tl.cdiv(TK, BLOCK_N) * (g != 0.0).to(tl.int32)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    for j in range(0, n_iter):
        n = j * BLOCK_N + offs_n
        kv_mask = (n < TK)[:, None] & d_ok[None, :]
        k = tl.load(k_base + n[:, None] * skt + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + n[:, None] * svt + offs_d[None, :], mask=kv_mask, other=0.0)
        s = _dot(q, tl.trans(k), IEEE).to(tl.float32) * qk_scale
        s = tl.where(_key_valid(KPM, b, n, TK, HAS_MASK)[None, :], s, float("-inf"))
        p = tl.exp2(s - lse2[:, None])
        dp = _dot(do, tl.trans(v), IEEE).to(tl.float32)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, IEEE).to(tl.float32)
    tl.store(DQ + bh * TQ * D + offs_m[:, None] * D + offs_d[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=q_mask)


def _config(d, dtype, interpreted):
    """(block, block_d, forward block_m, num_warps). 64-wide tiles everywhere; on the GPU the
    forward of 16-bit inputs with head_dim <= 64 takes 128 query rows per program (the usual
    FlashAttention-2 shape). fp32 with head_dim > 64 halves the tiles to fit shared memory.
    Not tuned on hardware yet: benchmarks/bench_kernels.py on a GPU is the place to do so."""
    block_d = max(16, triton.next_power_of_2(d))
    block = 64 if (block_d <= 64 or dtype != torch.float32) else 32
    wide = not interpreted and dtype != torch.float32 and block_d <= 64
    return block, block_d, (128 if wide else block), (8 if wide else 4)


def _prep(q, k, v, key_padding_mask):
    # Only the last dim must be unit-stride; the other strides go to the kernels.
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    kpm = None if key_padding_mask is None else key_padding_mask.contiguous().view(torch.uint8)
    return q, k, v, kpm


def _strides(q, k, v):
    return (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2))


def gated_attention_fwd(q, k, v, gate, key_padding_mask, scale, block_m=None, block_n=None):
    """Launches the forward: (y, o, lse) with o/y (B,H,Tq,D) contiguous, lse (B,H,Tq) fp32."""
    q, k, v, kpm = _prep(q, k, v, key_padding_mask)
    bsz, heads, tq, d = q.shape
    tk = k.shape[2]
    block, block_d, fwd_m, warps = _config(d, q.dtype, q.device.type == "cpu")
    bm, bn = block_m or fwd_m, block_n or block
    y = alloc.empty(q.shape, q.dtype, q.device)
    o = alloc.empty(q.shape, q.dtype, q.device)
    lse = alloc.empty((bsz, heads, tq), torch.float32, q.device)
    if q.numel() == 0:
        return y, o, lse
    grid = (triton.cdiv(tq, bm), bsz * heads)
    _fwd_kernel[grid](q, k, v, gate.contiguous(), kpm if kpm is not None else q, y, o, lse,
                      *_strides(q, k, v), heads, tq, tk, d, scale * LOG2E,
                      HAS_MASK=kpm is not None, IEEE=q.dtype == torch.float32,
                      BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=block_d, num_warps=warps)
    return y, o, lse


def gated_attention_bwd(grad, q, k, v, gate, key_padding_mask, o, lse, scale,
                        block_m=None, block_n=None):
    """Launches the backward: (dq, dk, dv, dgate)."""
    q, k, v, kpm = _prep(q, k, v, key_padding_mask)
    grad, o, lse, gate = grad.contiguous(), o.contiguous(), lse.contiguous(), gate.contiguous()
    bsz, heads, tq, d = q.shape
    tk = k.shape[2]
    block, block_d, _, _ = _config(d, q.dtype, q.device.type == "cpu")
    bm, bn = block_m or block, block_n or block
    dq = alloc.empty(q.shape, q.dtype, q.device)
    dk = alloc.empty((bsz, heads, tk, d), k.dtype, k.device)
    dv = alloc.empty((bsz, heads, tk, d), v.dtype, v.device)
    m_blocks = triton.cdiv(tq, bm)
    delta = alloc.empty((bsz, heads, tq), torch.float32, q.device)
    dgate_part = alloc.empty((bsz, heads, m_blocks), torch.float32, q.device)
    if q.numel() == 0 or k.numel() == 0:
        z = [torch.zeros_like(t) for t in (q, k, v, gate)]
        return tuple(z)
    _bwd_pre_kernel[(m_blocks, bsz * heads)](o, grad, gate, delta, dgate_part, heads, tq, d,
                                             BLOCK_M=bm, BLOCK_D=block_d)
    common = dict(HAS_MASK=kpm is not None, IEEE=q.dtype == torch.float32,
                  BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=block_d)
    args = (*_strides(q, k, v), heads, tq, tk, d, scale * LOG2E, scale)
    mask_arg = kpm if kpm is not None else q
    _bwd_dkdv_kernel[(triton.cdiv(tk, bn), bsz * heads)](
        q, k, v, gate, mask_arg, grad, lse, delta, dk, dv, *args, **common)
    _bwd_dq_kernel[(m_blocks, bsz * heads)](
        q, k, v, gate, mask_arg, grad, lse, delta, dq, *args, **common)
    dgate = dgate_part.sum(dim=(0, 2)).to(gate.dtype)
    return dq, dk, dv, dgate
