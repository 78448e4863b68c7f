"""`subnet inspect` on the new families: a row per unit group with kept / total units,
parameters and FLOPs per input second (or frame), before and after."""
from __future__ import annotations

import re

import torch

import subnet
from subnet.cli import main
from subnet.families.costs import cost_table
from builders import build_cnn14_tiny, build_torchaudio_conformer, build_transformers
from checks import random_keep

ROW = re.compile(r"^(\S+)\s+(\w+)\s+(\d+) / (\d+)\s+(\S+) -> (\S+)\s+(\S+) -> (\S+)$")


def _rows(out):
    return {m.group(1): m.groups()[1:] for m in map(ROW.match, out.splitlines()) if m}


def test_inspect_cnn14_artifact_per_second(tmp_path, capsys):
    model = build_cnn14_tiny().eval()
    mm = subnet.attach_masks(model)
    keep = random_keep(mm, seed=2)
    subnet.save(subnet.compact(mm, keep), tmp_path)
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "FLOPs/s before -> after" in out
    rows = _rows(out)
    assert set(rows) == set(mm.groups)
    for name, (kind, kept, total, *_rest) in rows.items():
        assert kind == "conv" and int(kept) == int(keep[name].sum()) and int(total) == mm.groups[name].size
    n_small = subnet.count_kept_params(model, mm.groups, keep)
    assert f"parameters: {n_small:,} of {sum(p.numel() for p in model.parameters()):,}" in out


def test_inspect_lists_dwconv_of_a_conformer_artifact(tmp_path, capsys):
    model, _ = build_torchaudio_conformer()
    mm = subnet.attach_masks(model, kinds=("head", "ffn", "dwconv"))
    subnet.save(subnet.compact(mm, random_keep(mm, seed=3)), tmp_path)
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "FLOPs/frame" in out  # torchaudio's Conformer does not fix its frame rate
    assert _rows(out)["conformer_layers.1.conv_module.channels"][0] == "dwconv"


def test_cost_table_halves_with_half_the_units():
    model = build_cnn14_tiny().eval()
    mm = subnet.attach_masks(model)
    name = "conv_block3.conv1"
    keep = {n: torch.ones(g.size, dtype=torch.bool) for n, g in mm.groups.items()}
    keep[name] = torch.arange(mm.groups[name].size) % 2 == 0
    row = _rows(cost_table(mm.family, model, mm.groups, keep, 0))[name]
    g = mm.groups[name]
    assert row[1:3] == (str(g.size // 2), str(g.size))
    f0, f1 = (float(v[:-1]) * {"k": 1e3, "M": 1e6, "G": 1e9}[v[-1]] for v in row[5:7])
    assert abs(f1 - f0 / 2) <= 0.01 * f0  # FLOPs/s after = half of before (3 digits printed)


def test_inspect_transformers_directory(tmp_path, capsys):
    for kind in ("ast", "clap"):
        model, _ = build_transformers(kind)
        model.save_pretrained(tmp_path / kind)
        assert main(["inspect", str(tmp_path / kind)]) == 0
        out = capsys.readouterr().out
        rows = _rows(out)
        assert f"backbone {type(model).__name__}" in out and "FLOPs/s before -> after" in out
        mm = subnet.attach_masks(model)
        assert {r[0] for r in rows.values()} == {"head", "ffn"} and len(rows) == len(mm.groups)
        mm.detach_backbone()
