"""Fixtures for the kernel tests (tests/kernels): markers, poisoned outputs, backends."""
import os
import sys

import pytest
import torch

try:
    import subnet_kernels  # noqa: F401
except ImportError:  # running from a checkout that is not pip-installed
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))


def _import_triton_for_the_interpreter():
    """Without a GPU, import triton (and our kernels) in interpreter mode now, then restore
    TRITON_INTERPRET: only the `triton_device` fixture turns it on again, so the backend
    dispatch of the other tests does not pick the (slow) interpreter."""
    if torch.cuda.is_available() or "triton" in sys.modules:
        return
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import subnet_kernels.triton  # noqa: F401
    except ImportError:
        pass
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before


_import_triton_for_the_interpreter()


def pytest_configure(config):
    for name, text in [("interpreter", "Triton kernels run by the Triton interpreter on CPU"),
                       ("gpu", "needs a CUDA device"), ("slow", "takes more than a few seconds"),
                       ("real", "needs the shipped pretrained weights")]:
        config.addinivalue_line("markers", f"{name}: {text}")


@pytest.fixture(autouse=True)
def _kernel_env(monkeypatch):
    """Every kernel output starts as NaN (so unwritten elements fail); no forced backend; the
    interpreter off even when the session runs with TRITON_INTERPRET=1 (`triton_device`
    turns it on for the Triton tests)."""
    monkeypatch.setenv("SUBNET_KERNEL_POISON", "1")
    monkeypatch.delenv("SUBNET_KERNEL_BACKEND", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    torch.manual_seed(1234)


@pytest.fixture
def triton_device(monkeypatch):
    """The device the Triton kernels run on here: CUDA if present, else CPU through the
    interpreter (TRITON_INTERPRET must be set before subnet_kernels.triton is imported)."""
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        return "cuda"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from subnet_kernels import triton as tk
    if not tk.interpreted():
        pytest.skip("triton was imported (compiled mode) before TRITON_INTERPRET=1 was set")
    return "cpu"
