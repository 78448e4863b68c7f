"""subnet_kernels: fused gated attention, fused gated activation and one-launch compaction.

Usable alone: it knows nothing of models or training. Every op has a pure-PyTorch
reference (subnet_kernels.reference) and faster backends (compiled C++/CUDA extension,
Triton, PyTorch's own ops); see subnet_kernels.dispatch for how one is chosen (measured on
CUDA), `select` for the choice and its reason, and `explain` to print it.
"""
from .dispatch import BackendUnavailable, Choice, explain, forget_measurements, measured_choices, select
from .ops import gated_act, gated_attention, gather_compact, gather_compact_flat
from .plan import GatherPlan, build_table, split_outputs

try:  # the compiled ops get shape functions when the extension is present
    from . import _C  # noqa: F401
except ImportError:
    pass
else:
    from .extension import register_fakes as _register_fakes
    _register_fakes()

__all__ = ["gated_attention", "gated_act", "gather_compact", "gather_compact_flat", "explain",
           "select", "Choice", "measured_choices", "forget_measurements",
           "GatherPlan", "build_table", "split_outputs", "BackendUnavailable"]
