"""The model card: parameters, FLOPs and CPU latency of a network.  Every report uses :func:`model_card`.

* ``params``: all parameters of the module (teachers hold only their feature extractor: classifiers that
  are checked on load are dropped).
* ``mflops``: floating-point operations of one forward pass on one ``3 x S x S`` image, in millions, as
  counted by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2; convolutions and matrix
  products only, which dominate).
* ``cpu_ms_per_img``: the fastest of repeated batch-1 forward passes on the CPU on **one** thread, after a
  warm-up, in milliseconds. The minimum is what the network costs; slower repeats measure other work.
* ``cpu_share``: the share of the timed wall time the measuring thread actually ran on a core (thread CPU
  time / wall time). Below :data:`BUSY_SHARE` other processes took the core away, and the figure is
  marked as measured under load (``busy``). ``load1`` is the 1-minute load average at measurement time.
* ``onnx_ms_per_img`` (:func:`onnx_card`): the same measurement for a deployed ONNX file in onnxruntime (CPU,
  one intra-op and one inter-op thread, sequential execution, all graph optimizations), batch 1.  With
  ``deployed`` the card table (:mod:`facekd.model_cards`) exports every student and SFace to fp32 ONNX,
  quantizes them to int8 and times both (:mod:`facekd.modelcard_onnx`).
"""
from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from facekd.errors import ConfigError

__all__ = ["BUSY_SHARE", "BUSY_NOTE", "model_card", "onnx_card", "onnx_session", "session_card", "markdown_table"]

BUSY_SHARE = 0.9
MIN_TIMED_S = 0.05  # timed wall time below which the CPU share is not judged


def _input_size(model: nn.Module, input_size: int | None) -> int:
    if input_size is not None:
        return int(input_size)
    pre = getattr(model, "preprocess", None)
    if pre is None:
        raise ValueError(f"{type(model).__name__} declares no preprocess; pass input_size")
    return int(pre.size)


def model_card(model: nn.Module, input_size: int | None = None, *, repeats: int = 20, warmup: int = 3,
               threads: int = 1) -> dict[str, float]:
    """``{"params", "mflops", "cpu_ms_per_img", "cpu_share", "load1", "busy"}`` of ``model`` on
    ``3 x input_size x input_size`` input (see the module docstring).

    ``input_size`` defaults to the model's own ``preprocess.size``.  The model itself is left untouched
    (a CPU copy is measured, in eval mode); the global thread count is restored afterwards.
    """
    size = _input_size(model, input_size)
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1 (timed forward passes), got {repeats}")
    params = sum(p.numel() for p in model.parameters())
    cpu = copy.deepcopy(model).to("cpu").float().eval()
    x = torch.randn(1, 3, size, size)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            counter = FlopCounterMode(display=False)
            with counter:
                cpu(x)
            flops = counter.get_total_flops()
            for _ in range(warmup):
                cpu(x)
            load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            times, wall0, cpu0 = [], time.perf_counter(), time.thread_time()
            for _ in range(repeats):
                t0 = time.perf_counter()
                cpu(x)
                times.append(time.perf_counter() - t0)
            wall = time.perf_counter() - wall0
            share = (time.thread_time() - cpu0) / max(wall, 1e-9)
    finally:
        torch.set_num_threads(old_threads)
    # with helper threads the ratio means nothing; below MIN_TIMED_S the thread clock's tick decides it
    share = min(1.0, share) if threads == 1 and wall >= MIN_TIMED_S else None
    return {"params": int(params), "mflops": flops / 1e6, "cpu_ms_per_img": 1000.0 * min(times),
            "cpu_share": share, "load1": load1, "busy": share is not None and share < BUSY_SHARE}


def onnx_session(path: str | os.PathLike | bytes) -> Any:
    """An onnxruntime CPU session set up for timing: one intra-op and one inter-op thread, sequential, all
    graph optimizations."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def _batch_of_one(session: Any) -> dict[str, np.ndarray]:
    """A batch-1 feed for the session's image input: uint8 pixels, or float 0-255 for a float input."""
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    pixels = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    return {inp.name: pixels if inp.type == "tensor(uint8)" else pixels.astype(np.float32)}


def session_card(session: Any, *, repeats: int = 60, warmup: int = 5) -> dict[str, Any]:
    """``{"onnx_ms_per_img", "cpu_share", "load1", "busy"}`` of an onnxruntime session on one batch-1 input:
    the fastest of ``repeats`` runs after ``warmup``, and the timed loop's CPU share as :func:`model_card` judges it."""
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1 (timed onnxruntime runs), got {repeats}")
    feed = _batch_of_one(session)
    for _ in range(warmup):
        session.run(None, feed)
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    times, wall0, cpu0 = [], time.perf_counter(), time.thread_time()
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - wall0
    share = min(1.0, (time.thread_time() - cpu0) / max(wall, 1e-9)) if wall >= MIN_TIMED_S else None
    return {"onnx_ms_per_img": 1000.0 * min(times), "cpu_share": share, "load1": load1,
            "busy": share is not None and share < BUSY_SHARE}


def onnx_card(path: str | os.PathLike, *, repeats: int = 60, warmup: int = 5) -> dict[str, Any]:
    """``{"onnx_ms_per_img", "cpu_share", "load1", "busy", "file_mb"}`` of an ONNX file on batch-1 input of its own
    size S, in an :func:`onnx_session` (see the module docstring)."""
    card = session_card(onnx_session(path), repeats=repeats, warmup=warmup)
    return {**card, "file_mb": Path(path).stat().st_size / 1e6}


def markdown_table(rows: Iterable[dict], columns: list[tuple[str, str, str]]) -> str:
    """Rows of dicts as a markdown table; ``columns`` = [(key, header, format)], e.g. ``("mflops", "MFLOPs", ".0f")``."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(format(r[k], f) if f else str(r[k]) for k, _, f in columns) + " |")
    return "\n".join(lines)


BUSY_NOTE = ("\\* measured while other processes took the CPU from the timing thread (its share of the wall time fell "
             f"below {BUSY_SHARE:.0%}): an upper bound, not the network's cost. Rerun on an idle machine.")
