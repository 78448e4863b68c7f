"""subnet report over a real tiny sweep + baselines: report.md, figures and the series they show."""
from __future__ import annotations

import argparse
import json
import re
import shutil
from dataclasses import replace

import matplotlib.image
import numpy as np
import pytest

from subnet.training.baselines import probe, random_units, scratch
from subnet.cli import main
from subnet.report import load_runs, write_report
from subnet.report.runs import layer_label
from subnet.report.stats import kept_matrices, kept_overlap
from subnet.training.sweep import sweep
from subnet.training.loop import ExtractConfig

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tiny_whisper, tones, tmp_path_factory):  # noqa: F811
    """A two-setting sweep, a probe, two random seeds, a scratch run, and a copy of one extraction posing as a
    second task (so the cross-task heat map has two columns)."""
    root = tmp_path_factory.mktemp("runs")
    data = (tones / "train", tones / "valid", tones / "test")
    cfg = ExtractConfig(steps=10, batch_size=6, eval_every=5, loss="budget", lam=2.0, lr_gates=0.3, warmup=0.0,
                        lr_head=3e-3)
    sweep(str(tiny_whisper), *data, [0.3, 0.8], cfg, root / "sweep", max_seconds=1.0, progress=False)
    probe(str(tiny_whisper), *data, replace(cfg, steps=4), root / "base" / "probe", max_seconds=1.0, progress=False,
          measure_latency=False)
    for seed in (0, 1):
        random_units(str(tiny_whisper), root / "sweep" / "t=0.3", *data, ExtractConfig(
            steps=4, batch_size=6, eval_every=2, seed=seed), root / "base" / f"random-s{seed}", max_seconds=1.0,
            progress=False, measure_latency=seed == 0)
    scratch(root / "sweep" / "t=0.3", *data, ExtractConfig(steps=4, batch_size=6, eval_every=2),
            root / "base" / "scratch", max_seconds=1.0, progress=False, measure_latency=False)
    other = root / "other" / "t=0.5"
    shutil.copytree(root / "sweep" / "t=0.3", other)
    m = json.loads((other / "metrics.json").read_text())
    m["eval_set"] = "/data/pitch/test"
    (other / "metrics.json").write_text(json.dumps(m))
    return root


def test_load_runs(runs):
    got = load_runs([runs])
    assert len(got) == 7
    assert sorted(m["method"] for m in got) == ["extract"] * 3 + ["probe"] + ["random"] * 2 + ["scratch"]
    assert all(m["keep"] for m in got)
    with pytest.raises(FileNotFoundError):
        load_runs([runs / "nothing-here"])


