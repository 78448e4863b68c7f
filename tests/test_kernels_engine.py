"""The engine on every kernel backend: same gate gradients over 20 training steps."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "python"), str(HERE.parent),
                                                    os.environ.get("PYTHONPATH", "")])}


def steps_with(backend: str, tmp_path, interpret: bool = False):
    env = {**ENV, "SUBNET_KERNEL_BACKEND": backend}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    out = tmp_path / f"{backend}.pt"
    res = subprocess.run([sys.executable, str(HERE / "engine_steps.py"), str(out)], env=env,
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    return torch.load(out)


def assert_same(a, b):
    assert len(a) == len(b) == 20
    for step_a, step_b in zip(a, b):
        for ga, gb in zip(step_a, step_b):
            scale = max(ga.abs().max().item(), 1e-12)
            assert (ga - gb).abs().max().item() <= 1e-4 * scale


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return steps_with("reference", tmp_path_factory.mktemp("ref"))


@pytest.mark.slow
def test_cpp_backend_matches_reference(reference, tmp_path):
    assert_same(steps_with("cpp", tmp_path), reference)


@pytest.mark.slow
@pytest.mark.interpreter
def test_triton_backend_matches_reference(reference, tmp_path):
    assert_same(steps_with("triton", tmp_path, interpret=True), reference)


@pytest.mark.slow
def test_default_path_matches_reference(reference, tmp_path):
    """Unforced on the CPU: SDPA + gate multiply for heads, the C++ gated_act for neurons."""
    env_backend = ENV.pop("SUBNET_KERNEL_BACKEND", None)
    try:
        out = tmp_path / "default.pt"
        res = subprocess.run([sys.executable, str(HERE / "engine_steps.py"), str(out)], env=ENV,
                             capture_output=True, text=True, timeout=1200)
        assert res.returncode == 0, res.stderr[-3000:]
        assert_same(torch.load(out), reference)
    finally:
        if env_backend is not None:
            ENV["SUBNET_KERNEL_BACKEND"] = env_backend


def test_the_cpp_extension_is_built_and_chosen_on_cpu(monkeypatch):
    """`make .venv` builds subnet_kernels._C; without it the C++ tests would only skip."""
    if os.environ.get("SUBNET_ALLOW_NO_EXTENSION") == "1":
        pytest.skip("SUBNET_ALLOW_NO_EXTENSION=1")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # else the interpreter comes first
    import subnet_kernels
    from subnet_kernels import dispatch
    assert dispatch.extension() is not None, "subnet_kernels._C is missing: run `make .venv`"
    x = torch.randn(4, 8)
    assert "gated_act: runs on cpp" in subnet_kernels.explain("gated_act", x, None, torch.ones(8))
