"""Waveform augmentation: deterministic for a generator state, padding untouched, each effect
does what it says (measured on sines and noise), never NaN/Inf, never past the peak limit."""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from subnet.data.augment import DEFAULTS, EFFECTS, AugmentConfig, augment_batch, parse_augment, room_impulse

SR = 16000
ALL = AugmentConfig(speed=1, pitch=1, reverb=1, band=1, noise=1, gain=1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def sine(freq, n=SR, amp=0.5):
    return amp * torch.sin(2 * math.pi * freq * torch.arange(n) / SR)


def batch(lengths=(16000, 9000, 12000, 3000), seed=1):
    g = gen(seed)
    lengths = torch.tensor(lengths)
    waves = 0.3 * torch.randn(len(lengths), int(lengths.max()), generator=g)
    return waves * (torch.arange(waves.shape[1]) < lengths[:, None]), lengths


def peak_freq(x):
    spec = torch.fft.rfft(x * torch.hann_window(x.shape[-1])).abs()
    return float(spec.argmax()) * SR / x.shape[-1]


def band_gain_db(x, y):
    """Power of y over power of x in dB, on the second half (past the filter's transient)."""
    h = x.shape[-1] // 2
    return 10 * math.log10(float(y[h:].square().mean()) / float(x[h:].square().mean()))


@pytest.mark.parametrize("cfg", [ALL, DEFAULTS, parse_augment("noise=1,colours=pink+brown,reverb=1")])
def test_deterministic_for_a_generator_state(cfg):
    waves, lengths = batch()
    a = augment_batch(waves, lengths, SR, cfg, gen(3))
    b = augment_batch(waves, lengths, SR, cfg, gen(3))
    c = augment_batch(waves, lengths, SR, cfg, gen(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape != c[0].shape or not torch.equal(a[0], c[0])


@pytest.mark.parametrize("effect", [*EFFECTS, "all"])
def test_padding_is_ignored_and_stays_zero(effect):
    cfg = ALL if effect == "all" else AugmentConfig(**{effect: 1.0})
    waves, lengths = batch()
    dirty = waves + 5.0 * (torch.arange(waves.shape[1]) >= lengths[:, None])  # garbage past each end
    out, new = augment_batch(dirty, lengths, SR, cfg, gen(0))
    ref, ref_len = augment_batch(waves, lengths, SR, cfg, gen(0))
    assert torch.equal(out, ref) and torch.equal(new, ref_len)
    assert torch.equal(new, lengths) != (effect in ("speed", "all"))  # only speed moves the lengths
    assert out.shape == (4, int(new.max()))
    assert (out[torch.arange(out.shape[1]) >= new[:, None]] == 0).all()
    assert (out[torch.arange(out.shape[1]) < new[:, None]] != 0).float().mean() > 0.99
    assert torch.equal(waves, batch()[0])  # the input is not modified


def test_nothing_on_means_unchanged():
    waves, lengths = batch()
    out, new = augment_batch(waves, lengths, SR, AugmentConfig(), gen(0))
    assert torch.equal(out, waves) and torch.equal(new, lengths)


def test_probability_is_per_clip():
    waves, lengths = torch.full((400, 800), 0.1), torch.full((400,), 800)
    out, _ = augment_batch(waves, lengths, SR, AugmentConfig(gain=0.3, db=(6, 6)), gen(0))
    changed = (out != waves).any(1).float().mean()
    assert 0.22 < changed < 0.38


def test_finite_and_peak_safe_on_hard_input():
    lengths = torch.tensor([16000, 1, 100, 600, 16000])
    waves = torch.zeros(5, 16000)
    waves[0] = torch.sign(torch.randn(16000, generator=gen(1)))  # full-scale square noise
    waves[2, :100] = 0.5
    waves[3, :600] = sine(300, 600, 0.99)  # row 4 stays silent
    cfg = AugmentConfig(speed=1, pitch=1, reverb=1, band=1, noise=1, gain=1, db=(12, 12), snr=(-10, -10),
                        colours=("brown",))
    out, new = augment_batch(waves, lengths, SR, cfg, gen(2))
    assert torch.isfinite(out).all()
    assert out.abs().amax(1).max() <= 1.0 + 1e-6
    assert (out[4] == 0).all()  # silence gets no noise (its SNR is undefined)
    assert new[1] >= 1
    empty, none = augment_batch(torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), SR, cfg, gen(2))
    assert empty.shape == (0, 0) and none.shape == (0,)


def test_speed_changes_length_and_frequency():
    x = sine(440)[None]
    out, new = augment_batch(x, torch.tensor([SR]), SR, AugmentConfig(speed=1, factor=(1.25, 1.25)), gen(0))
    assert int(new[0]) == SR * 4 // 5 and out.shape[1] == int(new[0])
    assert peak_freq(out[0]) == pytest.approx(550, abs=3)


def test_pitch_keeps_length_moves_frequency():
    x = sine(440)[None]
    out, new = augment_batch(x, torch.tensor([SR]), SR, AugmentConfig(pitch=1, semitones=(12, 12)), gen(0))
    assert int(new[0]) == SR and out.shape == x.shape
    assert peak_freq(out[0]) == pytest.approx(880, abs=5)


def test_room_impulse_rt60_and_drr():
    rt60 = torch.tensor([0.3, 0.8], dtype=torch.float64)
    drr = torch.tensor([0.0, 6.0], dtype=torch.float64)
    h = room_impulse(rt60, drr, SR, gen(0)).double()
    assert torch.allclose(h.norm(dim=1), torch.ones(2, dtype=torch.float64), atol=1e-5)
    measured = 10 * torch.log10(h[:, 0] ** 2 / h[:, 1:].square().sum(1))
    assert torch.allclose(measured, drr, atol=1e-3)
    for k, r in enumerate(rt60.tolist()):  # energy decay: 60 dB in rt60 (slope of 10 ms windows)
        n = (round(r * SR) - 1) // 160 * 160  # whole 10 ms windows of the tail
        win = h[k, 1:n + 1].reshape(-1, 160).square().mean(1)
        t = (torch.arange(len(win), dtype=torch.float64) + 0.5) * 0.01
        slope = np.polyfit(t.numpy(), (10 * torch.log10(win)).numpy(), 1)[0]
        assert slope == pytest.approx(-60 / r, rel=0.1)


def test_reverb_keeps_length_and_smears():
    x = torch.zeros(1, SR)
    x[0, 1000] = 0.5  # a click: its reverberated tail must follow it
    out, new = augment_batch(x, torch.tensor([SR]), SR, AugmentConfig(reverb=1, rt60=(0.5, 0.5), drr=(0, 0)), gen(0))
    assert int(new[0]) == SR and out[0, :1000].abs().max() < 1e-6  # causal (FFT round-off aside)
    assert float(out[0, 1000]) == pytest.approx(0.5 / math.sqrt(2), rel=1e-4)  # direct path at drr 0 dB
    assert out[0, 1500:4000].abs().max() > 1e-3


@pytest.mark.parametrize("freq,telephone,cutoff,expect", [
    (1000, True, 2000, "pass"), (100, True, 2000, "stop"), (6000, True, 2000, "stop"),
    (500, False, 1000, "pass"), (4000, False, 1000, "stop"), (100, False, 1000, "pass")])
def test_band(freq, telephone, cutoff, expect):
    x = sine(freq)[None]
    cfg = AugmentConfig(band=1, telephone=float(telephone), cutoff=(cutoff, cutoff))
    out, _ = augment_batch(x, torch.tensor([SR]), SR, cfg, gen(0))
    db = band_gain_db(x[0], out[0])
    assert (db > -1.5) if expect == "pass" else (db < -20)


@pytest.mark.parametrize("colour", ["white", "pink", "brown"])
def test_noise_snr_and_colour(colour):
    x = sine(700, amp=0.3)[None].repeat(3, 1)
    lengths = torch.tensor([SR, SR // 2, SR // 4])
    x = x * (torch.arange(SR) < lengths[:, None])
    cfg = AugmentConfig(noise=1, snr=(7.5, 7.5), colours=(colour,))
    out, _ = augment_batch(x, lengths, SR, cfg, gen(0))
    noise = out - x
    for i, n in enumerate(lengths.tolist()):
        snr = 10 * math.log10(float(x[i, :n].square().sum() / noise[i, :n].square().sum()))
        assert snr == pytest.approx(7.5, abs=0.01)
    spec = torch.fft.rfft(noise[0]).abs().square()
    low, high = float(spec[50:500].mean()), float(spec[4000:7500].mean())  # 1 Hz bins: 50-500 Hz, 4-7.5 kHz
    c = {"white": 0, "pink": 1, "brown": 2}[colour]  # power ~ 1/f^c
    f = torch.arange(1, 8001, dtype=torch.float64)
    expect = 10 * math.log10(float(f[49:499].pow(-c).mean() / f[3999:7499].pow(-c).mean()))
    assert 10 * math.log10(low / high) == pytest.approx(expect, abs=1.5)


def test_noise_from_files(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(2):
        sf.write(str(tmp_path / f"n{k}.wav"), (0.2 * rng.standard_normal(4000)).astype(np.float32), SR)
    cfg = parse_augment(f"noise=1,snr=3,colours=file,noise_dir={tmp_path}")
    x = sine(300, amp=0.1)[None].repeat(2, 1)  # quiet: the peak limit must not act
    a, _ = augment_batch(x, torch.tensor([SR, SR]), SR, cfg, gen(5))
    b, _ = augment_batch(x, torch.tensor([SR, SR]), SR, cfg, gen(5))
    assert torch.equal(a, b)
    noise = a - x
    snr = 10 * torch.log10(x.square().sum(1) / noise.square().sum(1))
    assert torch.allclose(snr, torch.full((2,), 3.0), atol=0.01)


def test_gain_and_peak_limit():
    x = torch.stack([sine(440, amp=0.1), sine(440, amp=0.9)])
    out, _ = augment_batch(x, torch.tensor([SR, SR]), SR, AugmentConfig(gain=1, db=(6, 6)), gen(0))
    assert out[0].abs().max() == pytest.approx(0.1 * 10 ** 0.3, rel=1e-4)
    assert out[1].abs().max() == pytest.approx(1.0, rel=1e-6)  # scaled, not clipped:
    assert torch.allclose(out[1] / out[1].abs().max(), x[1] / x[1].abs().max(), atol=1e-6)


def test_parse():
    assert parse_augment(None) == DEFAULTS and parse_augment("") == DEFAULTS
    cfg = parse_augment("noise=0.5,snr=0:20,reverb=0.3")
    assert (cfg.noise, cfg.reverb, cfg.speed, cfg.gain, cfg.band, cfg.snr) == (0.5, 0.3, 0, 0, 0, (0.0, 20.0))
    cfg = parse_augment("snr=10,colours=pink")  # no effect named: the defaults, with these settings
    assert cfg.noise == DEFAULTS.noise and cfg.snr == (10.0, 10.0) and cfg.colours == ("pink",)
    assert parse_augment("noise_dir=/x").colours == ("white", "pink", "brown", "file")
    for bad in ("noise", "noize=0.5", "noise=1.5", "snr=20:0", "colours=red", "colours=file", "factor=0:1",
                "snr=loud", "gain=x"):
        with pytest.raises(ValueError):
            parse_augment(bad)
