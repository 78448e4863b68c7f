"""Front ends: the torch Whisper log-mel equals transformers' WhisperFeatureExtractor."""
import numpy as np
import torch
from transformers import WhisperFeatureExtractor

from subnet.frontends import RawWaveFrontEnd, WhisperLogMel
from builders import build


def test_whisper_logmel_matches_transformers():
    g = torch.Generator().manual_seed(0)
    waves = torch.randn(2, 24000, generator=g) * 0.1
    lengths = torch.tensor([24000, 13001])
    waves[1, 13001:] = 0
    fe = WhisperLogMel(n_mels=80, n_samples=3 * 16000)
    ours = fe.inputs(waves, lengths)["input_features"]
    ref_fe = WhisperFeatureExtractor(feature_size=80, chunk_length=3)
    ref = ref_fe([waves[0].numpy(), waves[1, :13001].numpy()], sampling_rate=16000,
                 return_tensors="pt").input_features
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() < 1e-4


def test_frame_masks():
    fe = WhisperLogMel(n_mels=16, n_samples=16000)
    m = fe.frames(torch.tensor([16000, 321, 1]), 50)
    assert m.sum(1).tolist() == [50, 2, 1]
    model = build("wav2vec2")
    raw = RawWaveFrontEnd(model)
    lengths = torch.tensor([3001, 1257])
    valid = model._get_feat_extract_output_lengths(lengths)
    m = raw.frames(lengths, int(valid.max()))
    assert m.sum(1).tolist() == valid.tolist()
    x = raw.inputs(torch.randn(2, 3001), lengths)["input_values"]
    assert torch.all(x[1, 1257:] == 0)
    assert abs(float(x[1, :1257].mean())) < 1e-5 and abs(float(x[1, :1257].std()) - 1) < 1e-2
