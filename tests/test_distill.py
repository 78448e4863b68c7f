"""distill_loss against hand computations: real frames only, layers averaged or mixed, the
gradient reaching the student only."""
from __future__ import annotations

import math

import pytest
import torch

from subnet.training.distill import distill_loss
from subnet.training.tasks import task_named


def states(seed, n_layers=3, b=2, f=4, d=3, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, f, d, generator=g, dtype=torch.float64).requires_grad_(requires_grad)
                 for _ in range(n_layers))


FRAMES = torch.tensor([[True, True, True, False], [True, False, False, False]])


def by_hand(student, teacher, frames, layers, weights=None, kind="mse"):
    """Explicit loops in float64: mean over real frames of the per-frame distance."""
    if weights is not None:
        student = [sum(float(w) * s for w, s in zip(weights, student))]
        teacher = [sum(float(w) * t for w, t in zip(weights, teacher))]
        layers = [0]
    per_layer = []
    for layer in layers:
        s, t = student[layer].tolist(), teacher[layer].tolist()
        total, count = 0.0, 0
        for i in range(len(s)):
            for j in range(len(s[i])):
                if not frames[i][j]:
                    continue
                a, c = s[i][j], t[i][j]
                d = len(a)
                if kind == "mse":
                    dist = sum((x - y) ** 2 for x, y in zip(a, c)) / d
                else:
                    cos = sum(x * y for x, y in zip(a, c)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in c))
                    dist = sum(abs(x - y) for x, y in zip(a, c)) / d + 1 - cos
                total, count = total + dist, count + 1
        per_layer.append(total / count)
    return sum(per_layer) / len(per_layer)


def test_two_numbers_by_hand():
    student = (torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]),)
    teacher = (torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]),)
    frames = torch.tensor([[True, False]])  # the second frame (distance 12.5) is padding
    assert float(distill_loss(student, teacher, frames, layers=[0])) == pytest.approx(2.0)  # (0 + 4) / 2
    # l1cos: (0 + 2) / 2 + 1 - cos((1, 2), (1, 0)) = 1 + 1 - 1/sqrt(5)
    assert float(distill_loss(student, teacher, frames, [0], kind="l1cos")) == pytest.approx(2 - 1 / math.sqrt(5))


@pytest.mark.parametrize("kind", ["mse", "l1cos"])
@pytest.mark.parametrize("layers", [[0], [0, 2], [1, 2, 0]])
def test_layers_match_loops(kind, layers):
    s, t = states(0), states(1)
    got = float(distill_loss(s, t, FRAMES, layers=layers, kind=kind))
    assert got == pytest.approx(by_hand(s, t, FRAMES.tolist(), layers, kind=kind), rel=1e-6)


@pytest.mark.parametrize("kind", ["mse", "l1cos"])
def test_mix_matches_loops(kind):
    s, t = states(2), states(3)
    w = torch.softmax(torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), 0)
    got = float(distill_loss(s, t, FRAMES, layers="mix", mix_weights=w, kind=kind))
    assert got == pytest.approx(by_hand(s, t, FRAMES.tolist(), None, weights=w, kind=kind), rel=1e-6)
    assert got != pytest.approx(float(distill_loss(s, t, FRAMES, layers=[0, 1, 2], kind=kind)), rel=1e-3)


def test_padded_frames_do_not_count():
    s, t = states(4), states(5)
    base = distill_loss(s, t, FRAMES, layers=[0, 1])
    noisy = tuple(x + 100.0 * (~FRAMES)[..., None] for x in s)
    assert torch.equal(distill_loss(noisy, t, FRAMES, layers=[0, 1]), base)
    assert float(distill_loss(s, s, FRAMES, layers=[0, 1, 2])) == 0.0
    empty = distill_loss(s, t, torch.zeros_like(FRAMES), layers=[0])
    assert float(empty) == 0.0