def test_report_cli_and_figures(runs, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(runs / "sweep"), str(runs / "base"), str(runs / "other"), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert md.count("\n## ") == 4  # two tasks, the cross-task heat map, the machine
    assert "within 1 point of the probe" in md and "| random |" in md and "/2 seeds |" in md  # two seeds, paired
    assert "| scratch |" in md  # extraction against scratch at the same size
    figures = sorted(f.name for f in out.glob("*.png"))
    assert len(figures) == 7, figures  # metric_vs_kept, costs, pareto + kept units x2 tasks, by task
    for f in figures:
        data = (out / f).read_bytes()
        assert data.startswith(PNG) and len(data) > 8_000, f
        assert f"({f})" in md  # every figure is shown in the report
        img = matplotlib.image.imread(out / f)
        assert img.shape[0] > 200 and img.shape[1] > 400 and img[..., :3].std() > 0.05, f  # not blank


def test_report_series(runs, tmp_path):
    drawn = write_report([runs], tmp_path)
    tones_task = next(k for k in drawn["metric_vs_kept.png"] if k != "pitch/test")
    series = drawn["metric_vs_kept.png"][tones_task]
    assert set(series) == {"probe", "extract", "random", "scratch"}
    assert len(series["extract"]) == 2 and series["probe"][0][0] == pytest.approx(100.0)
    (x, _, std, n), = series["random"]
    assert n == 2 and std >= 0
    sweep_small = json.loads((runs / "sweep" / "t=0.3" / "metrics.json").read_text())
    assert x == pytest.approx(100 * sweep_small["params"]["kept_fraction"])

    costs = drawn["costs.png"]
    assert "full encoder" in costs["latency_ms"] and "full encoder" in costs["file_mb"]
    # baselines have their reference's architecture: their file sizes are not drawn again
    assert len(costs["file_mb"]) == 1 + 3 and len(costs["latency_ms"]) == 1 + 4  # random-s1, scratch untimed
    assert all(k == "full encoder" or k.split(": ")[0] in drawn["metric_vs_kept.png"] for k in costs["file_mb"])

    heat = next(v for k, v in drawn.items() if k.startswith("kept_units_") and "pitch" not in k and "by_task" not in k)
    short = {k.split(" [")[0]: v for k, v in heat.items()}  # labels that occur in two tasks name theirs
    assert set(short) == {"extract t=0.3", "extract t=0.8", "random-s0"}  # first seed of the middle one's baselines
    keep = json.loads((runs / "sweep" / "t=0.3" / "subnet.json").read_text())["groups"]
    for kind, (labels, mat) in short["extract t=0.3"].items():
        names = [n for n, g in keep.items() if g["kind"] == kind]
        assert labels == [layer_label(n) for n in names]
        assert np.nansum(mat, axis=1).tolist() == [len(keep[n]["keep"]) for n in names]
    assert len(drawn["kept_units_by_task.png"]) == 2
    # the second task is a copy of the first's t=0.3 extraction: they overlap fully; one run per task: no diagonal
    report = (tmp_path / "report.md").read_text()
    assert len(re.findall(r"\n\| [^|]+ \| - \| 1\.00 \(0\.\d\d\) \|\n", report)) == 2  # all units, heads
    assert "All gated units (" in report and "Attention heads:" in report


def test_kept_matrices_pad_unequal_layers():
    keep = {"a.0.conv": {"kind": "conv", "size": 4, "keep": [0, 3]},
            "a.1.conv": {"kind": "conv", "size": 2, "keep": [1]},
            "layers.0.self_attn.heads": {"kind": "head", "size": 3, "keep": []}}
    mats = kept_matrices(keep)
    labels, conv = mats["conv"]
    assert labels == ["L0", "L1"] and conv.shape == (2, 4)
    assert conv[0].tolist() == [1, 0, 0, 1] and conv[1, :2].tolist() == [0, 1] and np.isnan(conv[1, 2:]).all()
    assert mats["head"][1].tolist() == [[0, 0, 0]]


def test_kept_overlap_against_hand_counts():
    a = {"c": {"kind": "conv", "size": 4, "keep": [0, 1]}, "h": {"kind": "head", "size": 6, "keep": [0, 1, 2]}}
    b = {"c": {"kind": "conv", "size": 4, "keep": [1, 2]}, "h": {"kind": "head", "size": 6, "keep": [3, 4, 5]}}
    # shared 1 + 0, either 3 + 6; chance: shared 2*2/4 + 3*3/6 = 2.5 of 4 + 6 - 2.5 kept by either
    assert kept_overlap(a, b) == pytest.approx((1 / 9, 2.5 / 7.5))
    assert kept_overlap(a, b, kinds=("head",)) == pytest.approx((0.0, 1.5 / 4.5))
    assert kept_overlap(a, a, kinds=("conv",)) == pytest.approx((1.0, 1.0 / 3.0))
    assert kept_overlap(a, {**b, "h": {**b["h"], "keep": []}}, kinds=("head",)) == (0.0, 0.0)
    no_heads_a, no_heads_b = {**a, "h": {**a["h"], "keep": []}}, {**b, "h": {**b["h"], "keep": []}}
    assert kept_overlap(no_heads_a, no_heads_b, kinds=("head",)) == (1, 1)
    with pytest.raises(ValueError, match="different groups"):
        kept_overlap(a, {"c": a["c"]})
