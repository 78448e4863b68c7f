"""Shifted test sets: a degraded copy of any dataset (noise, reverb, band-limiting), same labels.

    subnet data degrade kws/manifest.jsonl@test --out kws-noisy --noise-snr 5 --seed 0
    subnet data degrade kws/manifest.jsonl@test --out kws-phone --band telephone --reverb-rt60 0.6

Every clip of the source (a folder tree or manifest, optionally one split) is decoded at its own
sample rate, passed through :func:`subnet.data.augment.augment_batch` with the effects asked
(each applied to every clip) and written as 16-bit WAV under the same relative path, with the
same target, split and manifest fields (plus ``degraded_from``); ``recipe.json`` records the
source and the settings. A clip's randomness depends only on the seed and its relative path, so
the output is the same for a seed whichever clips are selected.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch

from .augment import AugmentConfig, augment_batch, describe
from .items import read_items
from .recipes.writer import DatasetWriter


def _range(value, name: str) -> tuple[float, float]:
    """"5" -> (5, 5); "0:10" -> (0, 10); a number -> (x, x)."""
    lo, _, hi = str(value).partition(":")
    try:
        return float(lo), float(hi or lo)
    except ValueError:
        raise ValueError(f"{name}: expected a number or LO:HI, not {value!r}") from None


def degrade_config(noise_snr=None, colour: str = "white", noise_dir: str | None = None, reverb_rt60=None,
                   reverb_drr="0:10", band: str | None = None) -> AugmentConfig:
    """An :class:`AugmentConfig` applying each effect asked to every clip.

    ``noise_snr``: dB (or "LO:HI") of ``colour`` noise (white, pink, brown, or file: clips of
    ``noise_dir``); ``reverb_rt60``: seconds (or "LO:HI"), direct-to-reverberant ratio
    ``reverb_drr`` dB; ``band``: "telephone" (300-3400 Hz) or "lowpass:HZ".
    """
    kw: dict = {}
    if noise_snr is not None:
        kw.update(noise=1.0, snr=_range(noise_snr, "noise_snr"), colours=(colour,), noise_dir=noise_dir)
    if reverb_rt60 is not None:
        kw.update(reverb=1.0, rt60=_range(reverb_rt60, "reverb_rt60"), drr=_range(reverb_drr, "reverb_drr"))
    if band is not None:
        if band == "telephone":
            kw.update(band=1.0, telephone=1.0)
        elif band.startswith("lowpass:"):
            kw.update(band=1.0, telephone=0.0, cutoff=_range(band.split(":", 1)[1], "band lowpass"))
        else:
            raise ValueError(f"band: 'telephone' or 'lowpass:HZ', not {band!r}")
    if not kw:
        raise ValueError("nothing to degrade: give a noise SNR, a reverb RT60 or a band")
    return AugmentConfig(**kw)


def clip_seed(seed: int, rel: str) -> int:
    """A generator seed fixed by (seed, the clip's relative path)."""
    return int(np.random.SeedSequence([seed, zlib.crc32(rel.encode())]).generate_state(1)[0])


def degrade(src, out, config: AugmentConfig, seed: int = 0, split: str | None = None, overwrite: bool = False,
            progress: bool = True) -> Path:
    """Write the degraded copy of ``src`` (``PATH`` or ``PATH@SPLIT``; or ``split``) into ``out``.

    Returns the new ``manifest.jsonl``. Raises ValueError when the source has structural
    problems (unreadable manifest lines, missing targets) or no clip of ``split``, and
    FileExistsError when ``out`` holds something (``overwrite`` replaces an earlier build).
    """
    import soundfile as sf
    from tqdm.auto import tqdm

    from .audio import decode

    src = str(src)
    if split is None and "@" in src and not Path(src).exists():
        src, split = src.rsplit("@", 1)
    items, problems = read_items(src)
    if problems:
        shown = "; ".join(f"{p.line or p.file}: {p.detail}" for p in problems[:5])
        raise ValueError(f"{src}: {len(problems)} bad entries ({shown}); fix them or use subnet data check")
    if split is not None:
        items = [it for it in items if it.split == split]
    if not items:
        raise ValueError(f"{src} has no clips" + (f" of split {split!r}" if split else ""))
    base = Path(src) if Path(src).is_dir() else Path(src).parent
    writer = DatasetWriter(out, "degrade", seed, None, overwrite=overwrite)
    try:
        seen = set()
        for i, it in enumerate(tqdm(items, desc="degrade", disable=not progress)):
            try:
                rel = it.path.relative_to(base).with_suffix(".wav").as_posix()
            except ValueError:  # an absolute manifest path elsewhere
                rel = f"clips/{i:06d}_{it.path.stem}.wav"
            if rel in seen:
                raise ValueError(f"{it.line or it.path}: a second clip would be written to {rel}")
            seen.add(rel)
            rate = sf.info(str(it.path)).samplerate
            wave = decode(it.path)
            gen = torch.Generator().manual_seed(clip_seed(seed, rel))
            y, n = augment_batch(wave[None], torch.tensor([wave.shape[-1]]), rate, config, gen)
            extra = {k: v for k, v in it.extra if k not in ("source", "licence")}
            writer.add(rel, y[0, : int(n[0])].numpy(), rate, split=it.split, label=it.label, labels=it.labels,
                       text=it.text, source=it.field("source", str(it.path)),
                       licence=it.field("licence", "that of the source clip"),
                       **extra, degraded_from=str(it.path))
    except BaseException:
        writer.abandon()
        raise
    return writer.close(source=src, split=split, settings=describe(config), sample_rate="as the source")
