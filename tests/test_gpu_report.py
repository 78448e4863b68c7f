"""docs/PERFORMANCE.md's GPU section, rendered from the committed gpu.sh results."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu_report import render_gpu  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _copy(names, dst: Path) -> Path:
    for n in names:
        shutil.copy(RESULTS / n, dst / n)
    return dst


def test_no_gpu_results_no_section(tmp_path):
    assert render_gpu(tmp_path) == []


def test_h200_section_from_its_files(tmp_path):
    files = [p.name for p in RESULTS.glob("*nvidia-h200*")]
    text = "\n".join(render_gpu(_copy(files, tmp_path)))
    assert "## GPU: nvidia-h200" in text and "{" not in text
    step = json.loads((RESULTS / "gpu-nvidia-h200-2026-11-28.json").read_text())["frozen_step"]
    for r in step:  # speedup over paper-style = paper time / alive time
        assert f"| {r['paper_s'] / r['alive_s']:.2f}x |" in text
    for p in RESULTS.glob("gpu-cuda-nvidia-h200-subnet-bench-*.json"):
        for run in json.loads(p.read_text())["runs"]:
            speedup = run["dense"]["median_s"] / run["compact"]["median_s"]
            assert f"| {speedup:.2f}x (" in text, (p.name, speedup)
    assert text.count("| PyTorch ops (default) |") == len(step)
    assert "| fused kernels (earlier run) |" in text
    assert "gather_compact wav2vec2-base 50% | cuda |" in text


def test_section_without_optional_files(tmp_path):
    text = "\n".join(render_gpu(_copy(["gpu-cuda-nvidia-h200-environment.txt"], tmp_path)))
    assert "## GPU: nvidia-h200" in text and "not run" in text and "| batch x clip |" not in text
