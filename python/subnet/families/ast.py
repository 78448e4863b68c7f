"""transformers ASTModel (Audio Spectrogram Transformer).

Units: the heads of every self-attention (`head`: q/k/v rows and o_proj columns; the
attention views its projections with -1 heads, so no attribute changes) and the FFN
neurons of every layer (`ffn`: fc1 rows, fc2 columns). The patch embedding conv feeds
the residual stream, which is not a unit.
"""
from __future__ import annotations

import torch
import transformers

from ..units import Slice, UnitGroup
from .base import reduce_to_bias, Family, apply_slices, gate_input_last_dim, sync_metadata, unit_params


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

    def describe(self, model):
        return {"class": type(model).__name__, "config": model.config.to_dict()}

    def build(self, desc):
        return transformers.ASTModel(transformers.ASTConfig.from_dict(desc["config"]))
