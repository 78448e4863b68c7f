"""Latency statistics on top of the one timer (`subnet_kernels.timing`): per-call summaries,
the speedup verdict, and the interleaved latency of models on one input (metrics.json's
`latency_batch1`, the per-unit latency costs)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from subnet_kernels.timing import interleaved_times, quantiles, timer

NO_DIFFERENCE = "no measurable difference"

__all__ = ["NO_DIFFERENCE", "compare", "interleaved_latency", "interleaved_times", "summarize", "timer",
           "verdict_text"]


def summarize(times: list[float], batch: int | None = None, seconds: float | None = None) -> dict:
    """Median, p10 and p90 of per-call seconds (`quantiles`' one rule), and with `batch` clips of
    `seconds` per call the throughput they give."""
    p10, med, p90 = quantiles(times)
    out = {"median_s": med, "p10_s": p10, "p90_s": p90, "n": len(times)}
    if batch is not None:
        out.update(clips_per_s=batch / med, audio_s_per_s=batch * (seconds or 0.0) / med)
    return out


def compare(model: dict, baseline: dict) -> dict:
    """Latency of `baseline` over `model` (> 1: the model is faster), with the range the
    p10-p90 spreads allow. A range that contains 1.0 is not a speedup."""
    ratio = baseline["median_s"] / model["median_s"]
    lo, hi = baseline["p10_s"] / model["p90_s"], baseline["p90_s"] / model["p10_s"]
    if lo <= 1.0 <= hi:
        verdict, speedup = NO_DIFFERENCE, None
    else:
        verdict, speedup = ("faster" if lo > 1.0 else "slower"), ratio
    return {"latency_ratio": ratio, "ratio_range": [lo, hi], "speedup": speedup, "verdict": verdict}


def verdict_text(c: dict) -> str:
    if c["speedup"] is None:
        return NO_DIFFERENCE
    lo, hi = c["ratio_range"]
    return f"x{c['speedup']:.2f} ({lo:.2f}-{hi:.2f}) {c['verdict']}"


@torch.no_grad()
def interleaved_latency(models: dict[str, nn.Module], inputs: dict, repeats: int = 20, warmup: int = 3,
                        timed: Callable[[Callable], float] | None = None) -> dict[str, dict]:
    """`summarize` of each model's seconds per call on `inputs` (eval mode), calls interleaved."""
    for m in models.values():
        m.eval()
    calls = {k: (lambda m=m: m(**inputs)) for k, m in models.items()}
    return {k: summarize(t) for k, t in interleaved_times(calls, repeats, warmup, timed=timed).items()}
