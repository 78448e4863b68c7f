"""compact(): same class, fewer units, output == masked output, analytic parameter count."""
from __future__ import annotations

import pytest
import torch

import subnet
from builders import build
from checks import TOL, check_skip_frozen, edge_cases, inputs_for, masked_output, random_keep, run

def check_compact(kind, model, keep):
    mm = subnet.attach_masks(model)
    small = subnet.compact(mm, keep)
    assert type(small) is type(model)
    inputs = inputs_for(kind, model, seed=7)
    mm.set_keep(keep)
    with torch.no_grad():
        ref = masked_output(kind, mm, inputs)
        out = run(kind, small, inputs)
    err = (out - ref).abs().max().item()
    assert err <= TOL * ref.abs().max().item(), err
    n_small = sum(p.numel() for p in small.parameters())
    assert n_small == subnet.count_kept_params(mm.backbone, mm.groups, keep)
    if kind != "whisper-full":  # (its masked output is read from inside the full model)
        check_skip_frozen(mm, lambda m: run(kind, m, inputs), ref)
    return mm, small


def test_every_edge_case(small_kind):
    model = build(small_kind)
    mm = subnet.attach_masks(model)
    cases = edge_cases(mm)
    mm.detach_backbone()
    for name, keep in cases.items():
        mm2, small = check_compact(small_kind, model, keep)
        mm2.detach_backbone()
        if name == "all-kept":
            assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in model.parameters())


def test_all_gates_on_equals_unmodified_model(small_kind):
    model = build(small_kind).requires_grad_(False)  # as attach_masks leaves it
    inputs = inputs_for(small_kind, model)
    with torch.no_grad():
        ref = run(small_kind, model, inputs)
        mm = subnet.attach_masks(model)
        out = masked_output(small_kind, mm, inputs)
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    mm.detach_backbone()
    with torch.no_grad():  # gates removed: the model is its old self again
        assert torch.equal(run(small_kind, model, inputs), ref)


def test_param_count_closed_form_torch():
    model = build("torch-batch")
    mm = subnet.attach_masks(model, kinds=("head", "ffn"))
    keep = random_keep(mm, seed=9)
    small = subnet.compact(mm, keep)
    d, dh = 40, 10
    removed = 0
    for name, k in keep.items():
        gone = int((~k).sum())
        removed += gone * ((4 * d * dh + 3 * dh) if name.endswith("heads") else (2 * d + 1))
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in model.parameters()) - removed


@pytest.mark.parametrize("kind", ["wav2vec2", "wavlm", "whisper"])
def test_compact_model_keeps_library_features(kind):
    model = build(kind)
    mm = subnet.attach_masks(model)
    small = subnet.compact(mm, random_keep(mm, seed=11))
    inputs = inputs_for(kind, model)
    out = small(**inputs, output_hidden_states=True)
    n_layers = len(small.encoder.layers) if kind != "whisper" else len(small.layers)
    assert len(out.hidden_states) == n_layers + 1


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wav2vec2", "wavlm", "data2vec", "hubert", "whisper", "torch-batch"])
def test_base_size_random_masks(kind):
    model = build(kind, size="base")
    mm = subnet.attach_masks(model)
    keep = random_keep(mm, seed=13)
    mm.detach_backbone()
    check_compact(kind, model, keep)


def test_verification_catches_a_wrong_compaction(monkeypatch):
    model = build("wav2vec2")
    mm = subnet.attach_masks(model)
    family = mm.family
    original = family.shrink

    def broken(m, groups, keep):
        m = original(m, groups, keep)
        with torch.no_grad():
            m.encoder.layers[0].feed_forward.output_dense.bias[0] += 0.5  # one channel: a LayerNorm would cancel a shift of all
        return m

    monkeypatch.setattr(family, "shrink", broken)
    with pytest.raises(subnet.CompactionError, match="differs"):
        subnet.compact(mm, random_keep(mm))


def test_bad_keep_masks_are_refused():
    mm = subnet.attach_masks(build("wav2vec2"))
    name = next(n for n, g in mm.groups.items() if g.kind == "conv")
    with pytest.raises(ValueError, match="at least 1"):
        mm.set_keep({name: torch.zeros(mm.groups[name].size, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        mm.set_keep({name: torch.ones(3, dtype=torch.bool)})
    with pytest.raises(KeyError, match="unknown unit groups"):
        mm.set_keep({"nope": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(TypeError, match="no family adapter"):
        subnet.attach_masks(torch.nn.Linear(3, 3))


def test_aligned_keep_rounds_conv_and_ffn_groups_by_logit():
    from subnet.core.compact import aligned_keep
    model = build("whisper")
    mm = subnet.attach_masks(model)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in mm.logits:
            p.copy_(torch.randn(p.shape, generator=g))
    before = mm.keep()
    keep = aligned_keep(mm, 8)
    for name, group in mm.groups.items():
        k, k0 = int(keep[name].sum()), int(before[name].sum())
        if group.kind == "head":
            assert torch.equal(keep[name], before[name])
            continue
        assert k % 8 == 0 and abs(k - k0) <= 4
        logits = mm.logit(name).detach()
        if 0 < k < group.size:  # the kept units are the best by logit
            assert logits[keep[name]].min() >= logits[~keep[name]].max()
    mm.set_keep(keep)
    small = subnet.compact(mm)  # still exact
    assert small.conv1.out_channels % 8 == 0
