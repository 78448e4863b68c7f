"""``asr-tts``: spoken digit strings and short sentences with their transcripts (``text``).

Voices, speeds and pitches as in ``kws-tts`` (split by voice). Transcripts are lower case,
words separated by single spaces, digits spelled out: what the speech says, nothing else.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .kws_tts import DIGITS, SAMPLE_RATE, pick_voices, settings
from .registry import register
from .speech import PACKAGES, Utterance, synthesize
from .splits import split_groups
from .writer import tidy

SENTENCES = (
    "turn the lights on", "turn the lights off", "open the door", "close the window", "play some music",
    "stop the music", "what time is it", "set a timer for ten minutes", "call my sister", "read the news",
    "the cat sat on the mat", "it is cold outside today", "please bring me a glass of water",
    "the train leaves at nine", "where are my keys", "go to the next page", "go back one step",
    "the meeting starts soon", "i would like a cup of tea", "the weather is nice", "move the chair to the left",
    "put the book on the table", "the red car is fast", "we need more paper", "my phone is on the desk",
    "send the message now", "the birds sing in the morning", "the shop closes at six", "lower the volume",
    "raise the volume", "show me the map", "take a picture", "the dog runs in the park",
    "this is a short sentence", "the sun is very bright", "start the engine", "check the oven",
    "the baby is asleep", "water the plants", "lock the front door",
)
PER_VOICE = {"tiny": 4, "small": 20, "full": 40}  # utterances per voice and setting


def digit_string(rng: np.random.Generator) -> str:
    """3 to 7 random digits, spelled out ("four one nine")."""
    return " ".join(DIGITS[int(d)] for d in rng.integers(0, 10, int(rng.integers(3, 8))))


@register("asr-tts", "speech recognition: spoken digit strings and short sentences with transcripts",
          packages=[p for ps in PACKAGES.values() for p in ps],
          sizes={"tiny": "4 voices x 4 utterances", "small": "72 voice/setting pairs x 20 utterances, ~1440 clips",
                 "full": "~840 voice/setting pairs x 40 utterances, ~33600 clips"})
def build(writer, seed: int, size: str, progress: bool) -> dict:
    picked = pick_voices(seed, size)
    split_of = split_groups([v.slug for v, _ in picked], seed)
    rng = np.random.default_rng([seed, 8])
    for voice, draws in tqdm(picked, desc=f"asr-tts ({size})", unit="voice", disable=not progress):
        for k, (speed, pitch) in enumerate(settings(rng, draws)):
            n = PER_VOICE[size]
            texts = [digit_string(rng) if i % 2 == 0 else SENTENCES[int(rng.integers(len(SENTENCES)))]
                     for i in range(n)]
            audio = synthesize(voice, [Utterance(t, speed, pitch) for t in texts])
            for i, (text, (x, rate)) in enumerate(zip(texts, audio)):
                split = split_of[voice.slug]
                rel = f"{split}/{voice.slug}_{k}_{i:03d}.wav"
                y = tidy(x, rate, SAMPLE_RATE)
                if y is None:
                    writer.leave_out("silent synthesis", rel)
                    continue
                writer.add(rel, y, SAMPLE_RATE, split=split, text=text, source=voice.source, licence=voice.licence,
                           voice=voice.name, engine=voice.engine, speed=speed, pitch=pitch)
    return {"voices": [f"{v.source} ({split_of[v.slug]})" for v, _ in picked], "sample_rate": SAMPLE_RATE}
