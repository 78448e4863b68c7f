"""torch.library custom ops with fake (meta) kernels and autograd, over the dispatched
backends, and the public functions. Being custom ops, they are opaque to
torch.compile(fullgraph=True): the traced graph calls them as single nodes. The public
functions choose the backend (dispatch.select: measured on CUDA) and pass it to the op; the
`torch` backend (PyTorch's own ops) runs outside the custom ops, with PyTorch's autograd."""
from __future__ import annotations

import importlib
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import dispatch, plan as _plan
from .reference import ACTIVATIONS, activation, lse_dtype

# Inside the custom ops, `torch` (reached only by calling an op directly) is the reference.
_MODULES = {"reference": "subnet_kernels.reference", "cpp": "subnet_kernels.extension",
            "cuda": "subnet_kernels.extension", "triton": "subnet_kernels.triton",
            "torch": "subnet_kernels.reference"}


def _backend(op: str, backend: str, *inputs):
    return importlib.import_module(_MODULES[backend or dispatch.choose(op, *inputs)])


def _select(op: str, *inputs, **mode) -> str:
    # While torch.compile traces, the custom op chooses when it runs (dispatch.choose: the
    # forced or first usable backend); measuring needs real tensors.
    if torch.compiler.is_compiling():
        return ""
    return dispatch.select(op, *inputs, **mode).backend


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# --- gated_act --------------------------------------------------------------------------

# `backend`: the backend to run ("" = dispatch.choose: forced or first usable).
@torch.library.custom_op("subnet_kernels::gated_act", mutates_args=())
def _gated_act(x: Tensor, bias: Optional[Tensor], gate: Tensor, act: str, backend: str = "") -> Tensor:
    return _backend("gated_act", backend, x, bias, gate).gated_act_fwd(x, bias, gate, act)


@_gated_act.register_fake
def _(x, bias, gate, act, backend=""):
    return x.new_empty(x.shape)


@torch.library.custom_op("subnet_kernels::gated_act_backward", mutates_args=())
def _gated_act_backward(grad: Tensor, x: Tensor, bias: Optional[Tensor], gate: Tensor,
                        act: str, backend: str = "") -> tuple[Tensor, Tensor, Tensor]:
    dx, db, dg = _backend("gated_act", backend, x, bias, gate).gated_act_bwd(
        grad.contiguous(), x, bias, gate, act)
    return dx, db, dg


@_gated_act_backward.register_fake
def _(grad, x, bias, gate, act, backend=""):
    n = x.shape[-1]
    db = (gate if bias is None else bias).new_empty(n)
    return x.new_empty(x.shape), db, gate.new_empty(n)


def _gated_act_setup(ctx, inputs, output):
    x, bias, gate, act, backend = inputs
    ctx.save_for_backward(x, bias, gate)
    ctx.act, ctx.backend = act, backend
    ctx.has_bias = bias is not None


def _gated_act_grad(ctx, grad):
    x, bias, gate = ctx.saved_tensors
    dx, db, dg = torch.ops.subnet_kernels.gated_act_backward(grad, x, bias, gate, ctx.act, ctx.backend)
    return dx, (db if ctx.has_bias else None), dg, None, None


_gated_act.register_autograd(_gated_act_grad, setup_context=_gated_act_setup)


def run_gated_act(backend: str, x: Tensor, bias: Optional[Tensor], gate: Tensor, act: str) -> Tensor:
    """gated_act on a given backend (no checks): `torch` is PyTorch's own ops in x's dtype,
    with PyTorch's autograd; the others run the custom op."""
    if backend == "torch":
        z = x if bias is None else x + bias.to(x.dtype)
        return activation(z, act) * gate.to(x.dtype)
    return _gated_act(x.contiguous(), bias, gate, act, backend)


