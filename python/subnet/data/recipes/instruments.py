"""``instruments``: single notes of GM programs, labelled by the 16 GM instrument families.

Train and valid are rendered with FluidR3 (valid at other pitches), test with TimGM6mb, so a
model is tested on sample sets it never heard. A note the soundfont renders silent is left
out and counted in recipe.json.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .gm import PACKAGES, SAMPLE_RATE, family, normalise, register_shift, render_slots, soundfont
from .midi import Note
from .registry import register
from .tools import require_binary

NOTE, CLIP, SLOT = 1.0, 1.5, 2.0  # seconds: note held, clip kept (with release), slot spacing
PITCHES = {  # size -> split -> (pitches, velocities)
    "tiny": {"train": ([60], [100]), "valid": ([64], [100]), "test": ([60], [100])},
    "small": {"train": ([48, 55, 60, 67, 72], [100]), "valid": ([52, 64], [100]), "test": ([50, 57, 62, 69], [100])},
    "full": {"train": (list(range(36, 85, 2)), [70, 110]), "valid": (list(range(37, 84, 4)), [90]),
             "test": (list(range(36, 85, 3)), [70, 110])},
}


def programs(seed: int, size: str) -> list[int]:
    """All 128 GM programs, or one seeded program per family for ``tiny``."""
    if size != "tiny":
        return list(range(128))
    rng = np.random.default_rng([seed, 3])
    return [8 * f + int(rng.integers(8)) for f in range(16)]


def build_notes(writer, seed: int, size: str, progress: bool, label_of, name: str, progs, pitches_of,
                splits=("train", "valid", "test"), in_register: bool = True) -> None:
    """Render one note per (program, pitch, velocity) per split, with the split's soundfont, and
    write it labelled ``label_of(program, key)``; ``in_register`` moves each program to its
    register. Shared with the ``pitch`` and ``instruments-unlabeled`` recipes."""
    rng = np.random.default_rng([seed, 4])
    fonts = {split: soundfont(split) for split in splits}  # all found before any work
    require_binary("fluidsynth", "fluidsynth")
    for split, (sf, package, licence) in fonts.items():
        pitches, velocities = pitches_of(size, split)
        specs = []
        for p in progs(split):
            for pitch in pitches:
                for vel in velocities:
                    key = min(127, max(0, pitch + register_shift(p))) if in_register else pitch
                    specs.append((p, key, int(np.clip(vel + rng.integers(-8, 9), 1, 127))))
        slots = [[Note(0.0, NOTE, p, key, vel)] for p, key, vel in specs]
        clips = render_slots(slots, sf, SLOT, CLIP)
        for (p, key, vel), x in tqdm(list(zip(specs, clips)), desc=f"{name} {split}", disable=not progress):
            label = label_of(p, key)
            rel = f"{split}/{label}/p{p:03d}_k{key:03d}_v{vel:03d}.wav"
            y = normalise(x)
            if y is None:
                writer.leave_out(f"silent render ({package})", rel)
                continue
            writer.add(rel, y, SAMPLE_RATE, split=split, label=label, licence=licence,
                       source=f"fluidsynth render of GM program {p} with {sf.name} ({package})",
                       program=p, pitch=key, velocity=vel, soundfont=sf.name)


@register("instruments", "GM instrument family (16 classes) of single notes; train FluidR3, test TimGM6mb",
          packages=PACKAGES,
          sizes={"tiny": "one program per family, one note per split (48 clips)",
                 "small": "128 programs x 5/2/4 pitches (train/valid/test), ~1400 clips",
                 "full": "128 programs x 25/12/17 pitches x 2/1/2 velocities, ~12300 clips"})
def build(writer, seed: int, size: str, progress: bool) -> dict:
    progs = programs(seed, size)
    build_notes(writer, seed, size, progress, lambda p, k: family(p), "instruments", lambda split: progs,
                lambda size, split: PITCHES[size][split])
    return {"sample_rate": SAMPLE_RATE, "note_seconds": NOTE, "clip_seconds": CLIP,
            "soundfonts": {"train": "FluidR3_GM.sf2", "valid": "FluidR3_GM.sf2", "test": "TimGM6mb.sf2"}}
