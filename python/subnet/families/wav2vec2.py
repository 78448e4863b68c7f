"""transformers Wav2Vec2Model, HubertModel, WavLMModel and Data2VecAudioModel.

Units: the channels of every conv feature-extractor layer (`conv`), the heads of every
self-attention (`head`), the neurons of every feed-forward block (`ffn`).

A conv channel's gate multiplies the channel where it leaves its block (after the
block's norm and activation). Where a LayerNorm over channels sits in between (the
per-layer norms of `feat_extract_norm="layer"` models, the feature projection's norm
after the last layer), the gate also multiplies the channel just before that norm and
just after it: the norm then sees an exact zero, which the compact model reproduces with
a `ZeroPaddedLayerNorm`, and the removed channel contributes nothing downstream.
"""
from __future__ import annotations

import torch
import transformers
from torch import nn
from torch.nn import functional as F

from ..core.units import Slice, UnitGroup
from .attention import gate_heads
from .base import (reduce_to_bias, unit_params, Family, apply_slices, gate_activation, gate_output,
                   override_forward, sync_metadata, zero_padded_from)
from .front_ends import RawWave

CLASSES = ("Wav2Vec2Model", "HubertModel", "WavLMModel", "Data2VecAudioModel")


def _is_wavlm(model) -> bool:
    return type(model).__name__ == "WavLMModel"


