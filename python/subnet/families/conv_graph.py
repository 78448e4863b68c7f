"""Dataflow analysis of conv stacks: where each conv's output channels go.

The model is traced with torch.fx (modules without a conv inside are leaves) and run
once on a probe input. For every conv, the *region* of its channels is the set of
nodes reached from its output through channel-wise operations (BatchNorm, activations,
dropout, pooling, padding, depthwise convs, reductions over other dims, layout ops,
sums of tensors of the same region). The region ends at *consumers*: convs (their
input channels) and Linears (their input columns). Removing channel c removes it from
the conv, from every per-channel parameter in the region and from the consumers; the
gate multiplies channel c where the consumers read it, so compaction is exact.

Which consumer columns a channel owns is not guessed: the region is re-run on a *tag*
tensor holding each entry's channel index, through the same layout ops (flatten,
permute, reshape, ...); what arrives at a Linear is the ownership pattern.

Anything else that reads a region (a residual add with another conv, a concat, a
LayerNorm over channels, a custom module) stops the analysis with a
`ConvAnalysisError` naming that node: never a silent partial mask. A conv whose
channels reach the model's output is the output width, not a unit (like a residual
stream); it is left whole.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from ..core.units import Slice

CONVS = (nn.Conv1d, nn.Conv2d)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
    nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
SPATIAL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.LPPool1d, nn.LPPool2d,
    nn.ConstantPad1d, nn.ConstantPad2d, nn.ZeroPad1d, nn.ZeroPad2d, nn.ReflectionPad1d,
    nn.ReflectionPad2d, nn.ReplicationPad1d, nn.ReplicationPad2d, nn.Upsample)
LAYOUT_MODULES = (nn.Flatten, nn.Unflatten)
ELEMENTWISE_FNS = {
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "gelu",
    "silu", "mish", "tanh", "sigmoid", "hardtanh", "hardswish", "hardsigmoid", "softplus",
    "dropout", "dropout1d", "dropout2d", "abs", "neg", "exp", "log", "log1p", "log10", "square",
    "sqrt", "rsqrt", "clamp", "clamp_", "clip", "float", "to", "type_as", "detach", "clone",
    "contiguous", "pow"}
BINARY_FNS = {"add", "sub", "mul", "truediv", "div", "iadd", "isub", "imul", "itruediv",
              "add_", "sub_", "mul_", "div_", "maximum", "minimum"}
SPATIAL_FNS = {"max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d",
               "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d", "lp_pool1d",
               "lp_pool2d", "pad", "interpolate", "upsample"}
REDUCE_FNS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "logsumexp"}
LAYOUT_FNS = {"flatten", "reshape", "view", "permute", "transpose", "squeeze", "unsqueeze", "t",
              "getitem", "unflatten", "movedim", "swapaxes"}
METADATA_FNS = {"size", "dim", "numel", "getattr", "shape"}


class ConvAnalysisError(ValueError):
    """The conv-stack analysis met something it cannot place."""


@dataclass
class ChannelPlan:
    """The channels of one conv: every slice they own and where their gates go."""

    source: str  # module path of the conv
    size: int
    slices: list[Slice] = field(default_factory=list)
    flops: float = 0.0  # per probe item (batch 1)
    reaches_output: bool = False
    depthwise: list[str] = field(default_factory=list)  # depthwise convs inside the region


class _Tracer(fx.Tracer):
    """Leaves: convs and every module without a conv inside (front ends, heads)."""

    def is_leaf_module(self, m, qualname):
        if isinstance(m, CONVS):
            return True
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        return not any(isinstance(s, CONVS) for s in m.modules())


class _Recorder(fx.Interpreter):
    def __init__(self, gm):
        super().__init__(gm)
        self.values = {}

    def run_node(self, n):
        v = super().run_node(n)
        self.values[n] = v
        return v


def trace(model: nn.Module) -> fx.GraphModule:
    """The model's forward as an fx graph (arguments with defaults fixed to them)."""
    sig = inspect.signature(model.forward)
    concrete = {n: p.default for n, p in sig.parameters.items()
                if p.default is not inspect.Parameter.empty}
    tracer = _Tracer()
    try:
        graph = tracer.trace(model, concrete_args=concrete or None)
    except Exception as e:  # fx raises TraceError, TypeError, ... on dynamic control flow
        raise ConvAnalysisError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}: {e}); the generic "
            "conv family needs a forward without data-dependent control flow") from None
    return fx.GraphModule(tracer.root, graph)


