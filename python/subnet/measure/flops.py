"""FLOPs of one call, counted on the eager attention path (torch's counter misses the fused
SDPA kernels on the CPU and nn.MultiheadAttention's fast path)."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn


@contextlib.contextmanager
def eager_attention(model: nn.Module):
    """transformers models on their eager attention path, nn.MultiheadAttention off its fast path."""
    configs = {id(m.config): m.config for m in model.modules() if hasattr(m, "config")
               and hasattr(m.config, "_attn_implementation")}
    saved = {k: c._attn_implementation for k, c in configs.items()}
    fast = torch.backends.mha.get_fastpath_enabled()
    try:
        for c in configs.values():
            c._attn_implementation = "eager"
        torch.backends.mha.set_fastpath_enabled(False)
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
        for k, c in configs.items():
            c._attn_implementation = saved[k]


@torch.no_grad()
def count_flops(model: nn.Module, inputs: dict | None = None, call: Callable | None = None) -> int:
    """FLOPs of `model(**inputs)` (or of `call()`, a call that runs `model`)."""
    from torch.utils.flop_counter import FlopCounterMode
    with eager_attention(model), FlopCounterMode(display=False) as counter:
        call() if call is not None else model(**inputs)
    return int(counter.get_total_flops())
