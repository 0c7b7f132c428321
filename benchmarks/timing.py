"""Timing shared by the benchmarks: a train step repeated after a warm-up, synchronised on CUDA."""
from __future__ import annotations

import time
from typing import Callable

import torch


def steps_per_second(step: Callable[[], None], steps: int, device: torch.device, warmup: int = 5) -> float:
    """Calls of ``step`` per second over ``steps`` calls, after ``min(warmup, steps)`` untimed ones."""
    cuda = device.type == "cuda"
    for _ in range(min(warmup, steps)):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)
