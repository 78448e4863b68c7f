"""What every family adapter provides, and the shared tools they are built from.

An adapter knows one architecture: where its units are (`discover`), how to gate them
(`install_gates`, returning undo callables), how to shrink a copy of the model to the
kept units (`shrink`), a probe input for verification, and how to describe / rebuild the
architecture for artifacts (`describe` / `build`). It also owns the input side: the front
end that turns waveforms into what the encoder eats (`front_end`), the hidden states a task
head reads (`hidden_states`), and how the encoder is fitted to a clip length (`fit_seconds`).
"""
from __future__ import annotations

import types

import torch
from torch import nn

from ..core.gates import MaskedModel
from ..core.units import UnitGroup
from .front_ends import FrontEnd
from .fused import fused_activation


class Family:
    name = "base"
    #: nominal sequence length used for the attention part of a head's FLOP cost
    nominal_frames = 50

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def discover(self, model: nn.Module, kinds) -> dict[str, UnitGroup]:
        raise NotImplementedError

    def install_gates(self, mm) -> list:
        raise NotImplementedError

    def shrink(self, model: nn.Module, groups: dict[str, UnitGroup], keep: dict) -> nn.Module:
        """Shrink `model` in place to the kept units (values copied) and return it."""
        raise NotImplementedError

    def probe_inputs(self, model: nn.Module, generator: torch.Generator) -> dict:
        raise NotImplementedError

    def run_probe(self, model: nn.Module, inputs: dict):
        """Run the part of `model` that the units live in on a probe input."""
        return model(**inputs)

    def main_output(self, output) -> torch.Tensor:
        """The tensor compared by verification."""
        return output.last_hidden_state

    def describe(self, model: nn.Module) -> dict:
        raise NotImplementedError

    def drop_layers_above(self, model: nn.Module, keep: int) -> nn.Module | None:
        """`model` with only its first `keep` layers, so that its last hidden state equals
        hidden state `keep` of the original (what a head reading that layer needs); None when
        the family cannot do it."""
        return None

    def front_end_modules(self, model: nn.Module) -> list[str]:
        """Paths of the modules that turn the model input into the first layer's input (the
        conv front end): pure functions of the clip when no gate sits in them, so their
        outputs can be cached per clip (`FrontEndCache`). Empty when there are none."""
        return []

    def can_skip_frozen(self, model: nn.Module) -> bool:
        """Can `install_gates` gate a copy shrunk by `shrink` (so frozen units need not be
        computed)? Families whose shrunk modules differ from the originals say no."""
        return True

    def build(self, desc: dict) -> nn.Module:
        raise NotImplementedError

    # --- the input side ------------------------------------------------------------------
    def front_end(self, model: nn.Module) -> FrontEnd:
        """The front end `model` expects: its own `subnet_front_end` (a FrontEnd, or a method
        returning one; an entry point or a model class may set it), else the family's."""
        own = getattr(model, "subnet_front_end", None)
        if isinstance(own, FrontEnd):
            return own
        if callable(own):
            return own()
        return self.default_front_end(model)

    def default_front_end(self, model: nn.Module) -> FrontEnd:
        raise TypeError(f"the {self.name} family has no waveform front end for {type(model).__name__}; "
                        "give the model a `subnet_front_end` (a subnet.families.front_ends.FrontEnd)")

    def hidden_states(self, model: nn.Module, inputs: dict) -> tuple[torch.Tensor, ...]:
        """The (B, frames, width) states a task head reads, first layer to last, for the front
        end's `inputs`; `model` is the backbone or a MaskedModel around it (gates on)."""
        return gated_call(model, self.states, inputs)

    def states(self, backbone: nn.Module, inputs: dict) -> tuple[torch.Tensor, ...]:
        """`hidden_states` on the bare backbone (transformers encoders: every layer's output)."""
        return tuple(backbone(**inputs, output_hidden_states=True).hidden_states)

    def fit_seconds(self, model: nn.Module, seconds: float | None) -> nn.Module:
        """`model` ready for clips of up to `seconds`: families whose encoder takes a fixed
        window return a copy cut to the clip length where that costs less (Whisper, AST)."""
        return model

    def export_inputs(self, inputs: dict) -> dict:
        """The inputs an exported graph takes (default: all of them)."""
        return inputs

    def example_inputs(self, model: nn.Module, batch: int, seconds: float,
                       generator: torch.Generator | None = None) -> dict:
        """The front end's inputs for `batch` random clips of `seconds`."""
        return self.front_end(model).example_inputs(batch, seconds, generator)


