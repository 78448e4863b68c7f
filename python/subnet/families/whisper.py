"""transformers WhisperEncoder (alone or inside WhisperModel / WhisperForConditionalGeneration).

Units: conv1's output channels (`conv`; the gate multiplies gelu(conv1(x)), i.e. conv2's
input channels), the heads of every self-attention (`head`), the FFN neurons (`ffn`).
WhisperAttention reshapes keys and values with its `num_heads` attribute, so shrinking
heads updates it.
"""
from __future__ import annotations

import torch
import transformers

from ..units import Slice, UnitGroup
from .attention import gate_heads
from .base import (reduce_to_bias, unit_params, Family, apply_slices, gate_activation, gate_input_channels,
                   sync_metadata)

CLASSES = ("WhisperEncoder", "WhisperModel", "WhisperForConditionalGeneration")


class WhisperFamily(Family):
    name = "whisper"

    def matches(self, model):
        return type(model).__name__ in CLASSES

    def encoder(self, model):
        """(the WhisperEncoder, its dotted path inside `model`)."""
        name = type(model).__name__
        path = {"WhisperEncoder": "", "WhisperModel": "encoder",
                "WhisperForConditionalGeneration": "model.encoder"}[name]
        return (model.get_submodule(path) if path else model), (path + "." if path else "")

    def front_end_modules(self, model):
        _, pre = self.encoder(model)
        return [f"{pre}conv1", f"{pre}conv2"]

    def discover(self, model, kinds):
        root = model
        model, pre = self.encoder(root)
        cfg = model.config
        d = cfg.d_model
        groups = {}
        enc_rate = 1.0 / (model.conv1.stride[0] * model.conv2.stride[0])
        if "conv" in kinds:
            c = model.conv1.out_channels
            slices = [Slice(f"{pre}conv1.weight", 0), Slice(f"{pre}conv1.bias", 0), Slice(f"{pre}conv2.weight", 1)]
            flops = 2 * cfg.num_mel_bins * 3 + 2 * model.conv2.out_channels * 3 * enc_rate
            groups[f"{pre}conv1"] = UnitGroup(f"{pre}conv1", "conv", c, slices, unit_params(root, slices, c),
                                        flops, min_keep=1)
        heads = cfg.encoder_attention_heads
        dh = d // heads
        t = cfg.max_source_positions
        for i, layer in enumerate(model.layers):
            p = f"{pre}layers.{i}"
            if "head" in kinds:
                a = f"{p}.self_attn"
                slices = [Slice(f"{a}.{n}_proj.weight", 0, dh) for n in "qkv"]
                slices += [Slice(f"{a}.{n}_proj.bias", 0, dh) for n in "qkv"
                           if getattr(layer.self_attn, f"{n}_proj").bias is not None]
                slices.append(Slice(f"{a}.out_proj.weight", 1, dh))
                flops = (2 * 4 * d * dh + 4 * t * dh) * enc_rate
                groups[f"{a}.heads"] = UnitGroup(f"{a}.heads", "head", heads, slices,
                                                 unit_params(root, slices, heads), flops)
            if "ffn" in kinds:
                n = layer.fc1.out_features
                slices = [Slice(f"{p}.fc1.weight", 0), Slice(f"{p}.fc1.bias", 0),
                          Slice(f"{p}.fc2.weight", 1)]
                groups[f"{p}.ffn"] = UnitGroup(f"{p}.ffn", "ffn", n, slices,
                                               unit_params(root, slices, n), 4 * d * enc_rate)
        return groups

    def install_gates(self, mm):
        model, undo = mm.backbone, []
        heads = {n: model.get_submodule(n.rsplit(".", 1)[0]) for n, g in mm.groups.items() if g.kind == "head"}
        if heads:
            undo += gate_heads(model, heads, mm)
        for name, group in mm.groups.items():
            if group.kind == "conv":
                undo.append(gate_input_channels(self.encoder(model)[0].conv2, mm, name))
            elif group.kind == "ffn":
                layer = model.get_submodule(name.rsplit(".", 1)[0])
                act = self.encoder(model)[0].config.activation_function
                undo.append(gate_activation(layer, "activation_fn", act, layer.fc2, mm, name))
        return undo

    def shrink(self, model, groups, keep):
        apply_slices(model, groups, keep)
        sync_metadata(model)
        enc, pre = self.encoder(model)
        for i, layer in enumerate(enc.layers):
            name = f"{pre}layers.{i}.self_attn.heads"
            if name not in keep:
                continue
            kept = int(keep[name].sum())
            if kept == 0:
                reduce_to_bias(model, f"{pre}layers.{i}.self_attn", layer.self_attn.out_proj)
            else:
                layer.self_attn.num_heads = kept
        return model

    def probe_inputs(self, model, generator):
        model = self.encoder(model)[0]
        cfg = model.config
        frames = cfg.max_source_positions * model.conv1.stride[0] * model.conv2.stride[0]
        return {"input_features": torch.randn(2, cfg.num_mel_bins, frames, generator=generator)}

    def run_probe(self, model, inputs):
        return self.encoder(model)[0](**inputs)

    def describe(self, model):
        final_norm = not isinstance(self.encoder(model)[0].layer_norm, torch.nn.Identity)
        return {"class": type(model).__name__, "config": model.config.to_dict(), "final_norm": final_norm}

    def build(self, desc):
        from transformers.models.whisper import modeling_whisper
        cls = getattr(modeling_whisper, desc["class"])
        model = cls(transformers.WhisperConfig.from_dict(desc["config"]))
        if desc.get("final_norm", True) is False:  # cut above the layer its head reads
            self.encoder(model)[0].layer_norm = torch.nn.Identity()
        return model

    def drop_layers_above(self, model, keep):
        """Hidden state k < n_layers of a WhisperEncoder is layer k-1's output (the last one
        alone goes through the final LayerNorm), so keep k layers and drop that norm."""
        enc, _ = self.encoder(model)
        if keep >= len(enc.layers):
            return model
        if type(model).__name__ != "WhisperEncoder":
            return None  # inside a full Whisper model the decoder reads the last state
        enc.layers = enc.layers[:keep]
        enc.layer_norm = torch.nn.Identity()
        enc.config.encoder_layers = keep
        return model
