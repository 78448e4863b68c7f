"""General MIDI: the 16 instrument families, the soundfonts, and rendering notes in slots.

Train and test use different soundfonts (different sample sets): FluidR3 (fluid-soundfont-gm)
for train/valid, TimGM6mb (timgm6mb-soundfont) for test. MuseScore_General is built from
FluidR3's samples, so it is never a test soundfont here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .midi import Note, render
from .tools import require_file

FAMILIES = ("piano", "chromatic_percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
            "reed", "pipe", "synth_lead", "synth_pad", "synth_effects", "ethnic", "percussive", "sound_effects")
SOUNDFONTS = {  # split -> (file, Debian package, licence)
    "train": ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "fluid-soundfont-gm", "MIT (Fluid R3 GM soundfont, Frank Wen)"),
    "test": ("/usr/share/sounds/sf2/TimGM6mb.sf2", "timgm6mb-soundfont", "GPL-2.0-or-later (TimGM6mb soundfont, Tim Brechbill)"),
}
SAME_FONT = {"valid": "train", "fluidr3": "train", "timgm6mb": "test"}  # other splits -> the split whose font they use
PACKAGES = ("fluidsynth", "fluid-soundfont-gm", "timgm6mb-soundfont")
SAMPLE_RATE = 16000


def family(program: int) -> str:
    """The GM family of ``program`` (0..127): eight programs per family."""
    return FAMILIES[program // 8]


def register_shift(program: int) -> int:
    """Semitones to move a note so the program sounds in its natural register (basses low,
    piccolo high); keeps renders away from a soundfont's silent key ranges."""
    fam = program // 8
    return -24 if fam == 4 or program == 43 else -12 if program in (32, 33, 34, 35, 42, 58, 70) else 12 if program in (72, 73) else 0


def soundfont(split: str) -> tuple[Path, str, str]:
    """(path, package, licence) of the soundfont for ``split``; ToolMissing if absent."""
    path, package, licence = SOUNDFONTS[SAME_FONT.get(split, split)]
    return require_file(path, package), package, licence


def render_slots(slots: list[list[Note]], sf: Path, slot: float, clip: float, chunk: int = 128) -> list[np.ndarray]:
    """Render each slot's notes (times relative to the slot) -> one clip of ``clip`` seconds per
    slot. Slots are laid out ``slot`` seconds apart; all sound stops at ``clip`` in each slot."""
    out = []
    n = round(clip * SAMPLE_RATE)
    for c in range(0, len(slots), chunk):  # bounded memory: a chunk of slots per fluidsynth run
        part = slots[c:c + chunk]
        notes = [Note(i * slot + x.start, x.length, x.program, x.pitch, x.velocity, x.channel, i * slot + clip)
                 for i, s in enumerate(part) for x in s]
        audio = render(notes, sf) if notes else np.zeros(0, np.float32)
        need = round(len(part) * slot * SAMPLE_RATE)
        audio = np.pad(audio, (0, max(0, need - len(audio))))
        out += [audio[round(i * slot * SAMPLE_RATE):][:n] for i in range(len(part))]
    return out


def normalise(x: np.ndarray, floor: float = 1e-3) -> np.ndarray | None:
    """Peak-normalise to 0.9; None when the render is (near) silent."""
    peak = float(np.abs(x).max())
    return None if peak < floor else (x * (0.9 / peak)).astype(np.float32)
