"""The public ops (custom ops + dispatch) on the CPU backends, reference and C++, against a
float64 reference; opcheck; torch.compile(fullgraph=True); backend choice and explain."""
import math

import pytest
import torch

import subnet_kernels as sk
from subnet_kernels import dispatch, reference as R
from kernel_utils import assert_close, has_cpp, check_gated_attention, make_gate, make_padding

CPU_BACKENDS = ["reference", pytest.param("cpp", marks=pytest.mark.skipif(
    not has_cpp(), reason="subnet_kernels._C not built"))]


# --- gated_act ------------------------------------------------------------------------

def _check_gated_act(shape, act, gate_kind, with_bias, dtype=torch.float32):
    n = shape[-1]
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    b = torch.randn(n, dtype=dtype, requires_grad=True) if with_bias else None
    g = make_gate(n, gate_kind, dtype).requires_grad_()
    dy = torch.randn(shape, dtype=dtype)
    y = sk.gated_act(x, b, g, act)
    y.backward(dy)
    xd, gd = x.detach().double().requires_grad_(), g.detach().double().requires_grad_()
    bd = b.detach().double().requires_grad_() if with_bias else None
    yd = R.gated_act(xd, bd, gd, act)
    yd.backward(dy.double())
    assert_close(y, yd, dtype, "y")
    assert_close(x.grad, xd.grad, dtype, "dx")
    assert_close(g.grad, gd.grad, dtype, "dgate")
    if with_bias:
        assert_close(b.grad, bd.grad, dtype, "dbias")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("act", R.ACTIVATIONS)
@pytest.mark.parametrize("gate_kind", ["on", "off", "mixed"])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 40), (3, 63, 64), (1, 257, 37), (2, 128, 200)])
def test_gated_act(backend, act, gate_kind, with_bias, shape, monkeypatch):
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", backend)
    _check_gated_act(shape, act, gate_kind, with_bias)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gated_act_float64_and_2d(backend, monkeypatch):
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", backend)
    _check_gated_act((70, 33), "gelu", "mixed", True, torch.float64)


@pytest.mark.skipif(not has_cpp(), reason="subnet_kernels._C not built")
@pytest.mark.parametrize("capability", ["portable", "avx2", "best"])
@pytest.mark.parametrize("act", R.ACTIVATIONS)
def test_cpp_gated_act_every_cpu_build(capability, act, monkeypatch):
    # The C++ kernel is compiled per CPU capability; the environment caps the one used.
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", "cpp")
    monkeypatch.setenv("SUBNET_CPU_CAPABILITY", capability)
    _check_gated_act((2, 67, 45), act, "mixed", True)
    _check_gated_act((31, 20), act, "mixed", False, torch.float64)


@pytest.mark.skipif(not has_cpp(), reason="subnet_kernels._C not built")
def test_cpp_gated_act_backward_is_deterministic():
    x = torch.randn(1000, 96)
    g = make_gate(96, "mixed")
    dy = torch.randn_like(x)
    first = torch.ops.subnet_kernels._gated_act_bwd(dy, x, None, g, 0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        again = torch.ops.subnet_kernels._gated_act_bwd(dy, x, None, g, 0)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(first, again):
        assert torch.equal(a, b)


# --- gated_attention ------------------------------------------------------------------

ATTN_CASES = [(b, t, d, gk, pad) for b in (1, 3) for t in (1, 63, 128, 257) for d in (40, 64)
              for gk in ("on", "off", "mixed") for pad in (False, True)]


@pytest.mark.parametrize("b, t, d, gate_kind, padded", ATTN_CASES)
def test_gated_attention_reference_backend(b, t, d, gate_kind, padded, monkeypatch):
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", "reference")
    check_gated_attention(b, t, d, gate_kind, padded)


def test_gated_attention_cross_length_and_scale():
    q = torch.randn(2, 3, 9, 16, dtype=torch.float64)
    k, v = torch.randn(2, 3, 14, 16, dtype=torch.float64), torch.randn(2, 3, 14, 16, dtype=torch.float64)
    gate = make_gate(3, "mixed", torch.float64)
    y = sk.gated_attention(q, k, v, gate, scale=0.3)
    want = torch.softmax(q @ k.transpose(-1, -2) * 0.3, -1) @ v * gate[None, :, None, None]
    assert_close(y, want, torch.float64)


def test_shape_errors():
    q = torch.randn(1, 2, 5, 8)
    with pytest.raises(ValueError):
        sk.gated_attention(q, q, q, torch.ones(3))
    with pytest.raises(ValueError):
        sk.gated_attention(q, q, q, torch.ones(2), torch.zeros(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError):
        sk.gated_act(torch.randn(3, 4), None, torch.ones(5))
    with pytest.raises(ValueError):
        sk.gated_act(torch.randn(3, 4), None, torch.ones(4), act="tanh")


# --- gather_compact -------------------------------------------------------------------

def _model_like():
    sources = [torch.randn(12, 8, 3), torch.randn(24, 8), torch.randn(24), torch.randn(8, 24),
               torch.randn(2, 3, 4, 5)]
    keep_c = torch.tensor([0, 3, 4, 7])
    keep_f = torch.randperm(24)[:10].sort().values
    plans = [(0, (keep_c, keep_c[:2], None)), (1, (keep_f, None)), (2, (keep_f,)),
             (3, (None, keep_f)), (4, (None, torch.tensor([2, 0]), None, torch.tensor([4, 1, 1]))),
             (1, (torch.tensor([], dtype=torch.long), None))]
    return sources, plans


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64])
def test_gather_compact(backend, dtype, monkeypatch):
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", backend)
    sources, plans = _model_like()
    sources = [s.to(dtype) if dtype.is_floating_point else (s * 100).to(dtype) for s in sources]
    outs = sk.gather_compact(sources, plans)
    for got, want in zip(outs, R.gather_compact(sources, plans)):
        assert got.dtype == dtype and torch.equal(got, want)


