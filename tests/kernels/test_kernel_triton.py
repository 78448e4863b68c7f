"""The Triton kernels: on a GPU when there is one (compiled; every autotune configuration is
also run once explicitly), else on the CPU through the Triton interpreter (marked
`interpreter`; shapes kept small, the interpreter is slow)."""
import math

import pytest
import torch

import subnet_kernels as sk
from subnet_kernels import plan as P, reference as R
from kernel_utils import (assert_close, has_cpp, check_gated_attention, make_gate, make_padding, misaligned,
                          program_plans)

pytestmark = [pytest.mark.interpreter,
              # the interpreter itself trips a NumPy deprecation on every scalar index
              pytest.mark.filterwarnings("ignore:Conversion of an array:DeprecationWarning")]


@pytest.fixture
def triton_backend(triton_device, monkeypatch):
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", "triton")
    return triton_device


def _tk():
    from subnet_kernels import triton as tk
    return tk


# --- gated_act ------------------------------------------------------------------------

@pytest.mark.parametrize("act", R.ACTIVATIONS)
@pytest.mark.parametrize("gate_kind", ["on", "off", "mixed"])
@pytest.mark.parametrize("shape", [(1, 1, 40), (3, 63, 130), (1, 257, 48)])
def test_gated_act(triton_backend, act, gate_kind, shape):
    dev = triton_backend
    n = shape[-1]
    with_bias = gate_kind != "off" or act == "gelu"
    x = torch.randn(shape, device=dev, requires_grad=True)
    b = torch.randn(n, device=dev, requires_grad=True) if with_bias else None
    g = make_gate(n, gate_kind, device=dev).requires_grad_()
    dy = torch.randn(shape, device=dev)
    y = sk.gated_act(x, b, g, act)
    y.backward(dy)
    ref = [t.detach().double().requires_grad_() if t is not None else None for t in (x, b, g)]
    yd = R.gated_act(*ref, act)
    yd.backward(dy.double())
    assert_close(y, yd, torch.float32, "y")
    for got, want, name in zip((x, b, g), ref, ("dx", "dbias", "dgate")):
        if got is not None:
            assert_close(got.grad, want.grad, torch.float32, name)


def _check_act_kernels(dev, shape, dtype, fwd_config=None, bwd_config=None, chunks=None, act="gelu"):
    n = shape[-1]
    x, dy = torch.randn(shape, device=dev, dtype=dtype), torch.randn(shape, device=dev, dtype=dtype)
    b, g = torch.randn(n, device=dev, dtype=dtype), make_gate(n, "mixed", device=dev)
    y = _tk().gated_act_fwd(x, b, g, act, config=fwd_config)
    assert_close(y, R.gated_act(x.double(), b.double(), g.double(), act), dtype, "y")
    got = _tk().gated_act_bwd(dy, x, b, g, act, config=bwd_config, chunks=chunks)
    want = R.gated_act_bwd(dy.double(), x.double(), b.double(), g.double(), act)
    for t, w, name in zip(got, want, ("dx", "dbias", "dgate")):
        assert_close(t, w, dtype, name)


def test_gated_act_backward_partials_over_many_programs(triton_device):
    # Small tiles and several row chunks: the per-chunk partial sums must add up.
    from subnet_kernels.triton.tuning import config
    small = config(BLOCK_M=16, BLOCK_N=16)
    _check_act_kernels(triton_device, (100, 24), torch.float32, small, small, chunks=3, act="silu")


def _act_configs():
    from subnet_kernels.triton import gated_act as A
    return [pytest.param(which, i, id=f"{which}{i}") for which, t in (("fwd", A.FWD), ("bwd", A.BWD))
            for i in range(len(t.configs))]


@pytest.mark.parametrize("which, index", _act_configs())
def test_gated_act_every_config(triton_device, which, index):
    # Each Hopper configuration (what autotuning picks from), on rows and units that leave
    # partial tiles; bf16 on a GPU, fp32 in the interpreter.
    from subnet_kernels.triton import gated_act as A
    cfg = (A.FWD if which == "fwd" else A.BWD).configs[index]
    dtype = torch.bfloat16 if triton_device == "cuda" else torch.float32
    _check_act_kernels(triton_device, (5, 33, 1040), dtype, cfg if which == "fwd" else None,
                       cfg if which == "bwd" else None)


def test_gated_act_float16(triton_backend):
    dev = triton_backend
    x = torch.randn(4, 9, 48, device=dev, dtype=torch.float16)
    b = torch.randn(48, device=dev, dtype=torch.float16)
    g = make_gate(48, "mixed", device=dev)
    y = sk.gated_act(x, b, g, "gelu_tanh")
    assert y.dtype == torch.float16
    assert_close(y, R.gated_act(x.double(), b.double(), g.double(), "gelu_tanh"), torch.float16)


