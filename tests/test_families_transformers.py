"""transformers ASTModel, Wav2Vec2ConformerModel (rotary, relative) and ClapAudioModel."""
from __future__ import annotations

import pytest
import torch
import transformers

import subnet
from test_compact import random_keep
from test_families_conv import _randomise_norms, check_gradients, check_keep, check_model

NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                  feat_proj_dropout=0.0, layerdrop=0.0)


def build(kind: str, size: str = "small"):
    """A random-init model of `kind` in eval mode, with its probe-like inputs."""
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
        m = _randomise_norms(transformers.Wav2Vec2ConformerModel(cfg))
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
        m = _randomise_norms(transformers.ClapAudioModel(cfg))
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


KINDS = ["ast", "conformer-rotary", "conformer-relative", "clap", "clap-fusion"]


@pytest.mark.parametrize("kind", KINDS)
def test_full_battery(kind, tmp_path):
    model, x = build(kind)
    mm = check_model(model, x, tmp_path)
    kinds = {g.kind for g in mm.groups.values()}
    assert kinds == ({"conv", "head", "ffn", "dwconv"} if kind.startswith("conformer") else {"head", "ffn"})


@pytest.mark.parametrize("kind", KINDS)
def test_gates_get_gradients(kind):
    model, x = build(kind)
    check_gradients(model, x)


def test_conformer_units():
    model, _ = build("conformer-relative")
    mm = subnet.attach_masks(model, kinds=("conv", "head", "ffn", "dwconv"))
    names = set(mm.groups)
    assert {"encoder.layers.0.ffn1.neurons", "encoder.layers.0.ffn2.neurons",
            "encoder.layers.1.conv_module.channels", "encoder.layers.1.self_attn.heads"} <= names
    dw = mm.groups["encoder.layers.0.conv_module.channels"]
    d = 32
    # per channel: 2 GLU rows of pointwise_conv1, a 7-tap depthwise filter, BN weight+bias, a pw2 column
    assert dw.params_per_unit == 2 * d + 7 + 2 + d
    heads = mm.groups["encoder.layers.0.self_attn.heads"]
    assert heads.params_per_unit == 4 * d * 8 + 3 * 8 + d * 8 + 2 * 8  # q/k/v/out, biases, linear_pos, pos_bias_u/v


@pytest.mark.parametrize("kind", ["ast", "conformer-rotary"])
def test_compact_keeps_library_features(kind):
    model, x = build(kind)
    mm = subnet.attach_masks(model, kinds=("conv", "head", "ffn", "dwconv"))
    small = subnet.compact(mm, random_keep(mm, seed=11))
    out = small(**x, output_hidden_states=True)
    layers = small.layers if kind == "ast" else small.encoder.layers
    assert len(out.hidden_states) == len(layers) + 1


def test_clap_units_cover_every_stage():
    model, _ = build("clap")
    mm = subnet.attach_masks(model)
    g = mm.groups["audio_encoder.layers.1.blocks.1.attention.heads"]
    assert g.size == 4
    assert ("audio_encoder.layers.1.blocks.1.attention.self.relative_position_bias_table", 1) in {
        (s.param, s.dim) for s in g.slices}
    assert len(mm.groups) == 2 * 4  # heads + ffn in each of 2 x 2 blocks


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ast", "conformer-relative", "clap"])
def test_base_size_random_masks(kind):
    model, x = build(kind, size="base")
    if kind != "ast":
        x = {k: v[:2, :16000] for k, v in x.items()}
    mm = subnet.attach_masks(model, kinds=("conv", "head", "ffn", "dwconv"))
    keep = random_keep(mm, seed=13)
    mm.detach_backbone()
    check_keep(model, x, keep)


def test_conformer_conv_module_and_heads_all_gone(tmp_path):
    model, x = build("conformer-relative")
    mm = subnet.attach_masks(model, kinds=("conv", "head", "ffn", "dwconv"))
    keep = random_keep(mm, seed=21)
    for name in ("encoder.layers.0.conv_module.channels", "encoder.layers.1.self_attn.heads",
                 "encoder.layers.1.ffn2.neurons"):
        keep[name] = torch.zeros(mm.groups[name].size, dtype=torch.bool)
    mm.detach_backbone()
    small = check_keep(model, x, keep)
    assert type(small.encoder.layers[0].conv_module).__name__ == "EmptyConvModule"
    subnet.save(small, tmp_path)
    loaded = subnet.load(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(**x).last_hidden_state, small(**x).last_hidden_state)
