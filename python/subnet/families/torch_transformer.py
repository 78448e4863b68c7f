"""torch.nn.TransformerEncoder and TransformerEncoderLayer (users' own models).

Units: heads (`head`) and feed-forward neurons (`ffn`) of every layer, `batch_first`
either way. nn.MultiheadAttention applies its output projection inside one functional
call and cannot hold fewer heads than embed_dim / head_dim, so both the masked and the
compact layers run `multi_head_attention` below; its compact form is
`PrunedMultiheadAttention` (a MultiheadAttention subclass, so the layer class stays).
PyTorch's fused fast path would bypass the gates: it is disabled while gates are on.

Front end: these models take (frames, d_model) features; subnet feeds them a log-mel
spectrogram with d_model bins (25 ms window, 10 ms hop) and a padding mask. A model built
for other features gets its own front end through an entry point (see load_backbone).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..core.units import Slice, UnitGroup
from .attention import gated_sdpa
from .base import Family, apply_slices, gate_input_last_dim, override_forward, sync_metadata
from .front_ends import LogMel

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _layers(model):
    if isinstance(model, nn.TransformerEncoderLayer):
        return [("", model)]
    return [(f"layers.{i}.", layer) for i, layer in enumerate(model.layers)]


def _batch_first(model) -> bool:
    return _layers(model)[0][1].self_attn.batch_first


def multi_head_attention(mha, x, key_padding_mask=None, attn_mask=None, gate=None):
    """Self-attention of `mha` on x (batch-first (B, T, E)); heads inferred from weights."""
    bsz, t, _ = x.shape
    dh = mha.head_dim
    heads = mha.in_proj_weight.shape[0] // (3 * dh)
    if heads == 0:
        bias = mha.out_proj.bias
        return bias.expand(bsz, t, -1) if bias is not None else x.new_zeros(bsz, t, mha.out_proj.out_features)
    q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).view(bsz, t, 3, heads, dh).permute(2, 0, 3, 1, 4)
    mask = None
    if attn_mask is not None:
        mask = attn_mask if attn_mask.dtype != torch.bool else torch.zeros_like(
            attn_mask, dtype=q.dtype).masked_fill(attn_mask, float("-inf"))
    if key_padding_mask is not None:
        kpm = key_padding_mask
        if kpm.dtype == torch.bool:
            kpm = torch.zeros_like(kpm, dtype=q.dtype).masked_fill(kpm, float("-inf"))
        kpm = kpm.view(bsz, 1, 1, t)
        mask = kpm if mask is None else mask + kpm
    p = mha.dropout if mha.training else 0.0
    if gate is not None and attn_mask is None:  # a padding mask only: the fused kernel can take it
        o = gated_sdpa(q, k, v, gate, mask, dropout=p)
    else:
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        if gate is not None:
            o = o * gate.to(o.dtype).view(1, heads, 1, 1)
    return mha.out_proj(o.transpose(1, 2).reshape(bsz, t, heads * dh))


def _attention_call(mha, query, key, value, key_padding_mask=None, attn_mask=None, gate=None):
    if not (query is key and key is value):
        raise ValueError("subnet gates self-attention only (query, key and value must be the same tensor)")
    x = query if mha.batch_first else query.transpose(0, 1)
    out = multi_head_attention(mha, x, key_padding_mask, attn_mask, gate)
    return (out if mha.batch_first else out.transpose(0, 1)), None


class PrunedMultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention with fewer heads than embed_dim / head_dim."""

    def __init__(self, mha: nn.MultiheadAttention):
        nn.Module.__init__(self)
        self.embed_dim = self.kdim = self.vdim = mha.embed_dim
        self._qkv_same_embed_dim = False  # also keeps PyTorch's fused fast path away
        self.head_dim, self.dropout, self.batch_first = mha.head_dim, mha.dropout, mha.batch_first
        self.num_heads = mha.in_proj_weight.shape[0] // (3 * mha.head_dim)
        self.in_proj_weight, self.in_proj_bias, self.out_proj = mha.in_proj_weight, mha.in_proj_bias, mha.out_proj
        self.q_proj_weight = self.k_proj_weight = self.v_proj_weight = None
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        return _attention_call(self, query, key, value, key_padding_mask, attn_mask)


