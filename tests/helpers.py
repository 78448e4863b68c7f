"""Helpers shared by the tests (fixtures built on them live in conftest.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def make_tones(root: Path, per_class=(12, 6, 6)):
    """Three classes of sine tones in noise, folder per class per split; a third of the clips at
    8 kHz (they need resampling)."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "valid", "test"), per_class):
        for cls, f0 in (("low", 220.0), ("mid", 660.0), ("high", 1500.0)):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                sr = 16000 if i % 3 else 8000  # some clips need resampling
                t = np.arange(int(rng.uniform(0.3, 0.8) * sr)) / sr
                x = 0.5 * np.sin(2 * np.pi * f0 * rng.uniform(0.97, 1.03) * t) + 0.05 * rng.standard_normal(len(t))
                sf.write(root / split / cls / f"{i}.wav", x.astype(np.float32), sr)
