"""transformers WhisperEncoder (alone or inside WhisperModel / WhisperForConditionalGeneration).

Units: conv1's output channels (`conv`; the gate multiplies gelu(conv1(x)), i.e. conv2's
input channels), the heads of every self-attention (`head`), the FFN neurons (`ffn`).
WhisperAttention reshapes keys and values with its `num_heads` attribute, so shrinking
heads updates it. Front end: Whisper's log-mel in torch; for short clips the encoder is cut
to the clip length (`fit_seconds`) instead of padding every clip to 30 s.
"""
from __future__ import annotations

import copy
import math

import torch
import transformers

from ..core.units import Slice, UnitGroup
from .attention import gate_heads
from .base import (reduce_to_bias, unit_params, Family, apply_slices, gate_activation, gate_input_channels,
                   sync_metadata)
from .front_ends import FrontEnd

CLASSES = ("WhisperEncoder", "WhisperModel", "WhisperForConditionalGeneration")
FRAME_RATE = 50  # encoder frames per second (10 ms mel hop, halved by conv2's stride)


class WhisperLogMel(FrontEnd):
    """Whisper's log-mel spectrogram (25 ms Hann window, 10 ms hop), in torch.

    Clips are zero-padded to the encoder's input length (2 * max_source_positions frames),
    exactly as transformers' WhisperFeatureExtractor does for 30 s."""

    n_fft, hop = 400, 160
    fixed_length = True

    def __init__(self, n_mels: int, n_samples: int):
        from transformers import WhisperFeatureExtractor
        self.n_mels, self.n_samples = n_mels, n_samples
        self.max_samples = n_samples
        fe = WhisperFeatureExtractor(feature_size=n_mels)
        self.filters = torch.from_numpy(fe.mel_filters).float()  # (n_fft/2+1, n_mels)
        self.window = torch.hann_window(self.n_fft)

    @classmethod
    def for_encoder(cls, encoder) -> "WhisperLogMel":
        cfg = encoder.config
        return cls(cfg.num_mel_bins, cfg.max_source_positions * 2 * cls.hop)

    def inputs(self, waves, lengths):
        x = torch.zeros(waves.shape[0], self.n_samples, dtype=torch.float32, device=waves.device)
        n = min(self.n_samples, waves.shape[1])
        x[:, :n] = waves[:, :n].float()
        with torch.autocast(waves.device.type, enabled=False):  # the spectrum in fp32 whatever the model runs in
            spec = torch.stft(x, self.n_fft, self.hop, window=self.window.to(x.device), return_complex=True)
            power = spec[..., :-1].abs() ** 2
            mel = (self.filters.T.to(x.device) @ power).clamp(min=1e-10).log10()
        peak = mel.amax(dim=(1, 2), keepdim=True)
        mel = (torch.maximum(mel, peak - 8.0) + 4.0) / 4.0
        return {"input_features": mel}

    def frames(self, lengths, n_frames):
        valid = torch.ceil(lengths.float() / (2 * self.hop)).long().clamp(min=1)
        return torch.arange(n_frames, device=lengths.device)[None, :] < valid[:, None]

    def settings(self):
        return {"n_mels": self.n_mels, "n_samples": self.n_samples}


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

    # --- the input side ------------------------------------------------------------------
    def default_front_end(self, model):
        return WhisperLogMel.for_encoder(self.encoder(model)[0])

    def states(self, backbone, inputs):
        return tuple(self.encoder(backbone)[0](**inputs, output_hidden_states=True).hidden_states)

    def fit_seconds(self, model, seconds):
        """transformers' WhisperEncoder insists on its whole window (30 s); for shorter clips,
        a copy whose positional table is sliced to `seconds` (rounded up to 0.1 s) costs a
        fraction of padding every clip to the window (frozen tiny.en features of 1 s clips still
        separate spoken words). A whole Whisper model (the decoder reads the encoder) is kept."""
        if not seconds or type(model).__name__ != "WhisperEncoder":
            return model
        from ..backbones.whisper import shorten_encoder
        window = model.config.max_source_positions / FRAME_RATE
        seconds = min(window, max(0.1, math.ceil(round(seconds * 10, 6)) / 10))
        if seconds >= window:
            return model
        info = getattr(model, "subnet_info", None)
        model = shorten_encoder(copy.deepcopy(model), seconds)
        model.__dict__.pop("subnet_front_end", None)  # an artifact's front end was for the longer window
        if info is not None:
            model.subnet_info = info
        return model

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