@pytest.mark.skipif(not has_cpp(), reason="subnet_kernels._C not built")
def test_extension_links_the_shared_libstdcxx():
    """One libstdc++ in the process: a static copy inside the extension (some toolchains link
    one by default) segfaulted formatting the error message of the test below on the H200."""
    import shutil
    import subprocess
    import subnet_kernels._C as ext
    if shutil.which("ldd") is None:
        pytest.skip("no ldd")
    deps = subprocess.run(["ldd", ext.__file__], capture_output=True, text=True, check=True).stdout
    assert "libstdc++.so" in deps, deps


@pytest.mark.skipif(not has_cpp(), reason="subnet_kernels._C not built")
def test_cpp_gather_rejects_out_of_range_table():
    w = torch.randn(4, 6)
    table = sk.build_table([w], [(0, (torch.tensor([1]), None))])
    bad = table.table.clone()
    bad[-1] = 9  # kept row 9 of 4
    with pytest.raises(RuntimeError):
        torch.ops.subnet_kernels._gather_compact([w], bad, table.total)


# --- opcheck and torch.compile --------------------------------------------------------

def _opcheck_cases():
    x = torch.randn(3, 5, 16, requires_grad=True)
    b, g = torch.randn(16, requires_grad=True), make_gate(16, "mixed").requires_grad_()
    q, k, v = (torch.randn(2, 3, 7, 16, requires_grad=True) for _ in range(3))
    gh = make_gate(3, "mixed").requires_grad_()
    mask = make_padding(2, 7)
    o = torch.randn(2, 3, 7, 16)
    lse = torch.randn(2, 3, 7)
    sources, plans = _model_like()
    table = sk.build_table(sources, plans)
    ops = torch.ops.subnet_kernels
    return [
        (ops.gated_act.default, (x, b, g, "gelu")),
        (ops.gated_act.default, (x, None, g, "silu")),
        (ops.gated_act_backward.default, (torch.randn(3, 5, 16), x.detach(), b.detach(), g.detach(), "gelu_tanh")),
        (ops.gated_attention.default, (q, k, v, gh, mask, 0.25)),
        (ops.gated_attention.default, (q, k, v, gh, None, 0.25)),
        (ops.gated_attention_backward.default, (torch.randn(2, 3, 7, 16), q.detach(), k.detach(), v.detach(), gh.detach(), mask, o, lse, 0.25)),
        (ops.gather_compact.default, (sources, table.table, table.total)),
    ]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_opcheck_public_ops(backend, monkeypatch):
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", backend)
    for op, args in _opcheck_cases():
        if backend == "cpp" and "attention" in str(op):
            continue  # no C++ attention kernel
        torch.library.opcheck(op, args)


