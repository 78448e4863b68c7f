"""Backend choice: the first backend that supports the inputs, or the one the user forces.

Order: cuda (the compiled extension's CUDA kernels), triton (CUDA tensors, or CPU tensors
when TRITON_INTERPRET=1), cpp (the compiled extension's CPU kernels), reference (always).
SUBNET_KERNEL_BACKEND=reference|triton|cpp|cuda forces one; if it cannot run the inputs the
call fails with the reason instead of silently running something else. An op the forced
backend does not implement at all (the extension has no attention kernel) runs on the
reference, so that a whole model can be run "on cpp" or "on cuda".
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Callable

import torch

ORDER = ("cuda", "triton", "cpp", "reference")
ENV = "SUBNET_KERNEL_BACKEND"

# Which backends implement which op at all (the extension has no attention kernel).
_IMPLEMENTS = {
    "gated_act": {"cuda", "triton", "cpp", "reference"},
    "gated_attention": {"triton", "reference"},
    "gather_compact": {"cuda", "triton", "cpp", "reference"},
}
# The C++ op behind each public op, looked up to see whether the extension has a kernel.
_CPP_OP = {"gated_act": "_gated_act_fwd", "gather_compact": "_gather_compact"}
_HALF_OR_FLOAT = (torch.float32, torch.float16, torch.bfloat16)


class BackendUnavailable(RuntimeError):
    """The forced backend cannot run these inputs."""


def _tensors(inputs):
    for t in inputs:
        if isinstance(t, torch.Tensor):
            yield t
        elif isinstance(t, (list, tuple)):
            yield from _tensors(t)


def _device_types(inputs) -> set[str]:
    return {t.device.type for t in _tensors(inputs)}


def _data_dtype(op, inputs):
    # The dtype that decides kernel support: activations/sources, not masks or tables.
    first = inputs[0]
    return first[0].dtype if isinstance(first, (list, tuple)) else first.dtype


def extension():
    """The compiled extension module, or None (with why) if it was not built."""
    try:
        return importlib.import_module("subnet_kernels._C"), ""
    except ImportError as e:  # not built, or built against another torch
        return None, f"extension subnet_kernels._C not importable ({e})"


def _has_kernel(op: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"subnet_kernels::{op}", key)


def triton_status():
    """(usable, interpreted, reason) for the Triton backend."""
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return False, False, f"triton not importable ({e})"
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    return True, interpreted, ""


def _check_cuda(op, inputs):
    mod, why = extension()
    if mod is None:
        return why
    if not _has_kernel(_CPP_OP[op], "CUDA"):
        return "extension built without CUDA kernels"
    if _device_types(inputs) != {"cuda"}:
        return "inputs are not all CUDA tensors"
    if op == "gated_act" and _data_dtype(op, inputs) not in _HALF_OR_FLOAT:
        return f"CUDA kernel computes in float32: float32/16/bfloat16 only, got {_data_dtype(op, inputs)}"
    return ""


def _check_cpp(op, inputs):
    mod, why = extension()
    if mod is None:
        return why
    if _device_types(inputs) != {"cpu"}:
        return "inputs are not all CPU tensors"
    if op == "gated_act" and _data_dtype(op, inputs) not in (torch.float32, torch.float64):
        return f"CPU kernel is float32/float64 only, got {_data_dtype(op, inputs)}"
    return ""


def _check_triton(op, inputs):
    ok, interpreted, why = triton_status()
    if not ok:
        return why
    devices = _device_types(inputs)
    dtype = _data_dtype(op, inputs)
    if devices == {"cuda"}:
        if op != "gather_compact" and dtype not in _HALF_OR_FLOAT:
            return f"dtype {dtype} not supported"
    elif devices == {"cpu"}:
        if not interpreted:
            return "CPU tensors need TRITON_INTERPRET=1"
        from . import triton as tk
        if not tk.interpreted():
            return "triton was imported before TRITON_INTERPRET=1 was set (kernels are compiled)"
        if op != "gather_compact" and dtype not in (torch.float32, torch.float16):
            return f"interpreter supports float32/float16, got {dtype}"
    else:
        return f"inputs on devices {sorted(devices)}"
    if op == "gated_attention" and inputs[0].shape[-1] > 128:
        return f"head_dim {inputs[0].shape[-1]} > 128"
    return ""


_CHECKS: dict[str, Callable] = {"cuda": _check_cuda, "triton": _check_triton, "cpp": _check_cpp,
                                "reference": lambda op, inputs: ""}


def reasons(op: str, *inputs) -> list[tuple[str, str]]:
    """For each backend in order: (name, '' if it can run the inputs else why not)."""
    if op not in _IMPLEMENTS:
        raise ValueError(f"unknown op {op!r}; expected one of {sorted(_IMPLEMENTS)}")
    if op == "gather_compact":
        inputs = inputs[:1]  # the sources decide; plans and tables live anywhere
    out = []
    for name in ORDER:
        if name not in _IMPLEMENTS[op]:
            out.append((name, f"no {name} implementation of {op}"))
        else:
            out.append((name, _CHECKS[name](op, inputs)))
    return out


_CHOICES: dict = {}


def _signature(op, inputs):
    # Everything the checks look at: devices, the deciding dtype, head_dim, environment.
    head_dim = inputs[0].shape[-1] if op == "gated_attention" else None
    return (op, frozenset(_device_types(inputs[:1] if op == "gather_compact" else inputs)),
            _data_dtype(op, inputs), head_dim, os.environ.get(ENV, ""),
            os.environ.get("TRITON_INTERPRET", ""), "triton" in sys.modules)


def choose(op: str, *inputs) -> str:
    """The backend that runs `op` on `inputs` (honours SUBNET_KERNEL_BACKEND). Decisions are
    cached per signature (op, devices, dtype, head_dim, environment): dispatch runs per call."""
    key = _signature(op, inputs)
    if key not in _CHOICES:
        try:
            _CHOICES[key] = _choose(op, *inputs)
        except BackendUnavailable as e:
            _CHOICES[key] = e
    choice = _CHOICES[key]
    if isinstance(choice, Exception):
        raise BackendUnavailable(str(choice))
    return choice


def _choose(op: str, *inputs) -> str:
    forced = os.environ.get(ENV, "").strip().lower()
    if forced:
        if forced not in ORDER:
            raise ValueError(f"{ENV}={forced!r}; expected one of {ORDER}")
        if forced not in _IMPLEMENTS[op]:
            return "reference"
        why = dict(reasons(op, *inputs))[forced]
        if why:
            raise BackendUnavailable(f"{ENV}={forced} cannot run {op}: {why}")
        return forced
    for name, why in reasons(op, *inputs):
        if not why:
            return name
    raise AssertionError("the reference backend always applies")


def explain(op: str, *inputs, file=None) -> str:
    """Says which backend runs `op` on these inputs and why each other one was not chosen.

    Prints the report (to `file`, default stdout; pass file=False to stay silent) and
    returns it. Inputs are those of the public function, e.g. explain("gated_act", x, b, g).
    """
    env = os.environ.get(ENV, "").strip().lower()
    forced, why_forced = env, f"forced by {ENV}={env}"
    if env in ORDER and env not in _IMPLEMENTS.get(op, ORDER):
        forced, why_forced = "reference", f"{ENV}={env} has no {op}, so the reference runs it"
    lines, chosen = [], None
    for name, why in reasons(op, *inputs):
        if forced and name != forced:
            lines.append(f"  {name:9s} skipped: {ENV}={env}" + (f" (and: {why})" if why else ""))
        elif why:
            lines.append(f"  {name:9s} unusable: {why}")
        elif chosen is None:
            chosen = name
            lines.append(f"  {name:9s} CHOSEN" + (f" ({why_forced})" if forced else ""))
        else:
            lines.append(f"  {name:9s} usable, but {chosen} comes first")
    head = f"{op}: " + (f"runs on {chosen}" if chosen else "no usable backend")
    if env and env not in ORDER:
        head += f" ({ENV}={env!r} is not a backend: calls will fail)"
    text = "\n".join([head] + lines)
    if file is not False:
        print(text, file=file)
    return text