# --- gated_attention ------------------------------------------------------------------

# A spread over T {1, 63, 128, 257}, head_dim {40, 64, 128}, B {1, 3}, gates and padding.
TRITON_ATTN_CASES = [
    (1, 1, 40, "mixed", False), (3, 1, 64, "on", True), (1, 63, 64, "mixed", True),
    (3, 63, 40, "off", False), (3, 63, 64, "on", True), (1, 128, 40, "on", False),
    (3, 128, 64, "mixed", True), (1, 257, 64, "mixed", False), (3, 257, 40, "mixed", True),
    (2, 63, 128, "mixed", True),
]


@pytest.mark.parametrize("b, t, d, gate_kind, padded", TRITON_ATTN_CASES)
def test_gated_attention(triton_backend, b, t, d, gate_kind, padded):
    check_gated_attention(b, t, d, gate_kind, padded, device=triton_backend, heads=2 if t > 128 else 3)


@pytest.mark.parametrize("gate_kind", ["off", "mixed"])
def test_gated_attention_frozen_gate_skips_dead_heads(triton_backend, gate_kind):
    # No gate gradient wanted: dead heads do no forward work either; y and dq/dk/dv unchanged.
    dev = triton_backend
    q, k, v = (torch.randn(2, 4, 45, 32, device=dev, requires_grad=True) for _ in range(3))
    gate = make_gate(4, gate_kind, device=dev)
    mask = make_padding(2, 45, dev)
    y = sk.gated_attention(q, k, v, gate, mask)
    dy = torch.randn_like(y)
    y.backward(dy)
    ref = [t.detach().double().requires_grad_() for t in (q, k, v)]
    yd = R.gated_attention(*ref, gate.double(), mask)
    yd.backward(dy.double())
    assert_close(y, yd, torch.float32, "y")
    dead = gate == 0
    assert torch.all(y[:, dead] == 0)
    for t, w, name in zip((q, k, v), ref, "qkv"):
        assert_close(t.grad, w.grad, torch.float32, "d" + name)
        assert torch.all(t.grad[:, dead] == 0)


def _attn_configs():
    from subnet_kernels.triton import gated_attention as A
    return [pytest.param(kernel, block_d, half, i, id=f"{kernel}-d{block_d}-{'16bit' if half else 'fp32'}-{i}")
            for (kernel, block_d, half), cfgs in A._CONFIGS.items() for i in range(len(cfgs))]


@pytest.mark.parametrize("kernel, block_d, half, index", _attn_configs())
def test_gated_attention_every_config(triton_device, kernel, block_d, half, index):
    # Each configuration autotuning picks from, with partial blocks, padding (one batch
    # fully padded) and a dead head: bf16 on a GPU, fp16 in the interpreter for 16-bit lists.
    from subnet_kernels.triton import gated_attention as A
    cfg = A._CONFIGS[(kernel, block_d, half)][index]
    dtype = (torch.bfloat16 if triton_device == "cuda" else torch.float16) if half else torch.float32
    dev, d, t = triton_device, (40 if block_d == 64 else 80), 70
    q, k, v = (torch.randn(2, 3, t, d, device=dev, dtype=dtype) for _ in range(3))
    gate = torch.tensor([0.5, 0.0, 1.0], device=dev)
    mask = make_padding(2, t, dev)
    scale = 1 / math.sqrt(d)
    qd, kd, vd, gd = (t_.double() for t_ in (q, k, v, gate))
    yr, orr, lr = R.attention_parts(qd, kd, vd, gd, mask, scale)
    y, o, lse = _tk().gated_attention_fwd(q, k, v, gate, mask, scale, config=cfg if kernel == "fwd" else None)
    assert_close(y, yr, dtype, "y")
    dy = torch.randn_like(q)
    got = _tk().gated_attention_bwd(dy, q, k, v, gate, mask, o, lse, scale,
                                    configs={kernel: cfg} if kernel != "fwd" else None)
    want = R.gated_attention_bwd(dy.double(), qd, kd, vd, gd, mask, orr, lr, scale)
    for g_, w, name in zip(got, want, ("dq", "dk", "dv", "dgate")):
        assert_close(g_, w, dtype, name)


