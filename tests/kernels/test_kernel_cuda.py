"""The compiled extension's CUDA kernels (csrc/cuda) against the float64 reference. They run
only where a GPU and a CUDA build of the extension are present (marked `gpu`)."""
import pytest
import torch

import subnet_kernels as sk
from subnet_kernels import reference as R
from kernel_utils import assert_close, make_gate


def _cuda_extension() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import subnet_kernels._C  # noqa: F401
    except ImportError:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("subnet_kernels::_gated_act_fwd", "CUDA")


pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not _cuda_extension(), reason="no GPU or no CUDA build of _C")]


@pytest.fixture(autouse=True)
def _force_cuda(monkeypatch):
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", "cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("act", R.ACTIVATIONS)
@pytest.mark.parametrize("shape, with_bias", [((1, 1, 40), True), ((3, 257, 200), False),
                                              ((8, 500, 3072), True)])
def test_gated_act(dtype, act, shape, with_bias):
    n = shape[-1]
    x = torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True)
    b = torch.randn(n, device="cuda", dtype=dtype, requires_grad=True) if with_bias else None
    g = make_gate(n, "mixed", device="cuda").requires_grad_()
    dy = torch.randn(shape, device="cuda", dtype=dtype)
    y = sk.gated_act(x, b, g, act)
    y.backward(dy)
    ref = [t.detach().double().requires_grad_() if t is not None else None for t in (x, b, g)]
    R.gated_act(*ref, act).backward(dy.double())
    want = R.gated_act(*[t.detach() if t is not None else None for t in ref], act)
    assert_close(y, want, dtype, "y")
    for got, w, name in zip((x, b, g), ref, ("dx", "dbias", "dgate")):
        if got is not None:
            assert_close(got.grad, w.grad, dtype, name)


def test_gated_act_dgate_is_deterministic():
    x = torch.randn(4000, 3072, device="cuda")
    g = make_gate(3072, "mixed", device="cuda")
    dy = torch.randn_like(x)
    first = torch.ops.subnet_kernels._gated_act_bwd(dy, x, None, g, 0)
    for _ in range(3):
        again = torch.ops.subnet_kernels._gated_act_bwd(dy, x, None, g, 0)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8, torch.float64])
def test_gather_compact(dtype):
    sources = [torch.randn(512, 512, 3), torch.randn(3072, 768), torch.randn(768, 3072),
               torch.randn(3072), torch.randn(2, 3, 4, 5)]
    sources = [(s * 50).to(device="cuda", dtype=dtype) for s in sources]
    keep = torch.randperm(512)[:256].sort().values
    neurons = torch.randperm(3072)[:1536].sort().values
    plans = [(0, (keep, keep, None)), (1, (neurons, None)), (2, (None, neurons)), (3, (neurons,)),
             (4, (None, torch.tensor([2, 0]), None, torch.tensor([4, 1, 1]))),
             (1, (torch.tensor([], dtype=torch.long), None))]
    for got, want in zip(sk.gather_compact(sources, plans), R.gather_compact(sources, plans)):
        assert got.dtype == dtype and torch.equal(got, want)


def test_opcheck_cuda():
    x = torch.randn(3, 5, 16, device="cuda", requires_grad=True)
    b, g = torch.randn(16, device="cuda"), make_gate(16, "mixed", device="cuda")
    ops = torch.ops.subnet_kernels
    torch.library.opcheck(ops.gated_act.default, (x, b, g, "gelu"))
    torch.library.opcheck(ops._gated_act_fwd.default, (x.detach(), b, g, 3))
    torch.library.opcheck(ops._gated_act_bwd.default, (torch.randn_like(x), x.detach(), None, g, 1))
    sources = [torch.randn(6, 4, device="cuda"), torch.randn(3, 4, 5, device="cuda")]
    table = sk.build_table(sources, [(0, (torch.tensor([1, 3]), None)), (1, (None, None, torch.tensor([4, 0])))])
    torch.library.opcheck(ops._gather_compact.default, (sources, table.table.cuda(), table.total))
