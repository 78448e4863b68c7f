"""gated_attention in Triton, FlashAttention-2 style (non-causal, key padding, any T).

Forward: one program per (query block, batch*head); online softmax over key blocks, so no
T x T matrix is stored; writes O, y = g_h * O and the row logsumexp. Rows whose keys are all
padding get O = 0 and lse = +inf (which makes their recomputed probabilities 0).

Backward: a preprocessing pass computes delta = rowsum(dO * O) with dO = g_h * dY, and in
the same pass per-block partials of dgate_h = sum(dY_h * O_h), summed afterwards by torch
(deterministic, no float atomics). Then one kernel for dk/dv (program per key block) and one
for dq (program per query block), neither with atomics.

Dead heads (g_h = 0): the grid's head slots follow a device-side list with the live heads
first (no host sync), and a program whose head is dead writes zeros and exits at once: in the
backward always (dq/dk/dv of a dead head are exactly 0), in the forward when no gate gradient
is wanted (dgate_h = sum(dY_h * O_h) needs O_h, so a trained gate has its dead heads' O
computed). Block sizes, warps and stages are autotuned per head_dim class (<= 64, <= 128)
over short lists chosen for Hopper (tuning.py).
"""

import functools

import torch
import triton
import triton.language as tl

from .. import alloc
from .tuning import Tuned, config

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
def _head(ORDER, G, B):
    # Grid axis 1 = (head slot, batch), slot-major: all live heads' programs come first.
    slot = tl.program_id(1) // B
    b = tl.program_id(1) % B
    h = tl.load(ORDER + slot)
    return b, h, tl.load(G + h).to(tl.float32)


