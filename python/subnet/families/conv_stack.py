"""Generic conv stacks: nn.Sequential-style Conv1d/Conv2d models, CREPE, CNN14, users' own CNNs.

Units: the output channels of every conv (`conv`) whose channels the dataflow analysis
of `conv_graph` can follow to their consumers (next convs, Linears). No hand-written
adapter: BatchNorm statistics, depthwise filters and per-channel PReLU/GroupNorm
weights follow their channel; the consumers lose the matching input channels/columns.
The gate multiplies a channel where its consumers read it (after the block's norm,
activation and pooling). A model the analysis cannot place raises `ConvAnalysisError`
naming the module or operation.

The probe input (analysis and verification) has shape (batch, *model.subnet_probe_shape)
when the model defines it, else (batch, C_in, L[, L]) from the first conv with the
first L in 64..4096 that runs.

Saving needs the architecture: nn.Sequential of standard layers is described layer by
layer; other classes must be registered (`register_model`) and carry a JSON-able
`.config` of constructor keyword arguments (the project's Crepe and Cnn14 do).

Input side: a model's own `subnet_front_end` (Crepe: framed 16 kHz audio; Cnn14: the 32 kHz
waveform it turns into a log-mel itself), else one chosen from the first conv: a 1-channel
Conv1d reads the raw waveform (B, 1, T), a C-channel Conv1d a C-bin log-mel (B, C, frames), a
1-channel Conv2d a 64-bin log-mel image (B, 1, 64, frames). The head reads the model's output
(`subnet_states(output)` when the class defines it): an "embedding" entry of a dict output or
the tensor itself, (B, D) as one frame, (B, C, L) as L frames, (B, C, H, W) averaged over H.
"""
from __future__ import annotations

import importlib
import inspect
import weakref

import torch
from torch import nn

from ..core.units import UnitGroup
from .base import Family, apply_slices, gate_input_channels, sync_metadata
from .conv_graph import CONVS, Analysis, ConvAnalysisError
from .front_ends import LogMel, RawWave

# built-in model classes, imported on demand when an artifact is loaded
BUILTIN_MODELS = {"Crepe": "subnet.backbones.crepe", "Cnn14": "subnet.families.cnn14"}
_REGISTERED: dict[str, type] = {}
PROBE_LENGTHS = (64, 128, 256, 512, 1024, 2048, 4096)

LAYER_ARGS = {
    "Conv1d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
               "padding_mode"),
    "BatchNorm1d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "Linear": ("in_features", "out_features"),
    "ReLU": (), "Tanh": (), "Sigmoid": (), "SiLU": (), "Identity": (), "GELU": ("approximate",),
    "LeakyReLU": ("negative_slope",), "ELU": ("alpha",), "Dropout": ("p",),
    "MaxPool1d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    "AvgPool1d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    "AdaptiveAvgPool1d": ("output_size",), "AdaptiveMaxPool1d": ("output_size",),
    "Flatten": ("start_dim", "end_dim"),
}
for _n in ("Conv", "BatchNorm", "MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool"):
    LAYER_ARGS[f"{_n}2d"] = LAYER_ARGS[f"{_n}1d"]
HAS_BIAS = ("Conv1d", "Conv2d", "Linear")


def register_model(cls: type) -> type:
    """Make a model class loadable from artifacts (it needs a JSON-able `.config`)."""
    _REGISTERED[cls.__name__] = cls
    return cls


def _model_class(name: str) -> type:
    if name not in _REGISTERED and name in BUILTIN_MODELS:
        importlib.import_module(BUILTIN_MODELS[name])
    if name not in _REGISTERED:
        raise ValueError(f"conv-stack model class {name!r} is not registered: decorate it with "
                         "subnet.families.conv_stack.register_model (it needs a JSON-able .config of "
                         "constructor arguments) and import its module before loading")
    return _REGISTERED[name]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


