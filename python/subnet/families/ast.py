"""transformers ASTModel (Audio Spectrogram Transformer).

Units: the heads of every self-attention (`head`: q/k/v rows and o_proj columns; the
attention views its projections with -1 heads, so no attribute changes) and the FFN
neurons of every layer (`ffn`: fc1 rows, fc2 columns). The patch embedding conv feeds
the residual stream, which is not a unit.

Front end: AST's Kaldi filterbank (ASTFeatureExtractor's: 25 ms Hann window, 10 ms shift,
`num_mel_bins` bins, AudioSet mean/std normalisation), zero-padded to `max_length` frames.
For short clips `fit_seconds` cuts the time axis of the positional table to the clip, as AST
does when fine-tuned on clips shorter than 10 s, instead of padding every clip to 10.24 s.
"""
from __future__ import annotations

import copy

import torch
import torchaudio
import transformers

from ..core.units import Slice, UnitGroup
from .base import reduce_to_bias, Family, apply_slices, gate_input_last_dim, sync_metadata, unit_params
from .front_ends import FrontEnd

# ASTFeatureExtractor's defaults: AudioSet statistics of the filterbank
AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974
WINDOW, SHIFT = 400, 160  # Kaldi frame length and shift at 16 kHz


class ASTFilterbank(FrontEnd):
    """Kaldi log-mel filterbank per clip (torchaudio.compliance.kaldi.fbank, as transformers'
    ASTFeatureExtractor computes it), padded with zeros or cut to `max_frames`, normalised
    with the AudioSet mean and twice its standard deviation: (B, max_frames, n_mels)."""

    fixed_length = True
    min_samples = WINDOW

    def __init__(self, n_mels: int = 128, max_frames: int = 1024, mean: float = AUDIOSET_MEAN,
                 std: float = AUDIOSET_STD):
        self.n_mels, self.max_frames, self.mean, self.std = n_mels, max_frames, mean, std
        self.max_samples = WINDOW + max_frames * SHIFT - 1  # longer clips would give more frames

    def inputs(self, waves, lengths):
        out = torch.zeros(len(waves), self.max_frames, self.n_mels, device=waves.device)
        with torch.autocast(waves.device.type, enabled=False):
            for i, n in enumerate(lengths.tolist()):
                if n < WINDOW:
                    continue  # no whole frame: the clip stays padding (the data checks refuse such clips)
                fb = torchaudio.compliance.kaldi.fbank(waves[i:i + 1, :n].float(), sample_frequency=self.sample_rate,
                                                       window_type="hanning", num_mel_bins=self.n_mels)
                out[i, :min(len(fb), self.max_frames)] = fb[:self.max_frames]
        return {"input_values": (out - self.mean) / (2 * self.std)}

    def settings(self):
        return {"n_mels": self.n_mels, "max_frames": self.max_frames, "mean": self.mean, "std": self.std}


def head_slices(prefix: str, qkv: tuple[str, str, str], out: str, dh: int, bias: bool) -> list[Slice]:
    """Slices of one attention's heads: q/k/v rows (and biases), output-projection columns."""
    slices = [Slice(f"{prefix}.{n}.weight", 0, dh) for n in qkv]
    if bias:
        slices += [Slice(f"{prefix}.{n}.bias", 0, dh) for n in qkv]
    return slices + [Slice(f"{prefix}.{out}.weight", 1, dh)]


def ffn_slices(first: str, second: str) -> list[Slice]:
    return [Slice(f"{first}.weight", 0), Slice(f"{first}.bias", 0), Slice(f"{second}.weight", 1)]


class ASTFamily(Family):
    name = "ast"

    def matches(self, model):
        return type(model).__name__ == "ASTModel"

    def discover(self, model, kinds):
        cfg = model.config
        d, heads = cfg.hidden_size, cfg.num_attention_heads
        dh = model.layers[0].attention.head_dim
        tokens = model.embeddings.position_embeddings.shape[1]
        # FLOPs per input frame (a row of input_values)
        per_frame = 1.0 / cfg.max_length
        groups = {}
        for i, layer in enumerate(model.layers):
            p = f"layers.{i}"
            if "head" in kinds:
                slices = head_slices(f"{p}.attention", ("q_proj", "k_proj", "v_proj"), "o_proj", dh, cfg.qkv_bias)
                flops = (2 * 4 * d * dh + 4 * tokens * dh) * tokens * per_frame
                groups[f"{p}.attention.heads"] = UnitGroup(f"{p}.attention.heads", "head", heads, slices,
                                                           unit_params(model, slices, heads), flops)
            if "ffn" in kinds:
                n = layer.mlp.fc1.out_features
                slices = ffn_slices(f"{p}.mlp.fc1", f"{p}.mlp.fc2")
                groups[f"{p}.mlp.neurons"] = UnitGroup(f"{p}.mlp.neurons", "ffn", n, slices,
                                                       unit_params(model, slices, n), 4 * d * tokens * per_frame)
        return groups

    def install_gates(self, mm):
        undo = []
        for name, group in mm.groups.items():
            mod = mm.backbone.get_submodule(name.rsplit(".", 1)[0])
            if group.kind == "head":
                undo.append(gate_input_last_dim(mod.o_proj, mm, name, block=mod.head_dim))
            else:
                undo.append(gate_input_last_dim(mod.fc2, mm, name))
        return undo

    def shrink(self, model, groups, keep):
        apply_slices(model, groups, keep)
        sync_metadata(model)
        for name, mask in keep.items():
            if groups[name].kind == "head" and not mask.any():
                path = name.rsplit(".", 1)[0]
                reduce_to_bias(model, path, model.get_submodule(path).o_proj)
        return model

    def probe_inputs(self, model, generator):
        cfg = model.config
        return {"input_values": torch.randn(2, cfg.max_length, cfg.num_mel_bins, generator=generator)}

    # --- the input side ------------------------------------------------------------------
    def default_front_end(self, model):
        return ASTFilterbank(model.config.num_mel_bins, model.config.max_length)

    def fit_seconds(self, model, seconds):
        """A copy taking `seconds` of audio: the positional table keeps, for every frequency
        row of patches, the first time columns (patches are numbered frequency-major)."""
        cfg = model.config
        if not seconds:
            return model
        frames = max(cfg.patch_size, 1 + (round(seconds * 16000) - WINDOW) // SHIFT)
        time_old = (cfg.max_length - cfg.patch_size) // cfg.time_stride + 1
        time_new = (frames - cfg.patch_size) // cfg.time_stride + 1
        if time_new >= time_old:
            return model
        info = getattr(model, "subnet_info", None)
        model = copy.deepcopy(model)  # (its config too: the original keeps its length)
        emb = model.embeddings
        table = emb.position_embeddings.data
        freq = (cfg.num_mel_bins - cfg.patch_size) // cfg.frequency_stride + 1
        patches = table[:, 2:].reshape(1, freq, time_old, -1)[:, :, :time_new].reshape(1, freq * time_new, -1)
        emb.position_embeddings = torch.nn.Parameter(torch.cat([table[:, :2], patches], 1), requires_grad=False)
        model.config.max_length = frames
        model.__dict__.pop("subnet_front_end", None)  # an artifact's front end was for the longer window
        if info is not None:
            model.subnet_info = info
        return model

    def describe(self, model):
        return {"class": type(model).__name__, "config": model.config.to_dict()}

    def build(self, desc):
        return transformers.ASTModel(transformers.ASTConfig.from_dict(desc["config"]))
