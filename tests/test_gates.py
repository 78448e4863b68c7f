"""Gates: straight-through rounding; dL/dg = sum(dL/dy * ungated output) for kept and dead units."""
from __future__ import annotations

import pytest
import torch

import subnet
from subnet.core.gates import straight_through
from builders import build
from checks import inputs_for, masked_output, random_keep


def test_straight_through_values_and_gradient():
    m = torch.randn(257, dtype=torch.float64, requires_grad=True)
    g = straight_through(m)
    assert torch.equal(g.detach(), (m.detach() > 0).double())
    g.backward(torch.ones_like(g))
    s = torch.sigmoid(m.detach())
    assert torch.allclose(m.grad, s * (1 - s))


def test_gates_start_kept():
    mm = subnet.attach_masks(build("wav2vec2"))
    assert all(k.all() for k in mm.keep().values())
    assert all(not p.requires_grad for p in mm.backbone.parameters())
    assert all(p.requires_grad for p in mm.parameters() if p in set(mm.logits))


@pytest.mark.parametrize("kind", ["wav2vec2-layernorm", "wavlm", "whisper", "torch-batch"])
def test_gate_gradient_matches_finite_differences(kind, monkeypatch):
    """For every group, kept and dead units: autograd dL/dg == central difference in float64."""
    model = build(kind).double()
    mm = subnet.attach_masks(model).double()
    mm.set_keep(random_keep(mm, seed=3))
    inputs = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs_for(kind, model).items()}
    weight = torch.randn_like(masked_output(kind, mm, inputs), dtype=torch.float64)

    values = {n: g.detach().clone() for n, g in mm.gate_values().items()}
    leaves = {n: v.clone().requires_grad_(True) for n, v in values.items()}
    monkeypatch.setattr(mm, "gate_values", lambda: leaves)

    def loss():
        return (masked_output(kind, mm, inputs) * weight).sum()

    loss().backward()
    rng = torch.Generator().manual_seed(0)
    checked = {"dead": 0, "kept": 0}
    for name, leaf in leaves.items():
        for unit in torch.randperm(leaf.numel(), generator=rng)[:2].tolist():
            eps = 1e-4
            with torch.no_grad():
                leaf[unit] += eps
                up = loss()
                leaf[unit] -= 2 * eps
                down = loss()
                leaf[unit] += eps
            fd = (up - down) / (2 * eps)
            assert torch.isclose(leaf.grad[unit], fd, rtol=1e-5, atol=1e-7), (name, unit)
            checked["kept" if values[name][unit] > 0 else "dead"] += 1
    assert checked["dead"] > 0 and checked["kept"] > 0


def test_logit_gradient_is_sigmoid_prime_times_gate_gradient(monkeypatch):
    model = build("torch-batch").double()
    mm = subnet.attach_masks(model).double()
    mm.set_keep(random_keep(mm, seed=5))
    inputs = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs_for("torch-batch", model).items()}
    out = mm(**inputs)
    out.square().sum().backward()
    logit_grads = {n: mm.logit(n).grad.clone() for n in mm.groups}
    for p in mm.logits:
        p.grad = None
    leaves = {n: v.detach().clone().requires_grad_(True) for n, v in mm.gate_values().items()}
    real = mm.gate_values
    monkeypatch.setattr(mm, "gate_values", lambda: leaves)
    mm(**inputs).square().sum().backward()
    monkeypatch.setattr(mm, "gate_values", real)
    for n in mm.groups:
        s = torch.sigmoid(mm.logit(n).detach())
        assert torch.allclose(logit_grads[n], s * (1 - s) * leaves[n].grad)
        dead = ~mm.keep()[n]
        if dead.any():  # dead units still get a gradient
            assert logit_grads[n][dead].abs().sum() > 0


def test_frozen_dead_units_get_no_gradient():
    mm = subnet.attach_masks(build("torch-batch"))
    mm.set_keep(random_keep(mm, seed=6))
    keep_before = mm.keep()
    assert mm.freeze_dead() == sum(int((~k).sum()) for k in keep_before.values())
    inputs = inputs_for("torch-batch", mm.backbone)
    mm(**inputs).square().sum().backward()
    for n, k in keep_before.items():
        grad = mm.logit(n).grad  # None: every unit of the group is frozen, none is computed
        grad = torch.zeros_like(mm.logit(n)) if grad is None else grad
        assert torch.all(grad[~k] == 0)
        if k.any():
            assert grad[k].abs().sum() > 0
    with torch.no_grad():
        for p in mm.logits:
            p.fill_(5.0)  # a frozen unit stays dead whatever its logit
    assert all(torch.equal(mm.keep()[n], keep_before[n]) for n in keep_before)


def test_gate_path_policy(monkeypatch):
    """FFN gates run fused on the CPU only, head gates only when a backend is forced
    (families/fused.py; a meta tensor stands in for a CUDA one)."""
    from subnet.families.fused import fused_activation, fused_attention
    cpu, other = torch.empty(1), torch.empty(1, device="meta")
    monkeypatch.delenv("SUBNET_KERNEL_BACKEND", raising=False)
    assert fused_activation(cpu) and not fused_activation(other)
    assert not fused_attention(cpu) and not fused_attention(other)
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", "reference")
    assert fused_activation(other) and fused_attention(cpu) and fused_attention(other)


