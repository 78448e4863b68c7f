"""subnet: extract small, fast, task-specific subnetworks from pretrained audio encoders.

    import subnet
    enc = subnet.load_backbone("whisper-tiny.en")        # or a transformers dir / nn.Module
    mm = subnet.attach_masks(enc)                         # gates on conv channels, heads, FFN neurons
    ... train mm.parameters() (gate logits) with a task head and subnet.SparsityLoss ...
    small = subnet.compact(mm)                            # same class, fewer units, verified
    subnet.save(small, "out/"); small = subnet.load("out/")
"""
from __future__ import annotations

from torch import nn

from .core.artifact import ArtifactError, load, load_masks, save, save_masks
from .backbones import load_backbone
from .core.compact import CompactionError, compact
from .families import family_of
from .core.gates import MaskedModel
from .core.losses import SparsityLoss, sparsity_loss
from .core.units import KINDS, UnitGroup, count_kept_params


def extract(*args, **kwargs):
    """The whole loop: see `subnet.training.extract.extract` (imported lazily: it pulls in the data layer)."""
    from .training.extract import extract as run
    return run(*args, **kwargs)


def load_pipeline(path):
    """Front end + compact encoder + task head of an extraction artifact, as one callable on
    waveforms: `logits, frames = subnet.load_pipeline(DIR)(waves, lengths)`."""
    from .training.pipeline import load_pipeline as load_it
    return load_it(path)

__version__ = "0.1.0"


def attach_masks(backbone: nn.Module, kinds=("conv", "head", "ffn")) -> MaskedModel:
    """Put a gate (logit +1, i.e. kept) on every unit of the given kinds; freeze the backbone."""
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown unit kinds {bad}; choose from {KINDS}")
    family = family_of(backbone)
    groups = family.discover(backbone, kinds)
    if not groups:
        raise ValueError(f"{type(backbone).__name__} has no units of kinds {kinds}")
    return MaskedModel(backbone, family, groups)


__all__ = ["attach_masks", "extract", "load_pipeline", "compact", "save", "load", "save_masks", "load_masks", "load_backbone",
           "MaskedModel", "UnitGroup", "SparsityLoss", "sparsity_loss", "count_kept_params",
           "CompactionError", "ArtifactError", "family_of"]