def probe_shape(model: nn.Module) -> tuple[int, ...]:
    """Input shape without the batch dim (see the module docstring)."""
    shape = getattr(model, "subnet_probe_shape", None)
    if shape is not None:
        return tuple(shape)
    first = next(m for m in model.modules() if isinstance(m, CONVS))
    spatial = 1 if isinstance(first, nn.Conv1d) else 2
    was_training = model.training
    model.eval()
    try:
        for n in PROBE_LENGTHS:
            shape = (first.in_channels, *([n] * spatial))
            try:
                with torch.no_grad():
                    model(torch.zeros(1, *shape, device=_device(model)))
                return shape
            except Exception:  # wrong size for a Linear, too short for the strides: next length
                continue
    finally:
        model.train(was_training)
    raise ConvAnalysisError(f"cannot find an input shape for {type(model).__name__}; set "
                            "model.subnet_probe_shape = (channels, length) (no batch dim)")


def output_frames(out) -> torch.Tensor:
    """A conv stack's output as (B, frames, width): see the module docstring."""
    if isinstance(out, dict):
        out = out["embedding"] if "embedding" in out else next(v for v in out.values() if torch.is_tensor(v))
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if out.dim() == 2:
        return out[:, None]
    if out.dim() == 3:
        return out.transpose(1, 2)
    if out.dim() == 4:
        return out.mean(2).transpose(1, 2)
    raise ValueError(f"a conv stack's output of shape {tuple(out.shape)} cannot be read as frames; "
                     "define subnet_states(output) on the model class")


