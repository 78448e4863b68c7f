"""Backend choice: measured on CUDA, the first usable backend elsewhere, or the one forced.

Backends: cuda (the compiled extension's CUDA kernels), triton (CUDA tensors, or CPU tensors
when TRITON_INTERPRET=1), cpp (the compiled extension's CPU kernels), reference (plain
PyTorch, always), torch (PyTorch's own fast ops: SDPA then the gate multiply, act(x + b) *
gate; reached by measurement or by forcing it).

- CUDA inputs of gated_act and gated_attention: every usable candidate among cuda, triton
  and torch is timed once per device and shape (subnet_kernels.measure) and the fastest
  runs from then on; `select` returns that choice with its reason, `explain` prints it.
- Otherwise (CPU, gather_compact, SUBNET_KERNEL_MEASURE=0, or while torch.compile traces
  or a CUDA graph is captured, when nothing is cached): the first usable backend in ORDER.
- SUBNET_KERNEL_BACKEND=<name> forces one; if it cannot run the inputs the call fails with
  the reason instead of silently running something else. An op the forced backend does not
  implement at all (the extension has no attention kernel) runs on the reference, so that a
  whole model can be run "on cpp" or "on cuda".
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch

ORDER = ("cuda", "triton", "cpp", "reference", "torch")
ENV = "SUBNET_KERNEL_BACKEND"
MEASURE_ENV = "SUBNET_KERNEL_MEASURE"

# Which backends implement which op at all (the extension has no attention kernel).
_IMPLEMENTS = {
    "gated_act": {"cuda", "triton", "cpp", "reference", "torch"},
    "gated_attention": {"triton", "reference", "torch"},
    "gather_compact": {"cuda", "triton", "cpp", "reference"},
}
# The extension's CUDA op behind each public op, looked up to see whether it was built.
_CUDA_OP = {"gated_act": "_gated_act_fwd", "gather_compact": "_gather_compact_run"}
# Ops whose backend is measured on CUDA, and the candidates timed.
MEASURED_OPS = ("gated_act", "gated_attention")
CANDIDATES = ("cuda", "triton", "torch")
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
    if not _has_kernel(_CUDA_OP[op], "CUDA"):
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
                                "reference": lambda op, inputs: "", "torch": lambda op, inputs: ""}


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
    """The backend that runs `op` on `inputs` without measuring: the forced one, else the
    first usable in ORDER. Decisions are cached per signature (op, devices, dtype, head_dim,
    environment): dispatch runs per call. The public functions use `select` instead."""
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


# --- measured choice --------------------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    """The backend that runs an op on inputs like these, and why. `times_ms`: the median
    time of each candidate measured (empty when nothing was measured); `failed`: candidates
    that raised while measured, with the error."""

    op: str
    backend: str
    reason: str
    times_ms: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)
    key: tuple = ()


_MEASURED: dict = {}


def _why_not_measured(op, inputs) -> str:
    """'' when `op` on `inputs` is chosen by measurement, else why not."""
    if op not in MEASURED_OPS:
        return f"{op} is not measured (one call per compaction: nothing to amortise it over)"
    if os.environ.get(ENV, "").strip():
        return f"forced by {ENV}"
    if os.environ.get(MEASURE_ENV, "1") == "0":
        return f"{MEASURE_ENV}=0"
    if _device_types(inputs) != {"cuda"}:
        return "measured on CUDA only"
    if any(isinstance(t, torch._subclasses.FakeTensor) for t in _tensors(inputs)) or \
            torch.compiler.is_compiling():
        return "traced by torch.compile (no measurement while tracing)"
    if torch.cuda.is_current_stream_capturing():
        return "inside CUDA graph capture"
    return ""


@functools.lru_cache(maxsize=None)
def _device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type


def measure_key(op, inputs, **extra) -> tuple:
    """What a measured decision depends on: op, device, shapes, dtypes and the call's mode."""
    dev = next(_tensors(inputs)).device
    name = _device_name(dev)
    layout = tuple(None if t is None else (tuple(t.shape), str(t.dtype)) for t in inputs
                   if t is None or isinstance(t, torch.Tensor))
    return (op, name, dev.index, layout, tuple(sorted(extra.items())))


