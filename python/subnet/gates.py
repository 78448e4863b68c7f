"""Gates: one logit per unit, binarised with a straight-through estimator.

Forward: g = round(sigmoid(m)). Backward: dg/dm = sigmoid'(m). The gated tensor is
always computed in full and multiplied by g, so dL/dg = sum(dL/dy * ungated output) is
available for dead units too and a unit can come back to life, unless its gate is frozen
(`MaskedModel.freeze_dead`), in which case the gate is a constant 0.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from .units import UnitGroup

GATE_INIT = 1.0


def straight_through(logits: torch.Tensor) -> torch.Tensor:
    """round(sigmoid(m)) in the forward pass, the sigmoid's gradient in the backward pass."""
    soft = torch.sigmoid(logits)
    return soft + (torch.round(soft) - soft).detach()


class MaskedModel(nn.Module):
    """A frozen backbone with a gate on every unit of `groups`.

    Calling it runs the backbone's own forward with the gates applied. Only the gate
    logits (`mm.logits`) are trainable; the backbone's parameters are frozen.
    """

    def __init__(self, backbone: nn.Module, family, groups: dict[str, UnitGroup]):
        super().__init__()
        self.backbone = backbone
        self.family = family
        self.groups = groups
        self._names = list(groups)
        self.logits = nn.ParameterList(
            [nn.Parameter(torch.full((g.size,), GATE_INIT)) for g in groups.values()]
        )
        for i, g in enumerate(groups.values()):
            self.register_buffer(f"frozen_{i}", torch.zeros(g.size, dtype=torch.bool))
        self._gates: dict[str, torch.Tensor] | None = None
        self._uninstall = []
        backbone.requires_grad_(False)
        self._install()

    # --- gate values -------------------------------------------------------------
    def logit(self, name: str) -> nn.Parameter:
        return self.logits[self._names.index(name)]

    def gate_values(self) -> dict[str, torch.Tensor]:
        """The gate of every group for the next forward pass (straight-through)."""
        values = {}
        for i, name in enumerate(self._names):
            g = straight_through(self.logits[i])
            frozen = getattr(self, f"frozen_{i}")
            g = torch.where(frozen, torch.zeros_like(g), g)
            forced = self._forced(i)
            if forced is not None:  # value 1, gradient unchanged
                g = g + ((1 - g) * forced).detach()
            values[name] = g
        return values

    def _forced(self, i: int) -> torch.Tensor | None:
        """Units kept regardless of their logit: a conv group keeps its `min_keep` best."""
        k = self.groups[self._names[i]].min_keep
        m = self.logits[i].detach()
        if not k or int((m > 0).sum()) >= k:
            return None
        forced = torch.zeros_like(m)
        forced[torch.topk(m, k).indices] = 1.0
        return forced

    def gate(self, name: str) -> torch.Tensor:
        """Gate vector of group `name` during a forward pass (used by the installed hooks)."""
        if self._gates is None:
            raise RuntimeError("gates are only defined while MaskedModel.forward runs")
        return self._gates[name]

    @contextlib.contextmanager
    def active(self):
        """Gates on for calls made inside the block (e.g. to a submodule of the backbone)."""
        self._gates = self.gate_values()
        try:
            yield self.backbone
        finally:
            self._gates = None

    def forward(self, *args, **kwargs):
        with self.active():
            return self.backbone(*args, **kwargs)

    # --- keep masks ----------------------------------------------------------------
    def keep(self) -> dict[str, torch.Tensor]:
        """Current keep decision per group: True where round(sigmoid(m)) == 1."""
        out = {}
        for i, name in enumerate(self._names):
            alive = self.logits[i].detach() > 0
            forced = self._forced(i)
            if forced is not None:
                alive = alive | forced.bool()
            out[name] = (alive & ~getattr(self, f"frozen_{i}")).cpu()
        return out

    @torch.no_grad()
    def set_keep(self, keep: dict[str, torch.Tensor]) -> None:
        """Set gates by hand: logit +1 where kept, -1 where removed (unfreezes them)."""
        unknown = set(keep) - set(self._names)
        if unknown:
            raise KeyError(f"unknown unit groups {sorted(unknown)}; known: {self._names[:4]}...")
        for name, mask in keep.items():
            i = self._names.index(name)
            mask = self.groups[name].check_keep(mask).to(self.logits[i].device)
            self.logits[i].copy_(torch.where(mask, GATE_INIT, -GATE_INIT))
            getattr(self, f"frozen_{i}").zero_()

    @torch.no_grad()
    def freeze_dead(self) -> int:
        """Freeze every unit whose gate is 0 now: it stays 0 and gets no gradient.

        Returns the number of frozen units."""
        total = 0
        for i in range(len(self._names)):
            frozen = getattr(self, f"frozen_{i}")
            frozen |= self.logits[i] <= 0
            total += int(frozen.sum())
        return total

    def kept_fraction(self, cost: str = "params") -> float:
        """Fraction of the gated units' cost that is kept (cost: units|params|flops)."""
        kept = total = 0.0
        for name, mask in self.keep().items():
            g = self.groups[name]
            c = {"units": 1.0, "params": g.params_per_unit, "flops": g.flops_per_unit}[cost]
            kept += c * float(mask.sum())
            total += c * g.size
        return kept / total if total else 1.0

    # --- hooks -----------------------------------------------------------------------
    def _install(self):
        self._uninstall = self.family.install_gates(self)

    def _remove(self):
        for undo in reversed(self._uninstall):
            undo()
        self._uninstall = []

    @contextlib.contextmanager
    def gates_removed(self):
        """Temporarily restore the backbone's own forward (e.g. to copy it)."""
        self._remove()
        try:
            yield self.backbone
        finally:
            self._install()

    def detach_backbone(self) -> nn.Module:
        """Remove the gates for good and return the (unchanged) backbone."""
        self._remove()
        return self.backbone