def _name(node: fx.Node) -> str:
    t = node.target
    if node.op == "call_module":
        return str(t)
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _canonical(size: int, shape) -> torch.Tensor:
    """Tag tensor of `shape` whose channel (dim 1) entries hold their channel index."""
    view = [1] * len(shape)
    view[1] = size
    return torch.arange(size, dtype=torch.float64).view(view).expand(shape)


def _is_canonical(tag, size) -> bool:
    return (isinstance(tag, torch.Tensor) and tag.dim() >= 2 and tag.shape[1] == size
            and torch.equal(tag, _canonical(size, tag.shape)))


def _is_depthwise(conv) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _conv_flops(conv, out: torch.Tensor, per_out_channel: bool) -> float:
    """FLOPs of one output channel (or, for a consumer, of one input channel)."""
    positions = out[0, 0].numel()
    k = conv.weight[0, 0].numel()
    if per_out_channel:
        return 2.0 * positions * k * conv.weight.shape[1]
    return 2.0 * positions * k * conv.out_channels


class Analysis:
    """Trace `model`, run it on `probe` and plan the channels of every conv."""

    def __init__(self, model: nn.Module, probe: torch.Tensor):
        self.model = model
        self._check_supported()
        self.gm = trace(model)
        rec = _Recorder(self.gm)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                rec.run(probe)
        except Exception as e:
            raise ConvAnalysisError(f"{type(model).__name__} does not run on a probe of shape "
                                    f"{tuple(probe.shape)} ({type(e).__name__}: {e})") from None
        finally:
            model.train(was_training)
        self.values = rec.values
        self.modules = dict(self.gm.named_modules())

    def _check_supported(self):
        for name, m in self.model.named_modules():
            cls = type(m).__name__
            if isinstance(m, nn.MultiheadAttention) or cls.endswith("Attention") or "Transformer" in cls:
                raise ConvAnalysisError(
                    f"module {name or '<root>'} ({cls}) is attention: the generic conv family gates conv channels "
                    "only and would leave its heads ungated; use a family adapter for this model")
            if isinstance(m, CONVS) and m.groups > 1 and not _is_depthwise(m):
                raise ConvAnalysisError(f"module {name} ({cls}) is a grouped conv (groups={m.groups}); "
                                        "only plain and depthwise convs are supported")

    def conv_nodes(self) -> list[fx.Node]:
        out, seen = [], set()
        for n in self.gm.graph.nodes:
            if n.op == "call_module" and isinstance(self.modules[n.target], CONVS):
                if n.target in seen:
                    raise ConvAnalysisError(f"module {n.target} is called more than once")
                seen.add(n.target)
                if not _is_depthwise(self.modules[n.target]):
                    out.append(n)
        return out

    def plans(self) -> list[ChannelPlan]:
        return [self.plan(n) for n in self.conv_nodes()]

    # --- one conv -------------------------------------------------------------------------
    def plan(self, src: fx.Node) -> ChannelPlan:
        conv = self.modules[src.target]
        size = conv.out_channels
        plan = ChannelPlan(src.target, size)
        plan.slices.append(Slice(f"{src.target}.weight", 0))
        if conv.bias is not None:
            plan.slices.append(Slice(f"{src.target}.bias", 0))
        plan.flops += _conv_flops(conv, self.values[src], per_out_channel=True)
        tags = {src: _canonical(size, self.values[src].shape)}
        for node in self.gm.graph.nodes:
            if node in tags or not any(a in tags for a in node.all_input_nodes):
                continue
            self._step(node, tags, plan)
        # one slice per tensor dim (a module in the region twice would be sliced twice)
        seen = set()
        for sl in plan.slices:
            if (sl.param, sl.dim) in seen:
                raise ConvAnalysisError(f"{sl.param} is reached twice by the channels of {src.target}")
            seen.add((sl.param, sl.dim))
        return plan

    def _fail(self, node, plan, why):
        raise ConvAnalysisError(
            f"cannot place {node.op} {_name(node)!r} (fx node {node.name}), which reads the channels of "
            f"conv {plan.source}: {why}")

    def _step(self, node, tags, plan):
        size = plan.size
        if node.op == "output":
            plan.reaches_output = True
            return
        value = self.values[node]
        arg0 = node.args[0] if node.args else None
        if node.op == "call_module":
            mod = self.modules[node.target]
            if arg0 not in tags or any(a in tags for a in node.all_input_nodes if a is not arg0):
                self._fail(node, plan, "the region is not its first and only tensor input")
            tag = tags[arg0]
            if isinstance(mod, CONVS) and not _is_depthwise(mod):
                if not _is_canonical(tag, size) or mod.in_channels != size:
                    self._fail(node, plan, "its input channels are not the conv's channels in order")
                plan.slices.append(Slice(f"{node.target}.weight", 1))
                plan.flops += _conv_flops(mod, value, per_out_channel=False)
                return
            if isinstance(mod, nn.Linear):
                plan.slices.append(self._linear_slice(node, tag, plan))
                rows = value[..., 0].numel() / value.shape[0]
                plan.flops += 2.0 * mod.out_features * rows * mod.in_features / size
                return
            if isinstance(mod, CONVS):  # depthwise: one filter per channel
                self._need_canonical(node, tag, plan)
                plan.slices += self._own(node.target, mod, ("weight", "bias"))
                plan.depthwise.append(node.target)
                plan.flops += 2.0 * value[0, 0].numel() * mod.weight[0].numel()
                tags[node] = _canonical(size, value.shape)
            elif isinstance(mod, NORMS) or (isinstance(mod, nn.GroupNorm) and mod.num_groups == mod.num_channels):
                self._need_canonical(node, tag, plan)
                plan.slices += self._own(node.target, mod, ("weight", "bias", "running_mean", "running_var"))
                tags[node] = tag
            elif isinstance(mod, nn.PReLU):
                if mod.num_parameters > 1:
                    self._need_canonical(node, tag, plan)
                    plan.slices += self._own(node.target, mod, ("weight",))
                tags[node] = tag
            elif isinstance(mod, ELEMENTWISE_MODULES):
                tags[node] = tag
            elif isinstance(mod, SPATIAL_MODULES):
                self._need_canonical(node, tag, plan)
                tags[node] = _canonical(size, value.shape)
            elif isinstance(mod, LAYOUT_MODULES):
                tags[node] = mod(tag)
            else:
                self._fail(node, plan, f"{type(mod).__name__} is not a channel-wise layer, a conv or a Linear")
        elif node.op in ("call_function", "call_method"):
            tag = self._function(node, tags, plan)
            if tag is None:  # a size or a dim: plain numbers, not channel data
                return
            tags[node] = tag
        else:
            self._fail(node, plan, "unsupported graph node")
        self._check_shape(node, tags, plan)

    def _check_shape(self, node, tags, plan):
        tag, value = tags.get(node), self.values[node]
        if tag is None:
            return
        vs = value if isinstance(value, (tuple, list)) else (value,)
        ts = tag if isinstance(tag, (tuple, list)) else (tag,)
        for v, t in zip(vs, ts):
            if isinstance(v, torch.Tensor) and (not isinstance(t, torch.Tensor) or t.shape != v.shape):
                self._fail(node, plan, "its output layout could not be followed")

    def _need_canonical(self, node, tag, plan):
        if not _is_canonical(tag, plan.size):
            self._fail(node, plan, "it works per channel but its input's dim 1 is not the channel dim")

    def _own(self, path, mod, attrs):
        return [Slice(f"{path}.{a}", 0) for a in attrs if getattr(mod, a, None) is not None]

    def _linear_slice(self, node, tag, plan) -> Slice:
        """The Linear's input columns, as `block` columns per channel repeated `sections` times."""
        size, width = plan.size, tag.shape[-1]
        flat = tag.reshape(-1, width)
        if not torch.equal(flat, flat[:1].expand_as(flat)):
            self._fail(node, plan, "its input mixes channels across rows")
        cols = flat[0].long()
        block = int((cols == cols[0]).long().cumprod(0).sum())
        sections = width // (size * block) if size * block else 0
        expected = (torch.arange(width) // block) % size
        if sections * size * block != width or not torch.equal(cols, expected):
            self._fail(node, plan, "its input columns are not a regular pattern of the channels")
        return Slice(f"{node.target}.weight", 1, block, sections)

    def _arg(self, a, tags):
        if isinstance(a, fx.Node):
            return tags[a] if a in tags else self.values[a]
        if isinstance(a, (tuple, list)):
            return type(a)(self._arg(x, tags) for x in a)
        return a

    def _function(self, node, tags, plan):
        name = _name(node)
        size = plan.size
        tensor_args = [a for a in node.all_input_nodes if isinstance(self.values.get(a), torch.Tensor)
                       or a in tags]
        region_args = [a for a in node.all_input_nodes if a in tags]
        if name in METADATA_FNS:
            return None  # sizes and dims: plain numbers, not channel data
        if name in BINARY_FNS or (name in ("max", "min") and len(node.args) > 1
                                  and isinstance(node.args[1], fx.Node)):
            if len(tensor_args) != len(region_args):
                self._fail(node, plan, "it combines the channels with another tensor (a residual "
                                       "or skip connection from elsewhere?)")
            ts = [tags[a] for a in region_args]
            if any(t.shape != ts[0].shape or not torch.equal(t, ts[0]) for t in ts[1:]):
                self._fail(node, plan, "its operands hold the channels in different layouts")
            return ts[0]
        if len(region_args) != len(tensor_args) or len(region_args) != 1 or node.args[0] not in tags:
            self._fail(node, plan, "it reads the channels together with another tensor")
        tag = tags[node.args[0]]
        if name in ELEMENTWISE_FNS:
            return tag
        if name in SPATIAL_FNS:
            self._need_canonical(node, tag, plan)
            if name == "pad":
                pad = node.args[1] if len(node.args) > 1 else node.kwargs["pad"]
                if len(pad) > 2 * (tag.dim() - 2):
                    self._fail(node, plan, "it pads the channel dim")
            return _canonical(size, self.values[node].shape)
        if name in REDUCE_FNS:
            return self._reduce(node, tag, plan)
        if name in LAYOUT_FNS:
            args = self._arg(node.args, tags)
            kwargs = self._arg(dict(node.kwargs), tags)
            if node.op == "call_method":
                return getattr(args[0], node.target)(*args[1:], **kwargs)
            return node.target(*args, **kwargs)
        self._fail(node, plan, "not a channel-wise operation")

    def _reduce(self, node, tag, plan):
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if dim is None or isinstance(dim, fx.Node):
            self._fail(node, plan, "it reduces over every dim, channels included")
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        dims = [d % tag.dim() for d in ((dim,) if isinstance(dim, int) else dim)]
        hi, lo = tag.amax(dim=dims, keepdim=keepdim), tag.amin(dim=dims, keepdim=keepdim)
        if not torch.equal(hi, lo):
            self._fail(node, plan, "it reduces over the channel dim")
        if _name(node) in ("max", "min") and isinstance(dim, int):
            return (hi, hi)  # (values, indices)
        return hi

