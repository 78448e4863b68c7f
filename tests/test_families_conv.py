"""Generic conv-stack family: discovery by dataflow analysis, exact compaction, clear refusals.

`checks.check_model` is the shared battery for every model-class family test (edge-case and
random masks, compact == masked within 1e-4 relative in fp32, analytic parameter count,
same class, all gates on == unmodified model, save/load round trip).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import subnet
from subnet.families.conv_graph import ConvAnalysisError
from subnet.families.conv_stack import ConvStackFamily
from builders import randomise_norms
from checks import check_gradients, check_keep, check_model, random_keep


# --------------------------------------------------------------------------- models
def seq1d():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(3, 8, 5, stride=2), nn.BatchNorm1d(8), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(8, 12, 3, padding=1), nn.GELU(), nn.Dropout(0.1),
        nn.Conv1d(12, 12, 3, groups=12), nn.BatchNorm1d(12), nn.LeakyReLU(0.1),  # depthwise
        nn.Conv1d(12, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool1d(4), nn.Flatten(), nn.Linear(40, 7))


def seq2d():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(6, 8, 3), nn.ReLU(), nn.AvgPool2d(2)),
        nn.Flatten(), nn.Linear(8 * 15 * 15, 5))


class PerChannelLayers(nn.Module):
    """GroupNorm(C groups), PReLU(C), InstanceNorm, functional pad/pool, a 2-branch sum."""

    subnet_probe_shape = (2, 50)

    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(2, 6, 3)
        self.gn = nn.GroupNorm(6, 6)
        self.act = nn.PReLU(6)
        self.b = nn.Conv1d(6, 5, 3)
        self.inorm = nn.InstanceNorm1d(5, affine=True)
        self.c = nn.Conv1d(5, 4, 1)
        self.out = nn.Linear(4 * 3, 3)

    def forward(self, x):
        x = F.max_pool1d(F.pad(self.act(self.gn(self.a(x))), (1, 1)), 2)
        x = self.inorm(self.b(x))
        x = torch.relu(x) * 0.5 + F.avg_pool1d(x, 3, 1, 1)
        x = F.adaptive_max_pool1d(self.c(x), 3)
        return self.out(x.transpose(1, 2).reshape(x.shape[0], -1))  # time-major columns


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("make,shape", [(seq1d, (3, 3, 71)), (seq2d, (2, 1, 64, 64)),
                                        (PerChannelLayers, (3, 2, 50))])
def test_generic_stacks(make, shape, tmp_path):
    model = randomise_norms(make())
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    mm = check_model(model, x, tmp_path if isinstance(model, nn.Sequential) else None)
    assert isinstance(mm.family, ConvStackFamily)


@pytest.mark.parametrize("make,shape", [(seq1d, (3, 3, 71)), (PerChannelLayers, (3, 2, 50))])
def test_gates_get_gradients(make, shape):
    check_gradients(randomise_norms(make()), torch.randn(*shape))


def test_discovery_of_seq1d():
    mm = subnet.attach_masks(seq1d())
    # the depthwise conv is part of conv 4's channels, not a unit of its own
    assert list(mm.groups) == ["0", "4", "10"]
    slices = {(s.param, s.dim, s.block, s.sections) for s in mm.groups["4"].slices}
    assert {("7.weight", 0, 1, 1), ("7.bias", 0, 1, 1), ("8.running_var", 0, 1, 1),
            ("10.weight", 1, 1, 1)} <= slices
    assert ("14.weight", 1, 4, 1) in {(s.param, s.dim, s.block, s.sections) for s in mm.groups["10"].slices}
    # analytic parameter count of a removed channel of conv 0: 3*5 + 1 weights/bias, BN 2, conv 4 12*3
    assert mm.groups["0"].params_per_unit == 3 * 5 + 1 + 2 + 12 * 3
    assert all(g.flops_per_unit > 0 for g in mm.groups.values())


def test_depthwise_conv_shrinks_its_groups():
    model = seq1d().eval()
    mm = subnet.attach_masks(model)
    keep = random_keep(mm, seed=2)
    small = subnet.compact(mm, keep)
    kept = int(keep["4"].sum())
    assert small[7].groups == small[7].in_channels == small[7].out_channels == kept
    assert small[8].num_features == kept and small[8].running_mean.shape == (kept,)


def test_conv_feeding_the_output_is_not_a_unit():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Conv1d(4, 6, 3), nn.BatchNorm1d(6)).eval()
    mm = subnet.attach_masks(model)
    assert list(mm.groups) == ["0"]
    keep = random_keep(mm, seed=1)
    mm.detach_backbone()
    check_keep(model, torch.randn(2, 2, 40), keep)


# --------------------------------------------------------------------------- refusals
class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(2, 4, 3, padding=1), nn.Conv1d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv1(x)
        return self.head((self.conv2(F.relu(y)) + y).mean(-1))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv1d(2, 4, 3), nn.Conv1d(2, 4, 3), nn.Conv1d(8, 3, 1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], dim=1))


class ChannelLayerNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.proj = nn.Conv1d(2, 4, 3), nn.LayerNorm(4), nn.Linear(4, 3)

    def forward(self, x):
        return self.proj(self.norm(self.conv(x).transpose(1, 2)))


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x.mean(-1))


class CustomHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv1d(2, 4, 3), Head()

    def forward(self, x):
        return self.head(self.conv(x))


class ChannelMean(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv1d(2, 4, 3), nn.Linear(62, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean(1))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv1d(2, 4, 3), nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:
            y = -y
        return self.fc(y.mean(-1))


class ConvThenMHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.att = nn.Conv1d(2, 4, 3), nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, x):
        y = self.conv(x).transpose(1, 2)
        return self.att(y, y, y)[0]


@pytest.mark.parametrize("model,match", [
    (Residual(), r"cannot place call_function 'add'.*conv1: it combines the channels with another tensor"),
    (Concat(), r"cannot place call_function 'cat'.*conv a"),
    (ChannelLayerNorm(), r"cannot place call_module 'norm'.*LayerNorm is not a channel-wise layer"),
    (CustomHead(), r"cannot place call_module 'head'.*Head is not a channel-wise layer"),
    (ChannelMean(), r"'mean'.*it reduces over the channel dim"),
    (DataDependent(), r"cannot trace DataDependent with torch.fx"),
    (ConvThenMHA(), r"module att \(MultiheadAttention\) is attention"),
    (nn.Sequential(nn.Conv1d(4, 4, 3, groups=2), nn.Conv1d(4, 2, 1)), r"module 0 .* grouped conv"),
])
def test_unplaceable_models_are_refused_by_name(model, match):
    with pytest.raises(ConvAnalysisError, match=match):
        subnet.attach_masks(model.eval())


def test_unregistered_class_cannot_be_loaded(tmp_path):
    model = PerChannelLayers().eval()
    mm = subnet.attach_masks(model)
    subnet.save(subnet.compact(mm, random_keep(mm)), tmp_path)
    with pytest.raises(ValueError, match="'PerChannelLayers' is not registered.*register_model"):
        subnet.load(tmp_path)


def test_mask_only_artifact(tmp_path):
    model = randomise_norms(seq1d()).eval()
    mm = subnet.attach_masks(model)
    keep = random_keep(mm, seed=5)
    small = subnet.compact(mm, keep)
    mm.set_keep(keep)
    path = subnet.save_masks(mm, tmp_path / "m")
    mm.detach_backbone()
    rebuilt = subnet.load_masks(path, model)
    assert small.state_dict().keys() == rebuilt.state_dict().keys()
    assert all(torch.equal(v, rebuilt.state_dict()[k]) for k, v in small.state_dict().items())
