"""`load_backbone` sources beyond the builtin names: transformers directories of task models,
torchaudio factories and Python entry points (with their own front end)."""
from __future__ import annotations

import logging

import pytest
import torch
import transformers
from torch import nn

import subnet
from family_models import W2V
from subnet.families.front_ends import LogMel


def stack_with_front_end():
    """An entry point returning (model, front end): a 2-d conv stack over a 40-bin log-mel."""
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return model, LogMel(40, layout="b1ft")


def not_a_model():
    return "model"


def test_entry_point_with_its_front_end():
    model = subnet.load_backbone("test_backbones_sources:stack_with_front_end")
    fe = subnet.family_of(model).front_end(model)
    assert isinstance(fe, LogMel) and fe.n_mels == 40
    states = subnet.family_of(model).hidden_states(model, fe.example_inputs(2, 0.3))
    assert [s.shape for s in states] == [(2, 1, 8)]


@pytest.mark.parametrize("spec, error", [
    ("test_backbones_sources:not_a_model", "returned str; expected an nn.Module"),
    ("test_backbones_sources:nothing_here", "cannot import nothing_here from test_backbones_sources"),
    ("no_such_module_xyz:build", "cannot import build from no_such_module_xyz"),
])
def test_bad_entry_points_say_what_is_wrong(spec, error):
    with pytest.raises((TypeError, ValueError), match=error):
        subnet.load_backbone(spec)


def test_torchaudio_factory_is_random_init_with_a_notice(caplog):
    with caplog.at_level(logging.WARNING, logger="subnet"):
        model = subnet.load_backbone("torchaudio:wavlm_base")
    assert subnet.family_of(model).name == "torchaudio-wav2vec2"
    assert "RANDOM weights" in caplog.text
    with pytest.raises(ValueError, match="not a torchaudio model factory.*wav2vec2_base"):
        subnet.load_backbone("torchaudio:nonsense")
    with pytest.raises(ValueError, match="not a torchaudio model factory"):
        subnet.load_backbone("torchaudio:Conformer")  # a class that needs arguments


def test_a_task_models_directory_gives_its_encoder(tmp_path):
    torch.manual_seed(0)
    transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(vocab_size=12, **W2V)).save_pretrained(tmp_path / "ctc")
    enc = subnet.load_backbone(tmp_path / "ctc")
    assert type(enc).__name__ == "Wav2Vec2Model" and subnet.family_of(enc).name == "wav2vec2"
