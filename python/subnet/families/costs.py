"""Per-layer cost table for `subnet inspect`: units, parameters and FLOPs per input second.

A unit group's cost is analytic (`UnitGroup.params_per_unit`, `flops_per_unit`), so
"before" is the base model's and "after" the kept units'. FLOPs per unit are counted
per input frame of the family (a waveform sample, a mel frame, ...); `input_rate`
turns that into per input second where the family's frame rate is known (a conv-stack
model may declare `subnet_input_rate`), else the table says "per input frame".
FLOPs outside the units (embeddings, norms, positional convs) are not in the table, and a
weight that two groups touch (a conv's input columns are the previous conv's units) counts
in both rows; the last line is the exact parameter count.
"""
from __future__ import annotations

import torch

# input frames per second of each family's FLOP unit
RATES = {"wav2vec2": 16000.0, "torchaudio-wav2vec2": 16000.0, "wav2vec2-conformer": 16000.0,
         "whisper": 100.0, "ast": 100.0, "clap-audio": 100.0}


def input_rate(family, model) -> float | None:
    if family.name == "conv-stack":
        return getattr(model, "subnet_input_rate", None)
    return RATES.get(family.name)


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def cost_table(family, base, groups, keep: dict[str, torch.Tensor], n_now: int) -> str:
    """The table (one line per unit group, then totals) as text."""
    rate = input_rate(family, base)
    per = "s" if rate else "frame"
    scale = rate or 1.0
    width = max([len(n) for n in groups] + [len("unit group")])
    lines = [f"{'unit group':<{width}}  kind    kept / total   params before -> after   "
             f"FLOPs/{per} before -> after"]
    for name, g in groups.items():
        k = int(keep[name].sum()) if name in keep else g.size
        p0, p1 = g.params_per_unit * g.size, g.params_per_unit * k
        f0, f1 = g.flops_per_unit * g.size * scale, g.flops_per_unit * k * scale
        lines.append(f"{name:<{width}}  {g.kind:<6} {k:>6} / {g.size:<6} {_si(p0):>9} -> {_si(p1):<9}"
                     f"{_si(f0):>14} -> {_si(f1)}")
    n_base = sum(p.numel() for p in base.parameters())
    lines.append(f"parameters: {n_now:,} of {n_base:,} ({100 * n_now / n_base:.1f}%)")
    return "\n".join(lines)