def gated_call(model: nn.Module, fn, *args):
    """`fn(backbone, *args)`; for a MaskedModel, on its backbone (or live copy) with the gates on."""
    if isinstance(model, MaskedModel):
        return model.call(fn, *args)
    return fn(model, *args)


def unit_params(model, slices, size) -> float:
    """Parameters one unit of a `size`-unit group owns: its share of every sliced parameter."""
    tensors = dict(model.named_parameters())
    total = 0
    for sl in slices:
        t = tensors.get(sl.param)
        if t is not None:
            total += t.numel() // size
    return float(total)


# --- gate installers ------------------------------------------------------------------
def gate_input_last_dim(module: nn.Module, mm, group: str, block: int = 1):
    """Multiply the last dim of `module`'s input by the gate (units of `block` entries).

    Used on the consumer of the gated units: the FFN's second linear (neurons) or the
    attention output projection (heads, block = head_dim)."""

    def hook(_mod, args):
        x, *rest = args
        g = mm.gate(group).to(x.dtype)
        if block > 1:
            g = g.repeat_interleave(block)
        return (x * g, *rest)

    handle = module.register_forward_pre_hook(hook)
    return handle.remove


def gate_input_channels(module: nn.Module, mm, group: str):
    """Multiply the channel dim (dim 1) of `module`'s input by the gate."""

    def hook(_mod, args):
        x, *rest = args
        g = mm.gate(group).to(x.dtype)
        return (x * g.view(1, -1, *([1] * (x.dim() - 2))), *rest)

    handle = module.register_forward_pre_hook(hook)
    return handle.remove


def gate_output(module: nn.Module, mm, group: str, channel_dim: int):
    """Multiply `module`'s output along `channel_dim` by the gate."""

    def hook(_mod, _args, out):
        g = mm.gate(group).to(out.dtype)
        shape = [1] * out.dim()
        shape[channel_dim] = -1
        return out * g.view(shape)

    handle = module.register_forward_hook(hook)
    return handle.remove


#: transformers activation names -> subnet_kernels.gated_act's
FUSED_ACTS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
              "silu": "silu", "swish": "silu"}


class GatedActivation(nn.Module):
    """gate * act(x): stands in for an FFN's activation while the model is gated. On the CPU
    one fused kernel (subnet_kernels.gated_act), so the neuron gate costs no extra pass; on
    CUDA PyTorch's own ops, which measured faster there (families/fused.py)."""

    def __init__(self, act: str, mm, group: str):
        super().__init__()
        self.act, self.group = act, group
        self._mm = [mm]  # not a submodule

    def forward(self, x):
        gate = self._mm[0].gate(self.group).to(x.dtype)
        if not fused_activation(x):
            from subnet_kernels.reference import activation
            return activation(x, self.act) * gate
        from subnet_kernels import gated_act
        return gated_act(x, None, gate, self.act)


def gate_activation(owner: nn.Module, attr: str, act_name, consumer: nn.Module, mm, group: str):
    """Gate FFN neurons: fuse the gate into `owner.<attr>` (the activation) when it is one
    gated_act supports, else multiply the input of `consumer` (the second linear)."""
    act = FUSED_ACTS.get(act_name) if isinstance(act_name, str) else None
    if act is None:
        return gate_input_last_dim(consumer, mm, group)
    original = getattr(owner, attr)
    setattr(owner, attr, GatedActivation(act, mm, group))

    def undo():
        setattr(owner, attr, original)
    return undo


def override_forward(module: nn.Module, fn):
    """Replace `module.forward` by `fn(module, ...)` on this instance only."""
    module.forward = types.MethodType(fn, module)

    def undo():
        del module.forward

    return undo


# --- shrinking ------------------------------------------------------------------------
def _tensors(model: nn.Module) -> dict[str, tuple[nn.Module, str, torch.Tensor]]:
    out = {}
    for mod_name, mod in model.named_modules():
        prefix = mod_name + "." if mod_name else ""
        for n, p in list(mod._parameters.items()) + list(mod._buffers.items()):
            if p is not None:
                out[prefix + n] = (mod, n, p)
    return out


