"""UnitGroup: a named set of prunable units and the parameter slices they own.

A unit (an attention head, an FFN neuron, a conv channel) owns slices of one or more
parameters. A `Slice` says which: along `dim` of parameter `param`, unit u owns the
`block` consecutive entries starting at u * block, repeated in each of `sections` equal
parts of that dim (fused q/k/v projections have three sections, GLU projections two).
Compaction keeps exactly the entries owned by kept units; nothing else is sliced.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

KINDS = ("conv", "head", "ffn", "dwconv")
#: unit cost name -> UnitGroup attribute (the budget loss's `--cost`)
COST_ATTRS = {"params": "params_per_unit", "flops": "flops_per_unit", "latency": "latency_per_unit"}


@dataclass(frozen=True)
class Slice:
    param: str  # dotted parameter name inside the backbone
    dim: int
    block: int = 1
    sections: int = 1


@dataclass
class UnitGroup:
    """One gate vector: `size` units of one `kind` in one layer.

    `params_per_unit` and `flops_per_unit` are the per-unit costs used by the `budget`
    loss and by reports (FLOPs per input frame of the backbone, attention at the
    family's nominal sequence length); `latency_per_unit` (seconds) is filled in by
    `subnet.training.latency_costs.measure` for `--cost latency`.
    """

    name: str
    kind: str
    size: int
    slices: list[Slice] = field(default_factory=list)
    params_per_unit: float = 0.0
    flops_per_unit: float = 0.0
    latency_per_unit: float = 0.0
    min_keep: int = 0  # conv groups keep at least one unit

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unit group {self.name!r}: kind {self.kind!r} is not one of {KINDS}")

    def indices(self, keep: torch.Tensor, sl: Slice) -> torch.Tensor:
        """Indices along `sl.dim` of `sl.param` that the kept units own (sorted)."""
        units = torch.nonzero(keep, as_tuple=False).flatten()
        within = (units[:, None] * sl.block + torch.arange(sl.block)).flatten()
        span = self.size * sl.block
        return torch.cat([within + s * span for s in range(sl.sections)])

    def check_keep(self, keep: torch.Tensor) -> torch.Tensor:
        """Validate a keep mask for this group and return it as a CPU bool tensor."""
        keep = torch.as_tensor(keep).detach().to("cpu")
        if keep.dtype != torch.bool:
            raise TypeError(f"keep mask for {self.name!r} must be a bool tensor, got {keep.dtype}")
        if keep.shape != (self.size,):
            raise ValueError(
                f"keep mask for {self.name!r} must have shape ({self.size},), got {tuple(keep.shape)}"
            )
        if int(keep.sum()) < self.min_keep:
            raise ValueError(
                f"keep mask for {self.name!r} keeps {int(keep.sum())} units; a {self.kind} group "
                f"must keep at least {self.min_keep}"
            )
        return keep


def kept_shapes(model: torch.nn.Module, groups: dict[str, UnitGroup],
                keep: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Shape every sliced parameter will have after compaction (analytic, no copying)."""
    # buffers too: a BatchNorm's running statistics follow their channel
    params = {**dict(model.named_buffers()), **dict(model.named_parameters())}
    shapes = {}
    for name, group in groups.items():
        for sl in group.slices:
            shape = list(shapes.get(sl.param, params[sl.param].shape))
            shape[sl.dim] = int(keep[name].sum()) * sl.block * sl.sections
            shapes[sl.param] = tuple(shape)
    return shapes


def count_kept_params(model: torch.nn.Module, groups: dict[str, UnitGroup],
                      keep: dict[str, torch.Tensor]) -> int:
    """Parameter count of the compact model, computed from the keep masks alone."""
    shapes = kept_shapes(model, groups, keep)
    total = 0
    for name, p in model.named_parameters():
        total += int(torch.Size(shapes.get(name, p.shape)).numel())
    return total
