"""The one timer: every latency subnet reports (kernels, models, training steps) comes from here.

Calls are timed after warm-up, interleaved in alternating order (A B, B A, ...) so that
machine noise and caches hit every candidate alike; on CUDA with events recorded after a
synchronisation. Statistics: the median and the p10 / p90 of `quantiles` (one rule for every
report). Lives in the kernel library (the lowest layer) so that its dispatcher and the engine
(`subnet.measure`) share it.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def timer(device: str = "cpu") -> Callable[[Callable], float]:
    """Seconds one call of `fn` takes: CUDA events after a synchronisation, else perf_counter."""
    if str(device).startswith("cuda"):
        def timed(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        return timed

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return timed


def interleaved_times(fns: dict[str, Callable], repeats: int, warmup: int = 3, device: str = "cpu",
                      timed: Callable[[Callable], float] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each callable: `warmup` untimed rounds, then `repeats` rounds in which
    every callable runs once, in alternating order so that neither always follows the other."""
    timed = timed or timer(device)
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].append(timed(fns[name]))
    return times


def quantiles(times: list[float]) -> tuple[float, float, float]:
    """(p10, median, p90): the inclusive method of `statistics.quantiles` (one rule everywhere)."""
    if len(times) < 2:
        return times[0], times[0], times[0]
    q = statistics.quantiles(times, n=10, method="inclusive")
    return q[0], statistics.median(times), q[-1]


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(t) for name, t in times.items()}
