"""Backend adapter for the compiled extension (csrc/): the same calls for CPU and CUDA,
the torch dispatcher routes each to the kernel of the tensors' device."""
from __future__ import annotations

import torch

from .plan import build_program
from .reference import ACTIVATIONS


def _act_code(act: str) -> int:
    # The integer codes csrc/common.h uses for the activations.
    return ACTIVATIONS.index(act)


def gated_act_fwd(x, bias, gate, act):
    return torch.ops.subnet_kernels._gated_act_fwd(x, bias, gate, _act_code(act))


def gated_act_bwd(grad, x, bias, gate, act):
    return torch.ops.subnet_kernels._gated_act_bwd(grad, x, bias, gate, _act_code(act))


def gather_flat(sources, table, total, program=None):
    """CPU: the C++ kernel decodes the table itself; CUDA: runs the table's copy program
    (built here when not given: pass CompactTable.program(sources) to reuse one)."""
    if sources[0].device.type == "cpu":
        return torch.ops.subnet_kernels._gather_compact(list(sources), table, total)
    if program is None:
        program = build_program(table.cpu(), [s.numel() for s in sources],
                                sources[0].element_size()).to(sources[0].device)
    return torch.ops.subnet_kernels._gather_compact_run(list(sources), program.tasks, program.offsets, total)


def register_fakes():
    """Shape functions for the extension's ops, so they trace (and pass opcheck) alone."""
    lib = "subnet_kernels::"

    @torch.library.register_fake(lib + "_gated_act_fwd")
    def _(x, bias, gate, act):
        return x.new_empty(x.shape)

    @torch.library.register_fake(lib + "_gated_act_bwd")
    def _(grad, x, bias, gate, act):
        n = x.shape[-1]
        return x.new_empty(x.shape), gate.new_empty(n), gate.new_empty(n)

    @torch.library.register_fake(lib + "_gather_compact")
    def _(sources, table, total):
        return sources[0].new_empty(total)

    @torch.library.register_fake(lib + "_gather_compact_run")
    def _(sources, tasks, offsets, total):
        return sources[0].new_empty(total)
