"""Reports: read finished run folders and turn their results into markdown tables and figures.

No training here.  The figures are drawn by :mod:`facekd.plots` (re-exported: :func:`plot_curves`,
:func:`plot_confusion`, :func:`plot_tsne`); this module adds the table formatter and the readers of
run folders::

    rows = [result_row("runs/finetune/orl-resnet18-bce", method="distilled ResNet-18"), ...]
    print(format_table(rows, ["method", "accuracy", "f1_macro", "params", "mflops", "cpu_ms_per_img"],
                       headers=RESULT_HEADERS, formats=RESULT_FORMATS))
    plot_tsne({"distilled": load_test_features(run_a), "scratch": (feats, labels)}, "tsne.png")
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from facekd.plots import plot_confusion, plot_curves, plot_tsne
from facekd.runs import RunError, read_json, read_manifest

__all__ = ["format_table", "format_value", "percent", "result_row", "read_run_metrics", "load_test_features",
           "plot_run_curves", "plot_curves", "plot_confusion", "plot_tsne", "RESULT_COLUMNS", "RESULT_HEADERS",
           "RESULT_FORMATS"]

Formatter = str | Callable[[Any], str]


def percent(value: Any, digits: int = 1) -> str:
    """A fraction as a percentage (``0.8642 -> "86.4"``); a ``(mean, std)`` pair as ``"86.4 ± 1.2"``."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return f"{100 * float(value[0]):.{digits}f} ± {100 * float(value[1]):.{digits}f}"
    return f"{100 * float(value):.{digits}f}"


def format_value(value: Any, fmt: Formatter | None = None) -> str:
    """One table cell: ``fmt`` (a format spec like ``".1f"`` or a callable) when given; otherwise ints with
    thousands separators, floats with 4 significant digits, ``None``/NaN as ``–``, anything else ``str``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if fmt is not None:
        return fmt(value) if callable(fmt) else format(value, fmt)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *,
                 headers: Mapping[str, str] | None = None, formats: Mapping[str, Formatter] | None = None) -> str:
    """Rows of dicts as a markdown table with the given ``columns`` (keys, in order).

    ``headers`` renames columns (default: the key); ``formats`` maps a key to a format spec or callable
    (see :func:`format_value`).  A row lacking a key shows ``–``.
    """
    if not columns:
        raise ValueError("format_table needs at least one column")
    headers, formats = dict(headers or {}), dict(formats or {})
    lines = ["| " + " | ".join(headers.get(c, c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(format_value(r.get(c), formats.get(c)) for c in columns) + " |")
    return "\n".join(lines)


# the main job's table: | method | accuracy | macro-F1 | params | MFLOPs | CPU ms/img |
RESULT_COLUMNS = ["method", "accuracy", "f1_macro", "params", "mflops", "cpu_ms_per_img"]
RESULT_HEADERS = {"method": "method", "accuracy": "accuracy %", "f1_macro": "macro-F1 %", "params": "params (M)",
                  "mflops": "MFLOPs", "cpu_ms_per_img": "CPU ms/img"}
RESULT_FORMATS: dict[str, Formatter] = {"accuracy": percent, "f1_macro": percent,
                                        "params": lambda v: f"{v / 1e6:.2f}", "mflops": ",.0f",
                                        "cpu_ms_per_img": ".1f"}


def read_run_metrics(run_dir: str | os.PathLike, stage: str | None = None) -> dict:
    """The ``metrics.json`` of a finished run (its manifest must say ``complete``)."""
    run_dir = Path(run_dir)
    read_manifest(run_dir, stage, complete=True)
    path = run_dir / "metrics.json"
    if not path.exists():
        raise RunError(f"{run_dir} is complete but has no metrics.json")
    return read_json(path)


def result_row(run_dir: str | os.PathLike, method: str | None = None, stage: str | None = "finetune") -> dict:
    """One table row from a finished run: ``method``, test ``accuracy`` and ``f1_macro`` (plus the other
    test metrics), ``params``, ``mflops``, ``cpu_ms_per_img``, the val figures as ``val_<metric>`` and
    ``best_epoch``."""
    m = read_run_metrics(run_dir, stage)
    if "test" not in m:
        raise RunError(f"{run_dir}/metrics.json has no test figures")
    row = {"method": method or m.get("method", Path(run_dir).name), **m["test"],
           **{f"val_{k}": v for k, v in (m.get("val") or {}).items()}}
    for k in ("params", "mflops", "cpu_ms_per_img", "best_epoch", "student", "seed", "train_seconds"):
        row[k] = m.get(k)
    row["run_dir"] = str(run_dir)
    return row


def load_test_features(run_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(features, labels)`` of the test images saved by a finished finetune run (for :func:`plot_tsne`)."""
    run_dir = Path(run_dir)
    read_manifest(run_dir, "finetune", complete=True)
    path = run_dir / "test_features.npz"
    if not path.exists():
        raise RunError(f"{run_dir} has no test_features.npz")
    with np.load(path) as z:
        return z["features"], z["labels"]


def plot_run_curves(run_dir: str | os.PathLike, path: str | os.PathLike,
                    keys: Sequence[str] = ("val_f1_macro", "val_accuracy")) -> Path:
    """The per-epoch ``keys`` of a finished run's ``metrics.json``, its best epoch marked."""
    m = read_run_metrics(run_dir)
    return plot_curves(m["history"], list(keys), path, best=m.get("best_epoch"), title=Path(run_dir).name)