@pytest.mark.skipif(not has_cpp(), reason="subnet_kernels._C not built")
def test_opcheck_extension_ops():
    x, g, b = torch.randn(4, 6, 10), make_gate(10, "mixed"), torch.randn(10)
    sources, plans = _model_like()
    table = sk.build_table(sources, plans)
    ops = torch.ops.subnet_kernels
    torch.library.opcheck(ops._gated_act_fwd.default, (x, b, g, 1))
    torch.library.opcheck(ops._gated_act_fwd.default, (x, None, g, 3))
    torch.library.opcheck(ops._gated_act_bwd.default, (torch.randn_like(x), x, b, g, 0))
    torch.library.opcheck(ops._gather_compact.default, (sources, table.table, table.total))


class GatedLayer(torch.nn.Module):
    """A tiny transformer layer with gates on heads and FFN neurons."""

    def __init__(self, d=32, heads=4, ffn=48):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.fc1 = torch.nn.Linear(d, ffn)
        self.fc2 = torch.nn.Linear(ffn, d)
        self.head_gate = torch.nn.Parameter(make_gate(heads, "mixed"))
        self.ffn_gate = torch.nn.Parameter(make_gate(ffn, "mixed"))

    def forward(self, x, mask):
        bsz, t, d = x.shape
        q, k, v = self.qkv(x).view(bsz, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = sk.gated_attention(q, k, v, self.head_gate, mask).transpose(1, 2).reshape(bsz, t, d)
        h = torch.nn.functional.linear(x + a, self.fc1.weight)
        return x + a + self.fc2(sk.gated_act(h, self.fc1.bias, self.ffn_gate, "gelu"))


@pytest.mark.parametrize("compile_backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile_fullgraph(compile_backend):
    layer = GatedLayer()
    x = torch.randn(2, 9, 32)
    mask = make_padding(2, 9)
    eager = layer(x, mask)
    eager.sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    compiled = torch.compile(layer, fullgraph=True, backend=compile_backend)
    out = compiled(x, mask)
    out.sum().backward()
    assert_close(out, eager.detach().double(), torch.float32, "out")
    for p, want in zip(layer.parameters(), grads):
        assert_close(p.grad, want.double(), torch.float32, "grad")


# --- dispatch -------------------------------------------------------------------------

def test_default_backend_on_cpu():
    x, g = torch.randn(2, 8), torch.ones(8)
    want = "cpp" if has_cpp() else "reference"
    assert dispatch.choose("gated_act", x, None, g) == want
    q = torch.randn(1, 1, 3, 8)
    assert dispatch.choose("gated_attention", q, q, q, torch.ones(1), None) == "reference"


def test_forced_backend_that_cannot_run_fails_clearly(monkeypatch):
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", "cuda")
    with pytest.raises(sk.BackendUnavailable, match="cuda"):
        sk.gated_act(torch.randn(2, 8), None, torch.ones(8))
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(sk.BackendUnavailable, match="TRITON_INTERPRET"):
        sk.gated_act(torch.randn(2, 8), None, torch.ones(8))
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", "fast")
    with pytest.raises(ValueError, match="SUBNET_KERNEL_BACKEND"):
        sk.gated_act(torch.randn(2, 8), None, torch.ones(8))


def test_forced_backend_without_the_op_uses_the_reference(monkeypatch):
    q = torch.randn(1, 2, 3, 8)
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", "cpp")
    assert dispatch.choose("gated_attention", q, q, q, torch.ones(2), None) == "reference"
    text = sk.explain("gated_attention", q, q, q, torch.ones(2), file=False)
    assert "reference CHOSEN" in text and "has no gated_attention" in text
    assert_close(sk.gated_attention(q, q, q, torch.ones(2)),
                 R.gated_attention(q.double(), q.double(), q.double(), torch.ones(2).double()),
                 torch.float32)


def test_explain_lists_every_backend(capsys):
    x, g = torch.randn(2, 8), torch.ones(8)
    text = sk.explain("gated_act", x, None, g)
    assert capsys.readouterr().out.strip() == text
    for name in dispatch.ORDER:
        assert name in text
    assert "CHOSEN" in text
    q = torch.randn(1, 1, 3, 8)
    text = sk.explain("gated_attention", q, q, q, torch.ones(1), file=False)
    assert "no cpp implementation" in text and "reference CHOSEN" in text
    sources, plans = _model_like()
    assert "CHOSEN" in sk.explain("gather_compact", sources, plans, file=False)
