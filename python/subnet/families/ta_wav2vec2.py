"""torchaudio Wav2Vec2Model: wav2vec2_base, hubert_base, wavlm_base and the custom builders.

Units as for the transformers twins (`wav2vec2` family): the channels of every conv
feature-extractor layer (`conv`; the gate multiplies a ConvLayerBlock's output after
its norm and GELU, and also the conv output when a LayerNorm over channels sits in
between, and the feature projection's LayerNorm output; those norms become
zero-padded ones), the heads of every self-attention (`head`) and the FFN neurons
(`ffn`). WavLM's attention keeps the whole relative-position table of layer 0 (every
layer reads all of its heads) and gates the position bias of each kept head with the
head's slice of the layer input, as torchaudio does.

Front end: raw samples, not normalised (torchaudio's base bundles feed the waveform as is),
with the clips' lengths (none for WavLM, whose attention takes no mask); the head reads every
transformer layer's output (`extract_features`).
"""
from __future__ import annotations

import torch
import torchaudio
from torch import nn
from torch.nn import functional as F
from torchaudio.models.wav2vec2.wavlm_attention import WavLMSelfAttention

from ..core.units import Slice, UnitGroup
from .ast import ffn_slices, head_slices
from .base import (reduce_to_bias, unit_params, Family, ZeroPaddedLayerNorm, apply_slices, gate_input_last_dim,
                   gate_output, override_forward, sync_metadata)
from .front_ends import RawWave


def _is_wavlm(model) -> bool:
    return isinstance(model.encoder.transformer.layers[0].attention, WavLMSelfAttention)


def _layers(model):
    return model.encoder.transformer.layers


class ChannelZeroPaddedLayerNorm(ZeroPaddedLayerNorm):
    """torchaudio's channel-first LayerNorm ((batch, channels, time)) with removed channels."""

    def forward(self, x):
        return super().forward(x.transpose(-2, -1)).transpose(-2, -1)


def _gate_block(block, mm, group):
    """Gate a ConvLayerBlock's (x, length) output along the channels."""

    def hook(_mod, _args, out):
        x, length = out
        return x * mm.gate(group).to(x.dtype).view(1, -1, 1), length

    return block.register_forward_hook(hook).remove