class Wav2Vec2Family(Family):
    name = "wav2vec2"

    def matches(self, model):
        return type(model).__name__ in CLASSES

    def front_end_modules(self, model):
        return ["feature_extractor"]

    def default_front_end(self, model):
        """Each clip normalised to zero mean and unit variance (the feature extractor's
        `do_normalize`), an attention mask over real samples; one frame per conv stride."""
        cfg = model.config
        return RawWave(conv=list(zip(cfg.conv_kernel, cfg.conv_stride)))

    # --- discovery ----------------------------------------------------------------------
    def discover(self, model, kinds):
        cfg = model.config
        groups: dict[str, UnitGroup] = {}
        d = cfg.hidden_size
        # frames of each conv layer per input sample
        rate, rates = 1.0, []
        for stride in cfg.conv_stride:
            rate /= stride
            rates.append(rate)
        enc_rate = rates[-1]
        if "conv" in kinds:
            convs = model.feature_extractor.conv_layers
            n_layers = len(convs)
            for i, layer in enumerate(convs):
                p = f"feature_extractor.conv_layers.{i}"
                c_in, c_out, k = layer.conv.in_channels, layer.conv.out_channels, layer.conv.kernel_size[0]
                slices = [Slice(f"{p}.conv.weight", 0)]
                if layer.conv.bias is not None:
                    slices.append(Slice(f"{p}.conv.bias", 0))
                norm = getattr(layer, "layer_norm", None)
                if norm is not None:
                    slices += [Slice(f"{p}.layer_norm.weight", 0), Slice(f"{p}.layer_norm.bias", 0)]
                flops = 2 * c_in * k * rates[i]
                if i + 1 < n_layers:
                    nxt = convs[i + 1].conv
                    slices.append(Slice(f"feature_extractor.conv_layers.{i + 1}.conv.weight", 1))
                    flops += 2 * nxt.out_channels * nxt.kernel_size[0] * rates[i + 1]
                else:
                    proj = model.feature_projection
                    if getattr(proj, "layer_norm", None) is not None:
                        slices += [Slice("feature_projection.layer_norm.weight", 0),
                                   Slice("feature_projection.layer_norm.bias", 0)]
                    slices.append(Slice("feature_projection.projection.weight", 1))
                    flops += 2 * d * enc_rate
                groups[f"{p}.conv"] = UnitGroup(
                    f"{p}.conv", "conv", c_out, slices, unit_params(model, slices, c_out), flops, min_keep=1)
        heads, dh = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
        for i, layer in enumerate(model.encoder.layers):
            p = f"encoder.layers.{i}"
            if "head" in kinds:
                a = f"{p}.attention"
                slices = [Slice(f"{a}.{n}_proj.weight", 0, dh) for n in "qkv"]
                slices += [Slice(f"{a}.{n}_proj.bias", 0, dh) for n in "qkv"
                           if getattr(layer.attention, f"{n}_proj").bias is not None]
                slices.append(Slice(f"{a}.out_proj.weight", 1, dh))
                if _is_wavlm(model):
                    slices.append(Slice(f"{a}.gru_rel_pos_const", 1))
                flops = (2 * 4 * d * dh + 4 * self.nominal_frames * dh) * enc_rate
                groups[f"{a}.heads"] = UnitGroup(
                    f"{a}.heads", "head", heads, slices, unit_params(model, slices, heads), flops)
            if "ffn" in kinds:
                f = f"{p}.feed_forward"
                n = layer.feed_forward.intermediate_dense.out_features
                slices = [Slice(f"{f}.intermediate_dense.weight", 0),
                          Slice(f"{f}.intermediate_dense.bias", 0),
                          Slice(f"{f}.output_dense.weight", 1)]
                groups[f"{f}.neurons"] = UnitGroup(
                    f"{f}.neurons", "ffn", n, slices, unit_params(model, slices, n), 4 * d * enc_rate)
        return groups

    # --- gating -----------------------------------------------------------------------
    def install_gates(self, mm):
        model, undo = mm.backbone, []
        wavlm = _is_wavlm(model)
        heads = {n: model.get_submodule(n.rsplit(".", 1)[0]) for n, g in mm.groups.items() if g.kind == "head"}
        if heads and not wavlm:
            undo += gate_heads(model, heads, mm)
        for name, group in mm.groups.items():
            path = name.rsplit(".", 1)[0]
            if group.kind == "conv":
                layer = model.get_submodule(path)
                undo.append(gate_output(layer, mm, name, channel_dim=1))
                if isinstance(getattr(layer, "layer_norm", None), nn.LayerNorm):
                    undo.append(gate_output(layer.conv, mm, name, channel_dim=1))
                is_last = layer is model.feature_extractor.conv_layers[-1]
                if is_last and getattr(model.feature_projection, "layer_norm", None) is not None:
                    undo.append(gate_output(model.feature_projection.layer_norm, mm, name, channel_dim=-1))
            elif group.kind == "head":
                att = model.get_submodule(path)
                if wavlm:
                    undo.append(override_forward(att, _masked_wavlm_forward(mm, name)))
            elif group.kind == "ffn":
                ff = model.get_submodule(path)
                undo.append(gate_activation(ff, "intermediate_act_fn", model.config.hidden_act,
                                            ff.output_dense, mm, name))
        return undo

    def can_skip_frozen(self, model):
        return not _is_wavlm(model)  # a shrunk WavLM's attention is PrunedWavLMAttention

    # --- shrinking ----------------------------------------------------------------------
    def shrink(self, model, groups, keep):
        widths = {}
        for i, layer in enumerate(model.feature_extractor.conv_layers):
            widths[i] = layer.conv.out_channels
        apply_slices(model, groups, keep)
        sync_metadata(model)
        convs = model.feature_extractor.conv_layers
        for i, layer in enumerate(convs):
            layer.in_conv_dim, layer.out_conv_dim = layer.conv.in_channels, layer.conv.out_channels
            if isinstance(getattr(layer, "layer_norm", None), nn.LayerNorm):
                layer.layer_norm = zero_padded_from(layer.layer_norm, widths[i])
        proj = model.feature_projection
        if getattr(proj, "layer_norm", None) is not None:
            proj.layer_norm = zero_padded_from(proj.layer_norm, widths[len(convs) - 1])
        wavlm = _is_wavlm(model)
        for i, layer in enumerate(model.encoder.layers):
            name = f"encoder.layers.{i}.attention.heads"
            if name not in keep:
                continue
            att = layer.attention
            kept = int(keep[name].sum())
            if wavlm:
                layer.attention = PrunedWavLMAttention(att, torch.nonzero(keep[name]).flatten(),
                                                       model.config.num_attention_heads)
            elif kept == 0:
                reduce_to_bias(model, f"encoder.layers.{i}.attention", att.out_proj)
            else:
                att.num_heads = kept
        return model

    # --- probes and artifacts ---------------------------------------------------------
    def probe_inputs(self, model, generator):
        n = 4000
        x = torch.randn(3, n, generator=generator)
        mask = torch.ones(3, n, dtype=torch.long)
        mask[1, n - 1111:] = 0  # odd padded lengths
        mask[2, n - 2345:] = 0
        x = x * mask
        return {"input_values": x, "attention_mask": mask}

    def describe(self, model):
        return {"class": type(model).__name__, "config": model.config.to_dict()}

    def build(self, desc):
        cls = getattr(transformers, desc["class"])
        cfg = cls.config_class.from_dict(desc["config"])
        return cls(cfg)


