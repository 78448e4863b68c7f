"""Memory one call adds at its peak (CUDA allocator, or the CPU's resident set)."""
from __future__ import annotations

import gc
import resource
from typing import Callable

import torch


def _rss_kb(field: str) -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc malloc_trim), so that a call's
    allocations show as new resident pages instead of reusing earlier calls' pages."""
    import ctypes
    import ctypes.util
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@torch.no_grad()
def peak_memory(fn: Callable, device: str) -> dict:
    """Memory one call adds at its peak. CUDA: allocator peak over what was allocated before.
    CPU: resident-set high-water mark over the RSS before, after freed heap pages went
    back to the OS (the mark is reset through /proc/self/clear_refs where Linux allows,
    else only a new process maximum shows: a lower bound)."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {"peak_bytes": peak, "added_bytes": peak - before, "how": "torch.cuda.max_memory_allocated"}
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        before, how = _rss_kb("VmRSS"), "VmHWM after clear_refs"
    except OSError:
        before, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss delta (lower bound)"
    fn()
    peak = _rss_kb("VmHWM") if how.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if before is None or peak is None:
        return {"peak_bytes": None, "added_bytes": None, "how": "unavailable"}
    return {"peak_bytes": peak * 1024, "added_bytes": max(0, peak - before) * 1024, "how": how}


