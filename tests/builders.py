"""Random-init models of every supported family, small and base-size (shared by the tests)."""
from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn



def _w2v_kwargs(size: str) -> dict:
    if size == "base":
        return {}
    return dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                conv_dim=(16, 12, 20), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3),
                num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                  feat_proj_dropout=0.0, layerdrop=0.0)


def build(kind: str, size: str = "small") -> nn.Module:
    """A random-init model of family variant `kind` ("small" or "base" shapes), in eval mode."""
    torch.manual_seed(1234)
    kw = {**_w2v_kwargs(size), **NO_DROPOUT}
    if kind == "wav2vec2":
        m = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**kw))
    elif kind == "wav2vec2-layernorm":
        m = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(
            feat_extract_norm="layer", do_stable_layer_norm=True, **kw))
    elif kind == "hubert":
        m = transformers.HubertModel(transformers.HubertConfig(**kw))
    elif kind == "hubert-noprojnorm":
        m = transformers.HubertModel(transformers.HubertConfig(feat_proj_layer_norm=False, **kw))
    elif kind == "wavlm":
        extra = {} if size == "base" else dict(num_buckets=32, max_bucket_distance=64)
        m = transformers.WavLMModel(transformers.WavLMConfig(**kw, **extra))
    elif kind == "data2vec":
        extra = {} if size == "base" else dict(num_conv_pos_embeddings=5)
        m = transformers.Data2VecAudioModel(transformers.Data2VecAudioConfig(**{**kw, **extra}))
    elif kind.startswith("whisper"):
        from transformers.models.whisper.modeling_whisper import WhisperEncoder
        wkw = dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048,
                   max_source_positions=50) if size == "base" else dict(
            d_model=40, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=56,
            decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=32, num_mel_bins=16,
            max_source_positions=13, vocab_size=60, max_target_positions=16,
            pad_token_id=1, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2)
        cfg = transformers.WhisperConfig(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, **wkw)
        m = WhisperEncoder(cfg) if kind == "whisper" else transformers.WhisperForConditionalGeneration(cfg)
    elif kind.startswith("torch"):
        d, heads, ff, layers = (768, 12, 3072, 12) if size == "base" else (40, 4, 56, 2)
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, activation="gelu",
                                           batch_first="batch" in kind, norm_first="prenorm" in kind)
        m = layer if kind == "torch-layer" else nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)
    else:
        raise KeyError(kind)
    return m.eval()


SMALL_KINDS = ["wav2vec2", "wav2vec2-layernorm", "hubert", "hubert-noprojnorm", "wavlm", "data2vec",
               "whisper", "whisper-full", "torch-batch", "torch-seq-prenorm", "torch-layer"]
