"""torchaudio Wav2Vec2Model (wav2vec2 / HuBERT / WavLM builders)."""
from __future__ import annotations

import pytest
import torch
import torchaudio

import subnet
from test_compact import random_keep
from test_families_conv import _randomise_norms, check_gradients, check_keep, check_model

SMALL = dict(extractor_conv_layer_config=[(16, 10, 5), (12, 3, 2), (20, 3, 2)], extractor_conv_bias=False,
             encoder_embed_dim=32, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=16,
             encoder_pos_conv_groups=4, encoder_num_layers=2, encoder_num_heads=4, encoder_attention_dropout=0.0,
             encoder_ff_interm_features=48, encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
             encoder_layer_drop=0.0, aux_num_out=None)


def build(kind: str, size: str = "small"):
    torch.manual_seed(1234)
    M = torchaudio.models
    if size == "base":
        m = {"wav2vec2": M.wav2vec2_base, "hubert": M.hubert_base, "wavlm": M.wavlm_base}[kind](
            encoder_projection_dropout=0.0, encoder_attention_dropout=0.0, encoder_ff_interm_dropout=0.0,
            encoder_dropout=0.0, encoder_layer_drop=0.0)
    elif kind == "wav2vec2":
        m = M.wav2vec2_model(extractor_mode="group_norm", encoder_layer_norm_first=False, **SMALL)
    elif kind == "wav2vec2-layernorm":  # the "large" layout: LayerNorm in every conv block, pre-norm
        m = M.wav2vec2_model(extractor_mode="layer_norm", encoder_layer_norm_first=True, **SMALL)
    elif kind == "wavlm":
        m = M.wavlm_model(extractor_mode="group_norm", encoder_layer_norm_first=False, encoder_num_buckets=32,
                          encoder_max_distance=64, **SMALL)
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


KINDS = ["wav2vec2", "wav2vec2-layernorm", "wavlm"]


@pytest.mark.parametrize("kind", KINDS)
def test_full_battery(kind, tmp_path):
    model, x = build(kind)
    mm = check_model(model, x, tmp_path)
    assert type(mm.family).__name__ == "TorchaudioWav2Vec2Family"
    assert {g.kind for g in mm.groups.values()} == {"conv", "head", "ffn"}


@pytest.mark.parametrize("kind", KINDS)
def test_gates_get_gradients(kind):
    model, x = build(kind)
    check_gradients(model, x)


def test_conformer_gates_get_gradients():
    model, x = conformer()
    check_gradients(model, x)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "wavlm"])
def test_base_size_random_masks(kind):
    model, x = build(kind, size="base")
    x = {"waveforms": x["waveforms"][:2, :16000], "lengths": None if kind == "wavlm" else torch.tensor([16000, 12345])}
    mm = subnet.attach_masks(model)
    keep = random_keep(mm, seed=13)
    mm.detach_backbone()
    check_keep(model, x, keep)


# ------------------------------------------------------------------------------ Conformer
def conformer(size="small", **kw):
    torch.manual_seed(1234)
    args = dict(input_dim=32, num_heads=4, ffn_dim=48, num_layers=2, depthwise_conv_kernel_size=7) \
        if size == "small" else dict(input_dim=256, num_heads=4, ffn_dim=1024, num_layers=16,
                                     depthwise_conv_kernel_size=31)  # Conformer (S)
    m = torchaudio.models.Conformer(dropout=0.0, **args, **kw)
    x = {"input": torch.randn(3, 41, args["input_dim"], generator=torch.Generator().manual_seed(3)),
         "lengths": torch.tensor([41, 30, 7])}
    return _randomise_norms(m).eval(), x


@pytest.mark.parametrize("convolution_first", [False, True])
def test_conformer_full_battery(convolution_first, tmp_path):
    model, x = conformer(convolution_first=convolution_first)
    mm = check_model(model, x, tmp_path)
    assert {g.kind for g in mm.groups.values()} == {"head", "ffn", "dwconv"}
    dw = mm.groups["conformer_layers.0.conv_module.channels"]
    assert dw.params_per_unit == 2 * (32 + 1) + (7 + 1) + 2 + 32  # GLU rows+biases, dw filter+bias, BN, pw2 column


def test_conformer_everything_of_a_layer_gone(tmp_path):
    model, x = conformer()
    mm = subnet.attach_masks(model, kinds=("head", "ffn", "dwconv"))
    keep = random_keep(mm, seed=4)
    for name, g in mm.groups.items():
        if name.startswith("conformer_layers.1."):
            keep[name] = torch.zeros(g.size, dtype=torch.bool)
    mm.detach_backbone()
    small = check_keep(model, x, keep)
    subnet.save(small, tmp_path)
    loaded = subnet.load(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(**x)[0], small(**x)[0])


def test_conformer_group_norm_conv_module_is_refused():
    model, x = conformer(use_group_norm=True)
    with pytest.raises(ValueError, match=r"sequential.3 is a GroupNorm over all channels"):
        subnet.attach_masks(model, kinds=("head", "ffn", "dwconv"))
    mm = subnet.attach_masks(model, kinds=("head", "ffn"))
    keep = random_keep(mm, seed=6)
    mm.detach_backbone()
    check_keep(model, x, keep, kinds=("head", "ffn"))


@pytest.mark.slow
def test_conformer_base_size_random_masks():
    model, x = conformer("base")
    mm = subnet.attach_masks(model, kinds=("head", "ffn", "dwconv"))
    keep = random_keep(mm, seed=13)
    mm.detach_backbone()
    check_keep(model, x, keep)
