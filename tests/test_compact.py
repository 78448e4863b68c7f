"""compact(): same class, fewer units, output == masked output, analytic parameter count."""
from __future__ import annotations

import pytest
import torch

import subnet
from builders import build

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
