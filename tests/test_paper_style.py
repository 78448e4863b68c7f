"""benchmarks/paper_style.py gates exactly like subnet (same outputs, same gate gradients), so
the speed comparisons of benchmarks/ compare implementations, not methods."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

import subnet
from builders import build
from checks import TOL, inputs_for, random_keep

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from paper_style import paper_style  # noqa: E402


def test_paper_style_gating_equals_subnet():
    model = build("whisper")
    ours, paper = subnet.attach_masks(copy.deepcopy(model)), paper_style(copy.deepcopy(model))
    keep = random_keep(ours, seed=5)
    ours.set_keep(keep)
    paper.set_keep(keep)
    x = inputs_for("whisper", model)
    weight = None
    grads = []
    for mm in (ours, paper):
        out = mm(**x).last_hidden_state
        weight = torch.randn_like(out) if weight is None else weight
        (out * weight).sum().backward()
        grads.append((out.detach(), torch.cat([p.grad for p in mm.logits])))
    (a, ga), (b, gb) = grads
    assert (a - b).abs().max() <= TOL * a.abs().max()
    assert (ga - gb).abs().max() <= 1e-3 * ga.abs().max()
    assert paper.backbone.config._attn_implementation == "eager"
