"""Measuring models honestly: interleaved latency medians, FLOPs on the eager path, file sizes."""
from __future__ import annotations

import contextlib
import statistics
import time

import torch
from torch import nn


@contextlib.contextmanager
def eager_attention(model: nn.Module):
    """transformers models on their eager attention path (flop_counter skips CPU SDPA)."""
    configs = {id(m.config): m.config for m in model.modules() if hasattr(m, "config")
               and hasattr(m.config, "_attn_implementation")}
    saved = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = "eager"
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = saved[k]


@torch.no_grad()
def count_flops(model: nn.Module, inputs: dict) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with eager_attention(model), FlopCounterMode(display=False) as counter:
        model(**inputs)
    return int(counter.get_total_flops())


@torch.no_grad()
def interleaved_latency(models: dict[str, nn.Module], inputs: dict, repeats: int = 20,
                        warmup: int = 3) -> dict[str, dict]:
    """Median / p10 / p90 seconds per call of each model, calls interleaved round-robin
    after warm-up so that machine noise hits every model alike."""
    for m in models.values():
        m.eval()
        for _ in range(warmup):
            m(**inputs)
    times = {k: [] for k in models}
    for _ in range(repeats):
        for k, m in models.items():
            t0 = time.perf_counter()
            m(**inputs)
            times[k].append(time.perf_counter() - t0)
    out = {}
    for k, ts in times.items():
        q = statistics.quantiles(ts, n=10) if len(ts) >= 2 else [ts[0]] * 9
        out[k] = {"median_s": statistics.median(ts), "p10_s": q[0], "p90_s": q[-1], "n": len(ts)}
    return out
