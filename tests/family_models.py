"""Tiny random-init encoders of every supported family, as a user would pass them to
`subnet extract --backbone`: transformers directories (`save_pretrained`) and Python entry
points (`family_models:NAME`, importable because pytest puts tests/ on sys.path).

`FAMILIES` lists them in the order of the README's "Supported encoders" table.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio
import transformers
from torch import nn

NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                  layerdrop=0.0)
W2V = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
           conv_dim=(16, 12, 20), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16,
           num_conv_pos_embedding_groups=4, **NO_DROPOUT)


@dataclass(frozen=True)
class FamilyCase:
    row: str  # the README table's first column
    units: str  # its second column
    source: str  # "hf:<name>" (a save_pretrained directory made by `hf_model`) or an entry point
    real: bool = False  # real weights (the builtin names): needs .ci/install-real.sh


def hf_model(name: str) -> nn.Module:
    """The transformers model behind an "hf:<name>" source."""
    torch.manual_seed(0)
    if name == "wav2vec2":
        return transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**W2V))
    if name == "hubert":
        return transformers.HubertModel(transformers.HubertConfig(**W2V))
    if name == "wavlm":
        return transformers.WavLMModel(transformers.WavLMConfig(num_buckets=32, max_bucket_distance=64, **W2V))
    if name == "data2vec":
        return transformers.Data2VecAudioModel(transformers.Data2VecAudioConfig(**{**W2V, "num_conv_pos_embeddings": 5}))
    if name == "conformer":
        return transformers.Wav2Vec2ConformerModel(transformers.Wav2Vec2ConformerConfig(
            position_embeddings_type="relative", conv_depthwise_kernel_size=7, **W2V))
    if name == "whisper":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder
        return WhisperEncoder(transformers.WhisperConfig(
            d_model=40, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=56, num_mel_bins=16,
            max_source_positions=100, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0))
    if name == "ast":
        return transformers.ASTModel(transformers.ASTConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, num_mel_bins=32,
            max_length=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    if name == "clap":
        return transformers.ClapAudioModel(transformers.ClapAudioConfig(
            window_size=4, num_mel_bins=16, spec_size=32, patch_size=4, patch_stride=[4, 4],
            patch_embeds_hidden_size=16, depths=[2, 2], num_attention_heads=[2, 4], hidden_dropout_prob=0.0,
            drop_path_rate=0.0, attention_probs_dropout_prob=0.0))
    raise KeyError(name)


# --- entry points -----------------------------------------------------------------------------
# the arguments torchaudio's wav2vec2_model and wavlm_model share: a tiny encoder
TA_W2V = dict(extractor_mode="group_norm", extractor_conv_layer_config=[(16, 10, 5), (12, 3, 2), (20, 3, 2)],
              extractor_conv_bias=False, encoder_embed_dim=32, encoder_projection_dropout=0.0,
              encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4, encoder_num_layers=2, encoder_num_heads=4,
              encoder_attention_dropout=0.0, encoder_ff_interm_features=48, encoder_ff_interm_dropout=0.0,
              encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None)


def torchaudio_wav2vec2():
    torch.manual_seed(0)
    return torchaudio.models.wav2vec2_model(**TA_W2V)


def torchaudio_wavlm():
    torch.manual_seed(0)
    return torchaudio.models.wavlm_model(encoder_num_buckets=32, encoder_max_distance=64, **TA_W2V)


def torchaudio_conformer():
    torch.manual_seed(0)
    return torchaudio.models.Conformer(input_dim=32, num_heads=4, ffn_dim=48, num_layers=2,
                                       depthwise_conv_kernel_size=7)


def torch_transformer():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 48, dropout=0.0, activation="gelu", batch_first=True)
    return nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(32), enable_nested_tensor=False)


def cnn14():
    from subnet.families.cnn14 import Cnn14
    torch.manual_seed(0)
    return Cnn14(sample_rate=16000, n_fft=512, hop=160, mel_bins=32, f_max=8000.0, widths=(8, 16, 16, 32),
                 classes=0)


def crepe_random(capacity: str = "tiny"):
    from subnet.backbones.crepe import Crepe
    torch.manual_seed(0)
    return Crepe(capacity).eval()


def conv_stack():
    """A user's own nn.Sequential over the raw waveform (B, 1, T)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 16, 40, stride=8), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Conv1d(16, 24, 5, stride=4), nn.BatchNorm1d(24), nn.ReLU(),
                         nn.Conv1d(24, 32, 3, stride=2), nn.ReLU())


FAMILIES = (
    FamilyCase("transformers `Wav2Vec2Model`", "conv feature-extractor channels (all layers), heads, FFN neurons",
               "hf:wav2vec2"),
    FamilyCase("transformers `HubertModel`", "as Wav2Vec2Model", "hf:hubert"),
    FamilyCase("transformers `WavLMModel`", "as Wav2Vec2Model", "hf:wavlm"),
    FamilyCase("transformers `Data2VecAudioModel`", "as Wav2Vec2Model", "hf:data2vec"),
    FamilyCase("transformers `Wav2Vec2ConformerModel` (rotary / relative)",
               "conv channels, heads, both FFNs, conv-module channels (`dwconv`)", "hf:conformer"),
    FamilyCase("transformers `WhisperEncoder` (alone or in `WhisperModel` / `WhisperForConditionalGeneration`)",
               "conv1 channels, heads, FFN neurons", "hf:whisper"),
    FamilyCase("transformers `ASTModel`", "heads, FFN neurons", "hf:ast"),
    FamilyCase("transformers `ClapAudioModel` (HTSAT, Swin windows)",
               "heads (with their relative-position bias columns), FFN neurons", "hf:clap"),
    FamilyCase("torchaudio `wav2vec2_model` (`wav2vec2_base`, `hubert_base`, ...)", "as their transformers twins",
               "family_models:torchaudio_wav2vec2"),
    FamilyCase("torchaudio `wavlm_model` (`wavlm_base`, ...)", "as its transformers twin",
               "family_models:torchaudio_wavlm"),
    FamilyCase("torchaudio `Conformer`", "heads, both FFNs, conv-module channels (`dwconv`)",
               "family_models:torchaudio_conformer"),
    FamilyCase("`torch.nn.TransformerEncoder` / `TransformerEncoderLayer`", "heads, FFN neurons",
               "family_models:torch_transformer"),
    FamilyCase("CNN14 (PANNs, with its log-mel front end)", "conv channels (BatchNorm statistics follow)",
               "family_models:cnn14"),
    FamilyCase("CREPE `tiny` (random weights)", "conv channels", "family_models:crepe_random"),
    FamilyCase("CREPE `tiny` (real weights: `crepe-tiny`)", "conv channels", "crepe-tiny", real=True),
    FamilyCase("CREPE `full` (real weights: `crepe-full`)", "conv channels", "crepe-full", real=True),
    FamilyCase("any `nn.Sequential`-style Conv1d / Conv2d stack", "conv channels", "family_models:conv_stack"),
)