# --- WavLM attention (masked and compact share one forward) ---------------------------
def wavlm_attention(att, hidden_states, attention_mask, position_bias, head_ids, n_heads, gate=None):
    """WavLM self-attention over the heads `head_ids` of an `n_heads`-head layer.

    Matches transformers' WavLMAttention (gated relative position bias, the bias table of
    the first layer shared by all layers), for any subset of heads."""
    bsz, t, _ = hidden_states.shape
    dh = att.head_dim
    kept = head_ids.numel()
    if position_bias is None:
        position_bias = att.compute_bias(t, t)
        position_bias = position_bias.unsqueeze(0).repeat(bsz, 1, 1, 1).view(bsz * n_heads, t, t)
    if kept == 0:
        out = att.out_proj.bias.expand(bsz, t, -1)
        return out, None, position_bias
    # the relative-position gate of head h reads the h-th slice of the layer input
    chunks = hidden_states.view(bsz, t, n_heads, dh)[:, :, head_ids].transpose(1, 2)
    rel = att.gru_rel_pos_linear(chunks).view(bsz, kept, t, 2, 4).sum(-1)
    gate_a, gate_b = torch.sigmoid(rel).chunk(2, dim=-1)
    rel_gate = gate_a * (gate_b * att.gru_rel_pos_const.view(1, kept, 1, 1) - 1.0) + 2.0
    bias = rel_gate * position_bias.view(bsz, n_heads, t, t)[:, head_ids]
    if attention_mask is not None:
        pad = attention_mask.ne(1)[:, None, None, :]
        bias = bias.masked_fill(pad, float("-inf"))
    q = att.q_proj(hidden_states).view(bsz, t, kept, dh).transpose(1, 2)
    k = att.k_proj(hidden_states).view(bsz, t, kept, dh).transpose(1, 2)
    v = att.v_proj(hidden_states).view(bsz, t, kept, dh).transpose(1, 2)
    p = att.dropout if att.training else 0.0
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p, scale=dh ** -0.5)
    if gate is not None:
        o = o * gate.to(o.dtype).view(1, kept, 1, 1)
    o = o.transpose(1, 2).reshape(bsz, t, kept * dh)
    return att.out_proj(o), None, position_bias


def _masked_wavlm_forward(mm, group):
    def forward(att, hidden_states, attention_mask=None, position_bias=None, index=0, **kwargs):
        heads = att.num_heads
        ids = torch.arange(heads, device=hidden_states.device)
        return wavlm_attention(att, hidden_states, attention_mask, position_bias, ids, heads,
                               gate=mm.gate(group))
    return forward


class PrunedWavLMAttention(nn.Module):
    """WavLMAttention reduced to some of its heads (same parameters, sliced)."""

    def __init__(self, att, head_ids: torch.Tensor, n_heads: int):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = att.q_proj, att.k_proj, att.v_proj, att.out_proj
        self.gru_rel_pos_const = att.gru_rel_pos_const
        self.gru_rel_pos_linear = att.gru_rel_pos_linear
        if hasattr(att, "rel_attn_embed"):
            self.rel_attn_embed = att.rel_attn_embed
        self.register_buffer("head_ids", head_ids.clone())
        self.n_heads, self.head_dim, self.dropout = n_heads, att.head_dim, att.dropout
        self.num_heads = head_ids.numel()
        self.num_buckets, self.max_distance = att.num_buckets, att.max_distance

    def forward(self, hidden_states, attention_mask=None, position_bias=None, index=0, **kwargs):
        return wavlm_attention(self, hidden_states, attention_mask, position_bias,
                               self.head_ids, self.n_heads)

    def compute_bias(self, query_length, key_length):
        return _wavlm_attention_cls().compute_bias(self, query_length, key_length)

    def _relative_positions_bucket(self, relative_positions):
        return _wavlm_attention_cls()._relative_positions_bucket(self, relative_positions)


def _wavlm_attention_cls():
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention
    return WavLMAttention
