"""transformers Wav2Vec2ConformerModel (rotary and relative position variants).

Units: the conv feature extractor's channels (`conv`, as in `wav2vec2`), the heads of
every self-attention (`head`; with relative positions also the head's rows of
`linear_pos` and of `pos_bias_u` / `pos_bias_v`), the neurons of both feed-forward
modules (`ffn`) and the channels of every conformer conv module (`dwconv`: both GLU
halves of pointwise_conv1, the depthwise filter, its BatchNorm, pointwise_conv2's
column; the gate multiplies pointwise_conv2's input).

The rotary variant rotates the layer *input* in head-sized chunks before the
projections, so `num_heads` keeps describing the input width and is not changed. A
block with no heads left reduces to linear_out's bias; a conv module with no channels
left to pointwise_conv2's bias (zero when it has none).
"""
from __future__ import annotations

import types

import torch
from torch import nn

from ..core.units import Slice, UnitGroup
from .ast import ffn_slices, head_slices
from .base import reduce_to_bias, BiasOnly, gate_input_channels, gate_input_last_dim, replace_module, unit_params
from .wav2vec2 import Wav2Vec2Family


class EmptyConvModule(nn.Module):
    """A conformer conv module with no channels: its output is pointwise_conv2's bias.

    Its LayerNorm stays (unused) so that the parameters are the ones the keep masks imply."""

    def __init__(self, layer_norm: nn.LayerNorm, bias: torch.Tensor | None):
        super().__init__()
        self.layer_norm = layer_norm
        self.out = BiasOnly(bias, layer_norm.normalized_shape[0], returns_tuple=0)

    def forward(self, hidden_states):
        return self.out(hidden_states)


class Wav2Vec2ConformerFamily(Wav2Vec2Family):
    name = "wav2vec2-conformer"

    def matches(self, model):
        return type(model).__name__ == "Wav2Vec2ConformerModel"

    def discover(self, model, kinds):
        groups = super().discover(model, set(kinds) & {"conv"})  # the feature extractor
        cfg = model.config
        d, heads = cfg.hidden_size, cfg.num_attention_heads
        dh = d // heads
        rate = 1.0
        for s in cfg.conv_stride:
            rate /= s
        t = self.nominal_frames
        for i, layer in enumerate(model.encoder.layers):
            p = f"encoder.layers.{i}"
            if "head" in kinds:
                a = f"{p}.self_attn"
                slices = head_slices(a, ("linear_q", "linear_k", "linear_v"), "linear_out", dh, True)
                flops = 2 * 4 * d * dh + 4 * t * dh
                if layer.self_attn.position_embeddings_type == "relative":
                    slices += [Slice(f"{a}.linear_pos.weight", 0, dh), Slice(f"{a}.pos_bias_u", 0),
                               Slice(f"{a}.pos_bias_v", 0)]
                    flops += 2 * 2 * d * dh + 2 * t * dh  # positions projected, position scores
                groups[f"{a}.heads"] = UnitGroup(f"{a}.heads", "head", heads, slices,
                                                 unit_params(model, slices, heads), flops * rate)
            if "ffn" in kinds:
                for f in ("ffn1", "ffn2"):
                    n = getattr(layer, f).intermediate_dense.out_features
                    slices = ffn_slices(f"{p}.{f}.intermediate_dense", f"{p}.{f}.output_dense")
                    groups[f"{p}.{f}.neurons"] = UnitGroup(f"{p}.{f}.neurons", "ffn", n, slices,
                                                           unit_params(model, slices, n), 4 * d * rate)
            if "dwconv" in kinds:
                c = f"{p}.conv_module"
                mod = layer.conv_module
                slices = [Slice(f"{c}.pointwise_conv1.weight", 0, 1, 2)]
                slices += [Slice(f"{c}.pointwise_conv1.bias", 0, 1, 2)] if mod.pointwise_conv1.bias is not None else []
                slices += [Slice(f"{c}.depthwise_conv.{n}", 0) for n in ("weight", "bias")
                           if getattr(mod.depthwise_conv, n) is not None]
                slices += [Slice(f"{c}.batch_norm.{n}", 0) for n in ("weight", "bias", "running_mean", "running_var")]
                slices.append(Slice(f"{c}.pointwise_conv2.weight", 1))
                k = mod.depthwise_conv.kernel_size[0]
                groups[f"{c}.channels"] = UnitGroup(f"{c}.channels", "dwconv", d, slices,
                                                    unit_params(model, slices, d), (6 * d + 2 * k) * rate)
        return groups

    def install_gates(self, mm):
        model = mm.backbone
        convs = {n: g for n, g in mm.groups.items() if g.kind == "conv"}
        # the feature extractor's gates, installed by the wav2vec2 adapter on a view of mm
        undo = super().install_gates(types.SimpleNamespace(backbone=model, groups=convs, gate=mm.gate))
        for name, group in mm.groups.items():
            mod = model.get_submodule(name.rsplit(".", 1)[0])
            if group.kind == "head":
                undo.append(gate_input_last_dim(mod.linear_out, mm, name, block=mod.head_size))
            elif group.kind == "ffn":
                undo.append(gate_input_last_dim(mod.output_dense, mm, name))
            elif group.kind == "dwconv":
                undo.append(gate_input_channels(mod.pointwise_conv2, mm, name))
        return undo

    def shrink(self, model, groups, keep):
        model = super().shrink(model, groups, keep)  # slices everything, then the extractor's norms
        for name, mask in keep.items():
            path, kind = name.rsplit(".", 1)[0], groups[name].kind
            mod = model.get_submodule(path)
            if kind == "dwconv":
                dw = mod.depthwise_conv
                dw.groups = dw.in_channels = dw.out_channels = dw.weight.shape[0]
                if not mask.any():
                    replace_module(model, path, EmptyConvModule(mod.layer_norm, mod.pointwise_conv2.bias))
            elif kind == "head" and not mask.any():
                reduce_to_bias(model, path, mod.linear_out)
        return model
