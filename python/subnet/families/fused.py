"""Where a gate runs through subnet_kernels' fused ops and where through plain PyTorch ops.

Chosen by measurement (benchmarks/bench_kernels.py, results in benchmarks/results/kernels-*.json):
- CPU: the extension's gated_act runs fwd+bwd 2.4x faster than PyTorch's composite, so FFN
  gates use it; head gates are PyTorch's SDPA then the gate multiply (the fused attention is
  a Triton kernel, interpreted on a CPU).
- CUDA (an H200): PyTorch's own ops ran fwd+bwd 1.5x faster than the extension's CUDA
  gated_act (fp32, 8 x 500 x 3072) and 1.6x faster than the Triton gated attention (flash
  SDPA then the gate multiply, bf16), so on CUDA both gates are plain PyTorch ops.
SUBNET_KERNEL_BACKEND=cuda|triton|cpp|reference sends every gate through the fused ops on
the backend it names (kernel tests and benchmarks use this).
"""
from __future__ import annotations

import os

import torch


def forced() -> bool:
    """A kernel backend is forced: every gate goes through subnet_kernels."""
    return bool(os.environ.get("SUBNET_KERNEL_BACKEND"))


def fused_activation(x: torch.Tensor) -> bool:
    """FFN neuron gates through subnet_kernels.gated_act (else act(x) * gate in PyTorch)."""
    return x.device.type == "cpu" or forced()


def fused_attention(q: torch.Tensor) -> bool:
    """Head gates through subnet_kernels.gated_attention (else SDPA, then the gate multiply)."""
    return forced()
