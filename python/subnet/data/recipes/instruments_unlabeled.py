"""``instruments-unlabeled``: the notes of ``instruments`` at pitches none of its splits uses,
rendered with both soundfonts, for ``subnet extract --unlabeled``.

Split ``timgm6mb``: the test soundfont's sample sets (the deployment domain of ``instruments``)
at other notes than the test clips, the way ``prompts-real`` is the real digits' speaker and
channel without the digits. Split ``fluidr3``: the training soundfont at pitches training never
labelled. Each clip keeps its family ``label`` (unused by ``--unlabeled``) and its ``soundfont``.
"""
from __future__ import annotations

from .gm import PACKAGES, SAMPLE_RATE, family
from .instruments import CLIP, NOTE, build_notes, programs
from .registry import register

SPLITS = ("fluidr3", "timgm6mb")  # split = the soundfont it is rendered with
UNUSED_PITCHES = {  # size -> (pitches no split of instruments' same size uses, velocities)
    "tiny": ([62], [100]),
    "small": ([46, 53, 58, 65, 70], [100]),
    "full": ([43, 47, 55, 59, 67, 71, 79, 83], [70, 110]),
}


@register("instruments-unlabeled", "the notes of instruments at pitches no split of it uses, with FluidR3 (split "
          "fluidr3) and TimGM6mb (split timgm6mb): unlabeled audio of both soundfonts", packages=PACKAGES,
          sizes={"tiny": "one program per family, one pitch, both soundfonts (32 clips)",
                 "small": "128 programs x 5 pitches, both soundfonts, ~1280 clips",
                 "full": "128 programs x 8 pitches x 2 velocities, both soundfonts, ~4100 clips"})
def build(writer, seed: int, size: str, progress: bool) -> dict:
    progs = programs(seed, size)  # the programs instruments renders at this seed and size
    build_notes(writer, seed, size, progress, lambda p, k: family(p), "instruments-unlabeled", lambda split: progs,
                lambda size, split: UNUSED_PITCHES[size], splits=SPLITS)
    return {"sample_rate": SAMPLE_RATE, "note_seconds": NOTE, "clip_seconds": CLIP,
            "pitches": UNUSED_PITCHES[size][0], "soundfonts": {"fluidr3": "FluidR3_GM.sf2", "timgm6mb": "TimGM6mb.sf2"}}
