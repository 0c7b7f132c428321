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
"""
from __future__ import annotations

import copy
import os
import time
from typing import Iterable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from facekd.errors import ConfigError

__all__ = ["BUSY_SHARE", "model_card", "model_cards", "markdown_table", "print_model_cards"]

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


def markdown_table(rows: Iterable[dict], columns: list[tuple[str, str, str]]) -> str:
    """Rows of dicts as a markdown table; ``columns`` = [(key, header, format)], e.g. ``("mflops", "MFLOPs", ".0f")``."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(format(r[k], f) if f else str(r[k]) for k, _, f in columns) + " |")
    return "\n".join(lines)


def model_cards(*, teachers: Iterable[str] | None = None, students: Iterable[str] | None = None,
                student_sizes: Iterable[int] = (64, 112, 224), out_dim: int = 128,
                teacher_weights: dict[str, str] | None = None, repeats: int = 20, warmup: int = 3,
                threads: int = 1) -> list[dict]:
    """Cards of registered networks (all of them by default), one row each.

    Teachers whose weights are embedded are built for real.  Teachers that need a user file are built from
    ``teacher_weights[name]`` when given, otherwise with random weights (labelled so): parameters, FLOPs
    and latency do not depend on the weight values.  Students are carded at each of ``student_sizes`` with
    a projection to ``out_dim``.
    """
    from facekd.models import STUDENTS, TEACHERS, ModelWeightsError, build_student, build_teacher, teacher_architecture

    teacher_weights = dict(teacher_weights or {})
    rows = []
    for name in TEACHERS.names() if teachers is None else teachers:
        path = teacher_weights.get(name)
        try:
            net = build_teacher({"name": name, "weights": path} if path else {"name": name})
            weights = "loaded (embedded, sha256-verified)" if path is None else f"loaded from {path}"
        except ModelWeightsError:
            if path:
                raise
            net = teacher_architecture({"name": name})
            weights = "random init: weights file not supplied (figures don't depend on weights)"
        card = model_card(net, repeats=repeats, warmup=warmup, threads=threads)
        rows.append({"network": name, "role": "teacher", "input": net.preprocess.size,
                     "output": "x".join(map(str, net.feature_shape)) + f" ({net.feature})", "weights": weights, **card})
    for name in STUDENTS.names() if students is None else students:
        for size in student_sizes:
            net = build_student({"name": name, "input_size": size}, out_dim)
            card = model_card(net, size, repeats=repeats, warmup=warmup, threads=threads)
            rows.append({"network": name, "role": "student", "input": size, "output": str(out_dim),
                         "weights": "random init (trained by distillation)", **card})
    return rows


CARD_COLUMNS = [("network", "network", ""), ("role", "role", ""), ("input", "input px", ""),
                ("output", "output", ""), ("params", "params (M)", ""), ("mflops", "MFLOPs", ",.0f"),
                ("cpu_ms_per_img", "CPU ms/img (b=1, 1 thread, min)", ".1f"), ("cpu_share", "CPU share", ""), ("weights", "weights", "")]


def print_model_cards(cfg) -> str:
    """Print (and return) the markdown table of :func:`model_cards` for the ``model_card`` config."""
    rows = model_cards(teachers=cfg.get("teachers"), students=cfg.get("students"),
                       student_sizes=list(cfg.student_sizes), out_dim=int(cfg.out_dim),
                       teacher_weights=dict(cfg.get("teacher_weights") or {}), repeats=int(cfg.repeats),
                       warmup=int(cfg.warmup), threads=int(cfg.threads))
    for r in rows:
        r["params"] = f"{r['params'] / 1e6:.2f}"
        r["cpu_share"] = "–" if r["cpu_share"] is None else f"{r['cpu_share']:.2f}"
    table = markdown_table(rows, CARD_COLUMNS)
    print(table)
    return table
