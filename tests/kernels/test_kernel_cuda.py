"""The compiled extension's CUDA kernels (csrc/cuda) against the float64 reference. They run
only where a GPU and a CUDA build of the extension are present (marked `gpu`)."""
import pytest
import torch

import subnet_kernels as sk
from subnet_kernels import plan as P, reference as R
from kernel_utils import assert_close, make_gate, misaligned, program_plans


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


# T = 1, 63, 257, 500; units a multiple of the 16-byte vector or not (37, 130: the V = 1 build).
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("act", R.ACTIVATIONS)
@pytest.mark.parametrize("shape, with_bias", [((1, 1, 40), True), ((3, 257, 200), False),
                                              ((1, 63, 37), True), ((2, 63, 130), False),
                                              ((8, 500, 3072), True)])
def test_gated_act(dtype, act, shape, with_bias):
    _check_gated_act(shape, dtype, act, with_bias)


def _check_gated_act(shape, dtype, act, with_bias, wrap=lambda t: t):
    n = shape[-1]
    x = wrap(torch.randn(shape, device="cuda", dtype=dtype)).requires_grad_()
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gated_act_misaligned_input(dtype):
    # x one element into its buffer: not 16-byte aligned, so the V = 1 build runs.
    _check_gated_act((4, 33, 256), dtype, "gelu", True, wrap=lambda t: misaligned([t])[0])


def test_gated_act_many_rows():
    # more rows than one grid dimension of the old launch could hold (65535 blocks x 4 rows)
    _check_gated_act((300000, 8), torch.float32, "relu", True)


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


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8, torch.float64])
def test_gather_every_task_kind(dtype, aligned):
    sources, plans = program_plans()
    sources = [(s * 50).to(device="cuda", dtype=dtype) for s in sources]
    if not aligned:
        sources = misaligned(sources)
    for got, want in zip(sk.gather_compact(sources, plans), R.gather_compact(sources, plans)):
        assert torch.equal(got, want)


def test_gather_many_sources():
    # more sources than fit in 4 KB of kernel parameters (the pointers travel by value)
    sources = [torch.randn(7 + i % 5, 3, device="cuda") for i in range(700)]
    plans = [(i, (torch.tensor([0, 2]), None)) for i in range(0, 700, 3)] + [(699, (None, None))]
    for got, want in zip(sk.gather_compact(sources, plans), R.gather_compact(sources, plans)):
        assert torch.equal(got, want)


def test_gather_repeated_calls_transfer_nothing():
    # The copy program is built and uploaded once per plan; later calls copy nothing to the
    # device (no per-call blocking transfer).
    sources, plans = program_plans()
    sources = [s.cuda() for s in sources]
    table = sk.build_table(sources, plans)
    first = sk.gather_compact_flat(sources, table)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        again = sk.gather_compact_flat(sources, table)
        torch.cuda.synchronize()
    assert torch.equal(first, again)
    names = [e.name for e in prof.events()]
    assert not [n for n in names if "HtoD" in n or "Memcpy" in n], names


def test_gather_skips_tasks_out_of_range():
    w = torch.arange(12.0, device="cuda")
    tasks = torch.tensor([[P.SPAN, 0, 10, 0, 1, 4, -1, -1], [P.SPAN, 1, 0, 0, 1, 4, -1, -1],
                          [P.SPAN, 0, 0, 6, 1, 4, -1, -1], [P.ROWS, 0, 0, 0, 1, 4, 5, -1],
                          [P.GATHER, 0, 0, 4, 1, 1, 0, 1], [P.SPAN, 0, 2, 0, 1, 4, -1, -1]],
                         dtype=torch.long, device="cuda")
    offsets = torch.tensor([0, 99], dtype=torch.long, device="cuda")
    out = torch.ops.subnet_kernels._gather_compact_run([w], tasks, offsets, 8)
    assert torch.equal(out[:4], w[2:6]) and torch.isnan(out[4:]).all()


def test_opcheck_cuda():
    x = torch.randn(3, 5, 16, device="cuda", requires_grad=True)
    b, g = torch.randn(16, device="cuda"), make_gate(16, "mixed", device="cuda")
    ops = torch.ops.subnet_kernels
    torch.library.opcheck(ops.gated_act.default, (x, b, g, "gelu"))
    torch.library.opcheck(ops._gated_act_fwd.default, (x.detach(), b, g, 3))
    torch.library.opcheck(ops._gated_act_bwd.default, (torch.randn_like(x), x.detach(), None, g, 1))
    sources = [torch.randn(6, 4, device="cuda"), torch.randn(3, 4, 5, device="cuda")]
    table = sk.build_table(sources, [(0, (torch.tensor([1, 3]), None)), (1, (None, None, torch.tensor([4, 0])))])
    program = table.program(sources)
    torch.library.opcheck(ops._gather_compact_run.default, (sources, program.tasks, program.offsets, table.total))
    torch.library.opcheck(ops.gather_compact.default, (sources, table.table, table.total, program.tasks,
                                                       program.offsets))
