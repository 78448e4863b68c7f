"""The paper's way of gating, for speed comparisons: every gate multiplied in by a forward
hook, eager attention, nothing fused, nothing skipped.

`paper_style(backbone)` returns a MaskedModel with the same units, logits and gate semantics
as `subnet.attach_masks(backbone)` (so the same training loop, loss and data apply), only
the gates are applied the way the paper's released code applies them (Whisper encoders):
  - head h: a pre-hook on out_proj multiplies head h's slice of its input by gate[h];
  - FFN neuron j: a pre-hook on fc2 multiplies input column j by gate[j];
  - conv channel c: a pre-hook on conv2 multiplies input channel c by gate[c];
  - attention runs transformers' "eager" implementation (softmax(QK^T)V in PyTorch ops).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "python"), str(ROOT)]  # runs from a checkout without installing

from subnet.families.base import gate_input_channels, gate_input_last_dim  # noqa: E402
from subnet.families.whisper import WhisperFamily  # noqa: E402
from subnet.core.gates import MaskedModel  # noqa: E402


class PaperStyleWhisper(WhisperFamily):
    name = "whisper"  # same family for compaction and artifacts; only the gating differs

    def install_gates(self, mm):
        enc, _ = self.encoder(mm.backbone)
        undo = []
        configs = {id(m.config): m.config for m in mm.backbone.modules() if hasattr(m, "config")}
        for c in configs.values():
            old = c._attn_implementation

            def restore(c=c, old=old):
                c._attn_implementation = old
            c._attn_implementation = "eager"
            undo.append(restore)
        dh = enc.config.d_model // enc.config.encoder_attention_heads
        for name, group in mm.groups.items():
            owner = mm.backbone.get_submodule(name.rsplit(".", 1)[0])
            if group.kind == "head":
                undo.append(gate_input_last_dim(owner.out_proj, mm, name, block=dh))
            elif group.kind == "ffn":
                undo.append(gate_input_last_dim(owner.fc2, mm, name))
            elif group.kind == "conv":
                undo.append(gate_input_channels(enc.conv2, mm, name))
        return undo

    def can_skip_frozen(self, model):
        return False  # the paper computes every unit, dead or alive


def paper_style(backbone, kinds=("conv", "head", "ffn")) -> MaskedModel:
    """A Whisper encoder gated the paper's way (see the module docstring)."""
    family = PaperStyleWhisper()
    if not family.matches(backbone):
        raise TypeError(f"paper_style gates Whisper encoders, not {type(backbone).__name__}")
    return MaskedModel(backbone, family, family.discover(backbone, set(kinds)))
