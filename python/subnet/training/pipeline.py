"""Pipeline: front end + encoder + task head as one callable on waveforms; load it from disk."""
from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ..families import family_of
from ..families.front_ends import FrontEnd, front_end_from
from ..core.gates import MaskedModel
from .tasks import Task, task_named


class Pipeline(nn.Module):
    """front end + encoder (masked or compact) + head, as one callable on waveforms."""

    def __init__(self, encoder: nn.Module, front_end: FrontEnd, head: nn.Module, task: Task | str,
                 labels: list[str] | None = None):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.task = task if isinstance(task, Task) else task_named(task)
        self.front_end, self.labels = front_end, labels
        self.family = encoder.family if isinstance(encoder, MaskedModel) else family_of(encoder)
        self.cache = None  # an EncoderCache, consulted only while nothing in the encoder trains
        self.front_end_cache = None  # a FrontEndCache: its wrapped modules see the clips of `encode`
        self._compiled = None

    def compile(self, mode: str) -> None:
        """torch.compile the encoder's hidden-state computation (front-end inputs -> states)."""
        self._compiled = torch.compile(partial(self.family.hidden_states, self.encoder), mode=mode)

    def states(self, inputs: dict) -> tuple[torch.Tensor, ...]:
        """The hidden states a head reads, from the front end's inputs."""
        if self._compiled is not None:
            return self._compiled(inputs)
        return self.family.hidden_states(self.encoder, inputs)

    def encode(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The encoder's hidden states (every layer) for a batch of waveforms."""
        inputs = self.front_end.inputs(waves, lengths)
        fec = self.front_end_cache
        with fec.clips(waves, lengths, not self.front_end.fixed_length) if fec is not None else nullcontext():
            return self.states(inputs)

    def _encoder_trains(self) -> bool:
        return any(p.requires_grad for p in self.encoder.parameters())

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor | None = None):
        """(head output, (B, F) bool mask of real frames) for a batch of waveforms."""
        logits, frames, _ = self.run(waves, lengths)
        return logits, frames

    def run(self, waves: torch.Tensor, lengths: torch.Tensor | None = None):
        """`forward`, and the hidden states the head read: (logits, frames, states)."""
        if lengths is None:
            lengths = torch.full((waves.shape[0],), waves.shape[1], dtype=torch.long)
        device = next(self.head.parameters()).device  # the waveforms go where the model is
        waves, lengths = waves.to(device), lengths.to(device)
        if self.cache is not None and not self._encoder_trains():
            states = self.cache.states(self.encode, waves, lengths, not self.front_end.fixed_length)
        else:
            states = self.encode(waves, lengths)
        frames = self.front_end.frames(lengths, states[-1].shape[1])
        return self.head(states, frames), frames, states

    @torch.no_grad()
    def teacher_states(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The hidden states of the full encoder (every unit on, frozen ones too) for a batch:
        what distillation pulls a masked encoder's states towards."""
        if not isinstance(self.encoder, MaskedModel):
            raise TypeError("teacher_states needs a MaskedModel encoder (the full encoder is its backbone)")
        device = next(self.head.parameters()).device
        waves, lengths = waves.to(device), lengths.to(device)
        inputs = self.front_end.inputs(waves, lengths)
        fec = self.front_end_cache
        with fec.clips(waves, lengths, not self.front_end.fixed_length) if fec is not None else nullcontext():
            return self.encoder.call_full(self.family.states, inputs)


def load_pipeline(path) -> Pipeline:
    """The compact encoder + its front end + its task head, from an extraction's artifact."""
    from safetensors.torch import load_file

    from ..core.artifact import ArtifactError, load
    path = Path(path)
    encoder = load(path)
    extra = encoder.subnet_info.extra
    if "head" not in extra:
        raise ArtifactError(f"{path / 'subnet.json'}: no task head (made by subnet.compact alone, "
                            "not by subnet extract); use subnet.load for the encoder")
    hc = extra["head"]
    head = task_named(hc["task"]).head(hc["width"], hc["n_states"], hc["n_out"], hc["layer"])
    head.load_state_dict(load_file(str(path / "head.safetensors")))
    pipe = Pipeline(encoder, front_end_from(extra["front_end"]), head, hc["task"],
                    extra.get("labels"))
    return pipe.eval()
