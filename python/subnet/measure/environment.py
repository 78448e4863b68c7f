"""The machine and software a measurement ran on, recorded beside every figure."""
from __future__ import annotations

import contextlib
import os
import platform
import time

import torch


def environment(device: str = "cpu", dtype: str | None = None) -> dict:
    """Device name (GPU, or the CPU's model name), versions, threads, time."""
    info = {"device": platform.processor() or platform.machine(), "torch": torch.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if dtype is not None:
        info["dtype"] = dtype
    with contextlib.suppress(ImportError):
        import triton
        info["triton"] = triton.__version__
    if str(device).startswith("cuda"):
        info["device"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    else:
        with contextlib.suppress(OSError):
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    info["device"] = line.split(":", 1)[1].strip()
                    break
    return info
