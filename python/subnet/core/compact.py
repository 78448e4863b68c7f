"""Keep decision -> a physically smaller model of the backbone's own class, verified."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from .gates import MaskedModel
from .hashing import weights_hash
from .units import UnitGroup, count_kept_params


class CompactionError(RuntimeError):
    """The compact model does not reproduce the masked model."""


@dataclass
class CompactInfo:
    """What a compact model remembers about how it was made (saved in subnet.json)."""

    family: str
    base: dict  # the family's description of the base architecture
    base_hash: str | None
    keep: dict[str, list[int]]  # group -> kept unit indices
    sizes: dict[str, int]  # group -> units in the base model
    kinds: dict[str, str]
    extra: dict = field(default_factory=dict)

    def keep_masks(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, idx in self.keep.items():
            m = torch.zeros(self.sizes[name], dtype=torch.bool)
            m[torch.tensor(idx, dtype=torch.long)] = True
            out[name] = m
        return out


def compact(masked: MaskedModel, keep: dict[str, torch.Tensor] | None = None, verify: bool = True,
            atol_rel: float = 1e-4, base_hash: str | None = None) -> nn.Module:
    """Return a smaller copy of `masked.backbone` with only the kept units.

    `keep` defaults to the masked model's current decision. With `verify`, the compact
    model is run on the family's probe input next to the masked model (gates fixed to
    the same decision) and a `CompactionError` is raised if max |diff| exceeds
    `atol_rel * max |masked output|`. The result carries `.subnet_info` (CompactInfo).
    """
    family, groups = masked.family, masked.groups
    keep = {n: groups[n].check_keep(m) for n, m in (keep or masked.keep()).items()}
    missing = set(groups) - set(keep)
    if missing:
        raise KeyError(f"no keep mask for groups {sorted(missing)[:4]}")
    with masked.gates_removed() as base:
        desc = family.describe(base)
        base_hash = base_hash or weights_hash(base)
        small = copy.deepcopy(base)
    small = family.shrink(small, groups, keep)
    small.eval()
    small.subnet_info = CompactInfo(
        family=family.name, base=desc, base_hash=base_hash,
        keep={n: torch.nonzero(m).flatten().tolist() for n, m in keep.items()},
        sizes={n: g.size for n, g in groups.items()}, kinds={n: g.kind for n, g in groups.items()})
    expected = count_kept_params(masked.backbone, groups, keep)
    actual = sum(p.numel() for p in small.parameters())
    if actual != expected:
        raise CompactionError(f"compact model has {actual} parameters, the keep masks give {expected}")
    if verify:
        err, scale = compare_to_masked(masked, small, keep)
        if not err <= atol_rel * scale:
            raise CompactionError(
                f"compact output differs from the masked output: max |diff| {err:.3g} > "
                f"{atol_rel:g} x max |ref| {scale:.3g}")
    return small


@torch.no_grad()
def compare_to_masked(masked: MaskedModel, small: nn.Module, keep: dict) -> tuple[float, float]:
    """(max |compact - masked|, max |masked|) on the family's probe input, gates = keep."""
    family = masked.family
    saved = [p.detach().clone() for p in masked.logits]
    frozen = [getattr(masked, f"frozen_{i}").clone() for i in range(len(saved))]
    was_training = masked.backbone.training
    masked.set_keep(keep)
    masked.backbone.eval()
    try:
        # drawn on the CPU (same numbers everywhere), run where the model lives
        device = next(masked.backbone.parameters()).device
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                  for k, v in family.probe_inputs(masked.backbone, torch.Generator().manual_seed(0)).items()}
        with masked.active():
            ref = family.main_output(family.run_probe(masked.backbone, inputs))
        out = family.main_output(family.run_probe(small, inputs))
    finally:
        for p, s in zip(masked.logits, saved):
            p.copy_(s)
        for i, f in enumerate(frozen):
            getattr(masked, f"frozen_{i}").copy_(f)
        masked.backbone.train(was_training)
    if out.shape != ref.shape:
        raise CompactionError(f"compact output shape {tuple(out.shape)} != masked {tuple(ref.shape)}")
    return float((out - ref).abs().max()), float(ref.abs().max())


ALIGNED_KINDS = ("conv", "ffn", "dwconv")


def aligned_keep(masked: MaskedModel, multiple: int) -> dict[str, torch.Tensor]:
    """The current decision with each conv / FFN group's kept count rounded to the nearest
    multiple of `multiple` (matrix sizes that vector units and tensor cores like), the units
    chosen by gate logit; heads and groups smaller than `multiple` are left as they are."""
    keep = masked.keep()
    if multiple <= 1:
        return keep
    out = {}
    for name, mask in keep.items():
        group = masked.groups[name]
        if group.kind not in ALIGNED_KINDS or group.size < multiple:
            out[name] = mask
            continue
        k = int(round(int(mask.sum()) / multiple)) * multiple
        k = min(group.size, max(k, group.min_keep))
        order = torch.argsort(masked.logit(name).detach().cpu(), descending=True, stable=True)
        new = torch.zeros_like(mask)
        new[order[:k]] = True
        out[name] = new
    return out


def rebuild(family, info: CompactInfo, base: nn.Module, groups: dict[str, UnitGroup]) -> nn.Module:
    """Apply a stored keep decision to a base model (used when loading artifacts)."""
    small = family.shrink(base, groups, info.keep_masks())
    small.eval()
    small.subnet_info = info
    return small
