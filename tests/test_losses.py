"""Sparsity losses: formulas by hand, and the budget loss reaching its target."""
from __future__ import annotations

import math

import pytest
import torch

import subnet
from subnet.core.losses import sparsity_loss
from builders import build


def sig(x):
    return 1 / (1 + math.exp(-x))


LOGITS = [torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, -0.5])]


def test_seed_by_hand():
    t = 0.3
    vals = [1.0, -2.0, 0.5, 3.0, -0.5]
    expected = sum(sig(v - t) ** 2 for v in vals) / 5
    assert sparsity_loss(LOGITS, "seed", t).item() == pytest.approx(expected, rel=1e-6)


def test_mean_by_hand():
    t = 0.4
    g1 = (sig(1.0) + sig(-2.0) + sig(0.5)) / 3
    g2 = (sig(3.0) + sig(-0.5)) / 2
    assert sparsity_loss(LOGITS, "mean", t).item() == pytest.approx(((g1 + g2) / 2 - t) ** 2, rel=1e-6)


def test_budget_by_hand():
    t = 0.5
    costs = [torch.tensor([10.0, 10.0, 10.0]), torch.tensor([1.0, 1.0])]
    kept = 10 * (1 + 0 + 1) + 1 * (1 + 0)  # round(sigmoid(m)) per unit
    expected = (kept / 32 - t) ** 2
    assert sparsity_loss(LOGITS, "budget", t, costs).item() == pytest.approx(expected, rel=1e-6)
    # its gradient is the straight-through one: 2 (F - t) c_i / C * sigmoid'(m_i)
    logits = [m.clone().requires_grad_(True) for m in LOGITS]
    sparsity_loss(logits, "budget", t, costs).backward()
    s = sig(1.0)
    assert logits[0].grad[0].item() == pytest.approx(2 * (kept / 32 - t) * 10 / 32 * s * (1 - s), rel=1e-5)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown sparsity loss"):
        subnet.SparsityLoss("l1")
    with pytest.raises(ValueError, match="needs per-unit costs"):
        sparsity_loss(LOGITS, "budget", 0.5)


def test_budget_drives_kept_parameter_fraction_to_target():
    """Task loss zero: the budget loss alone brings the kept parameter fraction to t."""
    torch.manual_seed(0)
    n_units = 400
    costs = [torch.rand(n_units) * 9 + 1]  # heterogeneous units, as in real models
    logits = [torch.full((n_units,), 1.0, requires_grad=True)]
    opt = torch.optim.SGD(logits, lr=200.0)
    t = 0.3
    for _ in range(600):
        opt.zero_grad()
        sparsity_loss(logits, "budget", t, costs).backward()
        opt.step()
    kept = (costs[0] * (logits[0] > 0)).sum() / costs[0].sum()
    assert abs(kept.item() - t) <= 0.05, kept.item()


def test_budget_on_a_masked_model_uses_param_costs():
    mm = subnet.attach_masks(build("torch-batch"))
    loss = subnet.SparsityLoss("budget", t=0.3, lam=2.0, cost="params")
    # all kept: fraction 1 -> lambda * (1 - t)^2
    assert loss(mm).item() == pytest.approx(2.0 * 0.7 ** 2, rel=1e-6)
    keep = {n: torch.zeros(g.size, dtype=torch.bool) for n, g in mm.groups.items()}
    heads = [n for n in keep if n.endswith("heads")]
    for n in heads:
        keep[n][:] = True
    mm.set_keep(keep)
    frac = mm.kept_fraction("params")
    total = sum(g.params_per_unit * g.size for g in mm.groups.values())
    assert frac == pytest.approx(sum(mm.groups[n].params_per_unit * mm.groups[n].size for n in heads) / total)
    assert loss(mm).item() == pytest.approx(2.0 * (frac - 0.3) ** 2, rel=1e-5)
