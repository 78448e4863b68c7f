"""Sparsity losses. The total objective is L = L_task + lambda * L_s.

- `seed`:   L_s = sum_i sigmoid(m_i - t)^2 / N over all N units (the paper's equation)
- `mean`:   L_s = (mean over groups of mean(sigmoid(m)) - t)^2 (the paper's released code)
- `budget`: L_s = (sum_i c_i g_i / sum_i c_i - t)^2, c_i the unit's parameter, FLOP or measured
            latency cost
            and g_i its straight-through gate (forward: round(sigmoid(m_i)), backward: the
            sigmoid's gradient), so `t` is the fraction of the cost actually kept.
"""
from __future__ import annotations

import torch

from .gates import straight_through
from .units import COST_ATTRS

LOSSES = ("seed", "mean", "budget")
COSTS = tuple(COST_ATTRS)


def sparsity_loss(logits: list[torch.Tensor], kind: str, t: float,
                  costs: list[torch.Tensor] | None = None) -> torch.Tensor:
    """L_s for gate logits given per group (`costs`: per-unit costs, budget loss only)."""
    if kind == "seed":
        flat = torch.cat([m.flatten() for m in logits])
        return torch.sigmoid(flat - t).square().sum() / flat.numel()
    if kind == "mean":
        means = torch.stack([torch.sigmoid(m).mean() for m in logits])
        return (means.mean() - t).square()
    if kind == "budget":
        if costs is None:
            raise ValueError("the budget loss needs per-unit costs")
        kept = sum((c * straight_through(m)).sum() for m, c in zip(logits, costs))
        total = sum(c.sum() for c in costs)
        return (kept / total - t).square()
    raise ValueError(f"unknown sparsity loss {kind!r}; choose one of {LOSSES}")


class SparsityLoss(torch.nn.Module):
    """lambda * L_s for a MaskedModel: `SparsityLoss("budget", t=0.3, lam=1.0, cost="params")`."""

    def __init__(self, kind: str = "seed", t: float = 0.5, lam: float = 1.0, cost: str = "params"):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"unknown sparsity loss {kind!r}; choose one of {LOSSES}")
        if cost not in COSTS:
            raise ValueError(f"unknown cost {cost!r}; choose one of {COSTS}")
        self.kind, self.t, self.lam, self.cost = kind, float(t), float(lam), cost

    def forward(self, masked) -> torch.Tensor:
        logits = list(masked.logits)
        costs = None
        if self.kind == "budget":
            attr = COST_ATTRS[self.cost]
            costs = [torch.full_like(m, getattr(g, attr)) for m, g in zip(logits, masked.groups.values())]
        return self.lam * sparsity_loss(logits, self.kind, self.t, costs)
