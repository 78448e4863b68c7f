"""Input makers and comparisons shared by the kernel tests."""
import torch

# Stated tolerances: max |got - want| <= RTOL * max(max |want|, FLOOR) per tensor. The floor
# keeps quantities that are exactly 0 in float64 (e.g. dq at T = 1, a sum of cancelling
# terms) from demanding exact zeros in fp32; exactness claims are tested separately.
FLOOR = 0.1
RTOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2, torch.float64: 1e-10}


def has_cpp() -> bool:
    """Whether the compiled extension subnet_kernels._C is importable."""
    try:
        import subnet_kernels._C  # noqa: F401
        return True
    except ImportError:
        return False


def assert_close(got, want, dtype, what=""):
    """`got` (kernel) vs `want` (float64 reference) within RTOL[dtype], relative to the
    largest reference magnitude (at least FLOOR); no NaN allowed."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    got, want = got.double(), want.double()
    assert not torch.isnan(got).any(), f"{what}: NaN in the result (unwritten output?)"
    if not want.numel():
        return
    scale = max(want.abs().max().item(), FLOOR)
    err = (got - want).abs().max().item()
    assert err <= RTOL[dtype] * scale, f"{what}: rel err {err / scale:.3g} > {RTOL[dtype]}"


def make_gate(n, kind, dtype=torch.float32, device="cpu"):
    """all-on (ones), all-off (zeros) or mixed: zeros and non-binary values, so that a gate
    applied twice (g^2 = g for 0/1) would be caught."""
    if kind == "on":
        g = torch.ones(n)
    elif kind == "off":
        g = torch.zeros(n)
    else:
        g = torch.rand(n) * 1.5 + 0.25
        g[torch.randperm(n)[: max(1, n // 2)]] = 0.0
        if n > 1:
            g[g.nonzero()[0]] = 1.0  # keep a plain 1 too
    return g.to(device=device, dtype=dtype)


def make_padding(batch, t, device="cpu"):
    """(B, T) bool, True = padding: batch 0 unpadded, the last batch (B > 1) fully padded,
    the others a random valid length >= 1."""
    mask = torch.zeros(batch, t, dtype=torch.bool)
    for b in range(1, batch):
        length = 0 if b == batch - 1 else int(torch.randint(1, t + 1, ()).item())
        mask[b, length:] = True
    return mask.to(device)


def check_gated_attention(b, t, d, gate_kind, padded, dtype=torch.float32, device="cpu", heads=4):
    """subnet_kernels.gated_attention and its gradients (through whatever backend is
    active) against the float64 reference, plus exact zeros of dq/dk/dv on dead heads."""
    import subnet_kernels as sk
    from subnet_kernels import reference as R

    q, k, v = (torch.randn(b, heads, t, d, dtype=dtype, device=device, requires_grad=True)
               for _ in range(3))
    gate = make_gate(heads, gate_kind, torch.float32, device).requires_grad_()
    mask = make_padding(b, t, device) if padded else None
    dy = torch.randn(b, heads, t, d, dtype=dtype, device=device)
    y = sk.gated_attention(q, k, v, gate, mask)
    y.backward(dy)
    ref = [t_.detach().double().requires_grad_() for t_ in (q, k, v, gate)]
    yd = R.gated_attention(*ref, mask)
    yd.backward(dy.double())
    assert_close(y, yd, dtype, "y")
    for got, want, name in zip((q, k, v, gate), ref, "q k v gate".split()):
        assert_close(got.grad, want.grad, dtype, "d" + name)
    dead = gate.detach() == 0  # dead heads do no dq/dk/dv work: exact zeros
    for t_ in (q, k, v):
        assert torch.all(t_.grad[:, dead] == 0)


def program_plans():
    """Sources and gather plans that give every copy-task kind of plan.build_program,
    vectorisable or not: whole tensors (SPAN), kept rows of wide rows (ROWS, or SPAN when runs
    are long), kept columns (GATHER), head-like runs of columns (GATHER, 16-byte groups), odd
    sizes and starts (no VEC), all-kept, none-kept, one row longer than a task."""
    sources = [torch.randn(96, 64), torch.randn(64, 96), torch.randn(4096), torch.randn(7, 5, 3),
               torch.randn(3, 33), torch.randn(256, 1024), torch.randn(2, 3, 4, 5)]
    heads = (torch.tensor([0, 2, 3])[:, None] * 16 + torch.arange(16)).reshape(-1)
    plans = [(0, (torch.randperm(96)[:50].sort().values, None)),          # ROWS
             (1, (None, torch.randperm(96)[:40].sort().values)),          # GATHER
             (1, (None, heads)),                                          # GATHER, 16-byte groups
             (2, (None,)), (2, (torch.arange(100, 4000),)),               # SPAN, aligned or not
             (3, (torch.tensor([6, 0]), None, torch.tensor([2, 1]))),     # odd: GATHER no VEC
             (4, (None, torch.arange(1, 32))),                            # contiguous columns, odd start
             (5, (torch.arange(0, 200), None)),                           # long runs: SPAN chunks
             (5, (None, torch.randperm(1024)[:700].sort().values)),       # many rows of gathers
             (6, (None, None, None, None)), (0, (torch.tensor([], dtype=torch.long), None)),
             (5, (torch.tensor([3]), torch.randint(1024, (9000,))))]      # one row over the chunk
    return sources, plans


def misaligned(tensors, dtype=None):
    """The same values, each as a view one element into a larger buffer: no source is
    16-byte aligned (the kernels must take their unvectorised paths and stay correct)."""
    out = []
    for t in tensors:
        buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
        view = buf[1:].view(t.shape)
        view.copy_(t)
        out.append(view)
    return out
