"""``kws-tts``: Speech-Commands-like keywords spoken by every installed English TTS voice.

The 20 words (yes no up down left right on off stop go, zero..nine) are spoken by espeak-ng
(every English voice x every voice variant), flite and festival voices at a seeded speed and
pitch. Splits are by voice, so valid/test speakers are never heard in training.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .registry import register
from .speech import PACKAGES, Utterance, Voice, synthesize, voices
from .splits import split_groups
from .writer import DatasetWriter, tidy

COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WORDS = COMMANDS + DIGITS
SAMPLE_RATE = 16000


def settings(rng: np.random.Generator, n: int) -> list[tuple[float, float]]:
    """``n`` (speed, pitch) factors, log-uniform in [0.8, 1.25] and [0.75, 1.33]."""
    return [(round(float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))), 3),
             round(float(np.exp(rng.uniform(np.log(0.75), np.log(1.33)))), 3)) for _ in range(n)]


def pick_voices(seed: int, size: str) -> list[tuple[Voice, int]]:
    """(voice, number of speed/pitch draws) for a size; espeak-ng variants are subsampled
    below ``full`` (they are many), the few flite/festival voices get several draws."""
    rng = np.random.default_rng([seed, 1])
    allv = voices()
    espeak = [v for v in allv if v.engine == "espeak-ng"]
    others = [v for v in allv if v.engine != "espeak-ng"]
    bases = sorted({v.name.split("+")[0] for v in espeak})
    if size == "full":
        return [(v, 1) for v in espeak] + [(v, 5) for v in others]
    if size == "small":
        chosen = []
        for b in bases:  # the base voice and 5 seeded variants of each English accent
            variants = [v for v in espeak if v.name.startswith(b + "+")]
            chosen += [Voice("espeak-ng", b)] + [variants[i] for i in sorted(rng.choice(len(variants), 5, replace=False))]
        return [(v, 1) for v in chosen] + [(v, 3) for v in others]
    # tiny: a handful of voices, one of each engine at least, for tests
    pick = [espeak[i] for i in sorted(rng.choice(len(espeak), 2, replace=False))]
    pick += [others[i] for i in sorted(rng.choice(len(others), min(2, len(others)), replace=False))]
    return [(v, 1) for v in pick]


def speak_words(writer: DatasetWriter, seed: int, size: str, progress: bool, words=WORDS, prefix: str = "") -> dict:
    """Write every word of ``words`` for each picked voice and draw; returns recipe info."""
    picked = pick_voices(seed, size)
    split_of = split_groups([v.slug for v, _ in picked], seed)
    rng = np.random.default_rng([seed, 2])
    for voice, draws in tqdm(picked, desc=f"kws-tts ({size})", unit="voice", disable=not progress):
        for k, (speed, pitch) in enumerate(settings(rng, draws)):
            utts = [Utterance(w, speed, pitch) for w in words]
            for word, (x, rate) in zip(words, synthesize(voice, utts)):
                y = tidy(x, rate, SAMPLE_RATE)
                rel = f"{split_of[voice.slug]}/{word}/{prefix}{voice.slug}_{k}.wav"
                if y is None:
                    writer.leave_out("silent synthesis", rel)
                    continue
                writer.add(rel, y, SAMPLE_RATE, split=split_of[voice.slug], label=word, source=voice.source,
                           licence=voice.licence, voice=voice.name, engine=voice.engine, speed=speed, pitch=pitch)
    return {"voices": [f"{v.source} ({split_of[v.slug]})" for v, _ in picked], "words": list(words),
            "sample_rate": SAMPLE_RATE}


@register("kws-tts", "keyword spotting: 20 Speech-Commands words by every espeak-ng/flite/festival voice",
          packages=[p for ps in PACKAGES.values() for p in ps],
          sizes={"tiny": "4 voices x 20 words (tests)",
                 "small": "72 voice/setting pairs x 20 words, ~1400 clips",
                 "full": "every espeak-ng voice x variant + flite/festival x 5 settings, ~16800 clips"})
def build(writer: DatasetWriter, seed: int, size: str, progress: bool) -> dict:
    return speak_words(writer, seed, size, progress)