def _flat(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    parts = [_flat(o) for o in (out.values() if isinstance(out, dict) else out) if o is not None]
    return torch.cat([t.reshape(t.shape[0], -1).to(parts[0].dtype) for t in parts], dim=1)


def _gate_linear(linear: nn.Linear, mm, group: str, size: int, block: int):
    """Multiply each input column of `linear` by the gate of the channel that owns it."""
    owner = (torch.arange(linear.in_features) // block) % size

    def hook(_mod, args):
        x, *rest = args
        g = mm.gate(group).to(x.dtype)
        return (x * g[owner.to(g.device)], *rest)

    return linear.register_forward_pre_hook(hook).remove


class ConvStackFamily(Family):
    name = "conv-stack"

    def __init__(self):
        # probe shapes found by discover(); probe_inputs() later sees the model with its
        # gates installed, where a trial run is impossible
        self._shapes = weakref.WeakKeyDictionary()

    def _probe_shape(self, model):
        if model not in self._shapes:
            self._shapes[model] = probe_shape(model)
        return self._shapes[model]

    def matches(self, model):
        return any(isinstance(m, CONVS) for m in model.modules())

    def discover(self, model, kinds):
        if "conv" not in kinds:
            return {}
        shape = self._probe_shape(model)
        probe = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0)).to(_device(model))
        analysis = Analysis(model, probe)
        params = dict(model.named_parameters())
        groups, owner = {}, {}
        for plan in analysis.plans():
            if plan.reaches_output:
                continue  # the output width, not a unit
            for sl in plan.slices:
                other = owner.setdefault((sl.param, sl.dim), plan.source)
                if other != plan.source:
                    raise ConvAnalysisError(f"{sl.param} is reached by the channels of both {other} "
                                            f"and {plan.source}")
            per_unit = sum(params[s.param].numel() for s in plan.slices if s.param in params) / plan.size
            groups[plan.source] = UnitGroup(plan.source, "conv", plan.size, plan.slices, float(per_unit),
                                            plan.flops / shape[-1], min_keep=1)
        return groups

    def install_gates(self, mm):
        model, undo = mm.backbone, []
        for name, group in mm.groups.items():
            for sl in group.slices:
                path, attr = sl.param.rsplit(".", 1)
                mod = model.get_submodule(path)
                if sl.dim != 1 or attr != "weight":
                    continue  # the source conv and per-channel layers: not where the gate goes
                if isinstance(mod, CONVS):
                    undo.append(gate_input_channels(mod, mm, name))
                elif isinstance(mod, nn.Linear):
                    undo.append(_gate_linear(mod, mm, name, group.size, sl.block))
        return undo

    def shrink(self, model, groups, keep):
        depthwise = {m for g in groups.values() for s in g.slices
                     if isinstance(m := model.get_submodule(s.param.rsplit(".", 1)[0]), CONVS)
                     and m.groups > 1}
        apply_slices(model, groups, keep)
        for conv in depthwise:
            conv.groups = conv.weight.shape[0]
        sync_metadata(model)
        for m in model.modules():  # layers sync_metadata does not know
            if isinstance(m, nn.modules.instancenorm._InstanceNorm):
                src = m.weight if m.weight is not None else m.running_mean
                if src is not None:
                    m.num_features = src.shape[0]
            elif isinstance(m, nn.PReLU):
                m.num_parameters = m.weight.numel()
        return model

    def probe_inputs(self, model, generator):
        return {"input": torch.randn(2, *self._probe_shape(model), generator=generator).to(_device(model))}

    def run_probe(self, model, inputs):
        return model(*inputs.values())  # one input tensor, whatever the front end calls it

    def main_output(self, output):
        return _flat(output)

    # --- the input side ------------------------------------------------------------------
    def default_front_end(self, model):
        first = next(m for m in model.modules() if isinstance(m, CONVS))
        key = next(iter(inspect.signature(model.forward).parameters), "input")
        if isinstance(first, nn.Conv1d) and first.in_channels == 1:
            return RawWave(normalize=False, style="plain", key=key, channel=True)
        if isinstance(first, nn.Conv1d):
            return LogMel(first.in_channels, layout="bft", key=key)
        if isinstance(first, nn.Conv2d) and first.in_channels == 1:
            return LogMel(64, layout="b1ft", key=key)
        raise TypeError(f"{type(model).__name__}: its first conv takes {first.in_channels} channels of "
                        f"{type(first).__name__} input, which no built-in front end makes; give the model a "
                        "`subnet_front_end` (a subnet.families.front_ends.FrontEnd), e.g. from an entry point")

    def states(self, backbone, inputs):
        out = backbone(*inputs.values())
        own = getattr(backbone, "subnet_states", None)
        return tuple(own(out)) if own is not None else (output_frames(out),)

    # --- artifacts ----------------------------------------------------------------------
    def describe(self, model):
        """JSON description for artifacts; never raises (compact() always describes), but a
        model that cannot be rebuilt is described so that `build` says why."""
        name = type(model).__name__
        if type(model) is nn.Sequential:
            try:
                return {"class": "Sequential", "layers": [_describe_layer(m, f"{i}") for i, m in enumerate(model)]}
            except ValueError as e:
                return {"class": "Sequential", "unbuildable": str(e)}
        config = getattr(model, "config", None)
        return {"class": name, "config": dict(config) if isinstance(config, dict) else None}

    def build(self, desc):
        if "unbuildable" in desc:
            raise ValueError(desc["unbuildable"])
        if desc["class"] == "Sequential":
            return _build_sequential(desc["layers"]).eval()
        cls = _model_class(desc["class"])
        return cls(**(desc["config"] or {})).eval()


def _describe_layer(m: nn.Module, path: str) -> dict:
    name = type(m).__name__
    if type(m) is nn.Sequential:
        return {"type": "Sequential", "layers": [_describe_layer(c, f"{path}.{i}") for i, c in enumerate(m)]}
    if name not in LAYER_ARGS or type(m) is not getattr(nn, name):
        raise ValueError(f"cannot describe layer {path} ({name}) of an nn.Sequential for an artifact; "
                         f"supported: {sorted(LAYER_ARGS)}")
    args = {a: getattr(m, a) for a in LAYER_ARGS[name]}
    if name in HAS_BIAS:
        args["bias"] = m.bias is not None
    return {"type": name, "args": args}


def _build_sequential(layers: list[dict]) -> nn.Sequential:
    mods = []
    for d in layers:
        if d["type"] == "Sequential":
            mods.append(_build_sequential(d["layers"]))
            continue
        if d["type"] not in LAYER_ARGS:
            raise ValueError(f"unknown layer type {d['type']!r} in a conv-stack description")
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in d["args"].items()}
        mods.append(getattr(nn, d["type"])(**args))
    return nn.Sequential(*mods)