@pytest.mark.parametrize("t, padded", [(37, True), (50, False)])
def test_gated_attention_small_blocks(triton_device, t, padded):
    # 16-wide tiles: many query/key blocks, partial last blocks, masks across blocks.
    from subnet_kernels.triton.tuning import config
    small = config(BLOCK_M=16, BLOCK_N=16)
    dev, d = triton_device, 24
    q, k, v = (torch.randn(2, 2, t, d, device=dev) for _ in range(3))
    gate = torch.tensor([0.7, 0.0], device=dev)
    mask = make_padding(2, t, dev) if padded else None  # batch 1 fully padded
    scale = 1 / math.sqrt(d)
    y, o, lse = _tk().gated_attention_fwd(q, k, v, gate, mask, scale, config=small)
    qd, kd, vd, gd = (t_.double() for t_ in (q, k, v, gate))
    yr, orr, lr = R.attention_parts(qd, kd, vd, gd, mask, scale)
    assert_close(y, yr, torch.float32, "y")
    assert_close(o, orr, torch.float32, "o")
    assert torch.equal(torch.isinf(lse), torch.isinf(lr)) and torch.all(lse[torch.isinf(lse)] > 0)
    finite = torch.isfinite(lr)
    assert_close(lse[finite], lr[finite], torch.float32, "lse")
    dy = torch.randn_like(q)
    got = _tk().gated_attention_bwd(dy, q, k, v, gate, mask, o, lse, scale, configs={"dkdv": small, "dq": small})
    want = R.gated_attention_bwd(dy.double(), qd, kd, vd, gd, mask, orr, lr, scale)
    for g_, w, name in zip(got, want, ("dq", "dk", "dv", "dgate")):
        assert_close(g_, w, torch.float32, name)
    assert torch.all(got[0][:, 1] == 0) and torch.all(got[1][:, 1] == 0)


def test_gated_attention_cross_length_and_strided_inputs(triton_backend):
    dev = triton_backend
    qkv = torch.randn(2, 20, 3, 3, 32, device=dev)  # (B, T, 3, H, D): q/k/v are strided views
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    k, v = k[:, :, :13], v[:, :, :13]
    gate = make_gate(3, "mixed", device=dev)
    mask = make_padding(2, 13, dev)
    y = sk.gated_attention(q, k, v, gate, mask, scale=0.2)
    want = R.gated_attention(q.double(), k.double(), v.double(), gate.double(), mask, 0.2)
    assert_close(y, want, torch.float32)


def test_gated_attention_float16(triton_backend):
    dev = triton_backend
    q, k, v = (torch.randn(1, 2, 40, 64, device=dev, dtype=torch.float16) for _ in range(3))
    gate = make_gate(2, "on", device=dev)
    y = sk.gated_attention(q, k, v, gate)
    assert y.dtype == torch.float16
    assert_close(y, R.gated_attention(q.double(), k.double(), v.double(), gate.double()), torch.float16)


# --- gather_compact -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64])
def test_gather_compact(triton_backend, dtype):
    dev = triton_backend
    sources = [torch.randn(12, 8, 3), torch.randn(24, 8), torch.randn(24), torch.randn(2, 3, 4, 5)]
    sources = [(s * 100).to(device=dev, dtype=dtype) for s in sources]
    keep = torch.randperm(24)[:10].sort().values
    plans = [(0, (torch.tensor([0, 3, 4]), torch.tensor([1, 2]), None)), (1, (keep, None)),
             (2, (keep,)), (3, (None, torch.tensor([2, 0]), None, torch.tensor([4, 1, 1]))),
             (1, (torch.tensor([], dtype=torch.long), None))]
    for got, want in zip(sk.gather_compact(sources, plans), R.gather_compact(sources, plans)):
        assert got.dtype == dtype and torch.equal(got, want)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8])
def test_gather_every_task_kind(triton_backend, dtype, aligned):
    # Every task kind with and without 16-byte vectors; misaligned sources take the others.
    sources, plans = program_plans()
    sources = [(s * 50).to(device=triton_backend, dtype=dtype) for s in sources]
    if not aligned:
        sources = misaligned(sources)
    for got, want in zip(sk.gather_compact(sources, plans), R.gather_compact(sources, plans)):
        assert torch.equal(got, want)


def test_gather_small_tiles_and_reused_program(triton_device):
    w = torch.randn(40, 30, device=triton_device)
    plans = [(0, (torch.randperm(40)[:25], torch.randperm(30)[:17])), (0, (None, None)),
             (0, (torch.arange(5, 30), None))]
    table = P.build_table([w], plans)
    program = table.program([w])
    for _ in range(2):  # the same cached program twice
        flat = _tk().gather_run([w], program.tasks, program.offsets, table.total, block=16, block_r=2, block_c=16)
        for got, want in zip(P.split_outputs(flat, table), R.gather_compact([w], plans)):
            assert torch.equal(got, want)
    assert table.program([w]) is program


