"""Decoding one audio file: soundfile -> float32 mono at the backbone's sample rate."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch


class AudioDecodeError(ValueError):
    """A file that cannot be used as audio; ``reason`` is a SkipSummary reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def mixdown(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) by averaging channels (a mono file is returned as is)."""
    if samples.ndim == 1:
        return samples
    return samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]


@lru_cache(maxsize=16)
def _resampler(orig: int, new: int):
    import torchaudio.transforms as AT

    # the sinc kernel costs more than applying it (22.05 -> 16 kHz): build it once per rate pair
    return AT.Resample(orig, new)


def resample(wave: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """Band-limited resampling (torchaudio's sinc filter) along the last axis; no-op when the
    rates agree."""
    if orig == new:
        return wave
    with torch.no_grad():
        return _resampler(int(orig), int(new))(wave)


def decode(path, sample_rate: int | None = None, check_finite: bool = True) -> torch.Tensor:
    """Read ``path`` as a float32 mono waveform, resampled to ``sample_rate`` (None: keep).

    Raises :class:`AudioDecodeError` for an unreadable file, no samples, or NaN/inf samples.
    """
    import soundfile as sf

    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioDecodeError("corrupt", f"cannot decode: {e}") from None
    if samples.size == 0:
        raise AudioDecodeError("empty", "the file holds no audio samples")
    if check_finite and not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).any(axis=1).argmax())
        raise AudioDecodeError("nan", f"NaN/inf sample at {bad / rate:.3f} s (frame {bad})")
    wave = torch.from_numpy(np.ascontiguousarray(mixdown(samples)))
    return resample(wave, rate, sample_rate) if sample_rate else wave
