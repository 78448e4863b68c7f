"""``tagging``: polyphonic mixes of 1-3 GM instruments, multi-label by instrument family.

Each mix layers notes (sometimes a two-note chord) of programs from distinct families with
seeded onsets, lengths and gains. Every part is rendered on its own first, so a part the
soundfont renders silent is dropped from the labels (and counted) instead of mislabelling.
Train/valid: FluidR3; test: TimGM6mb.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .gm import FAMILIES, PACKAGES, SAMPLE_RATE, normalise, register_shift, render_slots, soundfont
from .midi import Note
from .registry import register
from .tools import require_binary

CLIP, SLOT = 2.0, 2.5
MIXES = {"tiny": {"train": 8, "valid": 4, "test": 4}, "small": {"train": 600, "valid": 100, "test": 200},
         "full": {"train": 5000, "valid": 500, "test": 1000}}


def plan_mix(rng: np.random.Generator) -> list[list[Note]]:
    """The parts of one mix: each part is the notes of one program (one family per part)."""
    k = int(rng.integers(1, 4))
    parts = []
    for fam in sorted(rng.choice(16, k, replace=False)):
        program = 8 * int(fam) + int(rng.integers(8))
        root = int(rng.integers(48, 73)) + register_shift(program)
        start, length = float(rng.uniform(0.0, 0.3)), float(rng.uniform(0.8, 1.5))
        keys = [root] + ([root + int(rng.choice([3, 4, 7]))] if rng.random() < 0.3 else [])
        vel = int(rng.integers(70, 121))
        parts.append([Note(start, length, program, min(127, max(0, key)), vel) for key in keys])
    return parts


@register("tagging", "polyphonic mixes of 1-3 GM instruments, multi-label instrument families",
          packages=PACKAGES,
          sizes={"tiny": "8/4/4 mixes (train/valid/test)", "small": "600/100/200 mixes",
                 "full": "5000/500/1000 mixes"})
def build(writer, seed: int, size: str, progress: bool) -> dict:
    fonts = {split: soundfont(split) for split in MIXES[size]}  # all found before any work
    require_binary("fluidsynth", "fluidsynth")
    for split, n in MIXES[size].items():
        rng = np.random.default_rng([seed, 6, ("train", "valid", "test").index(split)])
        sf, package, licence = fonts[split]
        mixes = [plan_mix(rng) for _ in range(n)]
        gains = [[float(rng.uniform(0.5, 1.0)) for _ in m] for m in mixes]
        layers = [render_slots([m[j] if j < len(m) else [] for m in mixes], sf, SLOT, CLIP) for j in range(3)]
        for i, mix in enumerate(tqdm(mixes, desc=f"tagging {split}", disable=not progress)):
            rel = f"{split}/mix{i:05d}.wav"
            total, labels, programs = np.zeros(round(CLIP * SAMPLE_RATE), np.float32), [], []
            for j, part in enumerate(mix):
                y = normalise(layers[j][i])
                if y is None:
                    writer.leave_out(f"silent part dropped from labels ({package})", f"{rel}: program {part[0].program}")
                    continue
                total += gains[i][j] * y
                labels.append(FAMILIES[part[0].program // 8])
                programs.append(part[0].program)
            y = normalise(total)
            if y is None or not labels:
                writer.leave_out(f"silent mix ({package})", rel)
                continue
            writer.add(rel, y, SAMPLE_RATE, split=split, labels=labels, licence=licence,
                       source=f"fluidsynth mix of GM programs {programs} with {sf.name} ({package})",
                       programs=programs, soundfont=sf.name)
    return {"sample_rate": SAMPLE_RATE, "clip_seconds": CLIP, "families": list(FAMILIES)}
