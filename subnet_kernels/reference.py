"""Pure-PyTorch definitions of every op: the specification, and the CPU fallback.

Each function here is what the fast backends (C++, CUDA, Triton) must reproduce. They are
written for clarity and autograd-correctness, not speed.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .plan import GatherPlan, normalize_plans

ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _upcast(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    # Half types are computed in fp32, as the kernels do, then cast back.
    return t.float() if t is not None and t.dtype in _LOW_PRECISION else t


def activation(z: torch.Tensor, act: str) -> torch.Tensor:
    """The activation `act` (one of ACTIVATIONS) applied elementwise to `z`."""
    if act == "gelu":
        return F.gelu(z)
    if act == "gelu_tanh":
        return F.gelu(z, approximate="tanh")
    if act == "relu":
        return F.relu(z)
    if act == "silu":
        return F.silu(z)
    raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")


def gated_act(x: torch.Tensor, bias: Optional[torch.Tensor], gate: torch.Tensor,
              act: str = "gelu") -> torch.Tensor:
    """y = gate * act(x + bias), units on the last dim of `x`.

    x: (..., N); bias: (N,) or None; gate: (N,). Returns a tensor shaped and typed like x.
    """
    z = _upcast(x)
    if bias is not None:
        z = z + _upcast(bias)
    return (_upcast(gate) * activation(z, act)).to(x.dtype)


def gated_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gate: torch.Tensor,
                    key_padding_mask: Optional[torch.Tensor] = None,
                    scale: Optional[float] = None) -> torch.Tensor:
    """Non-causal attention with a per-head output gate.

    q: (B, H, Tq, Dh); k, v: (B, H, Tk, Dh); gate: (H,) float; key_padding_mask: (B, Tk)
    bool, True = padding (ignored key). Returns gate[h] * softmax(q k^T * scale) v, shaped
    like q. A batch whose keys are all padding has no distribution to attend with: its
    output is defined as 0 (and its gradients are 0, never NaN).
    """
    dtype = q.dtype
    q, k, v, gate = _upcast(q), _upcast(k), _upcast(v), _upcast(gate)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    if key_padding_mask is not None:
        empty = key_padding_mask.all(dim=-1)  # (B,)
        # Fully padded batches keep finite scores (so no NaN anywhere) and are zeroed below.
        ignore = key_padding_mask & ~empty[:, None]
        scores = scores.masked_fill(ignore[:, None, None, :], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        probs = probs * (~empty).to(probs.dtype)[:, None, None, None]
    else:
        probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, v) * gate[None, :, None, None]
    return out.to(dtype)


def gather_compact(sources: Sequence[torch.Tensor], plans) -> list[torch.Tensor]:
    """Builds each pruned tensor described by `plans` from `sources` with index_select.

    plans: a sequence of GatherPlan (or (source_id, indices) pairs), see subnet_kernels.plan.
    Returns one new contiguous tensor per plan.
    """
    outs = []
    for plan in normalize_plans(sources, plans):
        t = sources[plan.source]
        for dim, idx in enumerate(plan.index):
            if idx is not None:
                t = t.index_select(dim, idx.to(device=t.device, dtype=torch.long))
        outs.append(t.contiguous())
    return outs


__all__ = ["ACTIVATIONS", "activation", "gated_act", "gated_attention", "gather_compact",
           "GatherPlan"]


# ---------------------------------------------------------------------------------------
# Backend entry points: the reference as one of the dispatchable backends. Forward and
# backward are split the way the kernels split them, so any backend's forward can be
# paired with any backend's backward.
# ---------------------------------------------------------------------------------------

def gated_act_fwd(x, bias, gate, act):
    return gated_act(x, bias, gate, act).contiguous()


def activation_grad(z: torch.Tensor, act: str) -> torch.Tensor:
    """d act(z) / dz, written out (custom-op backends run with autograd off)."""
    if act == "gelu":
        cdf = 0.5 * (1.0 + torch.erf(z * math.sqrt(0.5)))
        return cdf + z * torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    if act == "gelu_tanh":
        c = math.sqrt(2.0 / math.pi)
        t = torch.tanh(c * (z + 0.044715 * z ** 3))
        return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * z * z)
    if act == "relu":
        return (z > 0).to(z.dtype)
    if act == "silu":
        s = torch.sigmoid(z)
        return s * (1.0 + z * (1.0 - s))
    raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")


def gated_act_bwd(grad, x, bias, gate, act):
    """(dx, dbias, dgate); dbias is (N,) even without bias (the caller drops it)."""
    z = _upcast(x) if bias is None else _upcast(x) + _upcast(bias)
    g = _upcast(grad)
    rows = tuple(range(z.dim() - 1))
    dgate = (g * activation(z, act)).sum(rows)
    dz = g * _upcast(gate) * activation_grad(z, act)
    dbias = dz.sum(rows)
    bdtype = gate.dtype if bias is None else bias.dtype
    return dz.to(x.dtype).contiguous(), dbias.to(bdtype), dgate.to(gate.dtype)


def lse_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the saved row logsumexp for inputs of `dtype`."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def attention_parts(q, k, v, gate, key_padding_mask, scale):
    """(y, o, lse): gated output, ungated output O and the natural-log row logsumexp
    (+inf for rows without any valid key; float64 for float64 inputs, else float32), the
    layout every backend saves."""
    o = gated_attention(q, k, v, torch.ones_like(gate), key_padding_mask, scale)
    y = (_upcast(o) * _upcast(gate)[None, :, None, None]).to(q.dtype)
    scores = torch.matmul(_upcast(q), _upcast(k).transpose(-2, -1)).to(lse_dtype(q.dtype)) * scale
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    lse = torch.where(torch.isneginf(lse), torch.full_like(lse, float("inf")), lse)
    return y, o, lse


def gated_attention_fwd(q, k, v, gate, key_padding_mask, scale, dead_o=True):
    """(y, o, lse); every head is computed whatever `dead_o` says (kernels may skip the
    dead ones when dead_o is False)."""
    return attention_parts(q, k, v, gate, key_padding_mask, scale)


def gated_attention_bwd(grad, q, k, v, gate, key_padding_mask, o, lse, scale):
    """(dq, dk, dv, dgate), written out: P = softmax(S) (0 on rows without keys),
    dO = g dY, dgate_h = sum(dY_h O_h), dV = P^T dO, dS = P (dO V^T - rowsum(dO O)),
    dQ = dS K scale, dK = dS^T Q scale."""
    qf, kf, vf, gf, dy = (_upcast(t) for t in (q, k, v, gate, grad))
    of = _upcast(o)
    scores = torch.matmul(qf, kf.transpose(-2, -1)) * scale
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    # P from the saved logsumexp, as the kernels do; +inf (no valid key) gives P = 0.
    probs = torch.exp(scores - lse.to(scores.dtype)[..., None])
    do = dy * gf[None, :, None, None]
    dgate = (dy * of).sum(dim=(0, 2, 3))
    delta = (do * of).sum(-1, keepdim=True)
    dv = torch.matmul(probs.transpose(-2, -1), do)
    ds = probs * (torch.matmul(do, vf.transpose(-2, -1)) - delta)
    dq = torch.matmul(ds, kf) * scale
    dk = torch.matmul(ds.transpose(-2, -1), qf) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dgate.to(gate.dtype)


def gather_flat(sources, table, total, program=None):
    """The flat-table form of gather_compact: decodes the table with plain indexing (a copy
    program, for the GPU backends, is not needed)."""
    from .plan import flat_source, table_source_index
    if total == 0:
        return sources[0].new_empty(0)
    idx = table_source_index(table).to(sources[0].device)
    return flat_source([s.contiguous() for s in sources])[idx]