@torch.no_grad()
def apply_slices(model: nn.Module, groups: dict[str, UnitGroup], keep: dict) -> None:
    """Replace every sliced parameter/buffer by the entries that kept units own.

    All of a model's pruned tensors are built by one `subnet_kernels.gather_compact` launch
    per (device, dtype) from an index table; the results are views into one buffer."""
    from subnet_kernels import gather_compact

    index = plan_indices(groups, keep)
    tensors = _tensors(model)
    batches: dict = {}
    for name, dims in index.items():
        _, _, t = tensors[name]
        plan = [dims.get(d) for d in range(t.dim())]
        batches.setdefault((t.device, t.dtype), []).append((name, t, plan))
    for items in batches.values():
        sources = [t.detach() for _, t, _ in items]
        plans = [(k, [None if i is None else i.to(t.device) for i in plan]) for k, (_, t, plan) in enumerate(items)]
        for (name, _, _), new in zip(items, gather_compact(sources, plans)):
            mod, attr, _ = tensors[name]
            set_tensor(mod, attr, new)


def plan_indices(groups: dict[str, UnitGroup], keep: dict) -> dict[str, dict[int, torch.Tensor]]:
    """tensor name -> {dim: kept indices}: the whole compaction as an index plan."""
    plan: dict[str, dict[int, torch.Tensor]] = {}
    for name, group in groups.items():
        for sl in group.slices:
            dims = plan.setdefault(sl.param, {})
            if sl.dim in dims:
                raise ValueError(f"{sl.param} dim {sl.dim} is sliced by two unit groups")
            dims[sl.dim] = group.indices(keep[name], sl)
    return plan


def set_tensor(mod: nn.Module, attr: str, value: torch.Tensor) -> None:
    if attr in mod._parameters:
        mod._parameters[attr] = nn.Parameter(value, requires_grad=False)
    else:
        mod._buffers[attr] = value


def sync_metadata(model: nn.Module) -> None:
    """Make the size attributes of standard layers agree with their (sliced) weights."""
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            mod.out_features, mod.in_features = mod.weight.shape
        elif isinstance(mod, nn.modules.conv._ConvNd):
            mod.out_channels = mod.weight.shape[0]
            mod.in_channels = mod.weight.shape[1] * mod.groups
        elif isinstance(mod, nn.LayerNorm) and mod.weight is not None:
            mod.normalized_shape = tuple(mod.weight.shape)
        elif isinstance(mod, nn.GroupNorm) and mod.weight is not None:
            per_channel = mod.num_groups == mod.num_channels
            mod.num_channels = mod.weight.shape[0]
            if per_channel:
                mod.num_groups = mod.num_channels
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.num_features = mod.running_mean.shape[0] if mod.running_mean is not None else mod.weight.shape[0]


def module_at(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path) if path else model


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    setattr(module_at(model, parent_path), child, new)


class ZeroPaddedLayerNorm(nn.LayerNorm):
    """LayerNorm over the kept channels, with statistics over the original width.

    The removed channels were exactly zero in the masked model, so their only effect on
    a LayerNorm over channels is on its mean and variance: `n_zero` restores that."""

    def __init__(self, kept: int, n_zero: int, eps: float = 1e-5):
        super().__init__(kept, eps=eps)
        self.n_zero = n_zero

    def forward(self, x):
        if self.n_zero == 0:
            return super().forward(x)
        n = x.shape[-1] + self.n_zero
        mean = x.sum(-1, keepdim=True) / n
        centred = x - mean
        var = (centred.square().sum(-1, keepdim=True) + self.n_zero * mean.square()) / n
        return centred * torch.rsqrt(var + self.eps) * self.weight + self.bias

    def extra_repr(self):
        return super().extra_repr() + f", n_zero={self.n_zero}"


def zero_padded_from(ln: nn.LayerNorm, original_width: int) -> ZeroPaddedLayerNorm:
    kept = ln.weight.shape[0]
    new = ZeroPaddedLayerNorm(kept, original_width - kept, eps=ln.eps)
    new.weight, new.bias = ln.weight, ln.bias
    return new


def reduce_to_bias(model: nn.Module, path: str, out_linear: nn.Linear) -> None:
    """Replace the attention block at `path`, whose heads are all gone, by its output bias."""
    replace_module(model, path, BiasOnly(out_linear.bias, out_linear.out_features))


class BiasOnly(nn.Module):
    """An attention block whose heads are all removed: its output is the output bias."""

    def __init__(self, bias: torch.Tensor | None, width: int, returns_tuple: int = 2):
        super().__init__()
        self.width = width
        self.returns_tuple = returns_tuple
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None

    def forward(self, hidden_states, *args, **kwargs):
        shape = (*hidden_states.shape[:-1], self.width)
        out = (self.bias.expand(shape) if self.bias is not None
               else hidden_states.new_zeros(shape)).to(hidden_states.dtype)
        return (out,) + (None,) * (self.returns_tuple - 1) if self.returns_tuple else out
