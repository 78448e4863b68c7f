"""``pitch``: NSynth-like pitch classification, one class per MIDI note ("060-C4").

Notes of melodic GM programs (no effects, percussion or sound-effect families). Train and
valid use disjoint FluidR3 programs (valid tests unseen instruments); test uses TimGM6mb.
"""
from __future__ import annotations

import numpy as np

from .gm import PACKAGES, SAMPLE_RATE
from .instruments import build_notes
from .registry import register
from .splits import split_groups

NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MELODIC = [p for p in range(128) if p // 8 not in (12, 14, 15)]  # no synth effects, percussive, sfx
RANGES = {"tiny": range(57, 63), "small": range(48, 73), "full": range(36, 97)}
PROGRAMS = {"tiny": 3, "small": 24, "full": len(MELODIC)}  # programs drawn per size


def pitch_label(midi: int) -> str:
    """"060-C4": zero-padded so the sorted vocabulary is in pitch order."""
    return f"{midi:03d}-{NAMES[midi % 12]}{midi // 12 - 1}"


@register("pitch", "NSynth-like pitch classes (MIDI notes) of melodic GM programs; train FluidR3, test TimGM6mb",
          packages=PACKAGES,
          sizes={"tiny": "6 pitches x 3 programs", "small": "25 pitches (C3..C5) x 24 programs (20 train, 4 valid, all 24 test), 1200 clips",
                 "full": "61 pitches (C2..C7) x 104 programs, ~12900 clips"})
def build(writer, seed: int, size: str, progress: bool) -> dict:
    rng = np.random.default_rng([seed, 5])
    progs = sorted(int(p) for p in rng.choice(MELODIC, PROGRAMS[size], replace=False))
    split_of = split_groups(progs, seed, valid=0.15, test=0.0)
    by_split = {"train": [p for p in progs if split_of[p] == "train"],
                "valid": [p for p in progs if split_of[p] == "valid"], "test": progs}
    pitches = list(RANGES[size])
    build_notes(writer, seed, size, progress, lambda p, k: pitch_label(k), "pitch", by_split.__getitem__,
                lambda size, split: (pitches, [100]), in_register=False)
    return {"sample_rate": SAMPLE_RATE, "programs": by_split, "pitches": [pitch_label(k) for k in pitches]}
