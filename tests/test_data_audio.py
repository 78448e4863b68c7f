"""Decoding: mono mixdown, resampling, crop/pad policy, on generated sine waves."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from subnet.data import CropPad, decode, load_dataset, mixdown


def sine(freq, rate, seconds):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_freq(x: torch.Tensor, rate: int) -> float:
    spec = torch.fft.rfft(x.double()).abs()
    return float(spec.argmax()) * rate / x.shape[-1]


def test_mixdown_averages_channels():
    x = np.stack([np.ones(4, np.float32), -np.ones(4, np.float32) * 0.5], 1)
    assert np.allclose(mixdown(x), 0.25) and mixdown(x[:, :1]).shape == (4,)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resample_keeps_pitch_and_duration(tmp_path, rate):
    sf.write(tmp_path / "a.wav", sine(440, rate, 1.0), rate)
    x = decode(tmp_path / "a.wav", 16000)
    assert x.dtype == torch.float32 and abs(x.shape[0] - 16000) <= 1
    assert abs(dominant_freq(x, 16000) - 440) < 2


def test_stereo_file_becomes_mono(tmp_path):
    left, right = sine(300, 16000, 0.5), sine(1000, 16000, 0.5)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 16000)
    x = decode(tmp_path / "s.wav", 16000)
    assert x.shape == (8000,)
    assert torch.allclose(x, torch.from_numpy((left + right) / 2), atol=1e-4)


def test_flac_and_float_wav(tmp_path):
    sf.write(tmp_path / "a.flac", sine(440, 16000, 0.25), 16000)
    sf.write(tmp_path / "b.wav", sine(440, 16000, 0.25), 16000, subtype="FLOAT")
    assert decode(tmp_path / "a.flac").shape == decode(tmp_path / "b.wav").shape == (4000,)


def test_crop_policies():
    x = torch.arange(100.0)
    assert CropPad(None)(x, 10) is x
    assert CropPad(5.0, "center")(x, 10).tolist() == list(range(25, 75))
    assert CropPad(5.0, "start")(x, 10).tolist() == list(range(50))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = CropPad(5.0, "random")(x, 10, g1), CropPad(5.0, "random")(x, 10, g2)
    assert torch.equal(a, b) and a.shape == (50,) and a[0] + 49 == a[-1]
    assert CropPad(20.0, "center", pad=True)(x, 10).shape == (200,)
    assert CropPad(20.0, "center")(x, 10).shape == (100,)
    with pytest.raises(ValueError, match="crop mode"):
        CropPad(1.0, "middle")


def test_random_crop_is_seeded_per_epoch_and_clip(tmp_path):
    (tmp_path / "c").mkdir()
    sf.write(tmp_path / "c" / "long.wav", np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1, 16000)
    ds = load_dataset(tmp_path, max_seconds=0.5, train=True, seed=7, progress=False)
    same = load_dataset(tmp_path, max_seconds=0.5, train=True, seed=7, progress=False)
    assert torch.equal(ds[0]["wave"], same[0]["wave"]) and ds[0]["wave"].shape == (8000,)
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["wave"], same[0]["wave"])
    ev = load_dataset(tmp_path, max_seconds=0.5, progress=False)
    assert torch.equal(ev[0]["wave"], ev[0]["wave"]) and ev.crop.mode == "center"
    assert ev.lengths() == [8000]