@triton.jit
def _fwd_kernel(Q, K, V, G, ORDER, KPM, Y, O, LSE,
                sqb, sqh, sqt, skb, skh, skt, svb, svh, svt,
                B, H, TQ, TK, D, qk_scale,
                HAS_MASK: tl.constexpr, IEEE: tl.constexpr, DEAD_O: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    b, h, g = _head(ORDER, G, B)
    bh = b * H + h
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q_mask = (offs_m < TQ)[:, None] & d_ok[None, :]
    out_offs = bh * TQ * D + offs_m[:, None] * D + offs_d[None, :]
    if not DEAD_O:
        if g == 0.0:  # dead head, no gate gradient wanted: y = 0, nothing to save
            zero = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
            tl.store(O + out_offs, zero.to(O.dtype.element_ty), mask=q_mask)
            tl.store(Y + out_offs, zero.to(Y.dtype.element_ty), mask=q_mask)
            tl.store(LSE + bh * TQ + offs_m, tl.full([BLOCK_M], float("inf"), tl.float32), mask=offs_m < TQ)
            return
    offs_n = tl.arange(0, BLOCK_N)
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
def _bwd_dkdv_kernel(Q, K, V, G, ORDER, KPM, DY, LSE, DELTA, DK, DV,
                     sqb, sqh, sqt, skb, skh, skt, svb, svh, svt,
                     B, H, TQ, TK, D, qk_scale, scale,
                     HAS_MASK: tl.constexpr, IEEE: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_n = tl.program_id(0)
    b, h, g = _head(ORDER, G, B)
    bh = b * H + h
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    kv_mask = (offs_n < TK)[:, None] & d_ok[None, :]
    out_offs = bh * TK * D + offs_n[:, None] * D + offs_d[None, :]
    if g == 0.0:  # dead head: dk = dv = 0
        zero = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        tl.store(DK + out_offs, zero.to(DK.dtype.element_ty), mask=kv_mask)
        tl.store(DV + out_offs, zero.to(DV.dtype.element_ty), mask=kv_mask)
        return
    offs_m = tl.arange(0, BLOCK_M)
    k = tl.load(K + b * skb + h * skh + offs_n[:, None] * skt + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + b * svb + h * svh + offs_n[:, None] * svt + offs_d[None, :], mask=kv_mask, other=0.0)
    valid = _key_valid(KPM, b, offs_n, TK, HAS_MASK)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    q_base = Q + b * sqb + h * sqh
    for start_m in range(0, TQ, BLOCK_M):
        m = start_m + offs_m
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
    tl.store(DK + out_offs, (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + out_offs, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _bwd_dq_kernel(Q, K, V, G, ORDER, KPM, DY, LSE, DELTA, DQ,
                   sqb, sqh, sqt, skb, skh, skt, svb, svh, svt,
                   B, H, TQ, TK, D, qk_scale, scale,
                   HAS_MASK: tl.constexpr, IEEE: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    b, h, g = _head(ORDER, G, B)
    bh = b * H + h
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q_mask = (offs_m < TQ)[:, None] & d_ok[None, :]
    out_offs = bh * TQ * D + offs_m[:, None] * D + offs_d[None, :]
    if g == 0.0:  # dead head: dq = 0
        tl.store(DQ + out_offs, tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32).to(DQ.dtype.element_ty),
                 mask=q_mask)
        return
    offs_n = tl.arange(0, BLOCK_N)
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], mask=q_mask, other=0.0)
    do = tl.load(DY + out_offs, mask=q_mask, other=0.0)
    do = (do.to(tl.float32) * g).to(q.dtype)
    lse2 = tl.load(LSE + bh * TQ + offs_m, mask=offs_m < TQ, other=float("inf")) * 1.4426950408889634
    delta = tl.load(DELTA + bh * TQ + offs_m, mask=offs_m < TQ, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    for start_n in range(0, TK, BLOCK_N):
        n = start_n + offs_n
        kv_mask = (n < TK)[:, None] & d_ok[None, :]
        k = tl.load(k_base + n[:, None] * skt + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + n[:, None] * svt + offs_d[None, :], mask=kv_mask, other=0.0)
        s = _dot(q, tl.trans(k), IEEE).to(tl.float32) * qk_scale
        s = tl.where(_key_valid(KPM, b, n, TK, HAS_MASK)[None, :], s, float("-inf"))
        p = tl.exp2(s - lse2[:, None])
        dp = _dot(do, tl.trans(v), IEEE).to(tl.float32)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, IEEE).to(tl.float32)
    tl.store(DQ + out_offs, (dq * scale).to(DQ.dtype.element_ty), mask=q_mask)


# Configurations per (kernel, head_dim class, 16-bit or fp32), the first the default. 16-bit:
# FlashAttention-2 shapes for Hopper (128 query rows a forward program; the backward's
# loop-invariant side 128 wide, the streamed side 32-64); every one compiles for sm_90
# within the register file (tests/kernels/test_kernel_compile.py). Forward: BLOCK_M queries a
# program, BLOCK_N keys a step; dk/dv: BLOCK_N keys a program, BLOCK_M queries a step; dq:
# BLOCK_M queries a program, BLOCK_N keys a step.
_CONFIGS = {
    ("fwd", 64, True): [config(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=3),
                        config(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3),
                        config(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=4),
                        config(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=4)],
    ("fwd", 128, True): [config(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3),
                         config(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3)],
    ("dkdv", 64, True): [config(BLOCK_N=128, BLOCK_M=32, num_warps=4, num_stages=3),
                         config(BLOCK_N=128, BLOCK_M=64, num_warps=8, num_stages=3),
                         config(BLOCK_N=64, BLOCK_M=64, num_warps=4, num_stages=3),
                         config(BLOCK_N=64, BLOCK_M=32, num_warps=4, num_stages=2)],
    ("dkdv", 128, True): [config(BLOCK_N=128, BLOCK_M=32, num_warps=8, num_stages=2),
                          config(BLOCK_N=64, BLOCK_M=32, num_warps=4, num_stages=3),
                          config(BLOCK_N=64, BLOCK_M=64, num_warps=8, num_stages=2)],
    ("dq", 64, True): [config(BLOCK_M=128, BLOCK_N=32, num_warps=4, num_stages=3),
                       config(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3),
                       config(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3),
                       config(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2)],
    ("dq", 128, True): [config(BLOCK_M=128, BLOCK_N=32, num_warps=8, num_stages=2),
                        config(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=3),
                        config(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2)],
}
# fp32: the configurations that compile for sm_90 without register spills.
_CONFIGS.update({
    ("fwd", 64, False): [config(BLOCK_M=64, BLOCK_N=32, num_warps=8, num_stages=2)],
    ("fwd", 128, False): [config(BLOCK_M=64, BLOCK_N=32, num_warps=8, num_stages=2)],
    ("dkdv", 64, False): [config(BLOCK_N=32, BLOCK_M=32, num_warps=8, num_stages=2),
                          config(BLOCK_N=32, BLOCK_M=16, num_warps=4, num_stages=2)],
    ("dkdv", 128, False): [config(BLOCK_N=32, BLOCK_M=16, num_warps=4, num_stages=2)],
    ("dq", 64, False): [config(BLOCK_M=64, BLOCK_N=32, num_warps=8, num_stages=2),
                        config(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=2)],
    ("dq", 128, False): [config(BLOCK_M=64, BLOCK_N=32, num_warps=8, num_stages=2),
                         config(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=2)],
})
_KERNELS = {"fwd": _fwd_kernel, "dkdv": _bwd_dkdv_kernel, "dq": _bwd_dq_kernel}
_PRE_BLOCK = 64  # query rows a program of the delta pass


@functools.lru_cache(maxsize=None)
def tuned(kernel: str, block_d: int, half: bool) -> Tuned:
    """The autotuned launcher of `kernel` ("fwd", "dkdv", "dq") for a head_dim class."""
    return Tuned(_KERNELS[kernel], _CONFIGS[(kernel, 64 if block_d <= 64 else 128, half)],
                 key=["TQ", "TK"], interpreter=config(BLOCK_M=64, BLOCK_N=64))


def _prep(q, k, v, key_padding_mask):
    # Only the last dim must be unit-stride; the other strides go to the kernels.
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    kpm = None if key_padding_mask is None else key_padding_mask.contiguous().view(torch.uint8)
    return q, k, v, kpm


def _strides(q, k, v):
    return (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2))


def live_first(gate):
    """Head indices with the live heads (gate != 0) first, int32, on the gate's device."""
    return torch.argsort((gate == 0).to(torch.int8), stable=True).to(torch.int32)


def _classes(q):
    block_d = max(16, triton.next_power_of_2(q.shape[-1]))
    return block_d, q.dtype != torch.float32


def gated_attention_fwd(q, k, v, gate, key_padding_mask, scale, dead_o=True, config=None):
    """Launches the forward: (y, o, lse) with o/y (B,H,Tq,D) contiguous, lse (B,H,Tq) fp32.
    dead_o=False: dead heads are skipped (o = 0, lse = +inf), for when no gate gradient is
    wanted. `config` fixes BLOCK_M/BLOCK_N/warps/stages (else autotuned)."""
    q, k, v, kpm = _prep(q, k, v, key_padding_mask)
    bsz, heads, tq, d = q.shape
    tk = k.shape[2]
    block_d, half = _classes(q)
    gate = gate.contiguous()
    y = alloc.empty(q.shape, q.dtype, q.device)
    o = alloc.empty(q.shape, q.dtype, q.device)
    lse = alloc.empty((bsz, heads, tq), torch.float32, q.device)
    if q.numel() == 0:
        return y, o, lse
    tuned("fwd", block_d, half).launch(
        lambda meta: (triton.cdiv(tq, meta["BLOCK_M"]), bsz * heads),
        q, k, v, gate, live_first(gate), kpm if kpm is not None else q, y, o, lse,
        *_strides(q, k, v), bsz, heads, tq, tk, d, scale * LOG2E,
        HAS_MASK=kpm is not None, IEEE=not half, DEAD_O=dead_o, BLOCK_D=block_d, config=config)
    return y, o, lse


def gated_attention_bwd(grad, q, k, v, gate, key_padding_mask, o, lse, scale, configs=None):
    """Launches the backward: (dq, dk, dv, dgate). `configs`: {"dkdv": cfg, "dq": cfg} fixes
    those kernels' configurations (else autotuned)."""
    q, k, v, kpm = _prep(q, k, v, key_padding_mask)
    grad, o, lse, gate = grad.contiguous(), o.contiguous(), lse.contiguous(), gate.contiguous()
    bsz, heads, tq, d = q.shape
    tk = k.shape[2]
    block_d, half = _classes(q)
    configs = configs or {}
    dq = alloc.empty(q.shape, q.dtype, q.device)
    dk = alloc.empty((bsz, heads, tk, d), k.dtype, k.device)
    dv = alloc.empty((bsz, heads, tk, d), v.dtype, v.device)
    if q.numel() == 0 or k.numel() == 0:
        return tuple(torch.zeros_like(t) for t in (q, k, v, gate))
    m_blocks = triton.cdiv(tq, _PRE_BLOCK)
    delta = alloc.empty((bsz, heads, tq), torch.float32, q.device)
    dgate_part = alloc.empty((bsz, heads, m_blocks), torch.float32, q.device)
    _bwd_pre_kernel[(m_blocks, bsz * heads)](o, grad, gate, delta, dgate_part, heads, tq, d,
                                             BLOCK_M=_PRE_BLOCK, BLOCK_D=block_d)
    order = live_first(gate)
    args = (*_strides(q, k, v), bsz, heads, tq, tk, d, scale * LOG2E, scale)
    common = dict(HAS_MASK=kpm is not None, IEEE=not half, BLOCK_D=block_d)
    mask_arg = kpm if kpm is not None else q
    tuned("dkdv", block_d, half).launch(
        lambda meta: (triton.cdiv(tk, meta["BLOCK_N"]), bsz * heads),
        q, k, v, gate, order, mask_arg, grad, lse, delta, dk, dv, *args, **common,
        config=configs.get("dkdv"))
    tuned("dq", block_d, half).launch(
        lambda meta: (triton.cdiv(tq, meta["BLOCK_M"]), bsz * heads),
        q, k, v, gate, order, mask_arg, grad, lse, delta, dq, *args, **common,
        config=configs.get("dq"))
    dgate = dgate_part.sum(dim=(0, 2)).to(gate.dtype)
    return dq, dk, dv, dgate