def test_gather_skips_tasks_out_of_range(triton_device):
    # A program the host could not have built reads and writes nothing out of range.
    w = torch.arange(12.0, device=triton_device)
    tasks = torch.tensor([[P.SPAN, 0, 10, 0, 1, 4, -1, -1],      # reads past the source
                          [P.SPAN, 1, 0, 0, 1, 4, -1, -1],       # no source 1
                          [P.SPAN, 0, 0, 6, 1, 4, -1, -1],       # writes past the output
                          [P.ROWS, 0, 0, 0, 1, 4, 5, -1],        # row offsets past `offsets`
                          [P.GATHER, 0, 0, 4, 1, 1, 0, 1],       # column offset 99
                          [P.SPAN, 0, 2, 0, 1, 4, -1, -1]],      # the one valid task
                         dtype=torch.long, device=triton_device)
    offsets = torch.tensor([0, 99], dtype=torch.long, device=triton_device)
    out = _tk().gather_run([w], tasks, offsets, 8)
    assert torch.equal(out[:4], w[2:6]) and torch.isnan(out[4:]).all()


def test_opcheck_triton(triton_backend):
    dev = triton_backend
    x = torch.randn(3, 16, device=dev, requires_grad=True)
    g = make_gate(16, "mixed", device=dev).requires_grad_()
    q, k, v = (torch.randn(1, 2, 5, 16, device=dev, requires_grad=True) for _ in range(3))
    gh = make_gate(2, "mixed", device=dev).requires_grad_()
    ops = torch.ops.subnet_kernels
    torch.library.opcheck(ops.gated_act.default, (x, None, g, "gelu"))
    torch.library.opcheck(ops.gated_attention.default, (q, k, v, gh, make_padding(1, 5, dev), 0.25))


class _TinyEncoder(torch.nn.Module):
    """Two pre-norm transformer layers with gates on heads and FFN neurons (a whisper-like
    layout, scaled down for the interpreter) and a linear head."""

    def __init__(self, d=48, heads=4, ffn=96, layers=2):
        super().__init__()
        self.heads = heads
        self.blocks = torch.nn.ModuleList()
        for _ in range(layers):
            blk = torch.nn.Module()
            blk.norm1, blk.norm2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
            blk.qkv, blk.out = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
            blk.fc1, blk.fc2 = torch.nn.Linear(d, ffn), torch.nn.Linear(ffn, d)
            blk.head_gate = torch.nn.Parameter(make_gate(heads, "mixed"))
            blk.ffn_gate = torch.nn.Parameter(make_gate(ffn, "mixed"))
            self.blocks.append(blk)
        self.head = torch.nn.Linear(d, 3)

    def forward(self, x, mask):
        bsz, t, d = x.shape
        for blk in self.blocks:
            q, k, v = blk.qkv(blk.norm1(x)).view(bsz, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            a = sk.gated_attention(q, k, v, blk.head_gate, mask)
            x = x + blk.out(a.transpose(1, 2).reshape(bsz, t, d))
            h = torch.nn.functional.linear(blk.norm2(x), blk.fc1.weight)
            x = x + blk.fc2(sk.gated_act(h, blk.fc1.bias, blk.ffn_gate, "gelu"))
        keep = (~mask).unsqueeze(-1).float()
        return self.head((x * keep).sum(1) / keep.sum(1).clamp_min(1))


def _train_gate_grads(backend, monkeypatch, steps=3):
    """Gate gradients over a few SGD steps (gates and head train; the rest is frozen)."""
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", backend)
    torch.manual_seed(7)
    model = _TinyEncoder()
    for name, p in model.named_parameters():
        p.requires_grad_("gate" in name or name.startswith("head."))
    x, labels = torch.randn(3, 21, 48), torch.tensor([0, 2, 1])
    mask = make_padding(3, 21)
    mask[2, :5] = False  # no fully padded clip here: it would have no features to pool
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x, mask), labels).backward()
        history.append([b.head_gate.grad.clone() for b in model.blocks]
                       + [b.ffn_gate.grad.clone() for b in model.blocks])
        opt.step()
    return history


def test_backends_agree_on_gate_gradients_over_training_steps(triton_device, monkeypatch):
    if triton_device != "cpu":
        pytest.skip("CPU comparison (the GPU path is covered by the op tests)")
    want = _train_gate_grads("reference", monkeypatch)
    for backend in ["triton"] + (["cpp"] if has_cpp() else []):
        got = _train_gate_grads(backend, monkeypatch)
        for step, (gs, ws) in enumerate(zip(got, want)):
            for g, w in zip(gs, ws):
                assert_close(g, w.double(), torch.float32, f"{backend} step {step} gate grad")
