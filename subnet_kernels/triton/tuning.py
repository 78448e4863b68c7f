"""Launch configurations of the Triton kernels: on a GPU, autotuned over a short list chosen
for Hopper (H100/H200) per key (shape); in the interpreter, one small fixed configuration.

SUBNET_TRITON_AUTOTUNE=0 runs the first configuration of each list without tuning (quick
GPU tests; the tests still run every configuration once, explicitly).
"""
from __future__ import annotations

import os

import triton
from triton.runtime.interpreter import InterpretedFunction


class Tuned:
    """A Triton kernel with its configurations. `launch(grid, *args, config=None, **kwargs)`:
    `grid` maps the meta-parameters (a dict with the config's keys) to the launch grid."""

    def __init__(self, kernel, configs: list[triton.Config], key: list[str], interpreter: triton.Config):
        self.kernel, self.configs, self.interpreter_config = kernel, configs, interpreter
        self.interpreted = isinstance(kernel, InterpretedFunction)
        self._tuner = None if self.interpreted else triton.autotune(configs, key=key)(kernel)

    def default(self) -> triton.Config:
        return self.interpreter_config if self.interpreted else self.configs[0]

    def launch(self, grid, *args, config: triton.Config | None = None, **kwargs):
        tune = os.environ.get("SUBNET_TRITON_AUTOTUNE", "1") != "0"
        if config is None and self._tuner is not None and tune:
            return self._tuner[grid](*args, **kwargs)
        cfg = config or self.default()
        meta = dict(cfg.kwargs)
        return self.kernel[grid(meta)](*args, **kwargs, **meta, num_warps=cfg.num_warps,
                                       num_stages=cfg.num_stages)


def config(num_warps=4, num_stages=3, **meta) -> triton.Config:
    """triton.Config with the meta-parameters as keywords."""
    return triton.Config(meta, num_warps=num_warps, num_stages=num_stages)
