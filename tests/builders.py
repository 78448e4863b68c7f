"""Random-init models of every supported family, small and base-size (shared by the tests).

`build(kind)`: the transformers and torch models of SMALL_KINDS; `build_transformers`,
`build_torchaudio`, `build_torchaudio_conformer` (each with its inputs) and `build_cnn14_tiny`:
the other families' model classes, with `randomise_norms` for non-trivial norm statistics.
"""
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


def randomise_norms(model):
    """Non-trivial BatchNorm statistics (fresh ones are 0/1 and hide mistakes)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model


def build_transformers(kind: str, size: str = "small"):
    """A random-init transformers ASTModel, Wav2Vec2ConformerModel or ClapAudioModel (`kind`: ast,
    conformer-rotary, conformer-relative, clap, clap-fusion) in eval mode, with its probe-like inputs."""
    torch.manual_seed(1234)
    g = torch.Generator().manual_seed(5)
    if kind == "ast":
        kw = {} if size == "base" else dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=48, num_mel_bins=32, max_length=56)
        cfg = transformers.ASTConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kw)
        if size == "base":
            cfg.max_length = 128  # shorter clips: same weights, fewer tokens
        m = transformers.ASTModel(cfg)
        with torch.no_grad():  # AST initialises them to zero, which hides head-order mistakes
            m.embeddings.position_embeddings.normal_()
        x = {"input_values": torch.randn(2, cfg.max_length, cfg.num_mel_bins, generator=g)}
    elif kind.startswith("conformer"):
        pos = kind.split("-")[1]
        kw = {} if size == "base" else dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            conv_dim=(16, 12, 20), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4, conv_depthwise_kernel_size=7)
        cfg = transformers.Wav2Vec2ConformerConfig(position_embeddings_type=pos, **NO_DROPOUT, **kw)
        m = randomise_norms(transformers.Wav2Vec2ConformerModel(cfg))
        if pos == "relative":
            with torch.no_grad():  # initialised to zero: make every head's rows matter
                for layer in m.encoder.layers:
                    layer.self_attn.pos_bias_u.normal_()
                    layer.self_attn.pos_bias_v.normal_()
        n = 1601
        mask = torch.ones(3, n, dtype=torch.long)
        mask[1, 1200:] = 0
        mask[2, 857:] = 0
        x = {"input_values": torch.randn(3, n, generator=g) * mask, "attention_mask": mask}
    elif kind.startswith("clap"):
        fusion = kind == "clap-fusion"
        kw = dict(window_size=4, num_mel_bins=16, spec_size=32, patch_size=4, patch_stride=[4, 4],
                  patch_embeds_hidden_size=16, depths=[2, 2], num_attention_heads=[2, 4]) if size == "small" \
            else dict(num_mel_bins=64, spec_size=256)  # HTSAT-tiny, CLAP's defaults
        cfg = transformers.ClapAudioConfig(enable_fusion=fusion, hidden_dropout_prob=0.0, drop_path_rate=0.0,
                                           attention_probs_dropout_prob=0.0, **kw)
        m = randomise_norms(transformers.ClapAudioModel(cfg))
        with torch.no_grad():  # initialised to zero: make every head's bias column matter
            for layer in m.audio_encoder.layers:
                for block in layer.blocks:
                    block.attention.self.relative_position_bias_table.normal_()
        frames = cfg.spec_size * (cfg.spec_size // cfg.num_mel_bins)
        x = {"input_features": torch.randn(2, 4 if fusion else 1, frames, cfg.num_mel_bins, generator=g)}
        if fusion:
            x["is_longer"] = torch.tensor([[True], [False]])
    else:
        raise KeyError(kind)
    return m.eval(), x


TORCHAUDIO_SMALL = dict(extractor_conv_layer_config=[(16, 10, 5), (12, 3, 2), (20, 3, 2)], extractor_conv_bias=False,
                        encoder_embed_dim=32, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=16,
                        encoder_pos_conv_groups=4, encoder_num_layers=2, encoder_num_heads=4,
                        encoder_attention_dropout=0.0, encoder_ff_interm_features=48, encoder_ff_interm_dropout=0.0,
                        encoder_dropout=0.0, encoder_layer_drop=0.0, aux_num_out=None)


def build_torchaudio(kind: str, size: str = "small"):
    """A torchaudio Wav2Vec2Model of `kind` (wav2vec2 / wav2vec2-layernorm / wavlm; hubert too at base size) in
    eval mode, with its inputs."""
    import torchaudio
    torch.manual_seed(1234)
    M = torchaudio.models
    if size == "base":
        m = {"wav2vec2": M.wav2vec2_base, "hubert": M.hubert_base, "wavlm": M.wavlm_base}[kind](
            encoder_projection_dropout=0.0, encoder_attention_dropout=0.0, encoder_ff_interm_dropout=0.0,
            encoder_dropout=0.0, encoder_layer_drop=0.0)
    elif kind == "wav2vec2":
        m = M.wav2vec2_model(extractor_mode="group_norm", encoder_layer_norm_first=False, **TORCHAUDIO_SMALL)
    elif kind == "wav2vec2-layernorm":  # the "large" layout: LayerNorm in every conv block, pre-norm
        m = M.wav2vec2_model(extractor_mode="layer_norm", encoder_layer_norm_first=True, **TORCHAUDIO_SMALL)
    elif kind == "wavlm":
        m = M.wavlm_model(extractor_mode="group_norm", encoder_layer_norm_first=False, encoder_num_buckets=32,
                          encoder_max_distance=64, **TORCHAUDIO_SMALL)
    else:
        raise KeyError(kind)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in m.named_parameters():  # non-trivial norms and gru constants
            if name.endswith(("layer_norm.weight", "layer_norm.bias", "gru_rel_pos_const")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1 if name.endswith(("weight", "const")) else 0))
    n = 3001
    x = {"waveforms": torch.randn(3, n, generator=g), "lengths": torch.tensor([n, 2000, 1257])}
    if kind == "wavlm":  # torchaudio's WavLM refuses padding masks
        x["lengths"] = None
    return m.eval(), x


def build_torchaudio_conformer(size="small", **kw):
    """A torchaudio Conformer (small, or the Conformer (S) shape) in eval mode, with its inputs."""
    import torchaudio
    torch.manual_seed(1234)
    args = dict(input_dim=32, num_heads=4, ffn_dim=48, num_layers=2, depthwise_conv_kernel_size=7) \
        if size == "small" else dict(input_dim=256, num_heads=4, ffn_dim=1024, num_layers=16,
                                     depthwise_conv_kernel_size=31)  # Conformer (S)
    m = torchaudio.models.Conformer(dropout=0.0, **args, **kw)
    x = {"input": torch.randn(3, 41, args["input_dim"], generator=torch.Generator().manual_seed(3)),
         "lengths": torch.tensor([41, 30, 7])}
    return randomise_norms(m).eval(), x


CNN14_TINY = dict(sample_rate=8000, n_fft=512, hop=80, mel_bins=32, f_max=4000.0, widths=(4, 6, 8, 8, 10, 12),
                  classes=5)


def build_cnn14_tiny():
    """A tiny CNN14 (8 kHz, 32 mel bins) with non-trivial BatchNorm statistics."""
    from subnet.families.cnn14 import Cnn14
    torch.manual_seed(0)
    return randomise_norms(Cnn14(**CNN14_TINY))
