"""transformers ClapAudioModel (HTSAT: a Swin transformer over the log-mel image).

Units, in every block of every stage: the heads of the window attention (`head`:
query/key/value rows, the per-head column of `relative_position_bias_table`, the output
dense's columns) and the FFN neurons (`ffn`). Patch merging and the patch embedding
are not touched (they set the residual widths). The attention reads its head count from
`num_attention_heads` / `all_head_size` (shifted-window mask, context reshape), so
shrinking updates them; a block with no heads left reduces to the output dense's bias.
"""
from __future__ import annotations

import torch
import transformers

from ..units import Slice, UnitGroup
from .ast import ffn_slices, head_slices
from .base import reduce_to_bias, Family, apply_slices, gate_input_last_dim, sync_metadata, unit_params


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

    def build(self, desc):
        return transformers.ClapAudioModel(transformers.ClapAudioConfig.from_dict(desc["config"]))
