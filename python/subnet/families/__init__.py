"""One adapter per architecture family; `family_of(model)` finds the one that fits."""
from __future__ import annotations

from torch import nn

from .base import Family
from .torch_transformer import TorchTransformerFamily
from .wav2vec2 import Wav2Vec2Family
from .whisper import WhisperFamily

FAMILIES: list[Family] = [Wav2Vec2Family(), WhisperFamily(), TorchTransformerFamily()]


def family_of(model: nn.Module) -> Family:
    for fam in FAMILIES:
        if fam.matches(model):
            return fam
    supported = "Wav2Vec2Model, HubertModel, WavLMModel, Data2VecAudioModel, WhisperEncoder, " \
                "nn.TransformerEncoder, nn.TransformerEncoderLayer"
    raise TypeError(f"subnet has no family adapter for {type(model).__name__}; supported: {supported}")


def family_named(name: str) -> Family:
    for fam in FAMILIES:
        if fam.name == name:
            return fam
    raise KeyError(f"unknown family {name!r}; known: {[f.name for f in FAMILIES]}")
