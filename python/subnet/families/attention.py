"""Head gates inside transformers' attention: a registered attention implementation.

While a model is gated its config's `_attn_implementation` is "subnet_gated". Attention
modules that carry a gate (`_subnet_gate`) compute gate[h] * softmax(q k^T) v with
PyTorch's SDPA followed by the gate multiply, or with `subnet_kernels.gated_attention` where
a kernel backend is forced (see families/fused.py for why); every other attention module
(e.g. a decoder's) runs plain SDPA.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .fused import fused_attention

NAME = "subnet_gated"
_registered = False


def key_padding(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, 1, Tq, Tk) attention mask -> (B, Tk) bool, True = padding (bidirectional masks only)."""
    if mask is None:
        return None
    row = mask[:, 0, 0, :]
    return ~row if row.dtype == torch.bool else row < -1e4


def gated_sdpa(query, key, value, gate, attention_mask=None, scaling=None, dropout=0.0):
    """(B, H, T, D) attention output times the per-head gate."""
    if fused_attention(query) and dropout == 0.0:
        from subnet_kernels import gated_attention
        return gated_attention(query, key, value, gate.to(query.dtype), key_padding(attention_mask), scale=scaling)
    o = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                       scale=scaling)
    return o * gate.to(o.dtype).view(1, -1, 1, 1)


def _forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    source = getattr(module, "_subnet_gate", None)
    if source is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    mm, group = source
    o = gated_sdpa(query, key, value, mm.gate(group), attention_mask, scaling, dropout)
    return o.transpose(1, 2).contiguous(), None


def register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    AttentionInterface.register(NAME, _forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    _registered = True


def gate_heads(model, modules: dict, mm) -> list:
    """Gate the heads of `modules` (group name -> attention module) of transformers `model`."""
    register()
    undo = []
    configs = {id(c): c for c in (getattr(m, "config", None) for m in model.modules()) if c is not None
               and hasattr(c, "_attn_implementation")}
    for c in configs.values():
        old = c._attn_implementation

        def restore(c=c, old=old):
            c._attn_implementation = old
        c._attn_implementation = NAME
        undo.append(restore)
    for group, att in modules.items():
        att._subnet_gate = (mm, group)

        def drop(att=att):
            del att._subnet_gate
        undo.append(drop)
    return undo
