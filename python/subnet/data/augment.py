"""Waveform augmentation of training batches: speed, pitch, reverb, band-limiting, noise, gain.

    from subnet.data.augment import parse_augment, augment_batch
    cfg = parse_augment("noise=0.5,snr=0:20,reverb=0.3")
    waves, lengths = augment_batch(batch["waves"], batch["lengths"], 16000, cfg, generator)

Each effect has its own probability, drawn per clip; the effects a clip gets are applied in
the order of :data:`EFFECTS`: speed, pitch (the source) -> reverb (the room) -> band (the
channel) -> noise (at the receiver, so the SNR asked is the SNR of the output) -> gain.
Only each clip's real samples are used and changed; padding stays zero. Everything random
comes from the ``generator`` given, so a batch is a pure function of (input, generator state).

Speed and pitch perturbation move the pitch: never use them for a task whose label is a pitch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

import torch
import torchaudio.functional as AF

EFFECTS = ("speed", "pitch", "reverb", "band", "noise", "gain")  # also the order they are applied in
COLOURS = ("white", "pink", "brown", "file")
TELEPHONE = (300.0, 3400.0)  # Hz: the ITU-T G.712 voice band
RANGES = ("factor", "semitones", "rt60", "drr", "cutoff", "snr", "db")  # (lo, hi) settings
_STEP = 100  # speed and pitch factors are quantised to 1/_STEP, so resampling kernels stay small


@dataclass(frozen=True)
class AugmentConfig:
    """Per-clip probabilities of each effect (0: off) and the ranges its setting is drawn from
    (uniformly; a (lo, hi) pair with lo == hi fixes the setting).

    - speed: resample by ``factor`` (> 1: faster, shorter; pitch moves with it, as in Kaldi's
      speed perturbation); factors are quantised to 0.01. Changes lengths.
    - pitch: shift by ``semitones`` keeping the length (phase-vocoder time stretch, then
      resampling); factors quantised to 0.01 (about 0.17 semitone). Clips shorter than 512
      samples are left as they are.
    - reverb: convolve with a synthetic room impulse response: a direct path (one impulse) and a
      tail of Gaussian noise whose amplitude falls 60 dB in ``rt60`` seconds, scaled to a
      direct-to-reverberant ratio ``drr`` (dB), the whole response scaled to unit energy so the
      level stays about the same. The clip keeps its length (the tail past its end is cut).
    - band: with probability ``telephone`` the 300-3400 Hz telephone band, else a low-pass at
      ``cutoff`` Hz (capped at 0.45 x the sample rate); each edge is two cascaded RBJ biquads
      with Q = 1/sqrt(2) (24 dB/octave).
    - noise: add noise at ``snr`` dB (signal power over the clip's real samples, silences
      included, over the noise's power on the same samples); its colour is drawn from
      ``colours``: white, pink (1/f power), brown (1/f^2 power), or "file": a random excerpt of
      a clip from ``noise_dir`` (repeated when shorter). A silent clip gets no noise.
    - gain: multiply by ``db`` dB.

    Peak safety: after all effects a clip whose peak exceeds max(1, its peak before) is scaled
    down to that value: one factor for the whole clip, never a hard clip, so no distortion,
    and no clip leaves [-1, 1] that was inside it. This caps gain (and reverb or noise peaks) at
    the headroom the clip has.
    """

    speed: float = 0.0
    pitch: float = 0.0
    reverb: float = 0.0
    band: float = 0.0
    noise: float = 0.0
    gain: float = 0.0
    factor: tuple = (0.9, 1.1)
    semitones: tuple = (-2.0, 2.0)
    rt60: tuple = (0.2, 0.8)
    drr: tuple = (0.0, 10.0)
    telephone: float = 0.5
    cutoff: tuple = (2000.0, 6000.0)
    snr: tuple = (5.0, 30.0)
    colours: tuple = ("white", "pink", "brown")
    noise_dir: str | None = None
    db: tuple = (-6.0, 6.0)

    def __post_init__(self):
        for name in (*EFFECTS, "telephone"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augment: {name} is a probability in [0, 1], not {getattr(self, name)}")
        for name in RANGES:
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"augment: {name} range {lo}:{hi} has lo > hi")
        for name in ("factor", "rt60", "cutoff"):
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"augment: {name} must be positive, not {getattr(self, name)[0]}")
        if not self.colours or set(self.colours) - set(COLOURS):
            raise ValueError(f"augment: colours must come from {COLOURS}, not {self.colours}")
        if ("file" in self.colours) != (self.noise_dir is not None):
            raise ValueError("augment: noise colour 'file' and noise_dir go together")


DEFAULTS = AugmentConfig(speed=0.3, pitch=0.0, reverb=0.3, band=0.2, noise=0.5, gain=0.5)
DEFAULT_SPEC = ",".join(f"{e}={getattr(DEFAULTS, e):g}" for e in EFFECTS if getattr(DEFAULTS, e))  # == DEFAULTS


def _number(token: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"augment: {token!r}: {text!r} is not a number") from None


def parse_augment(spec: str | None) -> AugmentConfig:
    """The CLI's ``--augment [SPEC]``: comma-separated ``key=value`` pairs.

    - an effect with its probability: ``speed=0.3``, ``pitch=0.2``, ``reverb=0.3``,
      ``band=0.2``, ``noise=0.5``, ``gain=0.5``. Effects not named are off, unless no effect
      is named at all: then :data:`DEFAULTS` (speed 0.3, reverb 0.3, band 0.2, noise 0.5,
      gain 0.5; pitch off) apply, so ``--augment`` alone or ``--augment snr=0:10`` means the
      defaults (with that SNR range).
    - a range ``LO:HI`` (or one value: fixed): ``factor=0.9:1.1`` (speed), ``semitones=-2:2``,
      ``rt60=0.2:0.8`` (s), ``drr=0:10`` (dB), ``cutoff=2000:6000`` (Hz), ``snr=5:30`` (dB),
      ``db=-6:6`` (gain).
    - ``telephone=0.5``: the share of band-limited clips given the telephone band (the rest:
      a low-pass at ``cutoff``).
    - ``colours=white+pink+brown`` (``+``-separated, from white, pink, brown, file);
      ``noise_dir=DIR``: noise clips to add (``colours`` then defaults to all four).

    Example: ``--augment noise=0.5,snr=0:20,reverb=0.3,speed=0.3,gain=0.5,band=0.2``.
    """
    values: dict = {}
    for token in (spec or "").split(","):
        if not token.strip():
            continue
        key, sep, value = (s.strip() for s in token.partition("="))
        if not sep or not value:
            raise ValueError(f"augment: {token!r} is not key=value")
        if key in (*EFFECTS, "telephone"):
            values[key] = _number(token, value)
        elif key in RANGES:
            lo, _, hi = value.partition(":")
            values[key] = (_number(token, lo), _number(token, hi or lo))
        elif key == "colours":
            values[key] = tuple(c.strip() for c in value.split("+"))
        elif key == "noise_dir":
            values[key] = value
        else:
            names = (*EFFECTS, *RANGES, "telephone", "colours", "noise_dir")
            raise ValueError(f"augment: unknown key {key!r}; known: {', '.join(names)}")
    if "noise_dir" in values and "colours" not in values:
        values["colours"] = COLOURS
    base = DEFAULTS if not any(e in values for e in EFFECTS) else AugmentConfig()
    return replace(base, **values)


def describe(cfg: AugmentConfig) -> dict:
    """The settings as a JSON-able dict (for logs and recipe.json)."""
    return {f.name: list(v) if isinstance(v := getattr(cfg, f.name), tuple) else v for f in fields(cfg)}


# --- the effects: each takes the selected clips (K, T) zero-padded and their lengths --------

def _uniform(lo_hi, n: int, gen: torch.Generator) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def _resample(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` played ``factor`` times faster (len / factor samples); factor a multiple of 1/_STEP."""
    orig = max(1, round(factor * _STEP))
    return x if orig == _STEP else AF.resample(x, orig, _STEP)


def _speed(clips: list[torch.Tensor], factors: torch.Tensor) -> list[torch.Tensor]:
    return [_resample(x, f) for x, f in zip(clips, factors.tolist())]


def _pitch(clips: list[torch.Tensor], semitones: torch.Tensor, n_fft: int = 512) -> list[torch.Tensor]:
    """Stretch by the pitch factor (phase vocoder), then resample back to the same length."""
    hop = n_fft // 4
    window = torch.hann_window(n_fft)
    advance = torch.linspace(0, math.pi * hop, n_fft // 2 + 1)[:, None]
    out = []
    for x, st in zip(clips, semitones):
        f = round(2.0 ** (float(st) / 12) * _STEP) / _STEP
        if f == 1.0 or x.shape[-1] < n_fft:
            out.append(x)
            continue
        spec = torch.stft(x, n_fft, hop, window=window, return_complex=True)
        long = torch.istft(AF.phase_vocoder(spec, 1 / f, advance), n_fft, hop, window=window,
                           length=round(x.shape[-1] * f))
        y = _resample(long, f)[: x.shape[-1]]
        out.append(torch.nn.functional.pad(y, (0, x.shape[-1] - y.shape[-1])))
    return out


def room_impulse(rt60: torch.Tensor, drr: torch.Tensor, sample_rate: int, gen: torch.Generator) -> torch.Tensor:
    """(K, L) synthetic room impulse responses, unit energy: an impulse at 0, then Gaussian noise
    decaying 60 dB in ``rt60`` s (L: the longest rt60), at ``drr`` dB below the impulse."""
    n = max(2, math.ceil(float(rt60.max()) * sample_rate))
    t = torch.arange(1, n) / sample_rate
    tail = torch.randn(len(rt60), n - 1, generator=gen)
    tail *= torch.pow(10.0, -3.0 * t / rt60[:, None].float())  # amplitude: -60 dB at t = rt60
    tail *= torch.sqrt(10.0 ** (-drr[:, None].float() / 10) / tail.square().sum(1, keepdim=True))
    h = torch.cat([torch.ones(len(rt60), 1), tail], 1)
    return h / h.norm(dim=1, keepdim=True)


def _reverb(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The first T samples of each row's convolution with its impulse response (FFT of a power
    of two length, several times faster than an awkward T + L - 1)."""
    n = 1 << (x.shape[1] + h.shape[1] - 2).bit_length()
    return torch.fft.irfft(torch.fft.rfft(x, n) * torch.fft.rfft(h, n), n)[:, : x.shape[1]]


def _biquad(kind: str, freq: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) coefficients (K, 3) of RBJ-cookbook low/high-pass biquads, Q = 1/sqrt(2)."""
    w0 = 2 * math.pi * freq.double() / sample_rate
    alpha, cos = torch.sin(w0) / math.sqrt(2.0), torch.cos(w0)
    if kind == "low":
        b = torch.stack([(1 - cos) / 2, 1 - cos, (1 - cos) / 2], 1)
    else:
        b = torch.stack([(1 + cos) / 2, -(1 + cos), (1 + cos) / 2], 1)
    a = torch.stack([1 + alpha, -2 * cos, 1 - alpha], 1)
    return a.float(), b.float()


def _band(x: torch.Tensor, telephone: torch.Tensor, cutoff: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Telephone band-pass where ``telephone``, else a low-pass at ``cutoff``: two high-pass and
    two low-pass sections per clip (a low-pass clip's high-pass is at 0 Hz, i.e. none)."""
    nyq_cap = 0.45 * sample_rate
    low = torch.where(telephone, torch.full_like(cutoff, TELEPHONE[1]), cutoff).clamp(max=nyq_cap)
    high = torch.where(telephone, torch.full_like(cutoff, TELEPHONE[0]), torch.zeros_like(cutoff))
    a_lo, b_lo = _biquad("low", low, sample_rate)
    a_hi, b_hi = _biquad("high", high, sample_rate)
    # a high-pass at 0 Hz has b = a = [1, -2, 1]: a double pole at z = 1 that cancels only in
    # exact arithmetic; the identity instead
    identity = torch.tensor([1.0, 0.0, 0.0])
    a_hi[~telephone], b_hi[~telephone] = identity, identity
    for a, b in ((a_hi, b_hi), (a_hi, b_hi), (a_lo, b_lo), (a_lo, b_lo)):
        x = AF.lfilter(x, a, b, clamp=False, batching=True)
    return x


def _shaped_noise(colour: torch.Tensor, shape, gen: torch.Generator) -> torch.Tensor:
    """(K, T) noise; ``colour`` (K,) 0 white, 1 pink, 2 brown: power falls as 1/f^colour."""
    white = torch.randn(shape, generator=gen)
    if not bool((colour > 0).any()):
        return white
    spec = torch.fft.rfft(white)
    f = torch.arange(spec.shape[-1], dtype=torch.float32).clamp(min=1.0)
    spec = spec * f.pow(-colour[:, None].float() / 2)  # amplitude ~ f^(-c/2)
    spec[:, 0] = 0  # no DC offset
    return torch.fft.irfft(spec, n=shape[-1])


@lru_cache(maxsize=4)
def _noise_clips(folder: str, sample_rate: int) -> tuple[torch.Tensor, ...]:
    from .audio import decode
    from .items import AUDIO_EXTENSIONS

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise ValueError(f"augment: noise_dir {folder} holds no audio files")
    return tuple(decode(p, sample_rate) for p in files)


def _file_noise(n: int, length: int, folder: str, sample_rate: int, gen: torch.Generator) -> torch.Tensor:
    """(n, length) excerpts of random noise clips at random offsets, repeated when short."""
    clips = _noise_clips(folder, sample_rate)
    picks = torch.randint(len(clips), (n,), generator=gen)
    starts = torch.rand(n, generator=gen)
    rows = []
    for p, s in zip(picks.tolist(), starts.tolist()):
        c = clips[p]
        c = c.repeat(-(-length // c.shape[-1]) + 1)
        start = int(s * (c.shape[-1] - length))
        rows.append(c[start:start + length])
    return torch.stack(rows)


def _add_noise(x: torch.Tensor, mask: torch.Tensor, snr: torch.Tensor, colour: torch.Tensor,
               cfg: AugmentConfig, sample_rate: int, gen: torch.Generator) -> torch.Tensor:
    noise = _shaped_noise(colour.clamp(max=2), x.shape, gen)
    is_file = colour == COLOURS.index("file")
    if bool(is_file.any()):
        noise[is_file] = _file_noise(int(is_file.sum()), x.shape[-1], cfg.noise_dir, sample_rate, gen)
    noise = noise * mask
    count = mask.sum(1).clamp(min=1)
    p_signal = x.double().square().sum(1) / count
    p_noise = noise.double().square().sum(1) / count
    scale = torch.where(p_noise > 0, torch.sqrt(p_signal / (p_noise.clamp(min=1e-30) * 10 ** (snr / 10))), 0.0)
    return x + noise * scale.float()[:, None]


# --- the batch --------------------------------------------------------------------------------

def _pad(clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([c.shape[-1] for c in clips], dtype=torch.long)
    out = torch.zeros(len(clips), int(lengths.max()))
    for i, c in enumerate(clips):
        out[i, : c.shape[-1]] = c
    return out, lengths


@torch.no_grad()
def augment_batch(waves: torch.Tensor, lengths: torch.Tensor, sample_rate: int, config: AugmentConfig,
                  generator: torch.Generator, source: bool = False):
    """Augment a zero-padded batch ``waves`` (B, T) whose clip i has ``lengths[i]`` real samples.

    Returns new ``(waves, lengths)`` (float32, on ``waves``' device; lengths change only by
    speed perturbation, and T is then the longest new length). The input is not modified.
    Deterministic for a given ``generator`` state (a CPU ``torch.Generator``); finite for
    finite input. See :class:`AugmentConfig` for the effects and the peak safety.

    With ``source``: ``(waves, lengths, clean)``, where ``clean`` holds the same clips after
    the source effects only (speed, pitch), before the room, channel, noise and gain: what a
    clean-input teacher hears, aligned sample for sample with ``waves`` (same lengths).
    The draws, and so ``waves``, are the same with or without it.
    """
    device, b = waves.device, waves.shape[0]
    if waves.numel() == 0:  # (a batch whose clips were all skipped)
        return waves.float(), lengths
    x, lengths = waves.detach().float().cpu().clone(), lengths.cpu().long()
    x *= torch.arange(x.shape[1]) < lengths[:, None]  # whatever is past a clip's end is padding
    peak_in = x.abs().amax(1)
    apply = {e: torch.rand(b, generator=generator) < getattr(config, e) for e in EFFECTS}

    for effect, draw, fn in (("speed", config.factor, _speed), ("pitch", config.semitones, _pitch)):
        values = _uniform(draw, b, generator)
        if bool(apply[effect].any()):
            clips = [x[i, :n] for i, n in enumerate(lengths.tolist())]
            idx = apply[effect].nonzero().flatten().tolist()
            for i, y in zip(idx, fn([clips[i] for i in idx], values[idx])):
                clips[i] = y
            x, lengths = _pad(clips)
    clean = x.clone() if source else None

    mask = torch.arange(x.shape[1]) < lengths[:, None]
    rt60, drr = _uniform(config.rt60, b, generator), _uniform(config.drr, b, generator)
    if bool(apply["reverb"].any()):
        sel = apply["reverb"]
        h = room_impulse(rt60[sel], drr[sel], sample_rate, generator)
        x[sel] = _reverb(x[sel], h) * mask[sel]

    telephone = torch.rand(b, generator=generator) < config.telephone
    cutoff = _uniform(config.cutoff, b, generator).float()
    if bool(apply["band"].any()):
        sel = apply["band"]
        x[sel] = _band(x[sel], telephone[sel], cutoff[sel], sample_rate) * mask[sel]

    snr = _uniform(config.snr, b, generator)
    colour = torch.tensor([COLOURS.index(c) for c in config.colours])[
        torch.randint(len(config.colours), (b,), generator=generator)]
    if bool(apply["noise"].any()):
        sel = apply["noise"]
        x[sel] = _add_noise(x[sel], mask[sel], snr[sel], colour[sel], config, sample_rate, generator)

    db = _uniform(config.db, b, generator)
    x *= torch.where(apply["gain"], 10 ** (db / 20), 1.0).float()[:, None]

    limit = peak_in.clamp(min=1.0)
    peak = x.abs().amax(1)
    x *= torch.where(peak > limit, limit / peak.clamp(min=1e-30), 1.0)[:, None]
    if source:
        return x.to(device), lengths.to(device), clean.to(device)
    return x.to(device), lengths.to(device)
