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


def test_kernel_rates_when_the_run_measured_a_roofline(tmp_path):
    # bench_kernels.py rows with their roofline (synthetic figures), as the table renders them
    from bench_kernels import report
    rows = []
    roof = {"copy_GBps": 3000.0, "bf16_peak_TFLOPs": 800.0}
    report(rows, "elementwise", {"eager": 2e-3, "cuda": 1e-3}, "eager", ["cuda"], work=(3e9, 0), roof=roof)
    report(rows, "attention", {"sdpa+gate": 2e-3, "triton": 4e-3}, "sdpa+gate", ["triton"], work=(1e9, 8e11),
           roof=roof)
    assert rows[0]["candidate_GBps"] == 3000.0 and rows[0]["baseline_of_copy"] == 0.5
    assert rows[1]["candidate_TFLOPs"] == 200.0 and rows[1]["baseline_of_peak"] == 0.5
    _copy(["gpu-cuda-nvidia-h200-environment.txt"], tmp_path)
    (tmp_path / "kernels-cuda-nvidia-h200.json").write_text(json.dumps({"environment": {"device": "X", **roof},
                                                                        "results": rows}))
    text = "\n".join(render_gpu(tmp_path))
    assert "copy 3000 GB/s, dense bf16 matmul 800 TFLOP/s" in text
    assert "| elementwise | cuda | 1.000 ms | eager | 2.000 ms | 2.00 | 3000 (100%) | - |" in text
    assert "| attention | triton | 4.000 ms | sdpa+gate | 2.000 ms | 0.50 | 250 (8%) | 200.0 (25%) |" in text