class TorchaudioWav2Vec2Family(Family):
    name = "torchaudio-wav2vec2"

    def matches(self, model):
        return isinstance(model, torchaudio.models.Wav2Vec2Model)

    def front_end_modules(self, model):
        return ["feature_extractor"]

    def default_front_end(self, model):
        conv = [(b.conv.kernel_size[0], b.conv.stride[0]) for b in model.feature_extractor.conv_layers]
        return RawWave(normalize=False, style="torchaudio", conv=conv, lengths=not _is_wavlm(model))

    def states(self, backbone, inputs):
        return tuple(backbone.extract_features(inputs["waveforms"], inputs["lengths"])[0])

    def export_inputs(self, inputs):
        """Without lengths: torchaudio builds its padding mask with data-dependent shapes that
        ONNX tracing bakes in wrongly; the exported encoder takes clips of equal length."""
        return {**inputs, "lengths": None}

    def discover(self, model, kinds):
        convs = model.feature_extractor.conv_layers
        proj = model.encoder.feature_projection
        rate, rates = 1.0, []
        for block in convs:
            rate /= block.stride
            rates.append(rate)
        groups = {}
        if "conv" in kinds:
            for i, block in enumerate(convs):
                p = f"feature_extractor.conv_layers.{i}"
                conv = block.conv
                slices = [Slice(f"{p}.conv.weight", 0)]
                if conv.bias is not None:
                    slices.append(Slice(f"{p}.conv.bias", 0))
                if block.layer_norm is not None:
                    slices += [Slice(f"{p}.layer_norm.weight", 0), Slice(f"{p}.layer_norm.bias", 0)]
                flops = 2 * conv.in_channels * conv.kernel_size[0] * rates[i]
                if i + 1 < len(convs):
                    nxt = convs[i + 1].conv
                    slices.append(Slice(f"feature_extractor.conv_layers.{i + 1}.conv.weight", 1))
                    flops += 2 * nxt.out_channels * nxt.kernel_size[0] * rates[i + 1]
                else:
                    slices += [Slice("encoder.feature_projection.layer_norm.weight", 0),
                               Slice("encoder.feature_projection.layer_norm.bias", 0),
                               Slice("encoder.feature_projection.projection.weight", 1)]
                    flops += 2 * proj.projection.out_features * rates[-1]
                n = conv.out_channels
                groups[f"{p}.conv"] = UnitGroup(f"{p}.conv", "conv", n, slices, unit_params(model, slices, n), flops,
                                                min_keep=1)
        wavlm = _is_wavlm(model)
        d = proj.projection.out_features
        for i, layer in enumerate(_layers(model)):
            p = f"encoder.transformer.layers.{i}"
            att = layer.attention
            heads, dh = att.num_heads, att.head_dim
            if "head" in kinds:
                a = f"{p}.attention"
                if wavlm:
                    slices = [Slice(f"{a}.attention.in_proj_weight", 0, dh, 3),
                              Slice(f"{a}.attention.in_proj_bias", 0, dh, 3),
                              Slice(f"{a}.attention.out_proj.weight", 1, dh)]
                    if att.gru_rel_pos:
                        slices.append(Slice(f"{a}.gru_rel_pos_const", 1))
                else:
                    slices = head_slices(a, ("q_proj", "k_proj", "v_proj"), "out_proj", dh, True)
                flops = (2 * 4 * d * dh + 4 * self.nominal_frames * dh) * rates[-1]
                groups[f"{a}.heads"] = UnitGroup(f"{a}.heads", "head", heads, slices, unit_params(model, slices, heads),
                                                 flops)
            if "ffn" in kinds:
                f = f"{p}.feed_forward"
                n = layer.feed_forward.intermediate_dense.out_features
                slices = ffn_slices(f"{f}.intermediate_dense", f"{f}.output_dense")
                groups[f"{f}.neurons"] = UnitGroup(f"{f}.neurons", "ffn", n, slices, unit_params(model, slices, n),
                                                   4 * d * rates[-1])
        return groups

    def install_gates(self, mm):
        model, undo = mm.backbone, []
        last = f"feature_extractor.conv_layers.{len(model.feature_extractor.conv_layers) - 1}.conv"
        for name, group in mm.groups.items():
            mod = model.get_submodule(name.rsplit(".", 1)[0])
            if group.kind == "conv":
                undo.append(_gate_block(mod, mm, name))
                if isinstance(mod.layer_norm, nn.LayerNorm):  # the norm must see exact zeros
                    undo.append(gate_output(mod.conv, mm, name, channel_dim=1))
                if name == last:
                    undo.append(gate_output(model.encoder.feature_projection.layer_norm, mm, name, channel_dim=-1))
            elif group.kind == "head":
                if isinstance(mod, WavLMSelfAttention):
                    undo.append(override_forward(mod, _masked_wavlm_forward(mm, name)))
                else:
                    undo.append(gate_input_last_dim(mod.out_proj, mm, name, block=mod.head_dim))
            else:
                undo.append(gate_input_last_dim(mod.output_dense, mm, name))
        return undo

    def can_skip_frozen(self, model):
        return not _is_wavlm(model)  # a shrunk WavLM's attention is no longer WavLMSelfAttention

    def shrink(self, model, groups, keep):
        convs = model.feature_extractor.conv_layers
        widths = [b.conv.out_channels for b in convs]
        apply_slices(model, groups, keep)
        sync_metadata(model)
        for block, width in zip(convs, widths):
            if isinstance(block.layer_norm, nn.LayerNorm):
                block.layer_norm = _zero_padded(block.layer_norm, width, ChannelZeroPaddedLayerNorm)
        proj = model.encoder.feature_projection
        proj.layer_norm = _zero_padded(proj.layer_norm, widths[-1], ZeroPaddedLayerNorm)
        for i, layer in enumerate(_layers(model)):
            name = f"encoder.transformer.layers.{i}.attention.heads"
            if name not in keep:
                continue
            att, kept = layer.attention, int(keep[name].sum())
            if isinstance(att, WavLMSelfAttention):
                layer.attention = PrunedWavLMSelfAttention(att, torch.nonzero(keep[name]).flatten())
            elif kept == 0:
                reduce_to_bias(model, f"encoder.transformer.layers.{i}.attention", att.out_proj)
            else:
                att.num_heads = kept
        return model

    def probe_inputs(self, model, generator):
        n = 4000
        # torchaudio's WavLM refuses an attention mask, hence lengths
        lengths = None if _is_wavlm(model) else torch.tensor([n, n - 1111, n - 2345])
        return {"waveforms": torch.randn(3, n, generator=generator), "lengths": lengths}

    def run_probe(self, model, inputs):
        return model(inputs["waveforms"], inputs["lengths"])

    def main_output(self, output):
        return output[0]

    # --- artifacts: the arguments of torchaudio's wav2vec2_model / wavlm_model builders -----
    def describe(self, model):
        convs = model.feature_extractor.conv_layers
        enc = model.encoder
        tr = enc.transformer
        layer = tr.layers[0]
        args = dict(
            extractor_mode="layer_norm" if isinstance(convs[0].layer_norm, nn.LayerNorm) else "group_norm",
            extractor_conv_layer_config=[[b.conv.out_channels, b.conv.kernel_size[0], b.conv.stride[0]] for b in convs],
            extractor_conv_bias=convs[0].conv.bias is not None,
            encoder_embed_dim=enc.feature_projection.projection.out_features,
            encoder_projection_dropout=enc.feature_projection.dropout.p,
            encoder_pos_conv_kernel=tr.pos_conv_embed.kernel_size,
            encoder_pos_conv_groups=tr.pos_conv_embed.conv.groups,
            encoder_num_layers=len(tr.layers), encoder_num_heads=layer.attention.num_heads,
            encoder_attention_dropout=layer.attention.dropout,
            encoder_ff_interm_features=layer.feed_forward.intermediate_dense.out_features,
            encoder_ff_interm_dropout=layer.feed_forward.intermediate_dropout.p,
            # the builder's flag is the layers' (torchaudio's Transformer holds its negation)
            encoder_dropout=layer.dropout.p, encoder_layer_norm_first=layer.layer_norm_first,
            encoder_layer_drop=tr.layer_drop, aux_num_out=None if model.aux is None else model.aux.out_features)
        if _is_wavlm(model):
            args.update(encoder_num_buckets=layer.attention.num_buckets,
                        encoder_max_distance=layer.attention.max_distance)
            return {"builder": "wavlm_model", "args": args}
        return {"builder": "wav2vec2_model", "args": args}

    def build(self, desc):
        if desc["builder"] not in ("wav2vec2_model", "wavlm_model"):
            raise ValueError(f"unknown torchaudio builder {desc['builder']!r}")
        args = dict(desc["args"])
        args["extractor_conv_layer_config"] = [tuple(c) for c in args["extractor_conv_layer_config"]]
        return getattr(torchaudio.models, desc["builder"])(**args).eval()


