"""torchaudio Conformer (torchaudio.models.Conformer; input (batch, frames, dim) and lengths).

Units, in every layer: the heads of the self-attention (`head`; nn.MultiheadAttention,
run through the torch-transformer adapter's attention so that it can hold fewer
heads), the neurons of both feed-forward modules (`ffn`) and the channels of the conv
module (`dwconv`: both GLU halves of the first pointwise conv, the depthwise filter,
its BatchNorm, the last pointwise conv's column; the gate multiplies that conv's
input). A conv module with `use_group_norm` normalises over all its channels at once,
so its channels are not independent units: asking for `dwconv` there is refused.

Front end: torchaudio ships the architecture without a front end or weights; subnet feeds it
a log-mel spectrogram with `input_dim` bins (25 ms window, 10 ms hop), one frame per 10 ms,
and the head reads every layer's output.
"""
from __future__ import annotations

import torch
import torchaudio
from torch import nn

from ..core.units import Slice, UnitGroup
from .ast import ffn_slices
from .base import (unit_params, Family, apply_slices, gate_input_channels, gate_input_last_dim, override_forward, replace_module,
                   sync_metadata)
from .front_ends import LogMel
from .torch_transformer import PrunedMultiheadAttention, _attention_call
from .w2v_conformer import EmptyConvModule


def _masked_attention(mm, group):
    def forward(mha, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        return _attention_call(mha, query, key, value, key_padding_mask, attn_mask, gate=mm.gate(group))
    return forward


class TorchaudioConformerFamily(Family):
    name = "torchaudio-conformer"
    nominal_frames = 128

    def matches(self, model):
        return isinstance(model, torchaudio.models.Conformer)

    def discover(self, model, kinds):
        groups = {}
        for i, layer in enumerate(model.conformer_layers):
            p = f"conformer_layers.{i}"
            mha = layer.self_attn
            d, heads, dh = mha.embed_dim, mha.num_heads, mha.head_dim
            if "head" in kinds:
                a = f"{p}.self_attn"
                slices = [Slice(f"{a}.in_proj_weight", 0, dh, 3), Slice(f"{a}.in_proj_bias", 0, dh, 3),
                          Slice(f"{a}.out_proj.weight", 1, dh)]
                groups[f"{a}.heads"] = UnitGroup(f"{a}.heads", "head", heads, slices, unit_params(model, slices, heads),
                                                 2 * 4 * d * dh + 4 * self.nominal_frames * dh)
            if "ffn" in kinds:
                for f in ("ffn1", "ffn2"):
                    n = getattr(layer, f).sequential[1].out_features
                    slices = ffn_slices(f"{p}.{f}.sequential.1", f"{p}.{f}.sequential.4")
                    groups[f"{p}.{f}.neurons"] = UnitGroup(f"{p}.{f}.neurons", "ffn", n, slices,
                                                           unit_params(model, slices, n), 4.0 * d)
            if "dwconv" in kinds:
                seq = layer.conv_module.sequential
                if not isinstance(seq[3], nn.BatchNorm1d):
                    raise ValueError(f"{p}.conv_module.sequential.3 is a {type(seq[3]).__name__} over all channels "
                                     "(use_group_norm=True): its channels are not independent dwconv units; "
                                     "leave 'dwconv' out of kinds")
                c = f"{p}.conv_module.sequential"
                slices = [Slice(f"{c}.0.{n}", 0, 1, 2) for n in ("weight", "bias") if getattr(seq[0], n) is not None]
                slices += [Slice(f"{c}.2.{n}", 0) for n in ("weight", "bias") if getattr(seq[2], n) is not None]
                slices += [Slice(f"{c}.3.{n}", 0) for n in ("weight", "bias", "running_mean", "running_var")]
                slices.append(Slice(f"{c}.5.weight", 1))
                n = seq[2].out_channels
                groups[f"{p}.conv_module.channels"] = UnitGroup(
                    f"{p}.conv_module.channels", "dwconv", n, slices, unit_params(model, slices, n),
                    6.0 * d + 2 * seq[2].kernel_size[0])
        return groups

    def install_gates(self, mm):
        undo = []
        for name, group in mm.groups.items():
            mod = mm.backbone.get_submodule(name.rsplit(".", 1)[0])
            if group.kind == "head":
                undo.append(override_forward(mod, _masked_attention(mm, name)))
            elif group.kind == "ffn":
                undo.append(gate_input_last_dim(mod.sequential[4], mm, name))
            else:
                undo.append(gate_input_channels(mod.sequential[5], mm, name))
        return undo

    def shrink(self, model, groups, keep):
        apply_slices(model, groups, keep)
        sync_metadata(model)
        for name, mask in keep.items():
            path, kind = name.rsplit(".", 1)[0], groups[name].kind
            mod = model.get_submodule(path)
            if kind == "head":
                replace_module(model, path, PrunedMultiheadAttention(mod))
            elif kind == "dwconv":
                dw = mod.sequential[2]
                dw.groups = dw.in_channels = dw.out_channels = dw.weight.shape[0]
                if not mask.any():
                    replace_module(model, path, EmptyConvModule(mod.layer_norm, mod.sequential[5].bias))
        return model

    def probe_inputs(self, model, generator):
        d = model.conformer_layers[0].self_attn.embed_dim
        return {"input": torch.randn(3, 37, d, generator=generator), "lengths": torch.tensor([37, 30, 11])}

    def run_probe(self, model, inputs):
        return model(inputs["input"], inputs["lengths"])

    def default_front_end(self, model):
        return LogMel(model.conformer_layers[0].self_attn.embed_dim, lengths_key="lengths")

    def states(self, backbone, inputs):
        """Every conformer layer's output (Conformer.forward returns only the last)."""
        lengths = inputs["lengths"]
        x = inputs["input"]
        padding = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]
        x, out = x.transpose(0, 1), []
        for layer in backbone.conformer_layers:
            x = layer(x, padding)
            out.append(x.transpose(0, 1))
        return tuple(out)

    def main_output(self, output):
        return output[0]

    def describe(self, model):
        layer = model.conformer_layers[0]
        return {"args": dict(
            input_dim=layer.self_attn.embed_dim, num_heads=layer.self_attn.num_heads,
            ffn_dim=layer.ffn1.sequential[1].out_features, num_layers=len(model.conformer_layers),
            depthwise_conv_kernel_size=layer.conv_module.sequential[2].kernel_size[0],
            dropout=layer.self_attn_dropout.p,
            use_group_norm=isinstance(layer.conv_module.sequential[3], nn.GroupNorm),
            convolution_first=layer.convolution_first)}

    def build(self, desc):
        return torchaudio.models.Conformer(**desc["args"]).eval()
