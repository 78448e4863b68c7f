"""Per-unit latency costs measured on this machine, for the budget loss's `--cost latency`.

Parameters and FLOPs are only proxies for what a unit costs in wall time: a head's share of
the attention, an FFN neuron and a conv channel run at very different efficiencies. Here each
group's cost is measured: the encoder with that group removed (conv groups keep one unit) is
timed against the full encoder, interleaved, batch 1 at the training clip length; the saved
time divided by the removed units is the group's `latency_per_unit`. With these costs the
budget's `t` is the fraction of the gated units' latency that is kept (time spent outside
any group, e.g. the positional add or the final norm, is not counted in either).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from ..measure.timing import interleaved_latency
from ..core.gates import MaskedModel


def measure(masked: MaskedModel, inputs: dict, repeats: int = 15, progress: bool = False) -> dict[str, float]:
    """Seconds per unit for every group of `masked` (also written into each group's
    `latency_per_unit`); a group whose removal saves no measurable time costs 0."""
    from tqdm import tqdm

    from ..core.compact import compact
    full = {n: torch.ones(g.size, dtype=torch.bool) for n, g in masked.groups.items()}
    with masked.gates_removed() as base:
        reference = copy.deepcopy(base).eval()
    table = {}
    for name, group in tqdm(masked.groups.items(), disable=not progress, desc="latency costs", unit="group"):
        removed = group.size - group.min_keep
        if removed == 0:
            table[name] = 0.0
            continue
        keep = dict(full)
        keep[name] = torch.zeros(group.size, dtype=torch.bool)
        keep[name][:group.min_keep] = True
        small = compact(masked, keep)
        t = interleaved_latency({"full": reference, "without": small}, inputs, repeats=repeats)
        table[name] = max(0.0, t["full"]["median_s"] - t["without"]["median_s"]) / removed
    apply(masked, table)
    return table


def apply(masked: MaskedModel, table: dict[str, float]) -> None:
    for name, group in masked.groups.items():
        group.latency_per_unit = float(table[name])


def load_or_measure(masked: MaskedModel, inputs: dict, path: Path, progress: bool = False) -> dict[str, float]:
    """The table saved at `path` (a resumed run keeps its costs), else a fresh measurement saved there."""
    path = Path(path)
    if path.is_file():
        table = json.loads(path.read_text())
        if set(table) == set(masked.groups):
            apply(masked, table)
            return table
    table = measure(masked, inputs, progress=progress)
    path.write_text(json.dumps(table, indent=1))
    return table
