"""Backend selection: the `torch` backend (PyTorch's own ops) against the float64 reference,
the measured choice with its cache and explanation (its timing stubbed on the CPU, real on
a GPU: those tests are marked `gpu`)."""
import pytest
import torch

import subnet_kernels as sk
from subnet_kernels import dispatch, measure, reference as R
from kernel_utils import assert_close, check_gated_attention, make_gate

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")


@pytest.fixture(autouse=True)
def _fresh_measurements():
    sk.forget_measurements()
    yield
    sk.forget_measurements()


# --- the torch backend ------------------------------------------------------------------

@pytest.mark.parametrize("b, t, d, gate_kind, padded", [(1, 1, 40, "mixed", False), (3, 63, 64, "off", True),
                                                        (3, 257, 40, "mixed", True), (2, 63, 128, "on", True)])
def test_torch_backend_attention(b, t, d, gate_kind, padded, monkeypatch):
    # SDPA + gate, with a fully padded batch (0 output, finite gradients)
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", "torch")
    check_gated_attention(b, t, d, gate_kind, padded)


@pytest.mark.parametrize("act", R.ACTIVATIONS)
def test_torch_backend_gated_act(act, monkeypatch):
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", "torch")
    x = torch.randn(3, 63, 40, requires_grad=True)
    b, g = torch.randn(40, requires_grad=True), make_gate(40, "mixed").requires_grad_()
    dy = torch.randn(3, 63, 40)
    sk.gated_act(x, b, g, act).backward(dy)
    ref = [t.detach().double().requires_grad_() for t in (x, b, g)]
    R.gated_act(*ref, act).backward(dy.double())
    for got, want, name in zip((x, b, g), ref, ("dx", "dbias", "dgate")):
        assert_close(got.grad, want.grad, torch.float32, name)


# --- the choice and its reason ----------------------------------------------------------

def test_select_on_cpu_is_the_static_order():
    x, g = torch.randn(2, 8), torch.ones(8)
    choice = sk.select("gated_act", x, None, g, act="gelu", grad=False)
    assert choice.backend == dispatch.choose("gated_act", x, None, g)
    assert "not measured: measured on CUDA only" in choice.reason and not choice.times_ms


def test_forced_backend_is_the_reason(monkeypatch):
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", "reference")
    choice = sk.select("gated_act", torch.randn(2, 8), None, torch.ones(8))
    assert choice.backend == "reference" and "forced" in choice.reason


@pytest.fixture
def stub_timing(monkeypatch):
    """Measurement as on a GPU, with the timings stubbed: torch 0.3 ms, reference/others 0.5."""
    calls = []

    def fake(op, inputs, candidates, **mode):
        calls.append((op, tuple(candidates), mode))
        return {n: (0.3 if n == "torch" else 0.5) for n in candidates}, {}
    monkeypatch.setattr(dispatch, "_why_not_measured", lambda op, inputs: "" if op in dispatch.MEASURED_OPS else "no")
    monkeypatch.setattr(measure, "time_backends", fake)
    return calls


def test_measured_choice_is_cached_and_explained(stub_timing, capsys):
    x, g = torch.randn(4, 8), torch.ones(8)
    first = sk.select("gated_act", x, None, g, act="gelu", grad=True)
    assert first.backend == "torch" and first.times_ms == {"torch": 0.3}
    assert "fastest measured" in first.reason and "forward and backward" in first.reason
    again = sk.select("gated_act", torch.randn(4, 8), None, g, act="gelu", grad=True)
    assert again is first and len(stub_timing) == 1  # measured once per shape and mode
    sk.select("gated_act", torch.randn(5, 8), None, g, act="gelu", grad=True)
    assert len(stub_timing) == 2  # a new shape is measured
    text = sk.explain("gated_act", x, None, g, grad=True)
    assert text.startswith("gated_act: runs on torch (fastest measured") and "torch     CHOSEN: 0.300 ms" in text
    assert capsys.readouterr().out.strip() == text
    rows = sk.measured_choices()
    assert [r["backend"] for r in rows] == ["torch", "torch"] and rows[0]["inputs"][0] == [[4, 8], "torch.float32"]
    # the public function runs what was chosen: the torch backend gives the reference
    y = sk.gated_act(x, None, g, "gelu")
    assert_close(y, R.gated_act(x.double(), None, g.double(), "gelu"), torch.float32)
    sk.forget_measurements()
    assert sk.measured_choices() == []


def test_failed_candidates_are_reported(monkeypatch):
    monkeypatch.setattr(dispatch, "_why_not_measured", lambda op, inputs: "")
    monkeypatch.setattr(measure, "time_backends",
                        lambda op, inputs, candidates, **mode: ({}, {n: "RuntimeError: boom" for n in candidates}))
    q = torch.randn(1, 2, 5, 8)
    choice = sk.select("gated_attention", q, q, q, torch.ones(2), None, grad=False, dead_o=False)
    assert choice.backend == dispatch.choose("gated_attention", q, q, q, torch.ones(2), None)
    assert "no candidate could be measured" in choice.reason and choice.failed


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_measurement_runs_each_op_as_called(backend, grad):
    # what measure.time_backends times, run on the CPU (the timing itself needs CUDA events)
    gen = torch.Generator().manual_seed(0)
    x, g = torch.randn(3, 7, 16), make_gate(16, "mixed")
    measure._runner("gated_act", backend, (x, torch.randn(16), g), {"act": "silu", "grad": grad}, gen)()
    q = torch.randn(2, 3, 9, 16)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mode = {"grad": grad, "dead_o": grad}
    measure._runner("gated_attention", backend, (q, q, q, make_gate(3, "mixed"), mask), mode, gen)()
    torch.manual_seed(1234)
    want = torch.randn(3)
    torch.manual_seed(1234)
    measure._runner("gated_act", backend, (x, None, g), {"act": "gelu", "grad": grad}, gen)()
    assert torch.equal(torch.randn(3), want)  # the caller's random state is untouched


# --- on a GPU: real measurements ---------------------------------------------------------

@pytest.mark.gpu
@gpu
def test_measured_gated_act_on_gpu():
    x = torch.randn(8, 500, 3072, device="cuda", requires_grad=True)
    b, g = torch.randn(3072, device="cuda"), make_gate(3072, "mixed", device="cuda")
    choice = sk.select("gated_act", x, b, g, act="gelu", grad=True)
    assert choice.backend in choice.times_ms and "torch" in choice.times_ms
    assert choice.times_ms[choice.backend] == min(choice.times_ms.values())
    assert sk.select("gated_act", x, b, g, act="gelu", grad=True) is choice
    print(sk.explain("gated_act", x, b, g))
    y = sk.gated_act(x, b, g, "gelu")
    assert_close(y, R.gated_act(x.double(), b.double(), g.double(), "gelu"), torch.float32)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("gate_kind, padded", [("on", False), ("mixed", True), ("off", True)])
def test_measured_gated_attention_on_gpu(dtype, gate_kind, padded):
    # whichever path measures fastest, the result is the reference's
    check_gated_attention(2, 257, 64, gate_kind, padded, dtype=dtype, device="cuda", heads=4)
    rows = [r for r in sk.measured_choices() if r["op"] == "gated_attention"]
    assert rows and all(r["backend"] in ("triton", "torch") for r in rows)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_torch_backend_on_gpu(dtype, monkeypatch):
    monkeypatch.setenv("SUBNET_KERNEL_BACKEND", "torch")
    check_gated_attention(3, 63, 64, "mixed", True, dtype=dtype, device="cuda")
