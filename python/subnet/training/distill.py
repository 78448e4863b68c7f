"""Distillation from the frozen full encoder: keep the gated encoder's hidden states near the
full encoder's on the same batch, so an extraction keeps what the full encoder does outside the
training domain, not only what the task loss sees.

This follows DPHuBERT (Peng, Sudo, Shakeel, Watanabe, Interspeech 2023, arXiv 2305.17651),
which prunes a speech encoder while distilling selected layers of the unpruned one into it;
here the teacher is the same frozen encoder with every gate on.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch.nn import functional as F

KINDS = ("mse", "l1cos")


def _frame_distance(s: torch.Tensor, t: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, F) distance of each frame's (D,) feature vectors."""
    if kind == "mse":
        return (s - t).square().mean(-1)
    if kind == "l1cos":
        return (s - t).abs().mean(-1) + 1 - F.cosine_similarity(s, t, dim=-1)
    raise ValueError(f"unknown distillation loss {kind!r}; choose one of {KINDS}")


def distill_loss(student_states: Sequence[torch.Tensor], teacher_states: Sequence[torch.Tensor],
                 frames: torch.Tensor, layers: str | Sequence[int] = "mix",
                 mix_weights: torch.Tensor | None = None, kind: str = "mse") -> torch.Tensor:
    """Mean over the real frames of the distance between student and teacher hidden states.

    ``student_states`` and ``teacher_states``: tuples of (B, F, D) hidden states (an encoder's
    ``hidden_states``, same shapes); ``frames``: (B, F) bool, True on real (non-padded) frames.

    - ``layers="mix"``: the distance between the mixes ``sum_l w_l h_l`` the head reads, with
      ``mix_weights`` (L,) the head's softmax layer weights (required). They are detached: the
      distillation says which layers matter through them, but must not move them, or it could
      lower itself by shifting the head's mix towards the layers the gates change least
      (the input embeddings, say) instead of by keeping the units.
    - ``layers=[i, j, ...]``: the distance of each listed layer, averaged over the layers
      (DPHuBERT distils layers 0, 4, 8, 12 of HuBERT base).

    ``kind="mse"`` (default): per frame, the mean over the D features of the squared
    difference (MSE over the feature dimension). ``kind="l1cos"``: DPHuBERT's loss, per frame
    the mean absolute difference over the features plus the cosine distance 1 - cos(s, t)
    (DPHuBERT subtracts the raw cosine; the 1 makes a perfect match 0, same gradient).
    DPHuBERT also maps student states through learned linear layers before comparing; here the
    student is the teacher with units gated off, so its states are compared as they are.

    Frames are pooled over the batch (the sum over every real frame of every clip divided by
    their count, so a long clip weighs more than a short one); no real frame gives 0. The
    teacher's states are detached: the gradient reaches only the student. Computed in float32
    whatever the states' dtype (bf16 autocast).
    """
    if len(student_states) != len(teacher_states):
        raise ValueError(f"student has {len(student_states)} hidden states, teacher {len(teacher_states)}")
    if isinstance(layers, str):
        if layers != "mix":
            raise ValueError(f"layers must be 'mix' or a list of layer indices, not {layers!r}")
        if mix_weights is None:
            raise ValueError("layers='mix' needs mix_weights (the head's softmax layer weights)")
        w = mix_weights.detach().float()
        if w.shape != (len(student_states),):
            raise ValueError(f"mix_weights has shape {tuple(w.shape)}, expected ({len(student_states)},)")
        pairs = [(sum(wi * s.float() for wi, s in zip(w, student_states)),
                  sum(wi * t.detach().float() for wi, t in zip(w, teacher_states)))]
    else:
        if not layers:
            raise ValueError("layers is empty")
        pairs = [(student_states[i].float(), teacher_states[i].detach().float()) for i in layers]
    frames = frames.to(pairs[0][0].device, torch.bool)
    count = frames.sum().clamp(min=1)
    per_layer = [torch.where(frames, _frame_distance(s, t, kind), 0.0).sum() / count for s, t in pairs]
    return torch.stack(per_layer).mean()


def load_teacher_head(path, backbone: torch.nn.Module, head_config: dict, labels) -> torch.nn.Module:
    """The task head of a probe of this same encoder (`subnet extract --probe`'s artifact at
    `path`), in eval mode, frozen: on the full encoder's states it gives the probe's
    predictions, which prediction distillation (`--kd`) pulls the extraction's towards.

    Checked against the extraction: the probe's base weights must hash like `backbone` (the
    same encoder, fitted to the same clip length), and its task, hidden states and labels
    (in order) must be the extraction's."""
    from pathlib import Path

    from safetensors.torch import load_file

    from ..core.artifact import ArtifactError, read_info
    from ..core.hashing import weights_hash
    from .tasks import task_named
    path = Path(path)
    try:
        info = read_info(path)
    except ArtifactError as e:
        raise ValueError(f"teacher: {e}; the teacher is the OUT of `subnet extract --probe`") from None
    hc = info.extra.get("head")
    if hc is None or not (path / "head.safetensors").is_file():
        raise ValueError(f"teacher {path}: no task head (expected the artifact of `subnet extract --probe`)")
    if info.base_hash and info.base_hash != weights_hash(backbone):
        raise ValueError(f"teacher {path}: a probe of other base weights than this encoder (or of another "
                         "--max-seconds, which changes Whisper's positional table); train the probe with the "
                         "same --backbone and --max-seconds")
    if info.keep and any(len(k) != info.sizes[n] for n, k in info.keep.items()):
        raise ValueError(f"teacher {path}: an extraction with units removed; the teacher must be a probe of the "
                         "full encoder (`subnet extract --probe`)")
    for key in ("task", "n_states"):
        if hc.get(key) != head_config[key]:
            raise ValueError(f"teacher {path}: head {key} is {hc.get(key)!r}, this extraction's is "
                             f"{head_config[key]!r}")
    if labels is not None and info.extra.get("labels") != list(labels):
        raise ValueError(f"teacher {path}: its labels {info.extra.get('labels')} are not this extraction's "
                         f"{list(labels)} (same training data, same order)")
    head = task_named(hc["task"]).head(hc["width"], hc["n_states"], hc["n_out"], hc["layer"])
    head.load_state_dict(load_file(str(path / "head.safetensors")))
    return head.eval().requires_grad_(False)