def gated_act(x: Tensor, bias: Optional[Tensor], gate: Tensor, act: str = "gelu") -> Tensor:
    """y = gate * act(x + bias) over the last dim of x (the units).

    x: (..., N); bias: (N,) or None; gate: (N,) float (binarised gate values; gradients
    flow to x, bias and gate). act: "gelu" (erf), "gelu_tanh", "relu" or "silu".
    """
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")
    n = x.shape[-1]
    if gate.shape != (n,) or (bias is not None and bias.shape != (n,)):
        raise ValueError(f"gate/bias must have shape ({n},), got {tuple(gate.shape)} / "
                         f"{None if bias is None else tuple(bias.shape)}")
    return run_gated_act(_select("gated_act", x, bias, gate, act=act, grad=_needs_grad(x, bias, gate)),
                         x, bias, gate, act)


# --- gated_attention --------------------------------------------------------------------

# dead_o=False: heads with gate 0 are skipped in the forward (no gate gradient wanted).
@torch.library.custom_op("subnet_kernels::gated_attention", mutates_args=())
def _gated_attention(q: Tensor, k: Tensor, v: Tensor, gate: Tensor,
                     key_padding_mask: Optional[Tensor], scale: float, dead_o: bool = True,
                     backend: str = "") -> tuple[Tensor, Tensor, Tensor]:
    be = _backend("gated_attention", backend, q, k, v, gate, key_padding_mask)
    return be.gated_attention_fwd(q, k, v, gate, key_padding_mask, scale, dead_o=dead_o)


@_gated_attention.register_fake
def _(q, k, v, gate, key_padding_mask, scale, dead_o=True, backend=""):
    b, h, t, _ = q.shape
    lse = q.new_empty((b, h, t), dtype=lse_dtype(q.dtype))
    return q.new_empty(q.shape), q.new_empty(q.shape), lse


@torch.library.custom_op("subnet_kernels::gated_attention_backward", mutates_args=())
def _gated_attention_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, gate: Tensor,
                              key_padding_mask: Optional[Tensor], o: Tensor, lse: Tensor,
                              scale: float, backend: str = "") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    be = _backend("gated_attention", backend, q, k, v, gate, key_padding_mask)
    dq, dk, dv, dg = be.gated_attention_bwd(grad.contiguous(), q, k, v, gate,
                                            key_padding_mask, o, lse, scale)
    return dq, dk, dv, dg


@_gated_attention_backward.register_fake
def _(grad, q, k, v, gate, key_padding_mask, o, lse, scale, backend=""):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), gate.new_empty(gate.shape)


def _attn_setup(ctx, inputs, output):
    q, k, v, gate, mask, scale, dead_o, backend = inputs
    _, o, lse = output
    ctx.save_for_backward(q, k, v, gate, mask, o, lse)
    ctx.scale, ctx.backend = scale, backend
    ctx.mark_non_differentiable(o, lse)


def _attn_grad(ctx, grad_y, _grad_o, _grad_lse):
    q, k, v, gate, mask, o, lse = ctx.saved_tensors
    dq, dk, dv, dg = torch.ops.subnet_kernels.gated_attention_backward(
        grad_y, q, k, v, gate, mask, o, lse, ctx.scale, ctx.backend)
    return dq, dk, dv, dg, None, None, None, None


_gated_attention.register_autograd(_attn_grad, setup_context=_attn_setup)


def sdpa_gated_attention(q: Tensor, k: Tensor, v: Tensor, gate: Tensor,
                         key_padding_mask: Optional[Tensor], scale: float) -> Tensor:
    """The `torch` backend: PyTorch's SDPA, then the gate multiply; a fully padded batch
    gives 0 (its keys are unmasked for SDPA, so no NaN, then its output is zeroed)."""
    attn_mask, empty = None, None
    if key_padding_mask is not None:
        empty = key_padding_mask.all(dim=-1)
        attn_mask = (~key_padding_mask | empty[:, None])[:, None, None, :]
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    if empty is not None:
        o = o * (~empty).to(o.dtype)[:, None, None, None]
    return o * gate.to(o.dtype)[None, :, None, None]


def run_gated_attention(backend: str, q: Tensor, k: Tensor, v: Tensor, gate: Tensor,
                        key_padding_mask: Optional[Tensor], scale: float, dead_o: bool = True) -> Tensor:
    """gated_attention on a given backend (no checks); `torch`: SDPA then the gate."""
    if backend == "torch":
        return sdpa_gated_attention(q, k, v, gate, key_padding_mask, scale)
    y, _, _ = _gated_attention(q, k, v, gate, key_padding_mask, scale, dead_o, backend)
    return y


