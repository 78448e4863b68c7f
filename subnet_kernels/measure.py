"""Times the candidate backends of an op on CUDA, for dispatch.select.

Inputs are fresh random tensors of the caller's shapes and dtypes (never zeros; drawn from a
private generator, so the caller's random state is untouched), except the gate and the
key-padding mask, taken as given: which heads are dead and which keys are padding change
the work. Each candidate is warmed up (Triton compiles and autotunes there), then all are
timed interleaved (subnet_kernels.timing: CUDA events); the median of `reps` runs. A candidate that raises is
reported as failed and not chosen.
"""
from __future__ import annotations

import math

import torch

from .timing import interleaved_times, medians


def _random_like(t, gen, grad):
    x = torch.randn(t.shape, generator=gen, device=t.device, dtype=t.dtype)
    return x.requires_grad_(grad)


def _gate(gate, grad):
    return gate.detach().clone().requires_grad_(grad)


def _runner(op, backend, inputs, mode, gen):
    """A no-argument callable running `op` once on `backend` (and its backward if grad)."""
    from . import ops
    grad = bool(mode.get("grad", False))
    if op == "gated_act":
        x, bias, gate = inputs
        x = _random_like(x, gen, grad)
        bias = None if bias is None else _random_like(bias, gen, grad)
        gate = _gate(gate, grad)
        leaves = [t for t in (x, bias, gate) if t is not None]

        def forward():
            return ops.run_gated_act(backend, x, bias, gate, mode.get("act", "gelu"))
    elif op == "gated_attention":
        q, k, v, gate, mask = (list(inputs) + [None])[:5]
        q, k, v = (_random_like(t, gen, grad) for t in (q, k, v))
        dead_o = bool(mode.get("dead_o", grad))
        gate = _gate(gate, grad and dead_o)
        leaves = [q, k, v] + ([gate] if gate.requires_grad else [])
        scale = mode.get("scale") or 1.0 / math.sqrt(q.shape[-1])

        def forward():
            return ops.run_gated_attention(backend, q, k, v, gate, mask, scale, dead_o)
    else:
        raise ValueError(f"{op} is not measured")
    if not grad:
        def run():
            with torch.no_grad():
                forward()
        return run
    dy = None

    def run():
        nonlocal dy
        y = forward()
        if dy is None:
            dy = torch.randn(y.shape, generator=gen, device=y.device, dtype=y.dtype)
        torch.autograd.grad(y, leaves, dy)
    return run


def time_backends(op: str, inputs, candidates, reps: int = 5, warmup: int = 2, **mode):
    """({backend: median ms}, {backend: error}) for each candidate on inputs like `inputs`."""
    device = next(t for t in inputs if isinstance(t, torch.Tensor)).device
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    runs, failed = {}, {}
    for name in candidates:
        try:
            fn = _runner(op, name, inputs, mode, gen)
            for _ in range(warmup):
                fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            runs[name] = fn
        except Exception as e:  # e.g. a Triton compile failure or out of memory on this shape
            failed[name] = f"{type(e).__name__}: {e}"[:300]
    times = interleaved_times(runs, reps, warmup=0, device=device.type)
    return {name: 1e3 * t for name, t in medians(times).items()}, failed
