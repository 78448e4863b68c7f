"""Front ends: a padded batch of waveforms -> what an encoder eats, and which frames are real.

Every family owns its front end (`Family.front_end(model)`); this module holds the base class
and the front ends several families share (raw samples, a log-mel spectrogram). A front end
knows its sample rate, the shortest clip it can encode, the longest its encoder takes (None:
any), and maps clip lengths (in samples) to the output frames that cover real audio, so that
heads pool only over audio. `describe()` is stored in artifacts and `front_end_from` rebuilds
the same front end from it.
"""
from __future__ import annotations

import importlib
import math

import torch
import torchaudio

#: front-end class name -> class, for rebuilding one from an artifact's description
FRONT_ENDS: dict[str, type] = {}


class FrontEnd:
    sample_rate = 16000
    #: every clip is padded to one fixed length, so a clip's encoding does not depend on the
    #: width of the batch it came in (EncoderCache keys then ignore that width)
    fixed_length = False
    #: the shortest clip (samples) that gives at least one output frame
    min_samples = 1
    #: the longest clip (samples) the encoder takes; longer clips are cut (None: no limit)
    max_samples: int | None = None

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        FRONT_ENDS[cls.__name__] = cls

    def inputs(self, waves: torch.Tensor, lengths: torch.Tensor) -> dict:
        """The encoder's keyword inputs for (B, T) zero-padded waves with `lengths` samples."""
        raise NotImplementedError

    def frames(self, lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Bool (B, n_frames): True where an output frame covers real audio (default: every
        frame, for encoders whose outputs are not in time order, e.g. patch tokens)."""
        return torch.ones(len(lengths), n_frames, dtype=torch.bool, device=lengths.device)

    def settings(self) -> dict:
        """Constructor keyword arguments that rebuild this front end (JSON-able)."""
        return {}

    def describe(self) -> dict:
        return {"type": type(self).__name__, "module": type(self).__module__, **self.settings()}

    def example_inputs(self, batch: int, seconds: float, generator: torch.Generator | None = None) -> dict:
        """Inputs for `batch` random clips of `seconds` (timing, FLOPs, export, probes)."""
        n = max(self.min_samples, round(seconds * self.sample_rate))
        waves = 0.1 * torch.randn(batch, n, generator=generator)
        return self.inputs(waves, torch.full((batch,), n, dtype=torch.long))


def front_end_from(desc: dict) -> FrontEnd:
    """Rebuild a front end from its `describe()` (stored in artifacts)."""
    desc = dict(desc)
    kind, module = desc.pop("type", None), desc.pop("module", None)
    if kind not in FRONT_ENDS and module:
        importlib.import_module(module)  # a front end defined outside subnet's families
    if kind not in FRONT_ENDS:
        raise ValueError(f"unknown front end {kind!r} (known: {sorted(FRONT_ENDS)}); import the module "
                         "that defines it before loading the artifact")
    return FRONT_ENDS[kind](**desc)


def with_settings(fe: FrontEnd, overrides: dict) -> FrontEnd:
    """`fe` rebuilt with some settings changed (`subnet extract --front-end hop=0.1`)."""
    if not overrides:
        return fe
    known = fe.settings()
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"front end {type(fe).__name__} has no setting {', '.join(unknown)}; its settings: "
                         f"{', '.join(f'{k}={v!r}' for k, v in known.items()) or 'none'}")
    return type(fe)(**{**known, **overrides})


def parse_settings(pairs) -> dict:
    """["hop=0.1", "normalize=false"] -> {"hop": 0.1, "normalize": False} (JSON values, else text)."""
    import json
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"front-end setting {pair!r}: expected KEY=VALUE, e.g. hop=0.1")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def normalize_clips(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over each clip's real samples; padding stays zero."""
    mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    n = lengths.clamp(min=1)[:, None].to(x.dtype)
    mean = (x * mask).sum(1, keepdim=True) / n
    var = (((x - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + 1e-7) * mask


def conv_output_lengths(lengths: torch.Tensor, layers) -> torch.Tensor:
    """Output frames of a stack of unpadded 1-d convs, `layers` = [(kernel, stride), ...]."""
    for kernel, stride in layers:
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths.clamp(min=0)


def receptive_field(layers) -> int:
    """Samples one output frame of `conv_output_lengths`' stack needs."""
    n = 1
    for kernel, stride in reversed(layers):
        n = (n - 1) * stride + kernel
    return n


class RawWave(FrontEnd):
    """Raw samples in, one frame per step of a strided conv stack (wav2vec2 / HuBERT / WavLM /
    data2vec, transformers or torchaudio; models that read the waveform themselves).

    `style`: "transformers" -> {input_values, attention_mask}; "torchaudio" -> {waveforms,
    lengths} (lengths None unless `lengths`: torchaudio's WavLM refuses a mask); "plain" ->
    {key: waves} (`channel` adds a channel axis: (B, 1, T)).
    `conv`: [(kernel, stride), ...] of the feature extractor (None: frames are not in time
    order or not known: every frame counts)."""

    def __init__(self, sample_rate: int = 16000, normalize: bool = True, style: str = "transformers",
                 conv=None, key: str = "input", channel: bool = False, lengths: bool = True):
        if style not in ("transformers", "torchaudio", "plain"):
            raise ValueError(f"unknown raw-wave style {style!r}")
        self.sample_rate, self.normalize, self.style = sample_rate, normalize, style
        self.conv = [tuple(c) for c in conv] if conv else None
        self.key, self.channel, self.lengths = key, channel, lengths
        self.min_samples = receptive_field(self.conv) if self.conv else 1

    def inputs(self, waves, lengths):
        lengths = lengths.to(waves.device)
        x = normalize_clips(waves, lengths) if self.normalize else waves
        if self.style == "transformers":
            mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
            return {"input_values": x, "attention_mask": mask.long()}
        if self.style == "torchaudio":
            return {"waveforms": x, "lengths": lengths if self.lengths else None}
        return {self.key: x[:, None] if self.channel else x}

    def frames(self, lengths, n_frames):
        if self.conv is None:
            return super().frames(lengths, n_frames)
        valid = conv_output_lengths(lengths, self.conv)
        return torch.arange(n_frames, device=lengths.device)[None, :] < valid[:, None]

    def settings(self):
        return {"sample_rate": self.sample_rate, "normalize": self.normalize, "style": self.style,
                "conv": self.conv, "key": self.key, "channel": self.channel, "lengths": self.lengths}


class LogMel(FrontEnd):
    """Log-mel spectrogram, 25 ms Hann window, 10 ms hop, log(mel power + 1e-6), for encoders
    that take spectrogram frames (torchaudio Conformer, nn.TransformerEncoder, conv stacks).

    `layout`: "btf" (B, frames, mels), "tbf" (frames, B, mels), "bft" (B, mels, frames) or
    "b1ft" (B, 1, mels, frames). `key` names the features; `lengths_key` adds the frame
    counts, `padding_key` a (B, frames) bool mask that is True on padding."""

    def __init__(self, n_mels: int, sample_rate: int = 16000, layout: str = "btf", key: str = "input",
                 lengths_key: str | None = None, padding_key: str | None = None):
        if layout not in ("btf", "tbf", "bft", "b1ft"):
            raise ValueError(f"unknown log-mel layout {layout!r}")
        self.n_mels, self.sample_rate, self.layout = n_mels, sample_rate, layout
        self.key, self.lengths_key, self.padding_key = key, lengths_key, padding_key
        self.hop = sample_rate // 100
        self.win = round(0.025 * sample_rate)
        self.n_fft = max(2 ** math.ceil(math.log2(self.win)), 2 * n_mels)  # room for n_mels filters
        self.filters = torchaudio.functional.melscale_fbanks(self.n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels,
                                                            sample_rate, norm="slaney", mel_scale="slaney")
        self.window = torch.hann_window(self.win)

    def n_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths, self.hop, rounding_mode="floor") + 1

    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T // hop + 1, n_mels)."""
        with torch.autocast(waves.device.type, enabled=False):
            spec = torch.stft(waves.float(), self.n_fft, self.hop, self.win, window=self.window.to(waves.device),
                              center=True, pad_mode="constant", return_complex=True)
            power = spec.abs().square().transpose(1, 2)  # (B, frames, bins)
            return torch.log(power @ self.filters.to(waves.device) + 1e-6)

    def inputs(self, waves, lengths):
        x = self.features(waves)
        n = self.n_frames(lengths.to(waves.device))
        real = torch.arange(x.shape[1], device=x.device)[None, :] < n[:, None]
        x = x * real[..., None]
        x = {"btf": x, "tbf": x.transpose(0, 1), "bft": x.transpose(1, 2), "b1ft": x.transpose(1, 2)[:, None]}
        out = {self.key: x[self.layout].contiguous()}
        if self.lengths_key:
            out[self.lengths_key] = n
        if self.padding_key:
            out[self.padding_key] = ~real
        return out

    def frames(self, lengths, n_frames):
        if self.layout not in ("btf", "tbf"):  # a conv stack's output frames are not the input's
            return super().frames(lengths, n_frames)
        valid = self.n_frames(lengths)
        return torch.arange(n_frames, device=lengths.device)[None, :] < valid[:, None]

    def settings(self):
        return {"n_mels": self.n_mels, "sample_rate": self.sample_rate, "layout": self.layout, "key": self.key,
                "lengths_key": self.lengths_key, "padding_key": self.padding_key}
