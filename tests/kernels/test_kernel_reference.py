"""The reference ops (subnet_kernels/reference.py) against independent formulations."""
import math

import pytest
import torch
import torch.nn.functional as F

from subnet_kernels import reference as R
from kernel_utils import assert_close, make_gate, make_padding


@pytest.mark.parametrize("act", R.ACTIVATIONS)
def test_gated_act_matches_formula(act):
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    b = torch.randn(12, dtype=torch.float64)
    g = make_gate(12, "mixed", torch.float64)
    fn = {"gelu": F.gelu, "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
          "relu": F.relu, "silu": F.silu}[act]
    assert_close(R.gated_act(x, b, g, act), g * fn(x + b), torch.float64)
    assert_close(R.gated_act(x, None, g, act), g * fn(x), torch.float64)


@pytest.mark.parametrize("act", R.ACTIVATIONS)
def test_gated_act_backward_formula_matches_autograd(act):
    x = torch.randn(3, 4, 9, dtype=torch.float64, requires_grad=True)
    b = torch.randn(9, dtype=torch.float64, requires_grad=True)
    g = make_gate(9, "mixed", torch.float64).requires_grad_()
    dy = torch.randn(3, 4, 9, dtype=torch.float64)
    R.gated_act(x, b, g, act).backward(dy)
    dx, db, dg = R.gated_act_bwd(dy, x.detach(), b.detach(), g.detach(), act)
    for got, want, name in [(dx, x.grad, "dx"), (db, b.grad, "dbias"), (dg, g.grad, "dgate")]:
        assert_close(got, want, torch.float64, name)


@pytest.mark.parametrize("padded", [False, True])
def test_gated_attention_matches_sdpa(padded):
    q, k, v = (torch.randn(3, 4, 17, 40, dtype=torch.float64) for _ in range(3))
    gate = make_gate(4, "mixed", torch.float64)
    mask = make_padding(3, 17) if padded else None
    attn_mask = None if mask is None else ~mask[:, None, None, :]
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    if mask is not None:
        want = torch.nan_to_num(want) * (~mask.all(-1)).double()[:, None, None, None]
    want = want * gate[None, :, None, None]
    assert_close(R.gated_attention(q, k, v, gate, mask), want, torch.float64)


def test_gated_attention_fully_padded_is_zero_with_finite_grads():
    q, k, v = (torch.randn(2, 2, 5, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    gate = torch.ones(2, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1] = True
    y = R.gated_attention(q, k, v, gate, mask)
    assert torch.all(y[1] == 0)
    y.sum().backward()
    for t in (q, k, v, gate):
        assert torch.isfinite(t.grad).all()
    assert torch.all(q.grad[1] == 0) and torch.all(k.grad[1] == 0)


@pytest.mark.parametrize("padded", [False, True])
def test_gated_attention_backward_formula_matches_autograd(padded):
    q, k, v = (torch.randn(3, 3, 11, 16, dtype=torch.float64, requires_grad=True) for _ in range(3))
    gate = make_gate(3, "mixed", torch.float64).requires_grad_()
    mask = make_padding(3, 11) if padded else None
    scale = 1 / math.sqrt(16)
    dy = torch.randn(3, 3, 11, 16, dtype=torch.float64)
    R.gated_attention(q, k, v, gate, mask).backward(dy)
    _, o, lse = R.attention_parts(q.detach(), k.detach(), v.detach(), gate.detach(), mask, scale)
    got = R.gated_attention_bwd(dy, q.detach(), k.detach(), v.detach(), gate.detach(), mask,
                                o, lse, scale)
    for g, t, name in zip(got, (q, k, v, gate), "q k v gate".split()):
        assert_close(g, t.grad, torch.float64, "d" + name)


def test_gather_compact_reference_indexes_each_dim():
    w = torch.randn(6, 5, 3, 2)
    rows, cols = torch.tensor([4, 0, 2]), torch.tensor([1, 3])
    (out,) = R.gather_compact([w], [(0, (rows, cols, None, torch.tensor([1])))])
    assert torch.equal(out, w[rows][:, cols][..., [1]])
