"""The GPU section of docs/PERFORMANCE.md, from what benchmarks/gpu.sh left in benchmarks/results/.

Reads, per device tag (e.g. nvidia-h200): gpu-<tag>-<date>.json (mask-training step; a
`-fused-kernels` twin is an earlier run with the gates through the fused kernels),
gpu-cuda-<tag>-subnet-bench-*.json (compact vs dense), kernels-cuda-<tag>.json (kernels vs
PyTorch) and the junit files of the kernel tests and the on-device extraction.
"""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path


def _tests(path: Path) -> str:
    if not path.is_file():
        return "not run"
    s = ET.parse(path).getroot().find("testsuite")
    n, bad = int(s.get("tests")), int(s.get("failures")) + int(s.get("errors"))
    failed = [f"`{c.get('name')}`" for c in s.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    return (f"{n - bad - int(s.get('skipped'))} passed, {bad} failed, {s.get('skipped')} skipped"
            + (f" (failed: {', '.join(failed)})" if failed else ""))


def _step_rows(path: Path, gates: str) -> list[str]:
    d = json.loads(path.read_text())
    rows = []
    for r in d["frozen_step"]:
        compiled = (f"{1e3 * r['compiled_s']:.1f} ms | {1 / r['compiled_over_paper']:.2f}x"
                    if "compiled_s" in r else "- | -")
        rows.append(f"| {r['batch']} x {r['seconds']:g} s | {gates} | {1e3 * r['alive_s']:.1f} ms | "
                    f"{1e3 * r['frozen_s']:.1f} ms | {r['frozen_over_alive']:.2f} | {1e3 * r['paper_s']:.1f} ms | "
                    f"{1 / r['alive_over_paper']:.2f}x | {compiled} |")
    return rows


def _bench_rows(path: Path) -> list[str]:
    d = json.loads(path.read_text())
    env, m = d["environment"], d["models"]
    kept = m["compact"]["params"] / m["dense"]["params"]
    mode = f"compiled ({env['compiled']})" if env.get("compiled") else "eager"
    rows = []
    for r in d["runs"]:
        c = r["comparison"]
        rows.append(f"| {kept:.0%} | {mode} | {r['batch']} x {r['seconds']:g} s | {c['ideal_speedup']:.2f}x | "
                    f"{1e3 * r['dense']['median_s']:.2f} ms | {1e3 * r['compact']['median_s']:.2f} ms | "
                    f"{c['latency_ratio']:.2f}x ({c['verdict']}) | {c['fraction_of_ideal']:.2f} |")
    return rows


def render_gpu(results: Path) -> list[str]:
    """Markdown lines, one section per device that gpu.sh ran on (none: no lines)."""
    lines = []
    for env_file in sorted(results.glob("gpu-cuda-*-environment.txt")):
        tag = env_file.name[len("gpu-cuda-"):-len("-environment.txt")]
        env = env_file.read_text().splitlines()
        prefix = results / f"gpu-cuda-{tag}"
        runs = [f.read_text().splitlines()[:2] for f in sorted(results.glob(f"gpu-cuda-{tag}-environment*.txt"))]
        kernel_tests = _tests(results / (prefix.name + "-kernel-tests.xml"))
        lines += ["", f"## GPU: {tag}", "",
                  f"`bash benchmarks/gpu.sh` on {env[3]} ({env[2]}); runs: "
                  + "; ".join(f"{d.split(': ')[1]} at {c.split(': ')[1][:8]}" for d, c in runs)
                  + " (a later run redoes only some steps: each step's files come from the last run of it; the "
                  "environment files give each run's commit). Random-init "
                  "whisper-base shapes, bf16 autocast, variants interleaved; `subnet bench` times with CUDA events, "
                  f"the training step with the wall clock between `torch.cuda.synchronize()` calls. Files: benchmarks/results/*{tag}*.", "",
                  f"- Kernel tests on the GPU (`pytest tests/kernels`): {kernel_tests}."]
        if "test_cpp_gather_rejects_out_of_range_table" in kernel_tests:
            lines.append("  That test segfaulted: this machine's g++ links a private static libstdc++ into the "
                         "extension, whose stream code crashed formatting the error message "
                         f"({prefix.name}-crash-backtrace.txt). setup.py now links the shared libstdc++ "
                         "(`-lstdc++`; checked by `test_extension_links_the_shared_libstdcxx`); not yet re-run "
                         "on a GPU.")
        lines.append(f"- A whole (tiny) extraction trained on the GPU in bf16, compacted, reloaded on the CPU: "
                     f"{_tests(results / (prefix.name + '-extract-on-device.xml'))}.")
        steps = sorted(p for p in results.glob(f"gpu-{tag}-*.json") if re.fullmatch(
            rf"gpu-{re.escape(tag)}-\d{{4}}-\d\d-\d\d(-fused-kernels)?\.json", p.name))
        if steps:
            dead = sorted({r["dead"] for p in steps for r in json.loads(p.read_text())["frozen_step"]})
            if len(dead) > 1:
                raise ValueError(f"{tag}: training-step runs with different shares of frozen units: {dead}")
            share = "half" if dead[0] == 0.5 else f"{dead[0]:.0%}"
            lines += ["", "Mask-training step, whisper-base (`benchmarks/run.py --device cuda`): all units alive vs "
                      f"{share} of every group frozen (`--freeze-dead`) vs the paper's way (forward hooks, eager "
                      "attention); compiled: all alive, the encoder under `torch.compile(mode=\"reduce-overhead\")` "
                      "(`--compile reduce-overhead`: CUDA graphs). Target: >= 2x faster than paper-style.", "",
                      f"| batch x clip | gates | all alive | {dead[0]:.0%} frozen | frozen / alive | paper-style | "
                      "speedup over paper-style | compiled | compiled speedup over paper-style |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for p in steps:
                fused = p.stem.endswith("-fused-kernels")
                lines += _step_rows(p, "fused kernels (earlier run)" if fused else "PyTorch ops (default)")
        benches = sorted(results.glob(f"gpu-cuda-{tag}-subnet-bench-*.json"))
        if benches:
            lines += ["", "Compact vs dense latency (`subnet bench`), random units kept in every group:", "",
                      "| kept params | mode | batch x clip | ideal | dense | compact | speedup | of ideal |",
                      "|---|---|---|---|---|---|---|---|"]
            for p in sorted(benches, key=lambda p: ("graphs" in p.name, p.name)):
                lines += _bench_rows(p)
        kernels = results / f"kernels-cuda-{tag}.json"
        if kernels.is_file():
            data = json.loads(kernels.read_text())
            roof = data["environment"]
            rated = "copy_GBps" in roof  # runs since the roofline was added report rates too
            lines += ["", "Kernels against PyTorch's own ops (`benchmarks/bench_kernels.py --device cuda`; "
                      "speedup > 1: the kernel is faster"
                      + (f"; roofline measured in the same run: copy {roof['copy_GBps']:.0f} GB/s, dense bf16 "
                         f"matmul {roof['bf16_peak_TFLOPs']:.0f} TFLOP/s; rates count the bytes and FLOPs the op "
                         "must move and do" if rated else
                         "; a run of the kernels before their rewrite for the roofline (copy programs for the "
                         "gather, vectorised gated_act, autotuned attention with dead heads skipped, measured "
                         "backend choice), which has not been run on a GPU since") + "):", "",
                      "| benchmark | kernel | kernel time | baseline | baseline time | speedup |"
                      + (" kernel GB/s (of copy) | kernel TFLOP/s (of bf16 peak) |" if rated else ""),
                      "|---|---|---|---|---|---|" + ("---|---|" if rated else "")]
            for r in data["results"]:
                line = (f"| {r['bench']} | {r['candidate']} | {r['candidate_ms']:.3f} ms | {r['baseline']} | "
                        f"{r['baseline_ms']:.3f} ms | {r['speedup']:.2f} |")
                if rated:
                    line += (f" {r['candidate_GBps']:.0f} ({r['candidate_of_copy']:.0%}) | "
                             + (f"{r['candidate_TFLOPs']:.1f} ({r['candidate_of_peak']:.0%}) |"
                                if "candidate_TFLOPs" in r else "- |"))
                lines.append(line)
    return lines
