"""transformers ASTModel, Wav2Vec2ConformerModel (rotary, relative) and ClapAudioModel."""
from __future__ import annotations

import pytest
import torch

import subnet
from builders import build_transformers
from checks import check_gradients, check_keep, check_model, random_keep

KINDS = ["ast", "conformer-rotary", "conformer-relative", "clap", "clap-fusion"]


@pytest.mark.parametrize("kind", KINDS)
def test_full_battery(kind, tmp_path):
    model, x = build_transformers(kind)
    mm = check_model(model, x, tmp_path)
    kinds = {g.kind for g in mm.groups.values()}
    assert kinds == ({"conv", "head", "ffn", "dwconv"} if kind.startswith("conformer") else {"head", "ffn"})


@pytest.mark.parametrize("kind", KINDS)
def test_gates_get_gradients(kind):
    model, x = build_transformers(kind)
    check_gradients(model, x)


def test_conformer_units():
    model, _ = build_transformers("conformer-relative")
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
    model, x = build_transformers(kind)
    mm = subnet.attach_masks(model, kinds=("conv", "head", "ffn", "dwconv"))
    small = subnet.compact(mm, random_keep(mm, seed=11))
    out = small(**x, output_hidden_states=True)
    layers = small.layers if kind == "ast" else small.encoder.layers
    assert len(out.hidden_states) == len(layers) + 1


def test_clap_units_cover_every_stage():
    model, _ = build_transformers("clap")
    mm = subnet.attach_masks(model)
    g = mm.groups["audio_encoder.layers.1.blocks.1.attention.heads"]
    assert g.size == 4
    assert ("audio_encoder.layers.1.blocks.1.attention.self.relative_position_bias_table", 1) in {
        (s.param, s.dim) for s in g.slices}
    assert len(mm.groups) == 2 * 4  # heads + ffn in each of 2 x 2 blocks


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ast", "conformer-relative", "clap"])
def test_base_size_random_masks(kind):
    model, x = build_transformers(kind, size="base")
    if kind != "ast":
        x = {k: v[:2, :16000] for k, v in x.items()}
    mm = subnet.attach_masks(model, kinds=("conv", "head", "ffn", "dwconv"))
    keep = random_keep(mm, seed=13)
    mm.detach_backbone()
    check_keep(model, x, keep)


def test_conformer_conv_module_and_heads_all_gone(tmp_path):
    model, x = build_transformers("conformer-relative")
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
