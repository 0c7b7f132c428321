"""The card table of every registered network (``scripts/model_card.py``): :func:`facekd.modelcard.model_card` for
each teacher and student, and with ``deployed`` their ONNX fp32 / int8 timings (:mod:`facekd.modelcard_onnx`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from facekd.modelcard import BUSY_NOTE, markdown_table, model_card
from facekd.modelcard_onnx import deployment
from facekd.models import ModelWeightsError, STUDENTS, TEACHERS, build_student, build_teacher, teacher_architecture

__all__ = ["model_cards", "card_rows_markdown", "print_model_cards", "CARD_COLUMNS", "DEPLOYED_COLUMNS"]


def model_cards(*, teachers: Iterable[str] | None = None, students: Iterable[str] | None = None,
                student_sizes: Iterable[int] = (64, 112, 224), out_dim: int = 128,
                teacher_weights: dict[str, str] | None = None, repeats: int = 20, warmup: int = 3,
                threads: int = 1, deployed: bool = False, onnx_repeats: int = 60, onnx_warmup: int = 5) -> list[dict]:
    """Cards of registered networks (all of them by default), one row each.

    Teachers whose weights are embedded are built for real.  Teachers that need a user file are built from
    ``teacher_weights[name]`` when given, otherwise with random weights (labelled so): parameters, FLOPs
    and latency do not depend on the weight values.  Students are carded at each of ``student_sizes`` with
    a projection to ``out_dim``.  ``deployed`` adds the ONNX fp32 / int8 figures of :mod:`facekd.modelcard_onnx`
    (``onnx_repeats`` timed runs each, after ``onnx_warmup``), and a row for SFace's file as shipped.
    """
    teacher_weights = dict(teacher_weights or {})
    timing = {"repeats": repeats, "warmup": warmup, "threads": threads}
    rows: list[dict] = []
    with deployment(deployed, repeats=onnx_repeats, warmup=onnx_warmup) as dep:
        for name in TEACHERS.names() if teachers is None else teachers:
            rows += _teacher_rows(name, teacher_weights.get(name), dep, timing)
        for name in STUDENTS.names() if students is None else students:
            for size in student_sizes:
                rows.append(_student_row(name, int(size), out_dim, dep, timing))
        if dep is not None:
            dep.add_speedups(rows)
    return rows


def _teacher_rows(name: str, path: str | None, dep: Any, timing: dict[str, int]) -> list[dict]:
    """The teacher's row (and, deployed, SFace's shipped-file row)."""
    try:
        net = build_teacher({"name": name, "weights": path} if path else {"name": name})
        weights, real = ("loaded (embedded, sha256-verified)" if path is None else f"loaded from {path}"), True
    except ModelWeightsError:
        if path:
            raise
        net, real = teacher_architecture({"name": name}), False
        weights = "random init: weights file not supplied (figures don't depend on weights)"
    card = model_card(net, **timing)
    row = {"network": name, "role": "teacher", "input": net.preprocess.size,
           "output": "x".join(map(str, net.feature_shape)) + f" ({net.feature})", "weights": weights, **card}
    return [row] + (dep.teacher(name, net, row, real_weights=real) if dep is not None else [])


def _student_row(name: str, size: int, out_dim: int, dep: Any, timing: dict[str, int]) -> dict:
    net = build_student({"name": name, "input_size": size}, out_dim)
    card = model_card(net, size, **timing)
    row = {"network": name, "role": "student", "input": size, "output": str(out_dim),
           "weights": "random init (trained by distillation)", **card}
    return {**row, **dep.student(net, size)} if dep is not None else row


CARD_COLUMNS = [("network", "network", ""), ("role", "role", ""), ("input", "input px", ""),
                ("output", "output", ""), ("params", "params (M)", ""), ("mflops", "MFLOPs", ""),
                ("cpu_ms_per_img", "CPU ms/img (b=1, 1 thread, min)", ""), ("cpu_share", "CPU share", ""),
                ("weights", "weights", "")]
DEPLOYED_COLUMNS = [("onnx_fp32_ms", "ONNX fp32 ms/img", ""), ("onnx_int8_ms", "ONNX int8 ms/img", ""),
                    ("int8_mb", "int8 file MB", ""), ("x_faster_fp32", "fp32 × faster than SFace fp32 ONNX", ""),
                    ("x_faster", "int8 × faster than SFace fp32 ONNX", "")]


def _ms(value: float | None, busy: bool | None = False) -> str:
    if value is None:
        return "–"
    return (f"{value:.2f}" if value < 10 else f"{value:.1f}") + (" *" if busy else "")


def card_rows_markdown(rows: list[dict], deployed: bool = False) -> str:
    """The markdown table of :func:`model_cards` rows ("–" where a figure was not measured; "*" where busy)."""
    cells = []
    for r in rows:
        c = {**r, "params": f"{r['params'] / 1e6:.2f}", "mflops": f"{r['mflops']:,.0f}",
             "cpu_ms_per_img": _ms(r["cpu_ms_per_img"], r["busy"]),
             "cpu_share": "–" if r["cpu_share"] is None else f"{r['cpu_share']:.2f}"}
        if deployed:
            c.update(onnx_fp32_ms=_ms(r.get("onnx_fp32_ms"), r.get("onnx_fp32_busy")),
                     onnx_int8_ms=_ms(r.get("onnx_int8_ms"), r.get("onnx_int8_busy")),
                     int8_mb="–" if r.get("int8_mb") is None else f"{r['int8_mb']:.1f}",
                     x_faster="–" if r.get("x_faster") is None else f"{r['x_faster']:.1f}×",
                     x_faster_fp32="–" if r.get("x_faster_fp32") is None else f"{r['x_faster_fp32']:.1f}×")
        cells.append(c)
    columns = CARD_COLUMNS[:-1] + (DEPLOYED_COLUMNS if deployed else []) + CARD_COLUMNS[-1:]
    table = markdown_table(cells, columns)
    busy = any(r["busy"] or r.get("onnx_fp32_busy") or r.get("onnx_int8_busy") for r in rows)
    return table + (f"\n\n{BUSY_NOTE}" if busy else "")


def print_model_cards(cfg) -> str:
    """Print (and return) the markdown table of :func:`model_cards` for the ``model_card`` config."""
    deployed = bool(cfg.get("deployed", True))
    rows = model_cards(teachers=cfg.get("teachers"), students=cfg.get("students"),
                       student_sizes=list(cfg.student_sizes), out_dim=int(cfg.out_dim),
                       teacher_weights=dict(cfg.get("teacher_weights") or {}), repeats=int(cfg.repeats),
                       warmup=int(cfg.warmup), threads=int(cfg.threads), deployed=deployed,
                       onnx_repeats=int(cfg.get("onnx_repeats", 60)), onnx_warmup=int(cfg.get("onnx_warmup", 5)))
    table = card_rows_markdown(rows, deployed)
    print(table)
    if cfg.get("out"):  # the rows as JSON beside the table, for charts (e.g. results/edge-student)
        from facekd.runs import write_json

        out = Path(str(cfg.out)).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "model_card.json", {"rows": rows, "load1": os.getloadavg()[0] if hasattr(os, "getloadavg")
                                             else None})
        (out / "model_card.md").write_text(table + "\n")
    return table
