"""Crop/pad policy: bound a clip's length (random crop for training, centre crop for eval)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MODES = ("random", "center", "start")


def clip_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator fixed by (seed, epoch, index): the same crop in any worker, after a resume."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


@dataclass(frozen=True)
class CropPad:
    """``max_seconds`` bounds every clip (None: keep whole clips); ``mode`` picks the window
    ("random" for training, "center" for evaluation, "start"); ``pad`` zero-pads shorter clips
    to exactly ``max_seconds`` (for encoders with a fixed input length)."""

    max_seconds: float | None = None
    mode: str = "center"
    pad: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"crop mode must be one of {MODES}, not {self.mode!r}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, not {self.max_seconds}")
        if self.pad and self.max_seconds is None:
            raise ValueError("pad=True needs max_seconds")

    def max_samples(self, sample_rate: int) -> int | None:
        return None if self.max_seconds is None else max(1, round(self.max_seconds * sample_rate))

    def length(self, samples: int, sample_rate: int) -> int:
        """The output length for an input of ``samples`` (used for bucketing)."""
        cap = self.max_samples(sample_rate)
        if cap is None:
            return samples
        return cap if self.pad else min(samples, cap)

    def __call__(self, wave: torch.Tensor, sample_rate: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Crop (and maybe pad) a 1-D waveform."""
        cap = self.max_samples(sample_rate)
        if cap is None:
            return wave
        n = wave.shape[-1]
        if n > cap:
            if self.mode == "random":
                start = int(torch.randint(0, n - cap + 1, (1,), generator=generator))
            else:
                start = (n - cap) // 2 if self.mode == "center" else 0
            wave = wave[..., start:start + cap]
        elif self.pad and n < cap:
            wave = torch.nn.functional.pad(wave, (0, cap - n))
        return wave
