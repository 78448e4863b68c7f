"""Fixtures shared by the engine tests: a tiny tone dataset, a tiny Whisper encoder directory, a
reference extraction of it (model builders live in builders.py and family_models.py, the shared
checks in checks.py)."""
import pytest
import torch
import transformers

from builders import SMALL_KINDS
from helpers import make_tones


@pytest.fixture(params=SMALL_KINDS)
def small_kind(request):
    return request.param


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    root = tmp_path_factory.mktemp("tones")
    make_tones(root)
    return root


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    from transformers.models.whisper.modeling_whisper import WhisperEncoder
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(d_model=48, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=96,
                                     num_mel_bins=80, max_source_positions=50, dropout=0.0)
    path = tmp_path_factory.mktemp("whisper")
    WhisperEncoder(cfg).save_pretrained(path)
    return path


REFERENCE_STEPS = 12  # test_baselines.STEPS: its baselines check they inherit this budget


@pytest.fixture(scope="module")
def reference(tiny_whisper, tones, tmp_path_factory):
    """A real extraction that removes a good part of the encoder."""
    from subnet.training.extract import extract
    from subnet.training.loop import ExtractConfig
    out = tmp_path_factory.mktemp("ref")
    cfg = ExtractConfig(steps=REFERENCE_STEPS, batch_size=6, eval_every=6, loss="budget", t=0.3, lam=2.0, lr_gates=0.3,
                        warmup=0.0, lr_head=3e-3)
    m = extract(str(tiny_whisper), tones / "train", tones / "valid", tones / "test", cfg, out, max_seconds=1.0,
                progress=False)
    assert m["params"]["kept_fraction"] < 0.8
    return out
