"""Output allocation for the Python-launched kernels (Triton).

With SUBNET_KERNEL_POISON=1, outputs start filled with NaN (floating) or -1 (integer) rather
than uninitialised memory, so tests catch any element a kernel did not write. The C++/CUDA
kernels honour the same variable (csrc/alloc.h).
"""
import os

import torch


def poisoning() -> bool:
    return os.environ.get("SUBNET_KERNEL_POISON") == "1"


def empty(shape, dtype, device) -> torch.Tensor:
    """torch.empty, or a poisoned tensor when SUBNET_KERNEL_POISON=1."""
    if not poisoning():
        return torch.empty(shape, dtype=dtype, device=device)
    fill = float("nan") if dtype.is_floating_point else -1
    return torch.full(shape, fill, dtype=dtype, device=device)