def test_gradient_reaches_only_the_student():
    s, t = states(6, requires_grad=True), states(7, requires_grad=True)
    logits = torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64, requires_grad=True)
    distill_loss(s, t, FRAMES, layers="mix", mix_weights=torch.softmax(logits, 0)).backward()
    assert all(x.grad is None for x in t) and logits.grad is None
    for x in s:
        assert (x.grad[~FRAMES] == 0).all() and (x.grad[FRAMES].abs().sum(-1) > 0).all()
    # d/ds of the mean over 4 real frames of mean_d (s - t)^2 (one layer): 2 (s - t) / (D * 4)
    s, t = states(8, requires_grad=True), states(9)
    distill_loss(s, t, FRAMES, layers=[1]).backward()
    expect = 2 * (s[1] - t[1]).detach() / (3 * 4) * FRAMES[..., None]
    assert torch.allclose(s[1].grad, expect, atol=1e-6)
    assert s[0].grad is None


def test_bad_arguments():
    s, t = states(0), states(1)
    for kwargs in ({"layers": "mix"}, {"layers": "mix", "mix_weights": torch.ones(2)}, {"layers": []},
                   {"layers": "last"}, {"layers": [0], "kind": "kl"}):
        with pytest.raises(ValueError):
            distill_loss(s, t, FRAMES, **kwargs)
    with pytest.raises(ValueError):
        distill_loss(s, t[:2], FRAMES, layers=[0])


# --- prediction distillation (Task.match_loss) ---------------------------------------------------
def _softmax(row):
    e = [math.exp(x - max(row)) for x in row]
    return [x / sum(e) for x in e]


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _logits(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_classify_match_loss_by_hand(temperature):
    s, t = _logits(1, 3, 5), _logits(2, 3, 5)
    expect = sum(_kl(_softmax([x / temperature for x in tr]), _softmax([x / temperature for x in sr]))
                 for sr, tr in zip(s.tolist(), t.tolist())) / 3 * temperature ** 2
    got = task_named("classify").match_loss(s, t, torch.ones(3, 1, dtype=torch.bool), temperature)
    assert float(got) == pytest.approx(expect, rel=1e-6)
    assert float(task_named("classify").match_loss(t, t, None, temperature)) == pytest.approx(0.0, abs=1e-6)


def test_tag_match_loss_by_hand():
    s, t, temperature = _logits(3, 2, 4), _logits(4, 2, 4), 2.0
    total = 0.0
    for sr, tr in zip(s.tolist(), t.tolist()):
        for a, b in zip(sr, tr):
            p, q = 1 / (1 + math.exp(-b / temperature)), 1 / (1 + math.exp(-a / temperature))
            total += p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    got = task_named("tag").match_loss(s, t, None, temperature)
    assert float(got) == pytest.approx(total / 8 * temperature ** 2, rel=1e-6)


def test_ctc_match_loss_counts_real_frames_only():
    s, t, temperature = _logits(5, 2, 4, 6), _logits(6, 2, 4, 6), 2.0
    total, count = 0.0, 0
    for i in range(2):
        for j in range(4):
            if FRAMES[i, j]:
                total += _kl(_softmax((t[i, j] / temperature).tolist()), _softmax((s[i, j] / temperature).tolist()))
                count += 1
    got = task_named("ctc").match_loss(s, t, FRAMES, temperature)
    assert float(got) == pytest.approx(total / count * temperature ** 2, rel=1e-6)
    s2 = s.clone()
    s2[~FRAMES] = 100.0  # padding changes nothing
    assert float(task_named("ctc").match_loss(s2, t, FRAMES, temperature)) == pytest.approx(float(got), rel=1e-9)


@pytest.mark.parametrize("task", ["classify", "tag"])
def test_match_loss_gradient_reaches_only_the_student(task):
    s, t = _logits(7, 3, 4).requires_grad_(True), _logits(8, 3, 4).requires_grad_(True)
    task_named(task).match_loss(s, t, None).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