@pytest.mark.parametrize("kind", ["whisper", "wav2vec2"])
def test_fused_and_plain_gate_paths_agree(kind, monkeypatch):
    """The plain-PyTorch gates (the CUDA default) give the outputs and gate-logit gradients of
    the fused ops (the CPU default, and every op forced onto the reference backend), float64."""
    model = build(kind).double()
    mm = subnet.attach_masks(model).double()
    mm.set_keep(random_keep(mm, seed=5))
    with torch.no_grad():
        for p in mm.logits:
            p.mul_(torch.rand(p.shape, dtype=p.dtype) + 0.5)  # distinct magnitudes, same signs
    inputs = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs_for(kind, model).items()}
    weight = torch.randn_like(masked_output(kind, mm, inputs))

    def run_path():
        mm.zero_grad(set_to_none=True)
        out = masked_output(kind, mm, inputs)
        (out * weight).sum().backward()
        return out.detach(), [p.grad.clone() for p in mm.logits]

    monkeypatch.delenv("SUBNET_KERNEL_BACKEND", raising=False)
    cpu_default = run_path()
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", "reference")
    forced = run_path()
    monkeypatch.delenv("SUBNET_KERNEL_BACKEND")
    monkeypatch.setattr("subnet.families.base.fused_activation", lambda x: False)
    plain = run_path()
    for other in (cpu_default, forced):
        torch.testing.assert_close(plain[0], other[0], rtol=1e-9, atol=1e-9)
        for a, b in zip(plain[1], other[1]):
            assert a.abs().max() > 0
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_shrunk_copy_is_rebuilt_only_once_enough_units_freeze():
    """While the units frozen since the shrunk copy was built cost under REBUILD_STALE of it, the
    same copy runs (they are computed and gated to 0); past that, or when a unit unfreezes, it
    is rebuilt. Either way the output and the gate gradients are the masked model's (float64)."""
    import copy
    from subnet.core.gates import REBUILD_STALE
    model = build("whisper").double()
    pristine = copy.deepcopy(model)
    ref_mm = subnet.attach_masks(copy.deepcopy(pristine)).double()  # every unit computed, gated
    ref_mm.skip_frozen = False
    mm = subnet.attach_masks(model).double()
    inputs = {k: v.double() for k, v in inputs_for("whisper", model, seed=4).items()}
    weight = torch.randn_like(masked_output("whisper", mm, inputs))
    ffn = next(i for i, g in enumerate(mm.groups.values()) if g.kind == "ffn")
    frozen = getattr(mm, f"frozen_{ffn}")

    def step(m):
        m.zero_grad(set_to_none=True)
        out = masked_output("whisper", m, inputs)
        (out * weight).sum().backward()
        return out.detach(), torch.cat([torch.zeros_like(p) if p.grad is None else p.grad for p in m.logits])

    def check():
        getattr(ref_mm, f"frozen_{ffn}").copy_(frozen)
        (ref, ref_grad), (out, grad) = step(ref_mm), step(mm)
        assert (out - ref).abs().max() <= 1e-10 * ref.abs().max()
        assert (grad - ref_grad).abs().max() <= 1e-10 * ref_grad.abs().max()
        return mm.runner()

    frozen[:2] = True
    first = check()
    assert first is not mm.backbone
    # the copy shares the backbone's unsliced parameters (frozen: never written) instead of
    # copying every weight, and building it wrote into none of them
    own = {id(p) for p in first.parameters()}
    assert [n for n, p in mm.backbone.named_parameters() if "layer_norm" in n and id(p) not in own] == []
    assert all(torch.equal(p, q) for p, q in zip(mm.backbone.parameters(), pristine.parameters()))
    frozen[2] = True  # one neuron more: far below REBUILD_STALE of the copy
    assert check() is first
    # a run resumed here runs the same copy (not one shrunk to the current frozen set): the
    # same shapes, so bit-identical results
    resumed = subnet.attach_masks(copy.deepcopy(pristine)).double()
    getattr(resumed, f"frozen_{ffn}").copy_(frozen)
    resumed.restore_live_build(mm.live_build())
    assert sum(p.numel() for p in resumed.runner().parameters()) == sum(p.numel() for p in first.parameters())
    assert torch.equal(masked_output("whisper", resumed, inputs), masked_output("whisper", mm, inputs))
    resumed.restore_live_build(None)  # without it: a copy without the newly frozen neuron
    assert sum(p.numel() for p in resumed.runner().parameters()) < sum(p.numel() for p in first.parameters())
    computed = sum((g.params_per_unit or 1.0) * g.size for g in mm.groups.values())
    per_unit = mm.groups[mm._names[ffn]].params_per_unit
    frozen[: int(REBUILD_STALE * computed / per_unit) + 4] = True  # past it: rebuilt, smaller
    second = check()
    assert second is not first
    assert sum(p.numel() for p in second.parameters()) < sum(p.numel() for p in first.parameters())
    frozen[0] = False  # a unit the copy lacks unfreezes: rebuilt with it
    third = check()
    assert third is not second
    mm.set_keep({n: torch.ones(g.size, dtype=torch.bool) for n, g in mm.groups.items()})
    assert mm.runner() is mm.backbone