def select(op: str, *inputs, **mode) -> Choice:
    """The backend chosen to run `op` on `inputs` (as passed to the public function), and
    the reason: forced, measured (CUDA: timed once per device, shape and mode, then cached),
    or the first usable one. `mode`: what the call does besides its inputs, e.g. act="gelu",
    grad=True (forward and backward are timed together), dead_o=False."""
    why_not = _why_not_measured(op, inputs)
    if not why_not:
        key = measure_key(op, inputs, **mode)
        if key not in _MEASURED:
            _MEASURED[key] = _measure(op, inputs, mode, key)
        return _MEASURED[key]
    backend = choose(op, *inputs)
    if os.environ.get(ENV, "").strip():
        reason = f"forced by {ENV}"
    else:
        reason = f"first usable of {', '.join(n for n in ORDER if n in _IMPLEMENTS[op])} (not measured: {why_not})"
        if op in MEASURED_OPS and _device_types(inputs) == {"cuda"}:
            layout = measure_key(op, inputs)[3]
            cached = [c for k, c in _MEASURED.items() if k[0] == op and k[3] == layout]
            if cached:  # tracing or capturing: reuse what was measured for these shapes
                return Choice(op, cached[0].backend, cached[0].reason + " (cached)", cached[0].times_ms)
    return Choice(op, backend, reason)


def _measure(op, inputs, mode, key) -> Choice:
    from . import measure
    usable = [name for name, why in reasons(op, *inputs) if not why and name in CANDIDATES]
    times, failed = measure.time_backends(op, inputs, usable, **mode)
    if not times:  # nothing ran: the static order decides
        backend = choose(op, *inputs)
        return Choice(op, backend, f"no candidate could be measured ({failed}); first usable", {}, failed, key)
    best = min(times, key=times.get)
    what = "forward and backward" if mode.get("grad") else "forward"
    ranking = ", ".join(f"{n} {t:.3f} ms" for n, t in sorted(times.items(), key=lambda kv: kv[1]))
    reason = f"fastest measured on {key[1]} ({what}, median): {ranking}"
    return Choice(op, best, reason, dict(times), failed, key)


def measured_choices() -> list[dict]:
    """Every measured decision of this process: op, device, inputs, mode, backend, reason
    and times (for run records such as metrics.json)."""
    return [{"op": c.op, "device": k[1], "inputs": [[list(x[0]), x[1]] if x else None for x in k[3]],
             "mode": dict(k[4]), "backend": c.backend, "reason": c.reason, "times_ms": c.times_ms,
             "failed": c.failed} for k, c in _MEASURED.items()]


def forget_measurements() -> None:
    """Drops the measured decisions (the next call of each shape measures again)."""
    _MEASURED.clear()


def explain(op: str, *inputs, file=None, **mode) -> str:
    """Says which backend runs `op` on these inputs and why each other one was not chosen
    (measuring first where the choice is measured: CUDA inputs of gated_act and
    gated_attention).

    Prints the report (to `file`, default stdout; pass file=False to stay silent) and
    returns it. Inputs are those of the public function, e.g. explain("gated_act", x, b, g);
    `mode` as for `select` (default: act="gelu" for gated_act; grad: whether the inputs
    require grad).
    """
    if op == "gated_act":
        mode.setdefault("act", "gelu")
    if op in MEASURED_OPS:
        mode.setdefault("grad", torch.is_grad_enabled() and any(t.requires_grad for t in _tensors(inputs)))
    if op == "gated_attention":
        mode.setdefault("dead_o", bool(mode["grad"]))
    env = os.environ.get(ENV, "").strip().lower()
    forced, why_forced = env, f"forced by {ENV}={env}"
    if env in ORDER and env not in _IMPLEMENTS.get(op, ORDER):
        forced, why_forced = "reference", f"{ENV}={env} has no {op}, so the reference runs it"
    measured = None
    if not forced and not _why_not_measured(op, inputs):
        measured = select(op, *inputs, **mode)
    lines, chosen = [], None
    for name, why in reasons(op, *inputs):
        if forced and name != forced:
            lines.append(f"  {name:9s} skipped: {ENV}={env}" + (f" (and: {why})" if why else ""))
        elif why:
            lines.append(f"  {name:9s} unusable: {why}")
        elif measured is not None:
            if name == measured.backend:
                chosen = name
                lines.append(f"  {name:9s} CHOSEN: {measured.times_ms.get(name, float('nan')):.3f} ms")
            elif name in measured.times_ms:
                lines.append(f"  {name:9s} usable, measured {measured.times_ms[name]:.3f} ms")
            elif name in measured.failed:
                lines.append(f"  {name:9s} failed when measured: {measured.failed[name]}")
            else:
                lines.append(f"  {name:9s} usable, not a measured candidate")
        elif chosen is None:
            chosen = name
            lines.append(f"  {name:9s} CHOSEN" + (f" ({why_forced})" if forced else ""))
        else:
            lines.append(f"  {name:9s} usable, but {chosen} comes first")
    head = f"{op}: " + (f"runs on {chosen}" if chosen else "no usable backend")
    if measured is not None:
        head += f" ({measured.reason})"
    if env and env not in ORDER:
        head += f" ({ENV}={env!r} is not a backend: calls will fail)"
    text = "\n".join([head] + lines)
    if file is not False:
        print(text, file=file)
    return text