def _zero_padded(ln, width, cls):
    new = cls(ln.weight.shape[0], width - ln.weight.shape[0], eps=ln.eps)
    new.weight, new.bias = ln.weight, ln.bias
    return new


# --- WavLM attention over a subset of heads (masked and compact share it) --------------------
def wavlm_heads(att, x, key_padding_mask, position_bias, head_ids, n_heads, gate=None):
    """torchaudio WavLMSelfAttention restricted to heads `head_ids` of an `n_heads`-head layer."""
    bsz, t, _ = x.shape
    dh, kept = att.head_dim, head_ids.numel()
    if att.rel_attn_embed is not None and position_bias is None:
        position_bias = att.compute_bias(t, t).unsqueeze(0).repeat(bsz, 1, 1, 1)
    mha = att.attention
    if kept == 0:
        return mha.out_proj.bias.expand(bsz, t, -1), position_bias
    bias = None
    if position_bias is not None:
        bias = position_bias.view(bsz, n_heads, t, t)[:, head_ids]
        if att.gru_rel_pos:  # head h's gate reads the h-th slice of the layer input
            chunks = x.view(bsz, t, n_heads, dh)[:, :, head_ids].transpose(1, 2)
            rel = att.gru_rel_pos_linear(chunks).view(bsz, kept, t, 2, 4).sum(-1)
            gate_a, gate_b = torch.sigmoid(rel).chunk(2, dim=-1)
            bias = (gate_a * (gate_b * att.gru_rel_pos_const - 1.0) + 2.0).view(bsz, kept, -1, 1) * bias
        if key_padding_mask is not None:
            bias = bias.masked_fill(key_padding_mask.view(bsz, 1, 1, t), float("-inf"))
    q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).view(bsz, t, 3, kept, dh).permute(2, 0, 3, 1, 4)
    p = att.dropout if att.training else 0.0
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
    if gate is not None:
        o = o * gate.to(o.dtype).view(1, kept, 1, 1)
    return mha.out_proj(o.transpose(1, 2).reshape(bsz, t, kept * dh)), position_bias


def _masked_wavlm_forward(mm, group):
    def forward(att, query, key_padding_mask=None, attention_mask=None, position_bias=None):
        if attention_mask is not None:
            raise ValueError("torchaudio's WavLM takes no attention mask (call it without lengths)")
        ids = torch.arange(att.num_heads, device=query.device)
        return wavlm_heads(att, query, key_padding_mask, position_bias, ids, att.num_heads, gate=mm.gate(group))
    return forward


class PrunedWavLMSelfAttention(WavLMSelfAttention):
    """WavLMSelfAttention holding some of its heads (same parameter names, sliced)."""

    def __init__(self, att: WavLMSelfAttention, head_ids: torch.Tensor):
        nn.Module.__init__(self)
        self.embed_dim, self.n_heads, self.head_dim = att.embed_dim, att.num_heads, att.head_dim
        self.dropout = att.dropout
        self.num_heads = head_ids.numel()
        self.has_relative_attention_bias, self.has_position_bias = att.has_relative_attention_bias, True
        self.num_buckets, self.max_distance = att.num_buckets, att.max_distance
        self.rel_attn_embed, self.attention = att.rel_attn_embed, att.attention
        self.gru_rel_pos = att.gru_rel_pos
        if self.gru_rel_pos:
            self.gru_rel_pos_linear, self.gru_rel_pos_const = att.gru_rel_pos_linear, att.gru_rel_pos_const
        self.register_buffer("head_ids", head_ids.clone(), persistent=False)

    def forward(self, query, key_padding_mask=None, attention_mask=None, position_bias=None):
        if attention_mask is not None:
            raise ValueError("torchaudio's WavLM takes no attention mask (call it without lengths)")
        return wavlm_heads(self, query, key_padding_mask, position_bias, self.head_ids, self.n_heads)
