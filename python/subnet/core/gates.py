"""Gates: one logit per unit, binarised with a straight-through estimator.

Forward: g = round(sigmoid(m)). Backward: dg/dm = sigmoid'(m). The gated tensor is
always computed in full and multiplied by g, so dL/dg = sum(dL/dy * ungated output) is
available for dead units too and a unit can come back to life, unless its gate is frozen
(`MaskedModel.freeze_dead` / `update_dead`), in which case the gate is a constant 0 and the
unit is not computed at all: the forward pass runs a copy of the backbone shrunk to the
units that are not frozen, with the same gates on them. The copy is rebuilt once the units
frozen since it was built cost `REBUILD_STALE` of it (until then they are computed and gated
to 0, as before they froze): units die a few at a time, and a rebuild per step would cost more
than it saves.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import replace

import torch
from torch import nn

from .units import COST_ATTRS, UnitGroup

GATE_INIT = 1.0
REBUILD_STALE = 0.05  # fraction of the shrunk copy's parameters


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
            self.register_buffer(f"dead_steps_{i}", torch.zeros(g.size, dtype=torch.long))
        self._gates: dict[str, torch.Tensor] | None = None
        self._uninstall = []
        self.skip_frozen = True  # frozen units are not computed (see `runner`)
        # (frozen sets, the backbone shrunk to the others) while some units are frozen; the copy is
        # None until the next forward pass builds it (after a rebuild, or a checkpoint's restore)
        self._live = None
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
            forced = self._forced(i)
            if forced is not None:  # value 1, gradient unchanged
                g = g + ((1 - g) * forced).detach()
            frozen = getattr(self, f"frozen_{i}")  # frozen wins: a frozen unit is never computed
            values[name] = torch.where(frozen, torch.zeros_like(g), g)
        return values

    def _forced(self, i: int) -> torch.Tensor | None:
        """Units kept regardless of their logit: a conv group keeps its `min_keep` best. All
        tensor ops, no branch on values: no device sync per step, no break in a compiled graph."""
        k = self.groups[self._names[i]].min_keep
        if not k:
            return None
        m = self.logits[i].detach()
        forced = torch.zeros_like(m).scatter_(0, torch.topk(m, k).indices, 1.0)
        return forced * ((m > 0).sum() < k)  # zero (nothing forced) while k units are kept anyway

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
            return self.runner()(*args, **kwargs)

    def call(self, fn, *args, **kwargs):
        """`fn(module, ...)` with the gates on, where `module` is what `forward` would run (the
        backbone, or its shrunk copy while units are frozen): for encoders whose hidden states
        come from a method other than `forward` (torchaudio's `extract_features`, ...)."""
        with self.active():
            return fn(self.runner(), *args, **kwargs)

    def call_full(self, fn, *args, **kwargs):
        """`fn(backbone, ...)` with every gate 1, frozen units included: the full encoder's output
        (up to the rounding of the gated kernels), without taking the gates out and putting
        them back."""
        device = self.logits[0].device if len(self.logits) else None
        self._gates = {n: torch.ones(g.size, device=device) for n, g in self.groups.items()}
        try:
            return fn(self.backbone, *args, **kwargs)
        finally:
            self._gates = None

    # --- skipping frozen units -------------------------------------------------------
    def runner(self) -> nn.Module:
        """The module the forward pass runs: the backbone, or while units are frozen (and
        `skip_frozen`) a copy shrunk to the units that are not, gated by the same logits."""
        frozen = [getattr(self, f"frozen_{i}") for i in range(len(self._names))]
        # one device sync per forward pass, not one per group
        if not (self.skip_frozen and frozen and bool(torch.stack([f.any() for f in frozen]).any())
                and self.family.can_skip_frozen(self.backbone)):
            self._live = None
            return self.backbone
        frozen = [f.cpu().numpy() for f in frozen]
        if self._live is None or self._stale(self._live[0], frozen):
            # a snapshot (the buffers change in place); the old copy is freed before the new one is built
            self._live = ([f.copy() for f in frozen], None)
        built, live = self._live
        if live is None:
            live = self._shrunk_copy({n: torch.from_numpy(~b) for n, b in zip(self._names, built)})
            self._live = (built, live)
        live.train(self.backbone.training)
        return live

    def live_build(self) -> list[torch.Tensor] | None:
        """The frozen sets the current shrunk copy was built for (None: no copy). A checkpoint
        keeps them: a resumed run must run the same copy, or its float results would differ."""
        return None if self._live is None else [torch.from_numpy(b.copy()) for b in self._live[0]]

    def restore_live_build(self, built: list[torch.Tensor] | None) -> None:
        """Run the copy of `live_build()` again (built by the next forward pass)."""
        self._live = None if built is None else ([b.cpu().numpy().astype(bool) for b in built], None)

    def _stale(self, built: list, frozen: list) -> bool:
        """Whether the copy built with `built` frozen must be rebuilt for `frozen` (numpy bool
        arrays): some unit it lacks is no longer frozen, or the units frozen since cost
        `REBUILD_STALE` of it."""
        stale = computed = 0.0
        for g, b, f in zip(self.groups.values(), built, frozen):
            if (b & ~f).any():
                return True
            cost = g.params_per_unit or 1.0
            stale += cost * int((f & ~b).sum())
            computed += cost * int((~b).sum())
        return stale > REBUILD_STALE * computed

    def _shrunk_copy(self, alive: dict[str, torch.Tensor]) -> nn.Module:
        with self.gates_removed() as base:
            # parameters shared, not copied (copying every weight was half of a rebuild): they are
            # frozen, and shrinking gives the copy new tensors for the sliced ones, writing none
            live = copy.deepcopy(base, {id(p): p for p in base.parameters()})
        live = self.family.shrink(live, self.groups, alive)
        live.requires_grad_(False)
        device = self.logits[0].device if len(self.logits) else torch.device("cpu")
        view = _LiveView(self, live, {n: replace(g, size=int(alive[n].sum()), min_keep=0)
                                      for n, g in self.groups.items() if alive[n].any()},
                         {n: torch.nonzero(a).flatten().to(device) for n, a in alive.items()})
        self.family.install_gates(view)  # the copy is dropped whole, so its hooks need no undo
        return live

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
            getattr(self, f"dead_steps_{i}").zero_()

    @torch.no_grad()
    def freeze_dead(self) -> int:
        """Freeze every unit whose gate is 0 now: it stays 0, gets no gradient and is no
        longer computed. Returns the number of frozen units."""
        return self.update_dead(after=1)

    @torch.no_grad()
    def update_dead(self, after: int) -> int:
        """Count one more step of every unit whose gate is 0 (a live gate resets its count) and
        freeze the units dead for `after` consecutive counts; a group keeps its `min_keep` best
        units unfrozen. Returns the number of frozen units."""
        total = 0
        for i, name in enumerate(self._names):
            m, frozen, dead = self.logits[i], getattr(self, f"frozen_{i}"), getattr(self, f"dead_steps_{i}")
            dead.copy_(torch.where(m <= 0, dead + 1, torch.zeros_like(dead)))
            new = (dead >= after) & ~frozen
            k = self.groups[name].min_keep
            if k and new.any():  # never freeze a group below its minimum
                spare = int((~frozen).sum()) - k
                if spare <= 0:
                    new.zero_()
                elif int(new.sum()) > spare:
                    order = torch.argsort(torch.where(new, m, torch.full_like(m, float("inf"))))
                    new = torch.zeros_like(new)
                    new[order[:spare]] = True
            frozen |= new
            total += int(frozen.sum())
        return total

    def kept_fraction(self, cost: str = "params") -> float:
        """Fraction of the gated units' cost that is kept (cost: units|params|flops|latency)."""
        kept = total = 0.0
        for name, mask in self.keep().items():
            g = self.groups[name]
            c = 1.0 if cost == "units" else getattr(g, COST_ATTRS[cost])
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


class _LiveView:
    """What a family's `install_gates` sees when gating a shrunk copy: the copy as backbone,
    groups sized to its units, and each group's gate restricted to those units."""

    def __init__(self, mm: MaskedModel, backbone: nn.Module, groups: dict, alive: dict[str, torch.Tensor]):
        self.backbone, self.groups, self.family = backbone, groups, mm.family
        self._mm, self._alive = mm, alive

    def gate(self, name: str) -> torch.Tensor:
        return self._mm.gate(name).index_select(0, self._alive[name])
