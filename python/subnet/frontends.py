"""Front ends: a padded batch of waveforms -> the backbone's inputs, and which frames are real.

Each front end knows its backbone's sample rate and input format, and maps clip lengths
(in samples) to the number of valid output frames, so that heads pool only over audio.
"""
from __future__ import annotations

import torch
from torch import nn


class FrontEnd:
    sample_rate = 16000
    #: every clip is padded to one fixed length, so a clip's encoding does not depend on the
    #: width of the batch it came in (EncoderCache keys then ignore that width)
    fixed_length = False

    def inputs(self, waves: torch.Tensor, lengths: torch.Tensor) -> dict:
        raise NotImplementedError

    def frames(self, lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Bool (B, n_frames): True where an output frame covers real audio."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"type": type(self).__name__}


class RawWaveFrontEnd(FrontEnd):
    """wav2vec2 / HuBERT / WavLM / data2vec: normalised raw samples + attention mask."""

    def __init__(self, model: nn.Module, normalize: bool = True):
        self.model, self.normalize = model, normalize

    def inputs(self, waves, lengths):
        lengths = lengths.to(waves.device)
        mask = torch.arange(waves.shape[1], device=waves.device)[None, :] < lengths[:, None]
        x = waves
        if self.normalize:  # zero mean, unit variance over each clip's real samples
            n = lengths.clamp(min=1)[:, None].to(x.dtype)
            mean = (x * mask).sum(1, keepdim=True) / n
            var = (((x - mean) * mask) ** 2).sum(1, keepdim=True) / n
            x = (x - mean) / torch.sqrt(var + 1e-7) * mask
        return {"input_values": x, "attention_mask": mask.long()}

    def frames(self, lengths, n_frames):
        valid = self.model._get_feat_extract_output_lengths(lengths)
        return torch.arange(n_frames, device=lengths.device)[None, :] < valid[:, None]

    def describe(self):
        return {"type": "RawWaveFrontEnd", "normalize": self.normalize}


class WhisperLogMel(FrontEnd):
    """Whisper's log-mel spectrogram (25 ms Hann window, 10 ms hop), in torch.

    Clips are zero-padded to the encoder's input length (2 * max_source_positions frames),
    exactly as transformers' WhisperFeatureExtractor does for 30 s."""

    n_fft, hop = 400, 160
    fixed_length = True

    def __init__(self, n_mels: int, n_samples: int):
        from transformers import WhisperFeatureExtractor
        self.n_mels, self.n_samples = n_mels, n_samples
        fe = WhisperFeatureExtractor(feature_size=n_mels)
        self.filters = torch.from_numpy(fe.mel_filters).float()  # (n_fft/2+1, n_mels)
        self.window = torch.hann_window(self.n_fft)

    @classmethod
    def for_encoder(cls, encoder) -> "WhisperLogMel":
        cfg = encoder.config
        return cls(cfg.num_mel_bins, cfg.max_source_positions * 2 * cls.hop)

    def inputs(self, waves, lengths):
        x = torch.zeros(waves.shape[0], self.n_samples, dtype=torch.float32, device=waves.device)
        n = min(self.n_samples, waves.shape[1])
        x[:, :n] = waves[:, :n].float()
        with torch.autocast(waves.device.type, enabled=False):  # the spectrum in fp32 whatever the model runs in
            spec = torch.stft(x, self.n_fft, self.hop, window=self.window.to(x.device), return_complex=True)
            power = spec[..., :-1].abs() ** 2
            mel = (self.filters.T.to(x.device) @ power).clamp(min=1e-10).log10()
        peak = mel.amax(dim=(1, 2), keepdim=True)
        mel = (torch.maximum(mel, peak - 8.0) + 4.0) / 4.0
        return {"input_features": mel}

    def frames(self, lengths, n_frames):
        valid = torch.ceil(lengths.float() / (2 * self.hop)).long().clamp(min=1)
        return torch.arange(n_frames, device=lengths.device)[None, :] < valid[:, None]

    def describe(self):
        return {"type": "WhisperLogMel", "n_mels": self.n_mels, "n_samples": self.n_samples}


def front_end_for(backbone: nn.Module) -> FrontEnd:
    name = type(backbone).__name__
    if name in ("Wav2Vec2Model", "HubertModel", "WavLMModel", "Data2VecAudioModel"):
        return RawWaveFrontEnd(backbone)
    if name == "WhisperEncoder":
        return WhisperLogMel.for_encoder(backbone)
    raise TypeError(f"no waveform front end for {name}")


def front_end_from(desc: dict, backbone: nn.Module) -> FrontEnd:
    """Rebuild a front end from its `describe()` (stored in artifacts)."""
    kind = desc.get("type")
    if kind == "RawWaveFrontEnd":
        return RawWaveFrontEnd(backbone, normalize=desc.get("normalize", True))
    if kind == "WhisperLogMel":
        return WhisperLogMel(desc["n_mels"], desc["n_samples"])
    raise ValueError(f"unknown front end {desc!r}")
