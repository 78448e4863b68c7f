"""The checks the test modules share (no test module imports another: tests/test_layout.py).

For the small models of `builders.build(kind)`: their inputs (`inputs_for`), output (`run`),
masked output, random and edge-case keep masks, and the frozen-units check. For any model with
an input batch: `check_model`, the battery every model-class family test runs, `check_keep`
and `check_gradients`.
"""
from __future__ import annotations

import torch

import subnet
from subnet.families.conv_stack import _flat

TOL = 1e-4  # max |diff| <= TOL * max |ref| in float32


def inputs_for(kind: str, model, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    if kind.startswith("whisper"):
        enc = model if kind == "whisper" else model.model.encoder
        frames = enc.config.max_source_positions * 2
        return {"input_features": torch.randn(2, enc.config.num_mel_bins, frames, generator=g)}
    if kind.startswith("torch"):
        d = model.self_attn.embed_dim if kind == "torch-layer" else model.layers[0].self_attn.embed_dim
        x = torch.randn(3, 63, d, generator=g)
        pad = torch.zeros(3, 63, dtype=torch.bool)
        pad[1, 41:] = True
        pad[2, 7:] = True
        batch_first = "batch" in kind
        return {"src": x if batch_first else x.transpose(0, 1), "src_key_padding_mask": pad}
    n = 3001  # odd length, padded batch with odd valid lengths
    x = torch.randn(3, n, generator=g)
    mask = torch.ones(3, n, dtype=torch.long)
    mask[1, 2000:] = 0
    mask[2, 1257:] = 0
    return {"input_values": x * mask, "attention_mask": mask}


def run(kind: str, model, inputs):
    if kind == "whisper-full":
        model = model.model.encoder
    out = model(**inputs)
    return out if isinstance(out, torch.Tensor) else out.last_hidden_state


def masked_output(kind, mm, inputs):
    if kind == "whisper-full":
        with mm.active():
            return run(kind, mm.backbone, inputs)
    return run(kind, mm, inputs)


def random_keep(mm, p=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for name, group in mm.groups.items():
        k = torch.rand(group.size, generator=g) < p
        if group.min_keep and not k.any():
            k[0] = True
        keep[name] = k
    return keep


def edge_cases(mm) -> dict[str, dict]:
    full = {n: torch.ones(g.size, dtype=torch.bool) for n, g in mm.groups.items()}
    cases = {"all-kept": full}
    heads = [n for n, g in mm.groups.items() if g.kind == "head"]
    ffn = [n for n, g in mm.groups.items() if g.kind == "ffn"]
    conv = [n for n, g in mm.groups.items() if g.kind == "conv"]
    if heads:
        cases["layer-without-heads"] = {**random_keep(mm, seed=1), heads[-1]: torch.zeros(mm.groups[heads[-1]].size, dtype=torch.bool)}
    if ffn:
        cases["layer-without-ffn"] = {**random_keep(mm, seed=2), ffn[0]: torch.zeros(mm.groups[ffn[0]].size, dtype=torch.bool)}
    if conv:
        one = torch.zeros(mm.groups[conv[-1]].size, dtype=torch.bool)
        one[-1] = True
        cases["one-conv-channel"] = {**random_keep(mm, seed=3), conv[-1]: one}
    cases["random"] = random_keep(mm, seed=4)
    cases["random-sparse"] = random_keep(mm, p=0.2, seed=5)
    return cases


def check_skip_frozen(mm, output, ref):
    """With the removed units frozen, the forward pass runs a shrunk copy (frozen units are
    not computed): the same output as the masked model and the same gate gradients."""
    mm.freeze_dead()
    frozen = sum(int(getattr(mm, f"frozen_{i}").sum()) for i in range(len(mm.logits)))
    grads, weight = {}, torch.randn(ref.shape, generator=torch.Generator().manual_seed(11))
    for skip in (False, True):
        mm.skip_frozen = skip
        mm.zero_grad(set_to_none=True)
        out = output(mm)
        if skip:
            assert (out - ref).abs().max().item() <= TOL * ref.abs().max().item()
            runs = mm.runner()
            skips = frozen > 0 and mm.family.can_skip_frozen(mm.backbone)
            assert (runs is not mm.backbone) == skips
            if skips:
                assert sum(p.numel() for p in runs.parameters()) < sum(p.numel() for p in mm.backbone.parameters())
        (out.float() * weight).sum().backward()
        grads[skip] = torch.cat([torch.zeros_like(p) if p.grad is None else p.grad for p in mm.logits])
    scale = grads[False].abs().max().item()
    assert (grads[True] - grads[False]).abs().max().item() <= 1e-3 * scale + 1e-12
    mm.zero_grad(set_to_none=True)


def _output(out) -> torch.Tensor:
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else _flat(out)


def output_of(model, x):
    """Output of `model` on `x` (a tensor, or a dict of keyword inputs) as one tensor."""
    with torch.no_grad():
        return _output(model(**x) if isinstance(x, dict) else model(x))


ALL_KINDS = ("conv", "head", "ffn", "dwconv")


def check_keep(model, x, keep, kinds=ALL_KINDS):
    """Compact with `keep`; compare with the masked model on `x`; return the compact model."""
    mm = subnet.attach_masks(model, kinds=kinds)
    small = subnet.compact(mm, keep)
    assert type(small) is type(model)
    mm.set_keep(keep)
    ref, out = output_of(mm, x), output_of(small, x)
    assert out.shape == ref.shape
    err = (out - ref).abs().max().item()
    assert err <= TOL * ref.abs().max().item(), err
    n_small = sum(p.numel() for p in small.parameters())
    assert n_small == subnet.count_kept_params(mm.backbone, mm.groups, keep)
    check_skip_frozen(mm, lambda m: _output(m(**x) if isinstance(x, dict) else m(x)), ref)
    mm.detach_backbone()
    return small


def check_model(model, x, tmp_path=None):
    """The whole battery on `model` (eval mode) with input batch `x` (tensor or keyword dict)."""
    model = model.eval().requires_grad_(False)
    ref = output_of(model, x)
    mm = subnet.attach_masks(model, kinds=ALL_KINDS)
    assert mm.groups and all(g.min_keep == (g.kind == "conv") for g in mm.groups.values())
    assert torch.allclose(output_of(mm, x), ref, rtol=0, atol=1e-5 * ref.abs().max().item())
    cases = edge_cases(mm)
    mm.set_keep(cases["random"])
    assert not torch.allclose(output_of(mm, x), ref)  # the gates act
    mm.detach_backbone()
    assert torch.equal(output_of(model, x), ref)  # gates removed: the model is its old self
    for name, keep in cases.items():
        small = check_keep(model, x, keep)
        if name == "all-kept":
            assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in model.parameters())
    if tmp_path is not None:
        subnet.save(small, tmp_path / "art")
        loaded = subnet.load(tmp_path / "art")
        assert type(loaded) is type(model)
        assert torch.equal(output_of(loaded, x), output_of(small, x))
    return mm


def check_gradients(model, x, kinds=ALL_KINDS):
    """Every gate gets a gradient, removed units included (straight-through estimator)."""
    mm = subnet.attach_masks(model.eval(), kinds=kinds)
    mm.set_keep(random_keep(mm, seed=8))
    out = mm(**x) if isinstance(x, dict) else mm(x)
    out = out.last_hidden_state if hasattr(out, "last_hidden_state") else _flat(out)
    out.float().pow(2).mean().backward()
    dead_grad = 0.0
    for name, logit in zip(mm.groups, mm.logits):
        assert logit.grad is not None and logit.grad.abs().sum() > 0, name
        dead_grad += float(logit.grad[~mm.keep()[name]].abs().sum())
    # (a removed unit whose ungated output is zero, e.g. a dead ReLU channel, has none)
    assert dead_grad > 0, "removed units get no gradient"
    assert all(p.grad is None for p in model.parameters())  # the backbone stays frozen
    mm.detach_backbone()
