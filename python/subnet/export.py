"""`subnet export`: a compact encoder (or a whole pipeline) as ONNX or TorchScript, checked.

The exported graph is run on a fresh random input (onnxruntime for ONNX, torch.jit.load
for TorchScript) and compared with PyTorch: max |diff| must stay within 1e-4 of the
output's magnitude. The batch axis is dynamic where the model allows it (checked by
running a batch of a different size); otherwise the export falls back to fixed shapes.
The time axis is fixed: the clip length given with --seconds (Whisper: its window).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

EXPORT_BATCH, CHECK_BATCH = 2, 3  # export traces one batch size, the check runs another
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


class ExportError(RuntimeError):
    """The exported model does not reproduce the PyTorch model."""


class Positional(nn.Module):
    """Tensors in by position, one tensor out: the calling convention exporters want."""

    def __init__(self, names: list[str], fn, owner: nn.Module, constants: dict | None = None):
        super().__init__()
        self.names, self.fn, self.owner, self.constants = names, fn, owner, constants or {}

    def forward(self, *tensors):
        return self.fn({**self.constants, **dict(zip(self.names, tensors))})


def encoder_graph(model: nn.Module, seconds: float | None, batch: int, seed: int):
    """(module, example inputs dict, family) for a compact encoder on `batch` random clips of
    `seconds` (unset: a fixed-window encoder's whole window, else 1 s)."""
    from .measure.bench import make_inputs
    from .families import family_of
    family = family_of(model)
    if family.name == "whisper":
        model = family.encoder(model)[0]
    model = family.fit_seconds(model, seconds)
    seconds = seconds or _window(family.front_end(model)) or 1.0
    inputs, _ = make_inputs(model, family, batch, seconds, torch.Generator().manual_seed(seed))
    return encoder_module(model, family, inputs)


def _window(fe) -> float | None:
    """The clip length a fixed-window front end pads to (None for the others)."""
    return fe.max_samples / fe.sample_rate if fe.fixed_length and fe.max_samples else None


def encoder_module(model: nn.Module, family, inputs: dict):
    """(module taking `inputs`' tensors by position and returning the encoder's main output,
    those tensors); the inputs that are not tensors become constants of the graph."""
    inputs = family.export_inputs(inputs)
    tensors = {k: v for k, v in inputs.items() if torch.is_tensor(v)}
    consts = {k: v for k, v in inputs.items() if not torch.is_tensor(v)}

    def run(d):
        return family.main_output(family.run_probe(model, d))
    return Positional(list(tensors), run, model.eval(), consts), tensors


def pipeline_graph(pipe, seconds: float | None, batch: int, seed: int):
    """(module, example inputs) for front-end features (+ the frames mask) -> head logits."""
    fe = pipe.front_end
    seconds = seconds or _window(fe) or 1.0
    n = round(seconds * fe.sample_rate)
    gen = torch.Generator().manual_seed(seed)
    waves, lengths = 0.1 * torch.randn(batch, n, generator=gen), torch.full((batch,), n)
    features = fe.inputs(waves, lengths)
    with torch.no_grad():
        n_frames = pipe.states(features)[-1].shape[1]
    inputs = {**features, "frames": fe.frames(lengths, n_frames)}

    def run(d):
        d = dict(d)
        frames = d.pop("frames")
        return pipe.head(pipe.states(d), frames)
    return Positional(list(inputs), run, pipe.eval()), inputs


def _batch_dim(t: torch.Tensor, batch: int) -> int | None:
    return next((i for i, s in enumerate(t.shape) if s == batch), None)


def _resample(inputs: dict, batch: int, seed: int) -> dict:
    """Fresh inputs like `inputs`, with `batch` along each tensor's batch axis."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in inputs.items():
        dim = _batch_dim(v, EXPORT_BATCH)
        shape = list(v.shape)
        if dim is not None:
            shape[dim] = batch
        if v.is_floating_point():
            out[k] = torch.randn(*shape, generator=gen).to(v.dtype)
        else:  # masks and lengths: repeat the first item's
            idx = torch.zeros(batch, dtype=torch.long)
            out[k] = v.index_select(dim, idx) if dim is not None else v.clone()
    return out


def _onnx(module: nn.Module, inputs: dict, path: Path, dynamic: bool, opset: int) -> None:
    with torch.no_grad():
        out = module(*inputs.values())
    axes = {}
    if dynamic:
        axes = {k: {d: "batch"} for k, v in inputs.items() if (d := _batch_dim(v, EXPORT_BATCH)) is not None}
        if (d := _batch_dim(out, EXPORT_BATCH)) is not None:
            axes["output"] = {d: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python values in the graph
        torch.onnx.export(module, tuple(inputs.values()), str(path), input_names=list(inputs),
                          output_names=["output"], dynamic_axes=axes or None, opset_version=opset,
                          dynamo=False)


def _onnx_feed(session, inputs: dict) -> dict:
    wanted = {i.name for i in session.get_inputs()}  # inputs the graph does not use are dropped
    return {k: v.numpy() for k, v in inputs.items() if k in wanted}


def _run_onnx(path: Path, inputs: dict) -> torch.Tensor:
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, _onnx_feed(session, inputs))[0])


def onnx_runner(model: nn.Module, family, inputs: dict, threads: int | None = None,
                opset: int = 17, rtol: float = 1e-4):
    """A no-argument call running `model` (an encoder) in onnxruntime on `inputs` (one input
    dict of `make_inputs`, exported for exactly these shapes; every graph optimisation on,
    `threads` intra-op threads): what `subnet bench --runtime onnxruntime` times. The session's
    output is checked against PyTorch's first (ExportError beyond `rtol`)."""
    import tempfile

    import onnxruntime as ort
    module, tensors = encoder_module(model, family, inputs)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    # idle threads sleep instead of spinning: spinning ones would steal the cores from whatever
    # runs next (in a benchmark, the other model timed in turn)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        _onnx(module, tensors, path, dynamic=False, opset=opset)
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = _onnx_feed(session, tensors)
    with torch.no_grad():
        err = relative_error(torch.from_numpy(session.run(None, feed)[0]), module(*tensors.values()))
    if not err <= rtol:
        raise ExportError(f"the onnxruntime graph differs from PyTorch by {err:.3g} of the output's magnitude "
                          f"(limit {rtol:g})")
    return lambda: session.run(None, feed)


def _torchscript(module: nn.Module, inputs: dict, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, tuple(inputs.values()), strict=False, check_trace=False)
        torch.jit.save(traced, str(path))


def _run_torchscript(path: Path, inputs: dict) -> torch.Tensor:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit: deprecated, still shipped
        return torch.jit.load(str(path))(*inputs.values())


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref| (inf when the shapes differ)."""
    if out.shape != ref.shape:
        return float("inf")
    return float((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp(min=1e-30))


def export(src, fmt: str = "onnx", out=None, pipeline: bool = False, seconds: float | None = None,
           opset: int = 17, rtol: float = 1e-4) -> dict:
    """Export the artifact at `src`; check it against PyTorch; return what was written."""
    from . import load
    from .training.pipeline import load_pipeline
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {sorted(FORMATS)}")
    src = Path(src)
    if pipeline:
        module, inputs = pipeline_graph(load_pipeline(src), seconds, EXPORT_BATCH, seed=0)
    else:
        module, inputs = encoder_graph(load(src), seconds, EXPORT_BATCH, seed=0)
    path = Path(out) if out else src / (("pipeline" if pipeline else "encoder") + FORMATS[fmt])
    path.parent.mkdir(parents=True, exist_ok=True)
    write, run = (_onnx, _run_onnx) if fmt == "onnx" else (_torchscript, _run_torchscript)
    check = _resample(inputs, CHECK_BATCH, seed=1)
    with torch.no_grad():
        ref = module(*check.values())
    dynamic = True
    for attempt in ("dynamic", "static"):
        if attempt == "static":  # the graph baked the batch size in: export and check fixed shapes
            dynamic, check = False, _resample(inputs, EXPORT_BATCH, seed=1)
            with torch.no_grad():
                ref = module(*check.values())
        if fmt == "onnx":
            _onnx(module, inputs, path, dynamic, opset)
        else:
            _torchscript(module, inputs, path)
        try:
            err = relative_error(run(path, check), ref)
        except Exception:  # a runtime shape error is how a baked-in batch size shows
            err = float("inf")
        if err <= rtol or attempt == "static":
            break
    if not err <= rtol:
        raise ExportError(f"{path}: the exported model's output differs from PyTorch's by {err:.3g} "
                          f"of its magnitude (limit {rtol:g})")
    return {"path": str(path), "format": fmt, "bytes": path.stat().st_size, "relative_error": err,
            "dynamic_batch": dynamic, "inputs": {k: list(v.shape) for k, v in inputs.items()},
            "output": list(ref.shape)}