def gated_attention(q: Tensor, k: Tensor, v: Tensor, gate: Tensor,
                    key_padding_mask: Optional[Tensor] = None,
                    scale: Optional[float] = None) -> Tensor:
    """Non-causal attention with a per-head gate: gate[h] * softmax(q k^T * scale) v.

    q: (B, H, Tq, Dh), k/v: (B, H, Tk, Dh) (the SDPA layout); gate: (H,) float;
    key_padding_mask: (B, Tk) bool, True = padding to ignore; scale defaults to
    1/sqrt(Dh). A batch whose keys are all padding gives 0. Gradients flow to q, k, v, gate.
    Heads with gate 0 do no backward work, and no forward work when the gate needs no
    gradient. On CUDA the faster of the Triton kernel and SDPA + gate runs (measured).
    """
    if q.dim() != 4 or k.shape != v.shape or k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(f"expected q (B,H,Tq,D), k/v (B,H,Tk,D); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if gate.shape != (q.shape[1],):
        raise ValueError(f"gate must have shape ({q.shape[1]},), got {tuple(gate.shape)}")
    if key_padding_mask is not None:
        if key_padding_mask.shape != (q.shape[0], k.shape[2]):
            raise ValueError(f"key_padding_mask must be (B, Tk) = {(q.shape[0], k.shape[2])}")
        key_padding_mask = key_padding_mask.to(torch.bool)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    grad = _needs_grad(q, k, v, gate)
    dead_o = grad and gate.requires_grad  # a dead head's gate gradient needs its output
    backend = _select("gated_attention", q, k, v, gate, key_padding_mask, grad=grad, dead_o=dead_o)
    return run_gated_attention(backend, q, k, v, gate, key_padding_mask, scale, dead_o)


# --- gather_compact ---------------------------------------------------------------------

# tasks/offsets: the table's copy program (plan.CopyProgram) on the sources' device, for the
# GPU backends; built from the table when absent.
@torch.library.custom_op("subnet_kernels::gather_compact", mutates_args=())
def _gather_compact(sources: list[Tensor], table: Tensor, total: int, tasks: Optional[Tensor] = None,
                    offsets: Optional[Tensor] = None) -> Tensor:
    be = _backend("gather_compact", "", sources)
    program = None if tasks is None or offsets is None else _plan.CopyProgram(tasks, offsets)
    return be.gather_flat(sources, table, total, program)


@_gather_compact.register_fake
def _(sources, table, total, tasks=None, offsets=None):
    return sources[0].new_empty(total)


def gather_compact_flat(sources: Sequence[Tensor], table: "_plan.CompactTable") -> Tensor:
    """Runs an encoded table (see subnet_kernels.plan) in one launch: the flat output. On
    the GPU backends the table's copy program is built once and cached with `table`."""
    sources = [s.contiguous() for s in sources]
    dev = sources[0].device
    if any(s.device != dev or s.dtype != sources[0].dtype for s in sources):
        raise ValueError("all sources must share one device and dtype")
    if dispatch.choose("gather_compact", sources) in ("cuda", "triton"):
        program = table.program(sources)
        return _gather_compact(sources, table.table, table.total, program.tasks, program.offsets)
    return _gather_compact(sources, table.table, table.total)


def gather_compact(sources: Sequence[Tensor], plans) -> list[Tensor]:
    """Builds every pruned tensor in `plans` from `sources` in one kernel launch.

    plans: GatherPlan(source, index) or (source, index) pairs; index has one entry per
    source dim: a 1-D integer tensor of kept indices, or None to keep the dim whole.
    Returns one tensor per plan; they are views into a single flat buffer.
    """
    if not len(sources):
        raise ValueError("gather_compact needs at least one source tensor")
    table = _plan.build_table(sources, plans)
    return _plan.split_outputs(gather_compact_flat(sources, table), table)
