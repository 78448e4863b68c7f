"""subnet sweep on a tiny random Whisper encoder and generated tones: runs, table, Pareto plot."""
from __future__ import annotations

import json

import matplotlib.image
import pytest

from subnet.report.stats import pareto_front
from subnet.cli import parser
from subnet.cli.options import config_from_args
from subnet.training.loop import ExtractConfig

PNG = b"\x89PNG\r\n\x1a\n"


def test_pareto_front():
    pts = [(0.2, 0.70), (0.4, 0.90), (0.5, 0.85), (0.8, 0.90), (1.0, 0.95)]
    assert pareto_front(pts) == {0, 1, 4}  # (0.5, .85) and (0.8, .90) are beaten by (0.4, .90)
    assert pareto_front([(0.2, 0.3), (0.4, 0.1)], lower_is_better=True) == {0, 1}
    assert pareto_front([(0.5, 0.9), (0.5, 0.9)]) == {0, 1}  # ties beat nobody


def test_flags_override_the_base_config():
    args = parser().parse_args(["sweep", "--backbone", "b", "--train", "a", "--valid", "v", "--out", "o",
                                "--steps", "7", "--kinds", "head", "ffn", "--layer", "-1"])
    cfg = config_from_args(args, ExtractConfig(loss="budget", lr_head=0.01))
    assert (cfg.steps, cfg.kinds, cfg.layer, cfg.loss, cfg.lr_head) == (7, ("head", "ffn"), -1, "budget", 0.01)
    assert args.t == [0.2, 0.35, 0.5, 0.65, 0.8]  # the default settings


@pytest.mark.slow
def test_sweep_cli(tiny_whisper, tones, tmp_path):  # noqa: F811
    out = tmp_path / "sweep"
    argv = ["sweep", "--backbone", str(tiny_whisper), "--train", str(tones / "train"), "--valid",
            str(tones / "valid"), "--test", str(tones / "test"), "-t", "0.3", "0.8", "--steps", "12",
            "--batch-size", "6", "--eval-every", "6", "--lambda", "2", "--lr-gates", "0.3", "--warmup", "0",
            "--lr-head", "3e-3", "--max-seconds", "1", "--quiet", "--out", str(out)]
    args = parser().parse_args(argv)
    assert args.func(args) == 0
    runs = {t: json.loads((out / f"t={t}" / "metrics.json").read_text()) for t in ("0.3", "0.8")}
    for t, m in runs.items():
        assert m["method"] == "extract" and m["t"] == float(t) and m["steps"] == 12
        assert (out / f"t={t}" / "subnet.json").is_file() and m["latency_batch1"]["compact"]["median_s"] > 0
    assert runs["0.3"]["params"]["kept_fraction"] < runs["0.8"]["params"]["kept_fraction"]

    table = (out / "sweep.md").read_text().splitlines()
    assert len(table) == 4 and table[2].startswith("| 0.3 |") and table[3].startswith("| 0.8 |")
    assert any(row.rstrip().endswith("* |") for row in table[2:])  # a Pareto point is marked
    png = (out / "sweep.png").read_bytes()
    assert png.startswith(PNG) and len(png) > 10_000
    assert matplotlib.image.imread(out / "sweep.png").shape[1] > 800

    # a finished setting is not rerun: the results stay as they were
    stamp = (out / "t=0.3" / "metrics.json").stat().st_mtime_ns
    assert args.func(parser().parse_args(argv)) == 0
    assert (out / "t=0.3" / "metrics.json").stat().st_mtime_ns == stamp


def test_pareto_plot_returns_what_it_drew(tmp_path):
    from subnet.report.plots import plot_pareto

    def run(t, kept, acc, ms):
        lat = {"median_s": ms / 1e3, "p10_s": ms / 1e3, "p90_s": ms / 1e3, "n": 5}
        full = {"median_s": 0.01, "p10_s": 0.01, "p90_s": 0.01, "n": 5}
        return {"t": t, "metric": "accuracy", "compact": acc, "params": {"kept_fraction": kept},
                "latency_batch1": {"full": full, "compact": lat}}

    runs = [run(0.2, 0.25, 0.80, 3.0), run(0.5, 0.55, 0.90, 6.0), run(0.8, 0.85, 0.88, 8.5)]
    series = plot_pareto(runs, tmp_path / "p.png")
    assert series["params"]["points"] == [pytest.approx(p) for p in [(25.0, 0.80), (55.0, 0.90), (85.0, 0.88)]]
    assert series["params"]["front"] == [pytest.approx(p) for p in [(25.0, 0.80), (55.0, 0.90)]]
    assert [x for x, _ in series["latency"]["front"]] == pytest.approx([30.0, 60.0])  # % of the full 10 ms
    assert (tmp_path / "p.png").read_bytes().startswith(PNG)


def test_sweep_refit(tiny_whisper, tones, tmp_path):  # noqa: F811
    out = tmp_path / "sweep"
    argv = ["sweep", "--backbone", str(tiny_whisper), "--train", str(tones / "train"), "--valid",
            str(tones / "valid"), "--test", str(tones / "test"), "-t", "0.3", "--steps", "6", "--batch-size", "6",
            "--eval-every", "3", "--lambda", "2", "--lr-gates", "0.3", "--warmup", "0", "--max-seconds", "1",
            "--quiet", "--no-latency", "--refit", "--out", str(out)]
    args = parser().parse_args(argv)
    assert args.func(args) == 0
    refit = json.loads((out / "t=0.3" / "refit" / "metrics.json").read_text())
    assert refit["method"] == "refit" and refit["reference"] == str(out / "t=0.3")
    table = (out / "sweep.md").read_text().splitlines()
    assert "| with --refit |" in table[0] and table[2].startswith(f"| 0.3 | ") and f"| {refit['compact']:.4f} |" in table[2]
    stamp = (out / "t=0.3" / "refit" / "metrics.json").stat().st_mtime_ns
    assert args.func(parser().parse_args(argv)) == 0  # finished: neither extraction nor refit rerun
    assert (out / "t=0.3" / "refit" / "metrics.json").stat().st_mtime_ns == stamp


def test_sweep_kd_shares_one_teacher(tiny_whisper, tones, tmp_path):  # noqa: F811
    out = tmp_path / "sweep"
    argv = ["sweep", "--backbone", str(tiny_whisper), "--train", str(tones / "train"), "--valid",
            str(tones / "valid"), "-t", "0.6", "0.3", "--steps", "3", "--batch-size", "6", "--eval-every", "3",
            "--lr-gates", "0.3", "--warmup", "0", "--max-seconds", "1", "--kd", "1", "--quiet", "--no-latency",
            "--out", str(out)]
    args = parser().parse_args(argv)
    assert args.func(args) == 0
    assert (out / "teacher" / "metrics.json").is_file()
    for t in ("0.6", "0.3"):
        assert json.loads((out / f"t={t}" / "config.json").read_text())["teacher"] == str(out / "teacher")
        assert not (out / f"t={t}" / "teacher").exists()
