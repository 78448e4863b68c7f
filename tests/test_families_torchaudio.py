"""torchaudio Wav2Vec2Model (wav2vec2 / HuBERT / WavLM builders)."""
from __future__ import annotations

import pytest
import torch

import subnet
from builders import build_torchaudio, build_torchaudio_conformer
from checks import check_gradients, check_keep, check_model, random_keep

KINDS = ["wav2vec2", "wav2vec2-layernorm", "wavlm"]


@pytest.mark.parametrize("kind", KINDS)
def test_full_battery(kind, tmp_path):
    model, x = build_torchaudio(kind)
    mm = check_model(model, x, tmp_path)
    assert type(mm.family).__name__ == "TorchaudioWav2Vec2Family"
    assert {g.kind for g in mm.groups.values()} == {"conv", "head", "ffn"}


@pytest.mark.parametrize("kind", KINDS)
def test_gates_get_gradients(kind):
    model, x = build_torchaudio(kind)
    check_gradients(model, x)


def test_conformer_gates_get_gradients():
    model, x = build_torchaudio_conformer()
    check_gradients(model, x)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "wavlm"])
def test_base_size_random_masks(kind):
    model, x = build_torchaudio(kind, size="base")
    x = {"waveforms": x["waveforms"][:2, :16000], "lengths": None if kind == "wavlm" else torch.tensor([16000, 12345])}
    mm = subnet.attach_masks(model)
    keep = random_keep(mm, seed=13)
    mm.detach_backbone()
    check_keep(model, x, keep)


@pytest.mark.parametrize("convolution_first", [False, True])
def test_conformer_full_battery(convolution_first, tmp_path):
    model, x = build_torchaudio_conformer(convolution_first=convolution_first)
    mm = check_model(model, x, tmp_path)
    assert {g.kind for g in mm.groups.values()} == {"head", "ffn", "dwconv"}
    dw = mm.groups["conformer_layers.0.conv_module.channels"]
    assert dw.params_per_unit == 2 * (32 + 1) + (7 + 1) + 2 + 32  # GLU rows+biases, dw filter+bias, BN, pw2 column


def test_conformer_everything_of_a_layer_gone(tmp_path):
    model, x = build_torchaudio_conformer()
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
    model, x = build_torchaudio_conformer(use_group_norm=True)
    with pytest.raises(ValueError, match=r"sequential.3 is a GroupNorm over all channels"):
        subnet.attach_masks(model, kinds=("head", "ffn", "dwconv"))
    mm = subnet.attach_masks(model, kinds=("head", "ffn"))
    keep = random_keep(mm, seed=6)
    mm.detach_backbone()
    check_keep(model, x, keep, kinds=("head", "ffn"))


@pytest.mark.slow
def test_conformer_base_size_random_masks():
    model, x = build_torchaudio_conformer("base")
    mm = subnet.attach_masks(model, kinds=("head", "ffn", "dwconv"))
    keep = random_keep(mm, seed=13)
    mm.detach_backbone()
    check_keep(model, x, keep)
