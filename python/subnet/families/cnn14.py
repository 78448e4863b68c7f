"""CNN14 (Kong et al. 2020, PANNs), the audio encoder of CLAP 2022, with its log-mel front end.

A model class, not an adapter: it is a plain conv stack, so the generic conv-stack
family discovers its units (the channels of all twelve 3x3 convs; BatchNorm statistics
follow their channel, the next conv's input channels and fc1's columns shrink) and it
is registered for artifacts. Submodule names follow PANNs' checkpoints (`bn0`,
`conv_block{i}.conv1/bn1/conv2/bn2`, `fc1`, `fc_audioset`); the front end computes the
same log-mel as PANNs (power STFT with a periodic Hann window, Slaney mel filters,
10 log10 with a 1e-10 floor) without stored weights.
"""
from __future__ import annotations

import torch
import torchaudio
from torch import nn
from torch.nn import functional as F

from .conv_stack import register_model
from .front_ends import RawWave


class LogMel(nn.Module):
    """Waveform (batch, samples) -> log-mel (batch, frames, n_mels)."""

    def __init__(self, sample_rate: int, n_fft: int, hop: int, n_mels: int, f_min: float, f_max: float):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        mel = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate,
                                                    norm="slaney", mel_scale="slaney")
        self.register_buffer("mel", mel, persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():  # ONNX has no complex tensors: real and imaginary parts
            spec = torch.stft(wave, self.n_fft, self.hop, window=self.window, center=True,
                              pad_mode="reflect", return_complex=False).square().sum(-1)
        else:
            spec = torch.stft(wave, self.n_fft, self.hop, window=self.window, center=True,
                              pad_mode="reflect", return_complex=True).abs().square()
        return 10.0 * torch.log10((spec.transpose(1, 2) @ self.mel).clamp_min(1e-10))


class ConvBlock(nn.Module):
    """Two 3x3 conv + BatchNorm + ReLU, then average pooling."""

    def __init__(self, c_in: int, c_out: int, pool: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.pool = pool

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, self.pool)


@register_model
class Cnn14(nn.Module):
    """CNN14; forward(wave (batch, samples)) -> {"embedding", "clipwise_output"}.

    Defaults are PANNs' (32 kHz, 64 mel bins, widths 64..2048, 527 AudioSet classes).
    `classes=0` leaves out the classifier."""

    def __init__(self, sample_rate: int = 32000, n_fft: int = 1024, hop: int = 320, mel_bins: int = 64,
                 f_min: float = 50.0, f_max: float = 14000.0,
                 widths=(64, 128, 256, 512, 1024, 2048), classes: int = 527):
        super().__init__()
        widths = tuple(widths)
        self.config = dict(sample_rate=sample_rate, n_fft=n_fft, hop=hop, mel_bins=mel_bins,
                           f_min=f_min, f_max=f_max, widths=list(widths), classes=classes)
        self.subnet_probe_shape = (sample_rate,)  # analysis and verification on 1 s of audio
        self.subnet_input_rate = sample_rate  # FLOPs are counted per input sample
        self.logmel = LogMel(sample_rate, n_fft, hop, mel_bins, f_min, f_max)
        self.bn0 = nn.BatchNorm2d(mel_bins)
        c_in = 1
        for i, c_out in enumerate(widths, 1):
            setattr(self, f"conv_block{i}", ConvBlock(c_in, c_out, 2 if i < len(widths) else 1))
            c_in = c_out
        self.n_blocks = len(widths)
        self.dropout_block, self.dropout_embed = nn.Dropout(0.2), nn.Dropout(0.5)
        self.fc1 = nn.Linear(c_in, c_in)
        self.fc_audioset = nn.Linear(c_in, classes) if classes else None

    def subnet_front_end(self) -> RawWave:
        """The waveform at the model's rate (its log-mel is part of the model); the head reads
        the 2048-wide embedding, CNN14's own max + mean pooling over time."""
        return RawWave(sample_rate=self.config["sample_rate"], normalize=False, style="plain", key="wave")

    def forward(self, wave: torch.Tensor) -> dict:
        x = self.logmel(wave)[:, None]  # (batch, 1, frames, mels)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # per mel bin
        for i in range(1, self.n_blocks + 1):
            x = self.dropout_block(getattr(self, f"conv_block{i}")(x))
        x = x.mean(dim=3)  # over mel bins
        x = F.max_pool1d(x, 3, 1, 1) + F.avg_pool1d(x, 3, 1, 1)
        x = self.dropout_embed(x.amax(dim=2) + x.mean(dim=2))  # over time
        embedding = F.relu(self.fc1(x))
        out = {"embedding": embedding}
        if self.fc_audioset is not None:
            out["clipwise_output"] = torch.sigmoid(self.fc_audioset(self.dropout_embed(embedding)))
        return out
