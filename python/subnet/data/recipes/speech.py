"""Speech synthesis voices (espeak-ng, flite, festival) with speed and pitch control.

Each engine is an installed Debian package; :func:`voices` lists every English voice of the
requested engines and raises ToolMissing with the apt command for engines that are absent.
Output is deterministic: the same voice, text, speed and pitch give the same samples.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .tools import ToolMissing, require_binary, run

ENGINES = ("espeak-ng", "flite", "festival")
PACKAGES = {"espeak-ng": ["espeak-ng"], "flite": ["flite"],
            "festival": ["festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts"]}
LICENCES = {"espeak-ng": "GPL-3.0-or-later (espeak-ng voice data); synthesized speech",
            "flite": "BSD-style CMU flite licence; synthesized speech",
            "festival": "BSD-style festival/festvox licences; synthesized speech"}
# flite voices made for one sentence domain only (awb_time speaks clock times)
_FLITE_SKIP = {"awb_time"}
# mean F0 (Hz) each flite/festival voice is moved around; the speakers' own ranges
_BASE_F0 = {"kal": 100, "kal16": 100, "awb": 110, "rms": 100, "slt": 170, "kal_diphone": 105, "ked_diphone": 105}


@dataclass(frozen=True)
class Voice:
    """An engine and a voice name (espeak-ng: "gmw/en-US+variant")."""

    engine: str
    name: str

    @property
    def slug(self) -> str:
        """A file-name-safe id, e.g. "espeak-ng_en-US+adam"."""
        return f"{self.engine}_{re.sub(r'[^A-Za-z0-9+_-]', '-', self.name.split('/')[-1])}"

    @property
    def source(self) -> str:
        return f"{self.engine} voice {self.name}"

    @property
    def licence(self) -> str:
        return LICENCES[self.engine]


def _espeak_table(arg: str) -> list[list[str]]:
    out = run([require_binary("espeak-ng", "espeak-ng"), f"--voices={arg}"])
    return [line.split() for line in out.splitlines()[1:] if line.strip()]


def espeak_voices(variants: bool = True) -> list[Voice]:
    """English espeak-ng voices (MBROLA ones need extra data and are left out), each with every
    voice variant when ``variants``."""
    bases = sorted({row[4] for row in _espeak_table("en") if len(row) >= 5 and row[4].startswith("gmw/")})
    names = sorted({row[-1].split("/", 1)[1] for row in _espeak_table("variant") if row[-1].startswith("!v/")})
    if not variants:
        return [Voice("espeak-ng", b) for b in bases]
    # "" is the base voice itself, without a variant
    return [Voice("espeak-ng", f"{b}+{v}" if v else b) for b in bases for v in [""] + names]


def flite_voices() -> list[Voice]:
    """The flite voices compiled into the installed ``flite``."""
    out = run([require_binary("flite", "flite"), "-lv"])
    names = out.split(":", 1)[-1].split()
    return [Voice("flite", n) for n in sorted(names) if n not in _FLITE_SKIP]


def festival_voices() -> list[Voice]:
    """The installed festival voices (festvox-* packages)."""
    exe = require_binary("festival", "festival")
    with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as f:
        f.write("(print (voice.list))\n")
    try:
        out = run([exe, "-b", f.name])
    finally:
        Path(f.name).unlink()
    names = re.findall(r"[\w-]+", out.strip().strip("()"))
    if not names:
        raise ToolMissing("a festival voice", PACKAGES["festival"][1:])
    return [Voice("festival", n) for n in sorted(names)]


def voices(engines=ENGINES, variants: bool = True) -> list[Voice]:
    """Every English voice of ``engines``; ToolMissing with one apt command for all absent ones."""
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise ValueError(f"unknown speech engines {sorted(unknown)}; choose from {ENGINES}")
    missing = [e for e in engines if not _installed(e)]
    if missing:
        raise ToolMissing(f"speech engine{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
                          [p for e in missing for p in PACKAGES[e]])
    listing = {"espeak-ng": lambda: espeak_voices(variants), "flite": flite_voices, "festival": festival_voices}
    return [v for e in engines for v in listing[e]()]


def _installed(engine: str) -> bool:
    try:
        require_binary(engine, engine)
        return True
    except ToolMissing:
        return False


@dataclass(frozen=True)
class Utterance:
    """What to say and how: ``speed`` and ``pitch`` are factors around the voice's default."""

    text: str
    speed: float = 1.0
    pitch: float = 1.0


def _read(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return x.mean(axis=1), rate


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def synthesize(voice: Voice, utterances: list[Utterance]) -> list[tuple[np.ndarray, int]]:
    """(samples, rate) for each utterance, spoken by ``voice``."""
    with tempfile.TemporaryDirectory(prefix="subnet-tts-") as tmp:
        paths = [Path(tmp) / f"{i}.wav" for i in range(len(utterances))]
        if voice.engine == "espeak-ng":
            exe = require_binary("espeak-ng", "espeak-ng")
            for u, p in zip(utterances, paths):
                run([exe, "-v", voice.name, "-s", str(round(175 * u.speed)),
                     "-p", str(min(99, max(0, round(50 * u.pitch)))), "-w", str(p), u.text])
        elif voice.engine == "flite":
            exe = require_binary("flite", "flite")
            f0 = _BASE_F0.get(voice.name, 110)
            for u, p in zip(utterances, paths):
                run([exe, "-voice", voice.name, "--setf", f"duration_stretch={1 / u.speed:.4f}",
                     "--setf", f"int_f0_target_mean={f0 * u.pitch:.2f}", "-t", u.text, "-o", str(p)])
        elif voice.engine == "festival":
            # one festival process per voice: its start-up dominates a single word
            f0 = _BASE_F0.get(voice.name, 105)
            lines = [f"(voice_{voice.name})"]
            for u, p in zip(utterances, paths):
                lines += [f"(Parameter.set 'Duration_Stretch {1 / u.speed:.4f})",
                          f"(set! int_lr_params (list (list 'target_f0_mean {f0 * u.pitch:.2f}) "
                          "(list 'target_f0_std 20) (list 'model_f0_mean 170) (list 'model_f0_std 34)))",
                          f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(u.text)})) \"{p}\" 'riff)"]
            script = Path(tmp) / "say.scm"
            script.write_text("\n".join(lines) + "\n")
            run([require_binary("festival", "festival"), "-b", str(script)])
        else:
            raise ValueError(f"unknown engine {voice.engine!r}")
        return [_read(p) for p in paths]
