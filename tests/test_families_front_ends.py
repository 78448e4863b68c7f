"""Front ends: each family's equals the feature extractor its models were trained with."""
import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

import subnet
from subnet.families.front_ends import (LogMel, RawWave, conv_output_lengths, front_end_from, parse_settings,
                                        receptive_field, with_settings)
from subnet.families.whisper import WhisperLogMel
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
    raw = subnet.family_of(model).front_end(model)
    assert isinstance(raw, RawWave)
    lengths = torch.tensor([3001, 1257])
    valid = model._get_feat_extract_output_lengths(lengths)
    m = raw.frames(lengths, int(valid.max()))
    assert m.sum(1).tolist() == valid.tolist()
    x = raw.inputs(torch.randn(2, 3001), lengths)["input_values"]
    assert torch.all(x[1, 1257:] == 0)
    assert abs(float(x[1, :1257].mean())) < 1e-5 and abs(float(x[1, :1257].std()) - 1) < 1e-2


def test_ast_filterbank_matches_transformers():
    from transformers import ASTFeatureExtractor

    from subnet.families.ast import ASTFilterbank
    g = np.random.default_rng(1)
    clips = [(0.1 * g.standard_normal(n)).astype(np.float32) for n in (12345, 4000)]
    waves = torch.zeros(2, 12345)
    for i, c in enumerate(clips):
        waves[i, :len(c)] = torch.from_numpy(c)
    ours = ASTFilterbank(32, 128).inputs(waves, torch.tensor([12345, 4000]))["input_values"]
    ref = ASTFeatureExtractor(num_mel_bins=32, max_length=128)(clips, sampling_rate=16000,
                                                               return_tensors="pt").input_values
    assert ours.shape == ref.shape == (2, 128, 32)
    assert (ours - ref).abs().max() < 1e-5


@pytest.mark.parametrize("fusion", [False, True])
def test_clap_logmel_matches_transformers(fusion):
    """A 1.3 s clip, repeated to fill the 10 s window (CLAP's "repeatpad")."""
    from transformers import ClapFeatureExtractor

    from subnet.families.clap_audio import ClapLogMel
    clip = (0.1 * np.random.default_rng(2).standard_normal(int(1.3 * 48000))).astype(np.float32)
    ours = ClapLogMel(64, 1001, fusion).inputs(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))
    ref = ClapFeatureExtractor(feature_size=64, frequency_min=50, frequency_max=14000,
                               truncation="fusion" if fusion else "rand_trunc")([clip], sampling_rate=48000,
                                                                                return_tensors="pt")
    assert ours["input_features"].shape == ref.input_features.shape == (1, 4 if fusion else 1, 1001, 64)
    assert (ours["input_features"] - ref.input_features).abs().max() < 1e-3  # dB
    assert ("is_longer" in ours) == fusion


def test_crepe_frames_match_the_single_clip_framing():
    from subnet.backbones.crepe import CrepeFrames, crepe_frames
    g = torch.Generator().manual_seed(3)
    waves = torch.zeros(2, 5000)
    waves[0] = torch.randn(5000, generator=g)
    waves[1, :3210] = torch.randn(3210, generator=g)
    fe = CrepeFrames(hop=0.01)
    x = fe.inputs(waves, torch.tensor([5000, 3210]))["frames"]
    assert x.shape == (2, 1 + 5000 // 160, 1024)
    torch.testing.assert_close(x[0], crepe_frames(waves[0], hop=160))
    valid = fe.frames(torch.tensor([5000, 3210]), x.shape[1]).sum(1)
    assert valid.tolist() == [1 + 4999 // 160, 1 + 3209 // 160]
    torch.testing.assert_close(x[1, :valid[1]], crepe_frames(waves[1, :3210], hop=160)[:valid[1]])


def test_log_mel_layouts_and_padding():
    fe = LogMel(24, layout="btf", key="src", padding_key="pad", lengths_key="n")
    waves = torch.randn(2, 4000)
    lengths = torch.tensor([4000, 1650])
    x = fe.inputs(waves, lengths)
    assert x["src"].shape == (2, 26, 24) and x["n"].tolist() == [26, 11]  # 10 ms frames, centred
    assert x["pad"].sum(1).tolist() == [0, 26 - 11] and torch.all(x["src"][1, 11:] == 0)
    assert fe.frames(lengths, 26).sum(1).tolist() == [26, 11]
    for layout, shape in (("tbf", (26, 2, 24)), ("bft", (2, 24, 26)), ("b1ft", (2, 1, 24, 26))):
        out = LogMel(24, layout=layout).inputs(waves, lengths)["input"]
        assert out.shape == shape
        torch.testing.assert_close(out.reshape(-1).sort().values, x["src"].reshape(-1).sort().values)


def test_conv_lengths_and_receptive_field():
    model = build("wav2vec2")
    layers = list(zip(model.config.conv_kernel, model.config.conv_stride))
    lengths = torch.tensor([40, 41, 999, 16000])
    assert conv_output_lengths(lengths, layers).tolist() == model._get_feat_extract_output_lengths(lengths).tolist()
    n = receptive_field(layers)
    assert conv_output_lengths(torch.tensor([n - 1, n]), layers).tolist() == [0, 1]


def test_front_end_settings_round_trip_and_overrides():
    from subnet.backbones.crepe import CrepeFrames
    fe = with_settings(CrepeFrames(), parse_settings(["hop=0.1"]))
    assert isinstance(fe, CrepeFrames) and fe.hop == 0.1 and fe.step == 1600
    again = front_end_from(fe.describe())
    assert type(again) is CrepeFrames and again.settings() == fe.settings()
    with pytest.raises(ValueError, match="no setting wobble; its settings: hop=0.1"):
        with_settings(fe, {"wobble": 1})
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_settings(["hop"])
    assert parse_settings(["normalize=false", "key=wave"]) == {"normalize": False, "key": "wave"}


def test_ast_cut_to_the_clip_keeps_each_frequency_rows_first_positions():
    from family_models import hf_model
    ast = hf_model("ast").eval()
    with torch.no_grad():
        ast.embeddings.position_embeddings.normal_()
    family = subnet.family_of(ast)
    short = family.fit_seconds(ast, 0.5)
    cfg = ast.config
    freq = (cfg.num_mel_bins - cfg.patch_size) // cfg.frequency_stride + 1
    t_old = (cfg.max_length - cfg.patch_size) // cfg.time_stride + 1
    t_new = (short.config.max_length - cfg.patch_size) // cfg.time_stride + 1
    assert short.config.max_length == 1 + (8000 - 400) // 160 and cfg.max_length == 128  # the original keeps its own
    old = ast.embeddings.position_embeddings[0, 2:].reshape(freq, t_old, -1)
    new = short.embeddings.position_embeddings[0, 2:].reshape(freq, t_new, -1)
    assert torch.equal(new, old[:, :t_new])
    fe = family.front_end(short)
    x = fe.example_inputs(2, 0.5)
    assert short(**x).last_hidden_state.shape[1] == 2 + freq * t_new
    assert family.fit_seconds(ast, 5.0) is ast  # longer than its window: unchanged
