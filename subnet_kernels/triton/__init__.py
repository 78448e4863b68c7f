"""Triton backend: one module per op (kernels + launchers).

Whether the kernels run compiled (GPU) or interpreted (CPU, TRITON_INTERPRET=1) is fixed
at import: triton.jit reads TRITON_INTERPRET when it decorates, and that holds for Triton's
own library functions (tl.sum, tl.max, ...) too. So for the interpreter, TRITON_INTERPRET=1
must be set before `triton` itself is first imported, not just before this package.
"""
import triton

from .gated_act import gated_act_bwd, gated_act_fwd
from .gated_attention import gated_attention_bwd, gated_attention_fwd
from .gather_compact import gather_flat, gather_run


def interpreted() -> bool:
    """True when the kernels, and Triton's own library, were built for the interpreter."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from .gated_act import _fwd_kernel
    return isinstance(_fwd_kernel, InterpretedFunction) and isinstance(tl.sum, InterpretedFunction)


__all__ = ["gated_act_fwd", "gated_act_bwd", "gated_attention_fwd", "gated_attention_bwd",
           "gather_flat", "gather_run", "interpreted", "triton"]
