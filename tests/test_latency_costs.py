"""--cost latency: per-unit costs measured by removing each group, used by the budget loss."""
from __future__ import annotations

import json

import torch

import subnet
from subnet.training.latency_costs import load_or_measure, measure
from subnet.core.losses import SparsityLoss
from builders import build
from checks import inputs_for


def test_measured_costs_are_per_unit_seconds_and_feed_the_budget(tmp_path):
    model = build("whisper")
    mm = subnet.attach_masks(model)
    x = inputs_for("whisper", model)
    table = measure(mm, x, repeats=5)
    assert set(table) == set(mm.groups) and all(v >= 0 for v in table.values())
    assert any(v > 0 for v in table.values())  # removing groups saves time (which ones: noise decides)
    assert all(mm.groups[n].latency_per_unit == v for n, v in table.items())
    loss = SparsityLoss("budget", t=0.5, cost="latency")
    assert abs(float(loss(mm)) - 0.25) < 1e-6  # everything kept: (1 - 0.5)^2
    assert mm.kept_fraction("latency") == 1.0
    # the gates are still on and the model unchanged by the measurement
    with torch.no_grad():
        a = mm(**x).last_hidden_state
        with mm.gates_removed() as base:
            b = base(**x).last_hidden_state
    assert torch.allclose(a, b, atol=1e-5 * b.abs().max().item())
    # a saved table is reused as it is (a resumed run keeps its costs)
    path = tmp_path / "latency_costs.json"
    path.write_text(json.dumps({n: 1.0 + i for i, n in enumerate(mm.groups)}))
    assert load_or_measure(mm, x, path) == json.loads(path.read_text())
    assert mm.groups[next(iter(mm.groups))].latency_per_unit == 1.0


def test_extract_with_latency_cost_keeps_its_table(tmp_path):
    from subnet.training.extract import extract
    from subnet.training.loop import ExtractConfig
    from helpers import make_tones
    import transformers
    from transformers.models.whisper.modeling_whisper import WhisperEncoder
    make_tones(tmp_path / "tones", per_class=(6, 3, 3))
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(d_model=48, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=96,
                                     num_mel_bins=80, max_source_positions=50, dropout=0.0)
    WhisperEncoder(cfg).save_pretrained(tmp_path / "enc")
    t = tmp_path / "tones"
    m = extract(str(tmp_path / "enc"), t / "train", t / "valid", None,
                ExtractConfig(steps=6, batch_size=6, eval_every=3, cost="latency", t=0.5), tmp_path / "run",
                max_seconds=1.0, progress=False, measure_latency=False)
    table = json.loads((tmp_path / "run" / "latency_costs.json").read_text())
    assert len(table) == 5 and m["params"]["kept_fraction"] <= 1.0  # conv1 + 2 x (heads, ffn)
