"""One adapter per architecture family; `family_of(model)` finds the one that fits."""
from __future__ import annotations

from torch import nn

from .ast import ASTFamily
from .base import Family
from .clap_audio import ClapAudioFamily
from .conv_stack import ConvStackFamily
from .ta_conformer import TorchaudioConformerFamily
from .ta_wav2vec2 import TorchaudioWav2Vec2Family
from .torch_transformer import TorchTransformerFamily
from .w2v_conformer import Wav2Vec2ConformerFamily
from .wav2vec2 import Wav2Vec2Family
from .whisper import WhisperFamily

# torchaudio's Wav2Vec2Model shares its class name with transformers': it goes first;
# the generic conv stack matches any model with a conv and goes last
FAMILIES: list[Family] = [TorchaudioWav2Vec2Family(), Wav2Vec2Family(), WhisperFamily(), TorchTransformerFamily(),
                          ASTFamily(), Wav2Vec2ConformerFamily(), ClapAudioFamily(), TorchaudioConformerFamily(),
                          ConvStackFamily()]


def family_of(model: nn.Module) -> Family:
    for fam in FAMILIES:
        if fam.matches(model):
            return fam
    supported = "Wav2Vec2Model, HubertModel, WavLMModel, Data2VecAudioModel, WhisperEncoder, " \
                "nn.TransformerEncoder, nn.TransformerEncoderLayer, ASTModel, Wav2Vec2ConformerModel, " \
                "ClapAudioModel, torchaudio Wav2Vec2Model and Conformer, Conv1d/Conv2d stacks"
    raise TypeError(f"subnet has no family adapter for {type(model).__name__}; supported: {supported}")


def family_named(name: str) -> Family:
    for fam in FAMILIES:
        if fam.name == name:
            return fam
    raise KeyError(f"unknown family {name!r}; known: {[f.name for f in FAMILIES]}")
