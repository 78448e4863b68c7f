"""transformers ClapAudioModel (HTSAT: a Swin transformer over the log-mel image).

Units, in every block of every stage: the heads of the window attention (`head`:
query/key/value rows, the per-head column of `relative_position_bias_table`, the output
dense's columns) and the FFN neurons (`ffn`). Patch merging and the patch embedding
are not touched (they set the residual widths). The attention reads its head count from
`num_attention_heads` / `all_head_size` (shifted-window mask, context reshape), so
shrinking updates them; a block with no heads left reduces to the output dense's bias.

Front end: CLAP's log-mel in dB at 48 kHz (ClapFeatureExtractor's: 1024-point Hann window,
480-sample hop, 50 Hz - 14 kHz, HTK filters for fusion models, Slaney otherwise), each clip
repeated to fill the window (CLAP's "repeatpad"). Heads read the last stage's tokens (the
stages differ in width), pooled like HTSAT's own average pool.
"""
from __future__ import annotations

import torch
import transformers

from ..core.units import Slice, UnitGroup
from .ast import ffn_slices, head_slices
from .base import reduce_to_bias, Family, apply_slices, gate_input_last_dim, sync_metadata, unit_params
from .front_ends import FrontEnd


class ClapLogMel(FrontEnd):
    """(B, 1 or 4, frames, n_mels) log-mel in dB, every clip repeated then zero-padded to the
    window; a fusion model gets its four channels (the whole clip and three crops coincide for
    clips that fit the window: each is the same spectrogram, `is_longer` False)."""

    sample_rate, hop, n_fft = 48000, 480, 1024
    fixed_length = True

    def __init__(self, n_mels: int = 64, max_frames: int = 1001, fusion: bool = False,
                 f_min: float = 50.0, f_max: float = 14000.0):
        from transformers.audio_utils import mel_filter_bank
        self.n_mels, self.max_frames, self.fusion, self.f_min, self.f_max = n_mels, max_frames, fusion, f_min, f_max
        self.max_samples = (max_frames - 1) * self.hop
        scale = dict(norm=None, mel_scale="htk") if fusion else dict(norm="slaney", mel_scale="slaney")
        self.filters = torch.from_numpy(mel_filter_bank(num_frequency_bins=self.n_fft // 2 + 1, num_mel_filters=n_mels,
                                                        min_frequency=f_min, max_frequency=f_max,
                                                        sampling_rate=self.sample_rate, **scale)).float()
        self.window = torch.hann_window(self.n_fft)

    def inputs(self, waves, lengths):
        n = self.max_samples
        x = torch.zeros(len(waves), n, device=waves.device)
        for i, length in enumerate(lengths.tolist()):
            clip = waves[i, :min(length, n)].float()
            if len(clip):
                reps = n // len(clip)
                x[i, :reps * len(clip)] = clip.repeat(reps)
        with torch.autocast(waves.device.type, enabled=False):
            spec = torch.stft(x, self.n_fft, self.hop, window=self.window.to(x.device), center=True,
                              pad_mode="reflect", return_complex=True)
            mel = (spec.abs().square().transpose(1, 2) @ self.filters.to(x.device)).clamp(min=1e-10)
        mel = 10.0 * torch.log10(mel)[:, None]  # (B, 1, frames, n_mels)
        if not self.fusion:
            return {"input_features": mel}
        return {"input_features": mel.expand(-1, 4, -1, -1).contiguous(),
                "is_longer": torch.zeros(len(waves), 1, dtype=torch.bool, device=waves.device)}

    def settings(self):
        return {"n_mels": self.n_mels, "max_frames": self.max_frames, "fusion": self.fusion,
                "f_min": self.f_min, "f_max": self.f_max}


def _blocks(model):
    enc = model.audio_encoder
    for s, stage in enumerate(enc.layers):
        for b, block in enumerate(stage.blocks):
            yield f"audio_encoder.layers.{s}.blocks.{b}", block, enc.input_resolutions[s]


class ClapAudioFamily(Family):
    name = "clap-audio"

    def matches(self, model):
        return type(model).__name__ == "ClapAudioModel"

    def discover(self, model, kinds):
        cfg = model.config
        frames = cfg.spec_size * (cfg.spec_size // cfg.num_mel_bins)  # input frames the image holds
        groups = {}
        for p, block, (h, w) in _blocks(model):
            att = block.attention.self
            d, heads, dh = att.all_head_size, att.num_attention_heads, att.attention_head_size
            tokens = h * w / frames  # tokens of this stage per input frame
            window = min(block.window_size, h, w) ** 2
            if "head" in kinds:
                a = f"{p}.attention"
                slices = head_slices(f"{a}.self", ("query", "key", "value"), "output.dense", dh, cfg.qkv_bias)
                slices[-1] = Slice(f"{a}.output.dense.weight", 1, dh)
                slices.append(Slice(f"{a}.self.relative_position_bias_table", 1))
                groups[f"{a}.heads"] = UnitGroup(f"{a}.heads", "head", heads, slices, unit_params(model, slices, heads),
                                                 (2 * 4 * d * dh + 4 * window * dh) * tokens)
            if "ffn" in kinds:
                n = block.intermediate.dense.out_features
                slices = ffn_slices(f"{p}.intermediate.dense", f"{p}.output.dense")
                groups[f"{p}.ffn"] = UnitGroup(f"{p}.ffn", "ffn", n, slices, unit_params(model, slices, n),
                                               4 * d * tokens)
        return groups

    def install_gates(self, mm):
        undo = []
        for name, group in mm.groups.items():
            mod = mm.backbone.get_submodule(name.rsplit(".", 1)[0])
            if group.kind == "head":
                undo.append(gate_input_last_dim(mod.output.dense, mm, name, block=mod.self.attention_head_size))
            else:
                undo.append(gate_input_last_dim(mod.output.dense, mm, name))
        return undo

    def shrink(self, model, groups, keep):
        apply_slices(model, groups, keep)
        sync_metadata(model)
        for name, mask in keep.items():
            if groups[name].kind != "head":
                continue
            path = name.rsplit(".", 1)[0]
            att = model.get_submodule(path)
            kept = int(mask.sum())
            if kept == 0:
                reduce_to_bias(model, path, att.output.dense)
            else:
                att.self.num_attention_heads = kept
                att.self.all_head_size = kept * att.self.attention_head_size
        return model

    def probe_inputs(self, model, generator):
        cfg = model.config
        frames = cfg.spec_size * (cfg.spec_size // cfg.num_mel_bins)
        channels = 4 if cfg.enable_fusion else 1
        inputs = {"input_features": torch.randn(2, channels, frames, cfg.num_mel_bins, generator=generator)}
        if cfg.enable_fusion:
            inputs["is_longer"] = torch.tensor([[True], [False]])
        return inputs

    def describe(self, model):
        return {"class": type(model).__name__, "config": model.config.to_dict()}

    # --- the input side ------------------------------------------------------------------
    def default_front_end(self, model):
        cfg = model.config
        ratio = cfg.spec_size // cfg.num_mel_bins
        return ClapLogMel(cfg.num_mel_bins, min(1001, cfg.spec_size * ratio), bool(cfg.enable_fusion))

    def states(self, backbone, inputs):
        """The last stage's (B, channels, freq, time) output as (B, tokens, channels): the
        stages differ in width, so one state."""
        out = backbone(**inputs).last_hidden_state
        return (out.flatten(2).transpose(1, 2),)

    def build(self, desc):
        return transformers.ClapAudioModel(transformers.ClapAudioConfig.from_dict(desc["config"]))