def _layer_forward(layer, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
    """TransformerEncoderLayer.forward without the fused fast path."""
    x = src
    if layer.norm_first:
        x = x + layer._sa_block(layer.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
        x = x + layer._ff_block(layer.norm2(x))
    else:
        x = layer.norm1(x + layer._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
        x = layer.norm2(x + layer._ff_block(x))
    return x


class TorchTransformerFamily(Family):
    name = "torch-transformer"
    nominal_frames = 128

    def matches(self, model):
        return type(model) in (nn.TransformerEncoder, nn.TransformerEncoderLayer)

    def discover(self, model, kinds):
        groups = {}
        for p, layer in _layers(model):
            mha = layer.self_attn
            if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
                raise ValueError(f"{p}self_attn: only self-attention with a packed in_proj_weight, "
                                 "no bias_k/bias_v and no add_zero_attn can be gated")
            d, heads, dh = mha.embed_dim, mha.num_heads, mha.head_dim
            if "head" in kinds:
                slices = [Slice(f"{p}self_attn.in_proj_weight", 0, dh, 3),
                          Slice(f"{p}self_attn.out_proj.weight", 1, dh)]
                if mha.in_proj_bias is not None:
                    slices.insert(1, Slice(f"{p}self_attn.in_proj_bias", 0, dh, 3))
                per = 4 * d * dh + (3 * dh if mha.in_proj_bias is not None else 0)
                groups[f"{p}self_attn.heads"] = UnitGroup(
                    f"{p}self_attn.heads", "head", heads, slices, float(per),
                    float(2 * 4 * d * dh + 4 * self.nominal_frames * dh))
            if "ffn" in kinds:
                n = layer.linear1.out_features
                slices = [Slice(f"{p}linear1.weight", 0), Slice(f"{p}linear2.weight", 1)]
                if layer.linear1.bias is not None:
                    slices.insert(1, Slice(f"{p}linear1.bias", 0))
                per = 2 * d + (1 if layer.linear1.bias is not None else 0)
                groups[f"{p}ffn"] = UnitGroup(f"{p}ffn", "ffn", n, slices, float(per), float(4 * d))
        return groups

    def install_gates(self, mm):
        model, undo = mm.backbone, []
        if isinstance(model, nn.TransformerEncoder) and getattr(model, "use_nested_tensor", False):
            model.use_nested_tensor = False

            def restore():
                model.use_nested_tensor = True
            undo.append(restore)
        for p, layer in _layers(model):
            undo.append(override_forward(layer, _layer_forward))
            heads = f"{p}self_attn.heads"
            if heads in mm.groups:
                def attn(mha, query, key, value, key_padding_mask=None, need_weights=True,
                         attn_mask=None, average_attn_weights=True, is_causal=False, _g=heads):
                    return _attention_call(mha, query, key, value, key_padding_mask, attn_mask,
                                           gate=mm.gate(_g))
                undo.append(override_forward(layer.self_attn, attn))
            if f"{p}ffn" in mm.groups:
                undo.append(gate_input_last_dim(layer.linear2, mm, f"{p}ffn"))
        return undo

    def shrink(self, model, groups, keep):
        apply_slices(model, groups, keep)
        sync_metadata(model)
        for p, layer in _layers(model):
            if f"{p}self_attn.heads" in keep:
                layer.self_attn = PrunedMultiheadAttention(layer.self_attn)
        if isinstance(model, nn.TransformerEncoder):
            model.use_nested_tensor = False
        return model

    def default_front_end(self, model):
        layer = _layers(model)[0][1]
        return LogMel(layer.self_attn.embed_dim, layout="btf" if layer.self_attn.batch_first else "tbf", key="src",
                      padding_key="src_key_padding_mask")

    def states(self, backbone, inputs):
        """Every layer's output, batch first (the final norm, if any, on the last)."""
        x, padding = inputs["src"], inputs["src_key_padding_mask"]
        out = []
        for _, layer in _layers(backbone):
            x = layer(x, src_key_padding_mask=padding)
            out.append(x)
        norm = getattr(backbone, "norm", None)
        if norm is not None:
            out[-1] = norm(out[-1])
        return tuple(o if _batch_first(backbone) else o.transpose(0, 1) for o in out)

    def probe_inputs(self, model, generator):
        d = _layers(model)[0][1].self_attn.embed_dim
        x = torch.randn(3, 37, d, generator=generator)
        pad = torch.zeros(3, 37, dtype=torch.bool)
        pad[1, 30:] = True
        pad[2, 11:] = True
        if not _batch_first(model):
            x = x.transpose(0, 1)
        return {"src": x, "src_key_padding_mask": pad}

    def main_output(self, output):
        return output

    def describe(self, model):
        layer = _layers(model)[0][1]
        act = layer.activation
        act_name = {F.relu: "relu", F.gelu: "gelu"}.get(act) or type(act).__name__.lower()
        if act_name not in ACTIVATIONS:
            raise ValueError(f"activation {act!r} of {type(layer).__name__} cannot be saved; use relu or gelu")
        desc = {
            "class": type(model).__name__,
            "layer": {
                "d_model": layer.self_attn.embed_dim, "nhead": layer.self_attn.num_heads,
                "dim_feedforward": layer.linear1.out_features,
                "dropout": layer.dropout.p, "activation": act_name,
                "layer_norm_eps": layer.norm1.eps, "batch_first": layer.self_attn.batch_first,
                "norm_first": layer.norm_first, "bias": layer.linear1.bias is not None,
            },
        }
        if isinstance(model, nn.TransformerEncoder):
            desc["num_layers"] = model.num_layers
            desc["norm"] = None if model.norm is None else {"eps": model.norm.eps}
        return desc

    def build(self, desc):
        layer = nn.TransformerEncoderLayer(**desc["layer"])
        if desc["class"] == "TransformerEncoderLayer":
            return layer
        d = desc["layer"]["d_model"]
        norm = None if desc["norm"] is None else nn.LayerNorm(d, eps=desc["norm"]["eps"])
        return nn.TransformerEncoder(layer, desc["num_layers"], norm=norm, enable_nested_tensor=False)
